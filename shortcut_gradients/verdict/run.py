"""One cross-check run: every implementation on every shortcut setting, gathered, then decided.

Per setting: each implementation's result (held to the contract), the rounding bound, the
elementwise comparison, the GELU forms' resolution, overflow, the finite differences and the
book's means are gathered; verdict/decide.py decides, and asks for the float64 rerun where it needs
one. Where it disagrees, what the difference looks like is gathered too (shortcut_gradients/diagnosis.py)
and decided on again. With outside code in the run, the same is done on the probe (verdict/probes.py).
Each implementation, and the bound's measurement, gets its own read-only copies of params, x and
target: none can change what another sees.
"""

import warnings
from dataclasses import replace

import numpy as np

from shortcut_gradients import diagnosis
from shortcut_gradients.plumbing import frameworks, resources
from shortcut_gradients.plumbing.config import BOOK_RTOL, BOOK_WEIGHT_GRAD_MEANS, ORACLE, SHORTCUT_SETTINGS, InputError
from shortcut_gradients.plumbing.inputs import Inputs
from shortcut_gradients.verdict import bound, check, contract, decide, oracle, probes, report


def run(inputs: Inputs, probe: bool = True, progress=None) -> dict:
    """Every framework on every shortcut setting; returns the report that --json prints.

    Where outside code is in the run (and `probe`), every implementation is also checked on the
    probe (verdict/probes.py), reported under "probes"; the run agrees only if that agrees too.
    progress: None, or a callable taking one line on where the work is (compare.py prints it).
    Overflow is a result, not a warning: the implementations run with floating-point warnings
    silenced, and a tensor that came out inf or NaN is named in the run's "overflow" entry.
    """
    config = inputs.config
    tell = progress or (lambda line: None)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        data = (inputs.params, inputs.x, inputs.target)
        runs = gather(
            config.dtype, config.gelu, config.norm, config.shortcut, data, inputs.fns, inputs.is_book, progress
        )
        report = {
            "agree": decide.overall(runs)[0].status == decide.AGREE,
            "config": {
                "layer_sizes": list(config.layer_sizes),
                "weights": config.weights,
                "seed": None if config.weights else config.seed,
                "gelu": config.gelu,
                "norm": config.norm,
                "dtype": config.dtype,
                "frameworks": list(config.frameworks),
                "input_shape": list(inputs.x.shape),
                "book_configuration": inputs.is_book,
            },
            "runs": runs,
        }
        if probe and any(name not in frameworks.MODULES for name in inputs.fns):
            tell("the batch probe (--no-probes leaves it out)")
            report["probes"] = run_probe(inputs, progress)
            report["agree"] = report["agree"] and report["probes"]["agree"]
        return report


def run_probe(inputs: Inputs, progress=None) -> dict:
    """Every implementation but the finite differences on the probe (verdict/probes.py), both
    shortcut settings: {"ran": its one-line description, "dtype", "layer_sizes", "input_shape",
    "runs": each setting's entry as the run's, "agree"}."""
    config = inputs.config
    drawn = probes.draw(config.seed, config.norm)
    fns = {name: fn for name, fn in inputs.fns.items() if name != ORACLE}
    data = (drawn.params, drawn.x, drawn.target)
    runs = gather(drawn.dtype, config.gelu, config.norm, "both", data, fns, False, progress)
    return {
        "ran": drawn.describe(),
        "dtype": drawn.dtype,
        "layer_sizes": list(probes.LAYER_SIZES),
        "input_shape": list(drawn.x.shape),
        "runs": runs,
        "agree": decide.overall(runs)[0].status == decide.AGREE,
    }


def gather(
    dtype: str, gelu: str, norm: str, shortcut: str, data: tuple, fns: dict, is_book: bool, progress=None
) -> list[dict]:
    """Each shortcut setting's entry: every implementation in `fns` on data = (params, x, target)
    in `dtype`, gathered, then decided (verdict/decide.py). progress: None or a callable taking
    one line as each stage starts; the bound's measurement gets it too."""
    compared = sum(name != ORACLE for name in fns)  # the finite differences are checked on their own terms
    tell = progress or (lambda line: None)
    runs = []
    settings = SHORTCUT_SETTINGS[shortcut]
    for k, use_shortcut in enumerate(settings, 1):
        setting = f"{'with' if use_shortcut else 'without'} shortcut ({k} of {len(settings)})"
        tell(f"{setting}: running {', '.join(fns)}")
        kw = {"use_shortcut": use_shortcut, "gelu_form": gelu}
        # norm only when it is "pre": an implementation written to the book's contract never sees it.
        kw |= {"norm": norm} if norm != "none" else {}
        results, left_out = validated_results(fns, data, kw, dtype)  # each step's working memory given back
        taking_part = {name: fn for name, fn in fns.items() if name not in left_out}
        tell(f"{setting}: measuring the rounding bound")
        # dy and dz are bounded only where a pair will compare them: each is as large as the output.
        steps = sum(all(key in r for key in contract.INTERMEDIATES) for name, r in results.items() if name != ORACLE)
        measured, unperturbed = bound.measure_around(*read_only(*data), **kw, intermediates=steps > 1, progress=progress)
        resources.give_back_freed_memory()  # the draws' working memory, before the comparison's
        means = {
            name: {
                "loss": float(r["loss"]),
                "weight_grad_mean_abs": check.layer_means(r["dW"]),
                "bias_grad_mean_abs": check.layer_means(r["db"]),
            }
            for name, r in results.items()
        }
        overflow = first_overflow(results)
        oracle_result = results.pop(ORACLE, None)
        book = BOOK_WEIGHT_GRAD_MEANS[(gelu, use_shortcut)] if is_book else None
        gathered = decide.Gathered(
            dtype=dtype,
            compared=compared - len(left_out),
            comparison=check.compare(results, dtype, measured),
            resolution=bound.gelu_form_resolution(*read_only(*data), measured, dtype, own=unperturbed, **kw),
            overflow=overflow,
            oracle=oracle.compare(results, oracle_result, dtype, measured) if oracle_result else None,
            book=check.against_book(results, book, BOOK_RTOL) if book else None,
        )
        verdict = decide.decide(gathered)
        rerun_results = {}
        if verdict.rerun:
            rerun, rerun_results = float64_rerun(taking_part, data, kw, measured, unperturbed)
            gathered = replace(gathered, rerun=rerun)
            verdict = decide.decide(gathered)
        if verdict.status == decide.DISAGREE:  # what the difference looks like, from the results it is in
            first = verdict.first_mismatch
            in_rerun = first.get("dtype") == "float64" and dtype != "float64"
            compared_results = rerun_results if in_rerun else results
            tell(f"{setting}: diagnosing the first mismatch")
            cause = diagnosis.of_mismatch(first, compared_results, data, kw, "float64" if in_rerun else dtype)
            gathered = replace(gathered, diagnosis=cause)
            verdict = decide.decide(gathered)
        entry = {"use_shortcut": use_shortcut, "frameworks": means, **gathered.comparison}
        entry |= {"gelu_form_resolution": gathered.resolution, "book": gathered.book, "overflow": overflow}
        entry |= {"float64_rerun": gathered.rerun, "agree": verdict.status == decide.AGREE}
        entry["first_mismatch"] = verdict.first_mismatch
        entry |= {ORACLE: gathered.oracle} if gathered.oracle else {}
        entry |= {"diagnosis": verdict.diagnosis} if verdict.diagnosis else {}
        entry |= {"left_out": left_out} if left_out else {}
        runs.append(entry)
        del results, measured, unperturbed, rerun_results, gathered  # before the next setting's runs
        resources.give_back_freed_memory()
    return runs


def read_only(params, x, target, copy: bool = False) -> tuple[list, np.ndarray, np.ndarray]:
    """Read-only views of (params, x, target), for the checker's own measurement: writing into
    them raises, and no batch-sized copy is made; copy: fresh read-only copies (`own_copies`)."""

    def frozen(a):
        a = np.array(a, copy=True) if copy else np.asarray(a).view()
        a.setflags(write=False)
        return a

    return [tuple(frozen(a) for a in layer) for layer in params], frozen(x), frozen(target)


def own_copies(params, x, target) -> tuple[list, np.ndarray, np.ndarray]:
    """Fresh read-only copies of (params, x, target), for one implementation alone: writing into
    them raises, and nothing it does reaches what the next one is given."""
    return read_only(params, x, target, copy=True)


def validated_results(fns: dict, data: tuple, kw: dict, dtype: str) -> tuple[dict, dict]:
    """{name: each implementation's result in `dtype`, on its own copies of data = (params, x,
    target)}, held to the contract (`validate`), and {name: why} for each that raised
    NotImplementedError: it cannot do this configuration, and is left out of its comparison."""
    raw, left_out = {}, {}
    for name, fn in fns.items():
        try:
            raw[name] = fn(*own_copies(*data), **kw, dtype=dtype)
        except NotImplementedError as err:
            # A user's arrives with its located line: their file, line and message.
            left_out[name] = getattr(err, "description", None) or f"NotImplementedError: {err}"
        resources.give_back_freed_memory()  # one step's working memory, before the next one's
    if not any(name != ORACLE for name in raw):
        reasons = "; ".join(f"{name}: {why}" for name, why in left_out.items())
        raise InputError(f"every implementation raised NotImplementedError for this configuration ({reasons})")
    return validate(raw, *data[:2], dtype), left_out


def validate(results: dict, params, x, dtype: str) -> dict:
    """Every result held to the contract (docs/contract.md) before it is compared. A user's NaN or
    inf where the first implementation's value is finite is refused there too; a built-in one's
    is left to the verdict, which reports overflow as such."""
    checked = {}
    for name, result in results.items():
        reference = next(iter(checked.values()), None) if name not in frameworks.MODULES else None
        checked[name] = result if name == ORACLE else contract.validate(name, result, params, x, dtype, reference)
    return checked


def float64_rerun(fns: dict, data: tuple, kw: dict, measured: dict, unperturbed: dict) -> tuple[dict, dict]:
    """Every implementation but the finite differences again in float64, compared under the same
    measured bound (it is in units of u, whichever the dtype; `unperturbed` the run it was measured
    around, bound.measure_around's, for the GELU forms' resolution). Returns {"gelu_form_resolution":
    the GELU forms' resolution in float64} and either check.compare's report, its "first_mismatch"
    marked {"dtype": "float64"}, or "skipped": why nothing was compared: float64 cannot resolve
    the forms either, an implementation (a user's) raised in float64, or a result came out inf or
    NaN. A result that breaks the contract is bad input. Second: {name: float64 result}, those
    compared (empty where none was), for the diagnosis."""
    resolution = bound.gelu_form_resolution(*read_only(*data), measured, "float64", own=unperturbed, **kw)
    if not resolution["resolved"]:
        return {
            "gelu_form_resolution": resolution,
            "skipped": f"not even float64 can tell them apart here (the largest move is"
            f" {report.share(resolution['share'])} of a float64 allowance, at {resolution['tensor']})",
        }, {}
    try:
        raw = {name: fn(*own_copies(*data), **kw, dtype="float64") for name, fn in fns.items() if name != ORACLE}
    except (InputError, NotImplementedError) as err:  # raised inside a user's implementation: their file and line
        why = getattr(err, "description", None) or str(err)
        return {
            "gelu_form_resolution": resolution,
            "skipped": f"the float64 rerun that would resolve it failed: {why}",
        }, {}
    results = validate(raw, data[0], data[1], "float64")
    if overflow := first_overflow(results):
        return {
            "gelu_form_resolution": resolution,
            "skipped": f"the float64 rerun that would resolve it came out inf or NaN at {overflow['tensor']}"
            f" in {', '.join(overflow['frameworks'])}",
        }, {}
    compared = check.compare(results, "float64", measured)
    if compared["first_mismatch"]:
        compared["first_mismatch"] |= {"dtype": "float64"}
    return compared | {"gelu_form_resolution": resolution}, results


def first_overflow(results: dict) -> dict | None:
    """The first tensor in backprop order that is inf or NaN in some implementation, and which ones, or None."""
    listed = {name: check.tensors(result) for name, result in results.items()}
    for k, (tname, _, _) in enumerate(next(iter(listed.values()))):
        broken = [
            name for name, items in listed.items() if not np.all(np.isfinite(np.asarray(items[k][2])))
        ]
        if broken:
            return {"tensor": tname, "frameworks": broken}
    return None

"""One cross-check run: every implementation on every shortcut setting, gathered, then decided.

Per setting: each implementation's result (held to the contract), the rounding bound, the
elementwise comparison, the GELU forms' resolution, overflow, the finite differences and the
book's means are gathered; verdict/decide.py decides, and asks for the float64 rerun where it needs
one. Each implementation, and the bound's measurement, gets its own read-only copies of params, x
and target: none can change what another sees.
"""

import warnings
from dataclasses import replace

import numpy as np

from shortcut_gradients.plumbing import frameworks
from shortcut_gradients.plumbing.config import BOOK_RTOL, BOOK_WEIGHT_GRAD_MEANS, ORACLE, SHORTCUT_SETTINGS, InputError
from shortcut_gradients.plumbing.inputs import Inputs
from shortcut_gradients.verdict import bound, check, contract, decide, oracle, report


def run(inputs: Inputs) -> dict:
    """Every framework on every shortcut setting; returns the report that --json prints.

    Overflow is a result, not a warning: the implementations run with floating-point warnings
    silenced, and a tensor that came out inf or NaN is named in the run's "overflow" entry.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run(inputs)


def _run(inputs: Inputs) -> dict:
    config, data, fns = inputs.config, (inputs.params, inputs.x, inputs.target), inputs.fns
    compared = sum(name != ORACLE for name in fns)  # the finite differences are checked on their own terms
    runs = []
    for use_shortcut in SHORTCUT_SETTINGS[config.shortcut]:
        kw = {"use_shortcut": use_shortcut, "gelu_form": config.gelu}
        # norm only when it is "pre": an implementation written to the book's contract never sees it.
        kw |= {"norm": config.norm} if config.norm != "none" else {}
        results = validated_results(fns, data, kw, config.dtype)
        measured = bound.measure(*own_copies(*data), **kw)
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
        book = BOOK_WEIGHT_GRAD_MEANS[(config.gelu, use_shortcut)] if inputs.is_book else None
        gathered = decide.Gathered(
            dtype=config.dtype,
            compared=compared,
            comparison=check.compare(results, config.dtype, measured),
            resolution=bound.gelu_form_resolution(*own_copies(*data), measured, config.dtype, **kw),
            overflow=overflow,
            oracle=oracle.compare(results, oracle_result, config.dtype, measured) if oracle_result else None,
            book=check.against_book(results, book, BOOK_RTOL) if book else None,
        )
        verdict = decide.decide(gathered)
        if verdict.rerun:
            gathered = replace(gathered, rerun=float64_rerun(fns, data, kw, measured))
            verdict = decide.decide(gathered)
        entry = {"use_shortcut": use_shortcut, "frameworks": means, **gathered.comparison}
        entry |= {"gelu_form_resolution": gathered.resolution, "book": gathered.book, "overflow": overflow}
        entry |= {"float64_rerun": gathered.rerun, "agree": verdict.status == decide.AGREE}
        entry["first_mismatch"] = verdict.first_mismatch
        entry |= {ORACLE: gathered.oracle} if gathered.oracle else {}
        runs.append(entry)
    return {
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


def own_copies(params, x, target) -> tuple[list, np.ndarray, np.ndarray]:
    """Fresh read-only copies of (params, x, target), for one implementation alone: writing into
    them raises, and nothing it does reaches what the next one is given."""

    def frozen(a):
        a = np.array(a, copy=True)
        a.setflags(write=False)
        return a

    return [tuple(frozen(a) for a in layer) for layer in params], frozen(x), frozen(target)


def validated_results(fns: dict, data: tuple, kw: dict, dtype: str) -> dict:
    """{name: each implementation's result in `dtype`, on its own copies of data = (params, x,
    target)}, held to the contract (`validate`)."""
    return validate({name: fn(*own_copies(*data), **kw, dtype=dtype) for name, fn in fns.items()}, *data[:2], dtype)


def validate(results: dict, params, x, dtype: str) -> dict:
    """Every result held to the contract (docs/contract.md) before it is compared. A user's NaN or
    inf where the first implementation's value is finite is refused there too; a built-in one's
    is left to the verdict, which reports overflow as such."""
    checked = {}
    for name, result in results.items():
        reference = next(iter(checked.values()), None) if name not in frameworks.MODULES else None
        checked[name] = result if name == ORACLE else contract.validate(name, result, params, x, dtype, reference)
    return checked


def float64_rerun(fns: dict, data: tuple, kw: dict, measured: dict) -> dict:
    """Every implementation but the finite differences again in float64, compared under the same
    measured bound (it is in units of u, whichever the dtype). Returns {"gelu_form_resolution":
    the GELU forms' resolution in float64} and either check.compare's report, its "first_mismatch"
    marked {"dtype": "float64"}, or "skipped": why nothing was compared: float64 cannot resolve
    the forms either, an implementation (a user's) raised in float64, or a result came out inf or
    NaN. A result that breaks the contract is bad input."""
    resolution = bound.gelu_form_resolution(*own_copies(*data), measured, "float64", **kw)
    if not resolution["resolved"]:
        return {
            "gelu_form_resolution": resolution,
            "skipped": f"not even float64 can tell them apart here (the largest move is"
            f" {report.share(resolution['share'])} of a float64 allowance, at {resolution['tensor']})",
        }
    try:
        raw = {name: fn(*own_copies(*data), **kw, dtype="float64") for name, fn in fns.items() if name != ORACLE}
    except InputError as err:  # raised inside a user's implementation: their file and line
        return {"gelu_form_resolution": resolution, "skipped": f"the float64 rerun that would resolve it failed: {err}"}
    results = validate(raw, data[0], data[1], "float64")
    if overflow := first_overflow(results):
        return {
            "gelu_form_resolution": resolution,
            "skipped": f"the float64 rerun that would resolve it came out inf or NaN at {overflow['tensor']}"
            f" in {', '.join(overflow['frameworks'])}",
        }
    compared = check.compare(results, "float64", measured)
    if compared["first_mismatch"]:
        compared["first_mismatch"] |= {"dtype": "float64"}
    return compared | {"gelu_form_resolution": resolution}


def first_overflow(results: dict) -> dict | None:
    """The first tensor in backprop order that is inf or NaN in some implementation, and which ones, or None."""
    listed = {name: check.tensors(result) for name, result in results.items()}
    for k, (tname, _, _) in enumerate(next(iter(listed.values()))):
        broken = [
            name for name, items in listed.items() if not np.all(np.isfinite(np.asarray(items[k][2], np.float64)))
        ]
        if broken:
            return {"tensor": tname, "frameworks": broken}
    return None

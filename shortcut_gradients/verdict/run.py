"""One cross-check run: every implementation on every shortcut setting, compared element by element."""

import warnings

import numpy as np

import impl_numpy
from shortcut_gradients.plumbing import frameworks
from shortcut_gradients.plumbing.config import BOOK_RTOL, BOOK_WEIGHT_GRAD_MEANS, ORACLE, SHORTCUT_SETTINGS, InputError
from shortcut_gradients.plumbing.inputs import Inputs
from shortcut_gradients.verdict import check, contract, oracle, report, sensitivity

# Whose float64 runs measure each element's rounding bound (shortcut_gradients.verdict.sensitivity), whichever
# are compared: the NumPy reference, the one whose GELU the measurement can perturb.
MEASURE = impl_numpy.model.loss_and_grads


def run(inputs: Inputs) -> dict:
    """Every framework on every shortcut setting; returns the report that --json prints.

    Overflow is a result, not a warning: the implementations run with floating-point warnings
    silenced, and a tensor that came out inf or NaN is named in the run's "overflow" entry.
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run(inputs)


def _run(inputs: Inputs) -> dict:
    config, params, x, target = inputs.config, inputs.params, inputs.x, inputs.target
    fns = inputs.fns
    runs = []
    for use_shortcut in SHORTCUT_SETTINGS[config.shortcut]:
        kw = {"use_shortcut": use_shortcut, "gelu_form": config.gelu}
        # norm only when it is "pre": an implementation written to the book's contract never sees it.
        kw |= {"norm": config.norm} if config.norm != "none" else {}
        results = validated_results(fns, params, x, target, kw, config.dtype)
        magnitude = sensitivity.sensitivity(MEASURE, params, x, target, **kw)
        means = {
            name: {
                "loss": float(r["loss"]),
                "weight_grad_mean_abs": check.layer_means(r["dW"]),
                "bias_grad_mean_abs": check.layer_means(r["db"]),
            }
            for name, r in results.items()
        }
        overflow = first_overflow(results)
        oracle_result = results.pop(ORACLE, None)  # checked on its own terms below, not pairwise
        entry = {"use_shortcut": use_shortcut, "frameworks": means, **check.compare(results, config.dtype, magnitude)}
        entry["gelu_form_resolution"] = sensitivity.gelu_form_resolution(
            MEASURE, params, x, target, magnitude, config.dtype, **kw
        )
        entry["book"], entry["overflow"] = None, overflow
        entry["agree"] = entry["agree"] and overflow is None
        entry["float64_rerun"] = None
        compared = [name for name in fns if name != ORACLE]
        blind = config.dtype == "float32" and not entry["gelu_form_resolution"]["resolved"]
        if entry["agree"] and blind and len(compared) > 1:
            # float32's allowance here is wider than the difference between the GELU forms, so a
            # mix-up would pass: the same implementations, again in float64, under the same bound.
            entry["float64_rerun"] = float64_rerun(fns, params, x, target, kw, magnitude)
            entry["agree"] = entry["float64_rerun"].get("agree", True)
            entry["first_mismatch"] = entry["float64_rerun"].get("first_mismatch")
        if oracle_result:
            entry[ORACLE] = oracle.check(results, oracle_result, config.dtype, magnitude)
            entry["first_mismatch"] = entry["first_mismatch"] or entry[ORACLE]["first_mismatch"]
            entry["agree"] = entry["agree"] and entry[ORACLE]["agree"]
        if inputs.is_book:
            book_means = BOOK_WEIGHT_GRAD_MEANS[(config.gelu, use_shortcut)]
            entry["book"] = check.book_check(results, book_means, BOOK_RTOL)
        runs.append(entry)
    return {
        "agree": all(r["agree"] and (r["book"] is None or r["book"]["match"]) for r in runs),
        "config": {
            "layer_sizes": list(config.layer_sizes),
            "weights": config.weights,
            "seed": None if config.weights else config.seed,
            "gelu": config.gelu,
            "norm": config.norm,
            "dtype": config.dtype,
            "frameworks": list(config.frameworks),
            "input_shape": list(x.shape),
            "book_configuration": inputs.is_book,
        },
        "runs": runs,
    }


def validated_results(fns: dict, params, x, target, kw: dict, dtype: str) -> dict:
    """{name: each implementation's result in `dtype`}, held to the contract (`validate`)."""
    return validate({name: fn(params, x, target, **kw, dtype=dtype) for name, fn in fns.items()}, params, x, dtype)


def validate(results: dict, params, x, dtype: str) -> dict:
    """Every result held to the contract (docs/contract.md) before it is compared. A user's NaN or
    inf where the first implementation's value is finite is refused there too; a built-in one's
    is left to the verdict, which reports overflow as such."""
    checked = {}
    for name, result in results.items():
        reference = next(iter(checked.values()), None) if name not in frameworks.MODULES else None
        checked[name] = result if name == ORACLE else contract.validate(name, result, params, x, dtype, reference)
    return checked


def float64_rerun(fns: dict, params, x, target, kw: dict, magnitude: dict) -> dict:
    """Every implementation but the finite differences again in float64, compared under the same
    measured bound (it is in units of u, whichever the dtype). Returns {"gelu_form_resolution":
    the GELU forms' resolution in float64} and either shortcut_gradients.verdict.check.compare's report, its
    "first_mismatch" marked {"dtype": "float64"}, or "skipped": why nothing was compared, for the
    verdict: float64 cannot resolve the forms either, an implementation (a user's) raised in
    float64, or a result came out inf or NaN. A result that breaks the contract is bad input."""
    resolution = sensitivity.gelu_form_resolution(MEASURE, params, x, target, magnitude, "float64", **kw)
    if not resolution["resolved"]:
        return {
            "gelu_form_resolution": resolution,
            "skipped": f"not even float64 can tell them apart here (the largest move is"
            f" {report.share(resolution['share'])} of a float64 allowance, at {resolution['tensor']})",
        }
    compared = {name: fn for name, fn in fns.items() if name != ORACLE}
    try:
        raw = {name: fn(params, x, target, **kw, dtype="float64") for name, fn in compared.items()}
    except InputError as err:  # raised inside a user's implementation: their file and line
        return {"gelu_form_resolution": resolution, "skipped": f"the float64 rerun that would resolve it failed: {err}"}
    results = validate(raw, params, x, "float64")
    if overflow := first_overflow(results):
        return {
            "gelu_form_resolution": resolution,
            "skipped": f"the float64 rerun that would resolve it came out inf or NaN at {overflow['tensor']}"
            f" in {', '.join(overflow['frameworks'])}",
        }
    compared_report = check.compare(results, "float64", magnitude)
    if compared_report["first_mismatch"]:
        compared_report["first_mismatch"] |= {"dtype": "float64"}
    return compared_report | {"gelu_form_resolution": resolution}


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

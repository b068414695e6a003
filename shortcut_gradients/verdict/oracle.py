"""The finite-difference oracle's verdict: each implementation against impl_numerical, element by element.

An analytic gradient a agrees with the estimate d when |a - d| <= tol |d| + error + u bound,
error being the oracle's bound on that element (impl_numerical.model's docstring derives it)
and, given the run's measured rounding bound (shortcut_gradients.verdict.bound), u bound the most
the implementation's own rounding can have moved a from the exact value: a float32 run is held to
what float32 can do, not to a fixed relative figure that its rounding exceeds on some networks.
The loss and output are forward values, not differences: the fixed rule compares them.
"""

import numpy as np

from shortcut_gradients.plumbing.config import ORACLE
from shortcut_gradients.verdict import check

FORWARD = ("loss", "output")


def allowance(oracle: dict, dtype: str, bound: dict | None):
    """check's oracle allowance: (tensor name, a, d) -> (used, rel, allowed), rel and allowed relative to |d|."""
    tol, u = check.TOLERANCE[dtype], float(np.finfo(dtype).eps) / 2
    errors = {
        tname: np.asarray(e, np.float64)
        for tname, _, e in check.tensors({**dict.fromkeys(FORWARD, 0.0), **oracle["error"]})
    }
    if bound is not None:  # the implementation's own rounding, at most u bound (one side, not two)
        errors = {tname: errors[tname] + u * np.asarray(b, np.float64) for tname, _, b in check.tensors(bound)}
    forward = check.fixed(dtype)

    def compare(tname, a, d):
        if tname in FORWARD:
            return forward(tname, a, d)
        error, size, diff = errors[tname], np.abs(d), np.abs(a - d)
        allowed = np.divide(error, size, out=np.full(size.shape, np.inf), where=size > 0) + tol
        return check.ratio(diff, tol * size + error), check.ratio(diff, size), allowed

    return compare, errors


def compare(results: dict[str, dict], oracle: dict, dtype: str, bound: dict | None = None) -> dict:
    """Each implementation's result against the finite differences, element by element (module docstring).

    bound: shortcut_gradients.verdict.bound.measure's result, in units of u, or None.
    Returns "agree"; "resolved" (elements with |d| > error), their worst relative
    difference "max_rel_diff" and worst bound "max_bound" (error / |d|: what differences
    can claim there); "unresolved" (|d| <= error: not distinguishable from 0), with
    "unresolved_max_abs" (their largest |d|) and "unresolved_used" (their largest
    |a - d| / (tol |d| + error), at most 1 when they agree); and "first_mismatch" in
    backprop order, check.elementwise's, odd_one_out the implementation.
    """
    rule, errors = allowance(oracle, dtype, bound)
    listed = {name: check.listing(result, intermediates=False) for name, result in results.items()}
    listed[ORACLE] = check.listing(oracle, intermediates=False)
    stats = {"resolved": 0, "max_rel_diff": 0.0, "max_bound": 0.0}
    stats.update(unresolved=0, unresolved_max_abs=0.0, unresolved_used=0.0)
    first = None
    pairs = [(name, ORACLE) for name in results]
    # After the loop, `first` is the first mismatch of all.
    for tname, _, shares, first, _values in check.elementwise(listed, pairs, list(listed[ORACLE]), rule):  # noqa: B007
        if tname in FORWARD:
            continue
        size = np.abs(listed[ORACLE][tname][1])
        resolved = size > errors[tname]
        # Each element counted once, whatever the number of implementations.
        stats["resolved"] += int(resolved.sum())
        stats["unresolved"] += int((~resolved).sum())
        if resolved.any():
            stats["max_bound"] = max(stats["max_bound"], float((errors[tname][resolved] / size[resolved]).max()))
        if not resolved.all():
            stats["unresolved_max_abs"] = max(stats["unresolved_max_abs"], float(size[~resolved].max()))
        for used, rel, _ in shares.values():
            if resolved.any():
                stats["max_rel_diff"] = max(stats["max_rel_diff"], float(rel[resolved].max()))
            if not resolved.all():
                stats["unresolved_used"] = max(stats["unresolved_used"], float(used[~resolved].max()))
    if first is not None:
        first["odd_one_out"] = first["frameworks"][0]
    return {"agree": first is None, "tolerance": check.TOLERANCE[dtype], "first_mismatch": first, **stats}

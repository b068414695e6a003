"""The finite-difference oracle's verdict: each implementation against impl_numerical, element by element.

An analytic gradient a agrees with the estimate d when |a - d| <= tol |d| + error + u bound,
error being the oracle's bound on that element (impl_numerical.model's docstring derives it)
and, given the run's measured rounding bound (shortcut_gradients.verdict.sensitivity), u bound the most the
implementation's own rounding can have moved a from the exact value: a float32 run is held to
what float32 can do, not to a fixed relative figure that its rounding exceeds on some networks.
"""

import numpy as np

from shortcut_gradients.verdict import check as checking


def check(results: dict[str, dict], oracle: dict, dtype: str, magnitude: dict | None = None) -> dict:
    """Each implementation's result against the finite differences, element by element.

    loss and output: shortcut_gradients.verdict.check's relative error against the oracle's float64 forward.
    Gradients: an element agrees when |a - d| <= tol |d| + error + u bound (module docstring;
    magnitude is shortcut_gradients.verdict.sensitivity.sensitivity's result, bound in units of u, or None).
    Returns "agree"; "resolved" (elements with |d| > error), their worst relative
    difference "max_rel_diff" and worst bound "max_bound" (error / |d|: what differences
    can claim there); "unresolved" (|d| <= error: not distinguishable from 0), with
    "unresolved_max_abs" (their largest |d|) and "unresolved_used" (their largest
    |a - d| / (tol |d| + error), at most 1 when they agree); and "first_mismatch" in
    backprop order, with shortcut_gradients.verdict.check.compare's keys plus "allowed", the difference that
    element was allowed, relative to |d|.
    """
    tol, eps = checking.TOLERANCE[dtype], float(np.finfo(dtype).eps)
    expected = checking.tensors(oracle)
    bounds = checking.tensors({"loss": 0.0, "output": 0.0, **oracle["error"]})
    own = checking.tensors(magnitude) if magnitude is not None else None
    listed = {name: checking.tensors(result) for name, result in results.items()}
    stats = {"resolved": 0, "max_rel_diff": 0.0, "max_bound": 0.0}
    stats.update(unresolved=0, unresolved_max_abs=0.0, unresolved_used=0.0)
    first = None
    for k, (tname, layer, d) in enumerate(expected):
        d, error = np.asarray(d, np.float64), np.asarray(bounds[k][2], np.float64)
        if own is not None:  # the implementation's own rounding, at most u bound (one side, not two)
            error = error + eps / 2 * np.asarray(own[k][2], np.float64)
        size, gradient = np.abs(d), tname not in ("loss", "output")
        resolved = size > error
        if gradient:  # each element counted once, whatever the number of implementations
            stats["resolved"] += int(resolved.sum())
            stats["unresolved"] += int((~resolved).sum())
            if resolved.any():
                stats["max_bound"] = max(stats["max_bound"], float((error[resolved] / size[resolved]).max()))
            if not resolved.all():
                stats["unresolved_max_abs"] = max(stats["unresolved_max_abs"], float(size[~resolved].max()))
        for name in results:
            a = np.asarray(listed[name][k][2], np.float64)
            if not gradient:  # forward values, not differences: the usual comparison
                rel = checking.relative_error(a, d, tol, eps)
                used, allowed = rel / tol, np.full(rel.shape, tol)
            else:
                diff = np.abs(a - d)
                used = diff / (tol * size + error)  # > 1: disagrees (error > 0: it has a rounding part)
                used[~np.isfinite(a)] = np.inf  # a NaN or inf is never agreement
                rel = np.divide(diff, size, out=np.where(diff > 0, np.inf, 0.0), where=size > 0)
                allowed = np.divide(error, size, out=np.full(size.shape, np.inf), where=size > 0) + tol
                if resolved.any():
                    stats["max_rel_diff"] = max(stats["max_rel_diff"], float(rel[resolved].max()))
                if not resolved.all():
                    stats["unresolved_used"] = max(stats["unresolved_used"], float(used[~resolved].max()))
            if first is None and used.size and used.max() > 1:
                idx = np.unravel_index(int(np.argmax(used)), used.shape)
                first = {
                    "tensor": tname,
                    "layer": layer,
                    "index": [int(i) for i in idx],
                    "frameworks": [name, "numerical"],
                    "values": [float(a[idx]), float(d[idx])],
                    "rel_diff": float(rel[idx]),
                    "allowed": float(allowed[idx]),
                    "odd_one_out": name,
                }
    return {"agree": first is None, "tolerance": tol, "first_mismatch": first, **stats}

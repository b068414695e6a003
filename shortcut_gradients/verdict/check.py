"""Comparing implementations element by element.

The verdict never looks at means: the book's per-layer mean |grad| cannot see a sign flip
or a transposed weight, and the unshortcut gradients are ~1e-4, so a fixed absolute
tolerance would let real bugs through. Every element of every tensor is compared, between
every pair of implementations, against what rounding alone can make of it.

The rule, with a measurement (compare.py always passes one): each element's rounding-error
bound, measured by shortcut_gradients.verdict.sensitivity.sensitivity in units of the unit roundoff u from
how the element was computed (the length of the sums behind it, the size of their terms,
carried through the layers), and two implementations may differ by twice it:

    |a - b| <= 2 u bound(e)  (+ an underflow floor of a few `tiny`)

docs/tolerances.md derives the bound and shows it at size (python -m studies.survey): no
false alarm from one row to 16384 identical or random ones, widths to 1024 and depths to 64,
where the fixed rule below raises 10, and every surveyed fault caught (the GELU mix-up in float32
through 64 layers without shortcuts by the float64 rerun that shortcut_gradients.verdict.run makes where float32
cannot resolve it). The bound grows with the batch where rounding does (a
sum of identical rows rounds the same way at every addition) and not where nothing is summed.

The fixed rule, without one (exercises and small checks that measure nothing): the
relative error |a - b| / max(|a|, |b|, floor) against a per-dtype tolerance, where

    floor = NOISE_ULPS * eps * max|T| / tol

and max|T| is the largest magnitude in that tensor (over both implementations). An element
far smaller than its tensor, formed by cancelling sums of terms the size of the tensor,
carries rounding noise of a few ulps *of the tensor*, whatever its own size: on a study notebook's
(2, 3, 25) network a float32 output element is -3.7e-8 in torch and -6.7e-8 in JAX (plain
relative error 0.44). The fixed rule is sized for the book's one-row network; it knows nothing
of batch sums, and on 1024 identical rows it flags rounding (docs/tolerances.md). compare
reports its floored relative error as "max_rel_diff" under either rule, as a description.
"""

import numpy as np

from shortcut_gradients.verdict import contract

# The fixed rule's per-dtype tolerance on the relative error; see README "Tolerances".
# float32: the three frameworks differ by float noise, at most 7.7e-7 on the book network
# (tanh, both shortcut settings), while using exact GELU where tanh was meant moves the
# book's per-layer means by 8.2e-6 or more (and single elements by up to 3.8e-4); 4e-6 sits
# between the two with room on either side.
# float64: the frameworks agree to about 1e-15 on the book network; 1e-12 is the agreement
# the project promises, a thousand times the noise and far below any real bug.
TOLERANCE = {"float32": 4e-6, "float64": 1e-12}

# Rounding noise allowed on an element, in ulps of its tensor's largest element. Measured:
# the worst |a - b| / max|T| between frameworks over the book, non-square, 3-D and 1-D
# networks of tests/test_agreement.py is 6.0e-7 in float32 (5 ulps) and 1.5e-15 in float64
# (7 ulps); 32 ulps leaves a 5x margin, and is 100x below the exact-vs-tanh GELU mix-up on
# the book network (3.8e-4 of the tensor) in either dtype.
NOISE_ULPS = 32


def relative_error(a, b, tol: float, eps: float) -> np.ndarray:
    """|a - b| / max(|a|, |b|, floor) elementwise, in float64; 0 where a and b are both 0.

    a, b: arrays of one shape. floor = NOISE_ULPS * eps * max|T| / tol: at the floor, an
    error of NOISE_ULPS ulps of the tensor's largest element is exactly the tolerance.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: such elements are marked below
        diff, scale = np.abs(a - b), np.maximum(np.abs(a), np.abs(b))
    finite = np.isfinite(a) & np.isfinite(b)
    size = scale[finite].max() if finite.any() else 0.0
    floor = NOISE_ULPS * eps * size / tol
    scale = np.maximum(scale, floor)
    rel = np.divide(diff, scale, out=np.zeros_like(diff), where=finite & (scale > 0))
    # A NaN or inf is never agreement, not even with another NaN: it means the computation broke.
    rel[~finite] = np.inf
    return rel


def tensors(result: dict) -> list[tuple[str, int | None, np.ndarray]]:
    """(name, layer, array) in the order backprop produces them: loss and output first,
    then the last layer's weight and bias gradients (and a pre-LN norm's scale and shift) back
    to the first, then the input's; shortcut_gradients.verdict.contract.tensors without dy and dz."""
    return contract.tensors(result, intermediates=False)


def compare(results: dict[str, dict], dtype: str, magnitude: dict | None = None) -> dict:
    """Compare every pair of implementations on every element of every tensor.

    results: {framework name: loss_and_grads(...) result}. magnitude: each element's
    rounding-error bound in units of u, `shortcut_gradients.verdict.sensitivity.sensitivity(...)`; with it,
    two implementations may differ by allowed(e) = 2 u magnitude(e) (each may be off by the
    bound, in opposite directions) plus the underflow floor, UNDERFLOW_STEPS tiny per term
    summed. Without it, the fixed rule: relative_error <= TOLERANCE[dtype].

    Returns "tolerance" (TOLERANCE[dtype], the fixed rule's), "max_rel_diff" {tensor: worst
    relative_error over all pairs, floored at the tensor's size: a description, whichever rule
    decides}, "layer_max_rel_diff" [per layer, weight and bias together], "room" {tensor: the
    largest share of its allowance any element used, over all pairs: <= 1 agrees},
    "allowed_rel_diff" {tensor: the relative difference allowed at its largest element},
    "first_mismatch" (None, or where the first tensor in backprop order exceeds its allowance:
    tensor, layer, index, frameworks, values, rel_diff |a - b| / max(|a|, |b|), allowed (the
    same ratio's allowance there) and odd_one_out, the one framework that disagrees with all
    the others there, if there is one) and "agree".
    """
    tol, eps = TOLERANCE[dtype], float(np.finfo(dtype).eps)
    u = eps / 2  # the unit roundoff: round to nearest is off by at most half an ulp
    names = list(results)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    first_result = next(iter(results.values()))
    n_layers = len(first_result["dW"])
    floor = underflow_floor(first_result, dtype)
    max_rel, layer_max, room, allowed_rel = {}, [0.0] * n_layers, {}, {}
    first = None
    # Named arrays in backprop order, with dy and dz (docs/contract.md) where a result gives them:
    # a pair that both give is compared on them too, so a wrong step is named before its dW.
    listed = {name: {t: (layer, a) for t, layer, a in contract.tensors(result)} for name, result in results.items()}
    order = max((list(v) for v in listed.values()), key=len)
    bounds = {t: a for t, _, a in contract.tensors(magnitude)} if magnitude is not None else None
    for tname in order:
        # Under the bound, dy and dz are compared where the measurement gave them a bound too.
        here = [(a, b) for a, b in pairs if tname in listed[a] and tname in listed[b]]
        if bounds is not None and tname not in bounds:
            here = []
        layer = next(listed[name][tname][0] for name in names if tname in listed[name])
        worst, worst_used, used_by_pair, allowed = 0.0, 0.0, {}, None
        for a, b in here:
            va, vb = (np.asarray(listed[name][tname][1], np.float64) for name in (a, b))
            if va.shape != vb.shape:
                raise ValueError(f"{tname}: {a} gives shape {va.shape}, {b} gives {vb.shape}")
            rel = relative_error(va, vb, tol, eps)
            if bounds is None:
                used, allowed = rel / tol, np.full(rel.shape, tol)
            else:
                used, plain, allowed = bounded_error(va, vb, 2 * u * np.asarray(bounds[tname]) + floor)
            used_by_pair[a, b] = used
            if rel.size:
                worst = max(worst, float(rel.max()))
                worst_used = max(worst_used, float(used.max()))
            if first is None and used.size and used.max() > 1:
                idx = np.unravel_index(int(np.argmax(used)), used.shape)
                first = {
                    "tensor": tname,
                    "layer": layer,
                    "index": [int(i) for i in idx],
                    "frameworks": [a, b],
                    "values": [float(va[idx]), float(vb[idx])],
                    "rel_diff": float(rel[idx] if bounds is None else plain[idx]),
                    "allowed": float(allowed[idx]),
                }
        if not here and tname.endswith((".dy", ".dz")):
            continue  # a step no pair gives (with one framework, the tensors are listed at 0)
        if first is not None and first["tensor"] == tname:
            involved = [name for name in names if tname in listed[name]]
            first["odd_one_out"] = odd_one_out(involved, used_by_pair, tuple(first["index"]), 1.0)
        max_rel[tname], room[tname] = worst, worst_used
        allowed_rel[tname] = largest_element_allowance(listed[(here or [(names[0],)])[0][0]][tname][1], allowed)
        if layer is not None and not tname.endswith((".dy", ".dz")):  # the layer's figure: its dW and db
            layer_max[layer] = max(layer_max[layer], worst)
    return {
        "tolerance": tol,
        "noise_floor_ulps": NOISE_ULPS,
        "rule": "fixed" if magnitude is None else "bound",
        "max_rel_diff": max_rel,
        "layer_max_rel_diff": layer_max,
        "room": room,
        "allowed_rel_diff": allowed_rel,
        "first_mismatch": first,
        "agree": first is None,
    }


def bounded_error(a: np.ndarray, b: np.ndarray, allowed_abs: np.ndarray):
    """(|a - b| / allowed_abs, |a - b| / max(|a|, |b|), allowed_abs / max(|a|, |b|)), elementwise.

    A NaN or inf uses an infinite share: it is never agreement, not even with another NaN."""
    finite = np.isfinite(a) & np.isfinite(b)
    with np.errstate(invalid="ignore", over="ignore"):
        diff, scale = np.abs(a - b), np.maximum(np.abs(a), np.abs(b))
    allowed_abs = np.broadcast_to(allowed_abs, diff.shape)
    used = np.divide(diff, allowed_abs, out=np.where(diff > 0, np.inf, 0.0), where=finite & (allowed_abs > 0))
    used[~finite] = np.inf
    plain = np.divide(diff, scale, out=np.zeros_like(diff), where=finite & (scale > 0))
    plain[~finite] = np.inf
    with np.errstate(over="ignore"):  # a subnormal scale: the allowance, relative to it, is inf
        allowed = np.divide(allowed_abs, scale, out=np.full(diff.shape, np.inf), where=scale > 0)
    return used, plain, allowed


def largest_element_allowance(values, allowed) -> float:
    """The allowed relative difference at the tensor's largest finite element (0 for an empty tensor)."""
    values = np.abs(np.asarray(values, np.float64))
    if allowed is None or values.size == 0 or not np.isfinite(values).any():
        return 0.0
    idx = np.unravel_index(int(np.argmax(np.where(np.isfinite(values), values, -1.0))), values.shape)
    return float(np.asarray(allowed)[idx])


def underflow_floor(result: dict, dtype: str) -> float:
    """An absolute allowance for results below the dtype's smallest normal number.

    A step whose result is subnormal may be flushed to zero (XLA does so on CPU), an error up
    to `tiny` that no relative bound sees. An element is summed from at most rows + the widths
    of every layer such steps, each implementation may flush them: twice that many tinies."""
    rows = int(np.prod(np.shape(result["output"])[:-1], dtype=np.int64))
    steps = rows + sum(sum(np.shape(dW)) for dW in result["dW"])
    return 2.0 * steps * float(np.finfo(dtype).tiny)


def odd_one_out(names: list[str], rels: dict, idx: tuple, tol: float) -> str | None:
    """The framework that disagrees with every other at element idx while they all agree, or None.

    rels: {(a, b): array} for every pair, compared with tol (compare passes each element's
    share of its allowance, and 1). Needs three frameworks or more: with two, either could be
    the wrong one."""
    if len(names) < 3:
        return None
    for odd in names:
        others_agree = all(rel[idx] <= tol for (a, b), rel in rels.items() if odd not in (a, b))
        odd_differs = all(rel[idx] > tol for (a, b), rel in rels.items() if odd in (a, b))
        if others_agree and odd_differs:
            return odd
    return None


def mean_abs(a) -> float:
    """The book's per-layer figure: mean |a| over every element, as a Python float (computed in float64)."""
    return float(np.mean(np.abs(np.asarray(a, np.float64))))


def layer_means(arrays) -> list[float]:
    """mean_abs of each layer's array, full precision."""
    return [mean_abs(g) for g in arrays]


def book_check(results: dict[str, dict], book_means, rtol: float) -> dict:
    """Each framework's per-layer mean |dL/dW| against the book's printed values."""
    worst = 0.0
    for result in results.values():
        ours = layer_means(result["dW"])
        worst = max([worst] + [abs(o - e) / abs(e) for o, e in zip(ours, book_means)])
    return {"values": list(book_means), "max_rel_diff": worst, "rtol": rtol, "match": worst <= rtol}

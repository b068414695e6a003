"""Comparing implementations element by element: one comparator, interchangeable allowances.

The verdict never looks at means: the book's per-layer mean |grad| cannot see a sign flip or a
transposed weight, and a fixed absolute tolerance cannot serve gradients that differ in size by
orders of magnitude. Every element of every tensor is compared, between every pair of
implementations, against an allowance; `elementwise` walks the tensors in backprop order and
names the first element over its allowance, whichever allowance it is given:

    fixed     |a - b| / max(|a|, |b|, floor) <= TOLERANCE[dtype], the rule sized for the book's
              one-row network (exercises and small checks that measure nothing)
    measured  |a - b| <= 2 u bound(e) + an underflow floor, bound(e) the element's rounding-error
              bound measured by shortcut_gradients.verdict.bound (what compare.py uses: each
              implementation may be off by the bound, in opposite directions)
    oracle    |a - d| <= tol |d| + error, against the finite differences (verdict/oracle.py)

In the fixed rule, floor = NOISE_ULPS * eps * max|T| / tol, max|T| the tensor's largest magnitude
over both implementations: an element far smaller than its tensor, formed by cancelling sums of
terms the size of the tensor, carries rounding noise of a few ulps *of the tensor*, whatever its
own size. docs/tolerances.md derives the bound, measures both rules at size and gives the figures
behind TOLERANCE and NOISE_ULPS (python -m studies.survey).
"""

import numpy as np

from shortcut_gradients.verdict import contract

# The fixed rule's relative tolerance per dtype. float32's sits between the frameworks' rounding
# noise on the book network and the smallest GELU-form mix-up there, with room on either side;
# float64's is the agreement the project promises, far above the noise, far below any real bug.
TOLERANCE = {"float32": 4e-6, "float64": 1e-12}

# Rounding noise allowed on an element, in ulps of its tensor's largest element: a margin over
# the worst seen between frameworks, and far below the GELU-form mix-up (docs/tolerances.md).
NOISE_ULPS = 32


def relative_error(a, b, tol: float, eps: float) -> np.ndarray:
    """|a - b| / max(|a|, |b|, floor) elementwise, in float64; 0 where a and b are both 0.

    a, b: arrays of one shape, any float dtype: the arithmetic is float64's (each ufunc casts its
    inputs as it goes, so no float64 copy of either is made). floor = NOISE_ULPS * eps * max|T| /
    tol: at the floor, an error of NOISE_ULPS ulps of the tensor's largest element is exactly the
    tolerance.
    """
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: such elements are marked below
        diff = np.subtract(a, b, dtype=np.float64)
        diff = np.abs(diff, out=diff if diff.ndim else None)
        scale = np.abs(a, dtype=np.float64)
        scale = np.maximum(scale, np.abs(b), out=scale if scale.ndim else None)  # |b| exact in its own dtype
    # a - b is finite only where a and b both are (or overflowed: the careful way below then)
    everywhere = not diff.size or bool(np.isfinite(diff.max()))  # the usual case, with no masked copies to make
    finite = None if everywhere else np.isfinite(a) & np.isfinite(b)
    size = scale.max() if everywhere and scale.size else scale[finite].max() if finite is not None and finite.any() else 0.0
    floor = NOISE_ULPS * eps * size / tol
    scale = np.maximum(scale, floor, out=scale if scale.ndim else None)
    if everywhere and floor > 0 and diff.ndim:  # every scale is past 0
        return np.divide(diff, scale, out=diff)
    if everywhere:
        return np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
    rel = np.divide(diff, scale, out=np.zeros_like(diff), where=finite & (scale > 0))
    # A NaN or inf is never agreement, not even with another NaN: it means the computation broke.
    rel[~finite] = np.inf
    return rel


def ratio(diff: np.ndarray, scale: np.ndarray, scale_positive: bool = False, in_place: bool = False) -> np.ndarray:
    """diff / scale elementwise: 0 where diff is 0, inf where only scale is, and inf where diff is
    NaN or inf (a value that broke never agrees, not even with another NaN). scale_positive: the
    caller knows every scale is past 0, and a diff whose elements are all finite is divided as it
    is (into diff's own array where in_place: the caller does not need diff again)."""
    if scale_positive and diff.ndim and diff.size and np.isfinite(diff.max()):
        return np.divide(diff, scale, out=diff if in_place else None)
    broken = ~np.isfinite(diff)
    out = np.divide(diff, scale, out=np.where(diff > 0, np.inf, 0.0), where=~broken & (scale > 0))
    out[broken] = np.inf
    return out


# An allowance: (tensor name, a, b), arrays of one shape as the implementations gave them (each
# allowance works in float64) -> (used, rel, allowed), each
# element's share of its allowance (> 1: they differ), its relative difference as a mismatch
# reports it, and the allowance as a relative difference (rel and allowed: arrays, or AtElement
# where only single elements are read); or None where it does not compare that tensor.


def fixed(dtype: str):
    """The fixed rule: relative_error against TOLERANCE[dtype]."""
    tol, eps = TOLERANCE[dtype], float(np.finfo(dtype).eps)

    def allowance(tname, a, b):
        rel = relative_error(a, b, tol, eps)
        return rel / tol, rel, np.full(rel.shape, tol)

    return allowance


def measured(bound: dict, dtype: str, floor: float):
    """Twice each element's measured rounding bound (in units of u) plus the underflow floor.
    Compares the tensors the bound covers: dy and dz only where the measurement gave them too."""
    u = float(np.finfo(dtype).eps) / 2  # the unit roundoff: round to nearest is off by at most half an ulp
    bounds = {tname: a for tname, _, a in contract.tensors(bound)}
    allowances = {}  # {tensor name: (2 u bound + floor, whether all of it is past 0)}, made once for every pair

    def allowance(tname, a, b):
        if tname not in bounds:
            return None
        bound_of = np.asarray(bounds[tname])
        if tname not in allowances:
            allowances.clear()  # the tensors come one at a time: the last one's is not needed again
            allowed = 2 * u * bound_of + floor
            allowances[tname] = allowed, bool(allowed.size and allowed.min() > 0)
        allowed, positive = allowances[tname]
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.subtract(a, b, dtype=np.float64)
            diff = np.abs(diff, out=diff if diff.ndim else None)
            used = ratio(diff, np.broadcast_to(allowed, diff.shape), positive and allowed.shape == diff.shape, in_place=True)

        # rel and allowed are read at one element only (a mismatch, the largest): worked out there,
        # not as two more arrays of the tensor's size for every pair.
        def scale_at(idx):
            return np.maximum(np.abs(np.float64(a[idx])), np.abs(np.float64(b[idx])))

        def rel_at(idx):
            with np.errstate(invalid="ignore", over="ignore"):
                diff_at = np.abs(np.subtract(a[idx], b[idx], dtype=np.float64))
            return float(ratio(np.asarray(diff_at), np.asarray(scale_at(idx))))

        def allowed_at(idx):
            allowed_abs, scale = 2 * u * np.broadcast_to(bound_of, np.shape(a))[idx] + floor, scale_at(idx)
            return float(allowed_abs / scale) if scale > 0 else np.inf  # a subnormal scale: inf

        return used, AtElement(rel_at), AtElement(allowed_at)

    return allowance


class AtElement:
    """An allowance's rel or allowed where a comparison reads it at one element only: `f(index)`."""

    def __init__(self, f):
        self.f = f

    def __getitem__(self, idx):
        return self.f(idx)


def elementwise(listed: dict, pairs: list, order: list, allowance):
    """The one comparison loop: every pair on every tensor of `order`, in that (backprop) order.

    listed: {name: {tensor name: (layer, array)}}, each array given to the allowance as it is (in
    its own dtype: no float64 copy of a batch-sized tensor); pairs: [(a, b)], compared where both
    give the tensor and the allowance covers it. Yields (tensor name, layer, {(a, b): (used, rel,
    allowed)}, first, {name: its array of the tensor}): first is None while every element so far agrees, then the first element
    over its allowance: tensor, layer, index, frameworks, values, rel_diff and allowed (the same
    ratio's allowance there).
    """
    first = None
    for tname in order:
        layer = next(entries[tname][0] for entries in listed.values() if tname in entries)
        values = {name: np.asarray(entries[tname][1]) for name, entries in listed.items() if tname in entries}
        shares = {}
        for a, b in pairs:
            if tname not in listed[a] or tname not in listed[b]:
                continue
            va, vb = values[a], values[b]
            if va.shape != vb.shape:
                raise ValueError(f"{tname}: {a} gives shape {va.shape}, {b} gives {vb.shape}")
            if (share := allowance(tname, va, vb)) is None:
                continue
            shares[a, b] = used, rel, allowed = share
            if first is None and used.size and used.max() > 1:
                idx = np.unravel_index(int(np.argmax(used)), used.shape)
                first = {
                    "tensor": tname,
                    "layer": layer,
                    "index": [int(i) for i in idx],
                    "frameworks": [a, b],
                    "values": [float(va[idx]), float(vb[idx])],
                    "rel_diff": float(rel[idx]),
                    "allowed": float(allowed[idx]),
                }
        yield tname, layer, shares, first, values


def listing(result: dict, intermediates: bool = True) -> dict:
    """{tensor name: (layer, array)} in contract.tensors order, as elementwise takes them."""
    return {t: (layer, a) for t, layer, a in contract.tensors(result, intermediates)}


def tensors(result: dict) -> list[tuple[str, int | None, np.ndarray]]:
    """(name, layer, array) in the order backprop produces them: loss and output first,
    then the last layer's weight and bias gradients (and a pre-LN norm's scale and shift) back
    to the first, then the input's; shortcut_gradients.verdict.contract.tensors without dy and dz."""
    return contract.tensors(result, intermediates=False)


def compare(results: dict[str, dict], dtype: str, bound: dict | None = None) -> dict:
    """Compare every pair of implementations on every element of every tensor.

    results: {framework name: loss_and_grads(...) result}. bound: each element's rounding-error
    bound in units of u (shortcut_gradients.verdict.bound.measure); with it, the `measured`
    allowance, without it the `fixed` rule. dy and dz (docs/contract.md) are compared where a pair
    gives them, so that a wrong step is named before its dW.

    Returns "tolerance" (TOLERANCE[dtype], the fixed rule's), "max_rel_diff" {tensor: worst
    relative_error over all pairs, floored at the tensor's size: a description, whichever rule
    decides}, "layer_max_rel_diff" [per layer, weight and bias together], "room" {tensor: the
    largest share of its allowance any element used, over all pairs: <= 1 agrees},
    "allowed_rel_diff" {tensor: the relative difference allowed at its largest element},
    "first_mismatch" (None, or `elementwise`'s, with odd_one_out: the one framework that
    disagrees with all the others there, if there is one) and "agree".
    """
    tol, eps = TOLERANCE[dtype], float(np.finfo(dtype).eps)
    names = list(results)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    listed = {name: listing(result) for name, result in results.items()}
    order = max((list(v) for v in listed.values()), key=len)
    first_result = next(iter(results.values()))
    rule = fixed(dtype) if bound is None else measured(bound, dtype, underflow_floor(first_result, dtype))
    max_rel, layer_max, room, allowed_rel = {}, [0.0] * len(first_result["dW"]), {}, {}
    first = None
    for tname, layer, shares, first, values in elementwise(listed, pairs, order, rule):
        if not shares and tname.endswith((".dy", ".dz")):
            continue  # a step no pair gives (with one framework, the tensors are listed at 0)
        if first is not None and first["tensor"] == tname:
            involved = [name for name in names if tname in listed[name]]
            used = {pair: share[0] for pair, share in shares.items()}
            first["odd_one_out"] = odd_one_out(involved, used, tuple(first["index"]), 1.0)
        worst, worst_used = 0.0, 0.0
        for (a, b), (used, rel, _) in shares.items():
            if bound is not None:  # the description is the floored relative error under either rule
                rel = relative_error(values[a], values[b], tol, eps)
            if rel.size:
                worst, worst_used = max(worst, float(rel.max())), max(worst_used, float(used.max()))
        max_rel[tname], room[tname] = worst, worst_used
        # At the first compared pair's values, under the last pair's allowance.
        shown = values[next(iter(shares), (names[0],))[0]]
        allowed_rel[tname] = largest_element_allowance(shown, list(shares.values())[-1][2] if shares else None)
        if layer is not None and not tname.endswith((".dy", ".dz")):  # the layer's figure: its dW and db
            layer_max[layer] = max(layer_max[layer], worst)
    return {
        "tolerance": tol,
        "noise_floor_ulps": NOISE_ULPS,
        "rule": "fixed" if bound is None else "bound",
        "max_rel_diff": max_rel,
        "layer_max_rel_diff": layer_max,
        "room": room,
        "allowed_rel_diff": allowed_rel,
        "first_mismatch": first,
        "agree": first is None,
    }


def largest_element_allowance(values, allowed) -> float:
    """The allowed relative difference at the tensor's largest finite element (0 for an empty tensor)."""
    values = np.abs(np.asarray(values))  # exact in its own dtype: the same largest element as in float64
    if allowed is None or values.size == 0:
        return 0.0
    if np.isfinite(values.max()):  # the usual case: every element finite (a NaN would be the max)
        return float(allowed[np.unravel_index(int(np.argmax(values)), values.shape)])
    if not np.isfinite(values).any():
        return 0.0
    idx = np.unravel_index(int(np.argmax(np.where(np.isfinite(values), values, -1.0))), values.shape)
    return float(allowed[idx])


def underflow_floor(result: dict, dtype: str) -> float:
    """An absolute allowance for results below the dtype's smallest normal number.

    A step whose result is subnormal may be flushed to zero (XLA does so on CPU), an error up
    to `tiny` that no relative bound sees. An element is summed from at most rows + the widths
    of every layer such steps, each implementation may flush them: twice that many tinies."""
    rows = int(np.prod(np.shape(result["output"])[:-1], dtype=np.int64))
    steps = rows + sum(sum(np.shape(dW)) for dW in result["dW"])
    return 2.0 * steps * float(np.finfo(dtype).tiny)


def odd_one_out(names: list[str], shares: dict, idx: tuple, limit: float) -> str | None:
    """The framework that disagrees with every other at element idx while they all agree, or None.

    shares: {(a, b): array} for every pair, compared with limit (compare passes each element's
    share of its allowance, and 1). Needs three frameworks or more: with two, either could be
    the wrong one."""
    if len(names) < 3:
        return None
    for odd in names:
        others_agree = all(s[idx] <= limit for (a, b), s in shares.items() if odd not in (a, b))
        odd_differs = all(s[idx] > limit for (a, b), s in shares.items() if odd in (a, b))
        if others_agree and odd_differs:
            return odd
    return None


def mean_abs(a) -> float:
    """The book's per-layer figure: mean |a| over every element, as a Python float (computed in float64)."""
    return float(np.mean(np.abs(np.asarray(a, np.float64))))


def layer_means(arrays) -> list[float]:
    """mean_abs of each layer's array, full precision."""
    return [mean_abs(g) for g in arrays]


def against_book(results: dict[str, dict], book_means, rtol: float) -> dict:
    """Each framework's per-layer mean |dL/dW| against the book's printed values."""
    worst = 0.0
    for result in results.values():
        ours = layer_means(result["dW"])
        worst = max([worst] + [abs(o - e) / abs(e) for o, e in zip(ours, book_means)])
    return {"values": list(book_means), "max_rel_diff": worst, "rtol": rtol, "match": worst <= rtol}

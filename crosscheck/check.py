"""Comparing implementations element by element.

The verdict never looks at means: the book's per-layer mean |grad| cannot see a sign flip
or a transposed weight, and the unshortcut gradients are ~1e-4, so a fixed absolute
tolerance would let real bugs through. Every element of every tensor is compared with its
relative error |a - b| / max(|a|, |b|) against a per-dtype tolerance, with one floor:

    rel_err = |a - b| / max(|a|, |b|, floor)      floor = NOISE_ULPS * eps * max|T| / tol

where max|T| is the largest magnitude in that tensor (over both implementations). For an
element near the size of its tensor this is the plain relative error. An element far
smaller than its tensor, formed by cancelling sums of terms the size of the tensor, carries
rounding noise of a few ulps *of the tensor*, whatever its own size: on the seed's
(2, 3, 25) network a float32 output element is -3.7e-8 in torch and -6.7e-8 in JAX (plain
relative error 0.44) and a float64 one differs by 6.8e-10 relative; both are rounding noise.
The floor lets such an element differ by at most NOISE_ULPS ulps of its tensor's largest
element, which is still scaled to the tensor (1e-4 gradients get a 1e-4-sized floor), so a
sign flip, a transposed weight or a wrong GELU form is still caught (tests/test_agreement.py).

Deeper random networks cancel harder: an element can be a sum of terms 20 to 120 times the
largest element of its tensor (docs/faults.md). So compare.py also passes `magnitude`, each
element's measured size of the terms it is summed from (crosscheck.sensitivity.sensitivity: how
far it moves when every input is nudged by 2^-30 relative, in float64), and the floor is
taken from the larger of the two. All catalogued faults are still caught with it
(tests/test_faults.py runs them through compare.py).
"""

import numpy as np

# Per-dtype tolerance on the relative error; see README "Tolerances" for the measurements.
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


def relative_error(a, b, tol: float, eps: float, magnitude=None) -> np.ndarray:
    """|a - b| / max(|a|, |b|, floor) elementwise, in float64; 0 where a and b are both 0.

    floor = NOISE_ULPS * eps * max|T| / tol: at the floor, an error of NOISE_ULPS ulps of the
    tensor's largest element is exactly the tolerance. With `magnitude` (the element's
    measured size of the terms it is summed from: crosscheck.sensitivity.sensitivity), the floor is taken
    per element from max(max|T|, magnitude).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf: such elements are marked below
        diff, scale = np.abs(a - b), np.maximum(np.abs(a), np.abs(b))
    finite = np.isfinite(a) & np.isfinite(b)
    size = scale[finite].max() if finite.any() else 0.0
    if magnitude is not None:
        size = np.maximum(size, np.asarray(magnitude, np.float64))
    floor = NOISE_ULPS * eps * size / tol
    scale = np.maximum(scale, floor)
    rel = np.divide(diff, scale, out=np.zeros_like(diff), where=finite & (scale > 0))
    # A NaN or inf is never agreement, not even with another NaN: it means the computation broke.
    rel[~finite] = np.inf
    return rel


def tensors(result: dict) -> list[tuple[str, int | None, np.ndarray]]:
    """(name, layer, array) in the order backprop produces them: loss and output first,
    then the last layer's weight and bias gradients back to the first, then the input's."""
    items = [("loss", None, result["loss"]), ("output", None, result["output"])]
    for i in reversed(range(len(result["dW"]))):
        items.append((f"layers.{i}.0.weight", i, result["dW"][i]))
        items.append((f"layers.{i}.0.bias", i, result["db"][i]))
    items.append(("input", None, result["dx"]))
    return items


def compare(results: dict[str, dict], dtype: str, magnitude: dict | None = None) -> dict:
    """Compare every pair of implementations on every element of every tensor.

    results: {framework name: loss_and_grads(...) result}; magnitude: optional, a
    `crosscheck.sensitivity.sensitivity(...)` result, to floor each element at its own measured conditioning.
    Returns "max_rel_diff" {tensor name: worst over all pairs}, "layer_max_rel_diff" [per
    layer, weight and bias together], "first_mismatch" (None, or where the first tensor in
    backprop order exceeds the tolerance: tensor, layer, index, frameworks, values, and
    odd_one_out: the one framework that disagrees with all the others there, if there is
    one) and "agree".
    """
    tol, eps = TOLERANCE[dtype], float(np.finfo(dtype).eps)
    names = list(results)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    n_layers = len(next(iter(results.values()))["dW"])
    max_rel, layer_max = {}, [0.0] * n_layers
    first = None
    listed = {name: tensors(result) for name, result in results.items()}
    sizes = tensors(magnitude) if magnitude is not None else None
    for k, (tname, layer, _) in enumerate(listed[names[0]]):
        worst = 0.0
        rels = {}
        for a, b in pairs:
            va, vb = listed[a][k][2], listed[b][k][2]
            if np.shape(va) != np.shape(vb):
                raise ValueError(f"{tname}: {a} gives shape {np.shape(va)}, {b} gives {np.shape(vb)}")
            rel = rels[a, b] = relative_error(va, vb, tol, eps, sizes[k][2] if sizes else None)
            if rel.size and rel.max() > worst:
                worst = float(rel.max())
            if first is None and rel.size and rel.max() > tol:
                idx = np.unravel_index(int(np.argmax(rel)), rel.shape)
                first = {
                    "tensor": tname,
                    "layer": layer,
                    "index": [int(i) for i in idx],
                    "frameworks": [a, b],
                    "values": [float(np.asarray(va)[idx]), float(np.asarray(vb)[idx])],
                    "rel_diff": float(rel[idx]),
                }
        if first is not None and first["tensor"] == tname:
            first["odd_one_out"] = odd_one_out(names, rels, tuple(first["index"]), tol)
        max_rel[tname] = worst
        if layer is not None:
            layer_max[layer] = max(layer_max[layer], worst)
    return {
        "tolerance": tol,
        "noise_floor_ulps": NOISE_ULPS,
        "max_rel_diff": max_rel,
        "layer_max_rel_diff": layer_max,
        "first_mismatch": first,
        "agree": first is None,
    }


def odd_one_out(names: list[str], rels: dict, idx: tuple, tol: float) -> str | None:
    """The framework that disagrees with every other at element idx while they all agree, or None.

    rels: {(a, b): relative_error array} for every pair. Needs three frameworks or more:
    with two, either could be the wrong one."""
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

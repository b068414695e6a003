"""Comparing implementations element by element.

The verdict never looks at means: the book's per-layer mean |grad| cannot see a sign flip
or a transposed weight, and the unshortcut gradients are ~1e-4, so an absolute tolerance
would let real bugs through. Every element of every tensor is compared with the relative
error |a - b| / max(|a|, |b|) (0 when both are 0) against a per-dtype tolerance.
"""

import numpy as np

# Per-dtype tolerance on the elementwise relative error; see README "Tolerances" for the
# measurements. float32: the three frameworks differ by float noise, at most 7.7e-7 on the
# book network (tanh, both shortcut settings), while using exact GELU where tanh was meant
# differs by 8.2e-6 or more there; 4e-6 sits between the two with room on either side.
# float64: the frameworks agree to about 1e-15 on the book network; 1e-12 is the agreement
# the project promises, a thousand times the noise and far below any real bug.
TOLERANCE = {"float32": 4e-6, "float64": 1e-12}


def relative_error(a, b) -> np.ndarray:
    """|a - b| / max(|a|, |b|) elementwise, computed in float64; 0 where both are 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff, scale = np.abs(a - b), np.maximum(np.abs(a), np.abs(b))
    return np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)


def tensors(result: dict) -> list[tuple[str, int | None, np.ndarray]]:
    """(name, layer, array) in the order backprop produces them: loss and output first,
    then the last layer's weight and bias gradients back to the first, then the input's."""
    items = [("loss", None, result["loss"]), ("output", None, result["output"])]
    for i in reversed(range(len(result["dW"]))):
        items.append((f"layers.{i}.0.weight", i, result["dW"][i]))
        items.append((f"layers.{i}.0.bias", i, result["db"][i]))
    items.append(("input", None, result["dx"]))
    return items


def compare(results: dict[str, dict], dtype: str) -> dict:
    """Compare every pair of implementations on every element of every tensor.

    results: {framework name: loss_and_grads(...) result}. Returns
    "max_rel_diff" {tensor name: worst over all pairs}, "layer_max_rel_diff" [per layer,
    weight and bias together], "first_mismatch" (None, or where the first tensor in
    backprop order exceeds the tolerance: tensor, layer, index, frameworks, values) and
    "agree".
    """
    tol = TOLERANCE[dtype]
    names = list(results)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    n_layers = len(next(iter(results.values()))["dW"])
    max_rel, layer_max = {}, [0.0] * n_layers
    first = None
    listed = {name: tensors(result) for name, result in results.items()}
    for k, (tname, layer, _) in enumerate(listed[names[0]]):
        worst = 0.0
        for a, b in pairs:
            va, vb = listed[a][k][2], listed[b][k][2]
            if np.shape(va) != np.shape(vb):
                raise ValueError(f"{tname}: {a} gives shape {np.shape(va)}, {b} gives {np.shape(vb)}")
            rel = relative_error(va, vb)
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
        max_rel[tname] = worst
        if layer is not None:
            layer_max[layer] = max(layer_max[layer], worst)
    return {
        "tolerance": tol,
        "max_rel_diff": max_rel,
        "layer_max_rel_diff": layer_max,
        "first_mismatch": first,
        "agree": first is None,
    }


def mean_abs(arrays) -> list[float]:
    """The book's per-layer figure: mean |g| of each array, as Python floats (full precision)."""
    return [float(np.mean(np.abs(np.asarray(g, np.float64)))) for g in arrays]


def book_check(results: dict[str, dict], book_means, rtol: float) -> dict:
    """Each framework's per-layer mean |dL/dW| against the book's printed values."""
    worst = 0.0
    for result in results.values():
        ours = mean_abs(result["dW"])
        worst = max([worst] + [abs(o - e) / abs(e) for o, e in zip(ours, book_means)])
    return {"values": list(book_means), "max_rel_diff": worst, "rtol": rtol, "match": worst <= rtol}

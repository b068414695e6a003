"""What every implementation's loss_and_grads returns, checked: docs/contract.md in code.

    loss_and_grads(params, x, target, *, use_shortcut, gelu_form, dtype[, norm="pre"]) -> {
        "loss": (),  "output": (..., d_out),  "dx": (..., d_in),
        "dW": [(d_out, d_in) per layer],  "db": [(d_out,) per layer],
        optional, both or neither: "dy": [(..., d_out) per layer], "dz": [(..., d_out) per layer],
        pre-LN only (params (W, b, scale, shift) per layer): "dscale", "dshift": [(d_in,) per layer],
    }

every array in the requested dtype. `validate` turns a result into NumPy arrays or raises
InputError with one line naming the implementation, the key and what was expected.
`tensors` lists a result in backprop order with dy and dz folded in, so that a comparison
names the first step that goes wrong, not only the first parameter.
"""

from collections.abc import Mapping

import numpy as np

from shortcut_gradients.plumbing.config import InputError

REQUIRED = ("loss", "output", "dW", "db", "dx")
INTERMEDIATES = ("dy", "dz")  # dL/d each layer's output y, and its pre-activation z
NORM = ("dscale", "dshift")  # pre-LN's: dL/d each layer's LayerNorm scale and shift, required then
PER_LAYER = ("dW", "db", "dy", "dz", *NORM)
MEANING = {
    "loss": "the mean squared error, a scalar",
    "output": "the network's output",
    "dx": "dL/d input",
    "dW": "dL/dW, torch's layout (d_out, d_in)",
    "db": "dL/db",
    "dy": "dL/d the layer's output y",
    "dz": "dL/d the layer's pre-activation z = x W^T + b",
    "dscale": "dL/d the layer's LayerNorm scale (d_in,)",
    "dshift": "dL/d the layer's LayerNorm shift (d_in,)",
}


def normalise(name: str, result, n_layers: int, norm: bool = False) -> dict:
    """The result's keys and lists checked and each value made a NumPy array; shapes not yet checked.

    norm: the network is pre-LN, so "dscale" and "dshift" are required too (and kept); without
    it they are dropped like any other key. A Python number (float or int) has no dtype of its own: it is kept as np.float64 here and
    `validate` casts it to the requested dtype.
    """
    if not isinstance(result, Mapping):
        raise InputError(
            f"{name}: loss_and_grads returned {type(result).__name__}; expected a dict with keys "
            f"{', '.join(REQUIRED)} (docs/contract.md)"
        )
    required = REQUIRED + NORM if norm else REQUIRED
    for key in required:
        if key not in result:
            raise InputError(f"{name}: the result has no {key!r} ({MEANING[key]}); expected keys {', '.join(required)}")
    present = [key for key in INTERMEDIATES if key in result]
    if len(present) == 1:
        other = INTERMEDIATES[1 - INTERMEDIATES.index(present[0])]
        raise InputError(f"{name}: the result has {present[0]!r} but no {other!r}; return both dy and dz, or neither")
    out = {}
    for key in required + tuple(present):
        value = result[key]
        if key in PER_LAYER:
            if not isinstance(value, list | tuple):
                raise InputError(
                    f"{name}: {key!r} is {type(value).__name__}; expected a list of {n_layers} arrays, one per layer"
                )
            if len(value) != n_layers:
                raise InputError(f"{name}: {key!r} has {len(value)} entries; expected {n_layers}, one per layer")
            out[key] = [_as_array(name, f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            out[key] = _as_array(name, key, value)
    return out


def _as_array(name: str, label: str, value) -> np.ndarray:
    if isinstance(value, bool) or value is None:
        raise InputError(f"{name}: {label!r} is {value!r}; expected an array ({MEANING[label.split('[')[0]]})")
    try:
        array = np.asarray(value)
    except Exception as err:  # a torch tensor that requires grad, a ragged list, ...
        raise InputError(
            f"{name}: {label!r} is not convertible to a NumPy array ({type(err).__name__}: {err})"
        ) from None
    if array.dtype.kind not in "fiu":
        raise InputError(f"{name}: {label!r} has dtype {array.dtype}; expected an array of floats")
    return array


def expected_shapes(params, x) -> dict:
    """{key: shape, or a list of shapes per layer} for params [(W (d_out, d_in), b[, scale, shift])] and input x."""
    x_shape = tuple(np.shape(x))
    batch = x_shape[:-1]
    outs = [np.shape(layer[0])[0] for layer in params]
    ins = [np.shape(layer[0])[1] for layer in params]
    return {
        "loss": (),
        "output": batch + (outs[-1],),
        "dx": x_shape,
        "dW": [tuple(np.shape(layer[0])) for layer in params],
        "db": [(d_out,) for d_out in outs],
        "dy": [batch + (d_out,) for d_out in outs],
        "dz": [batch + (d_out,) for d_out in outs],
        "dscale": [(d_in,) for d_in in ins],
        "dshift": [(d_in,) for d_in in ins],
    }


def is_pre_ln(params) -> bool:
    """Whether params are a pre-LN network's: (W, b, scale, shift) per layer, not (W, b)."""
    return len(params[0]) == 4


def validate(name: str, result, params, x, dtype, reference: dict | None = None) -> dict:
    """`result` as NumPy arrays, or InputError with one line naming `name`, the key and what was expected.

    Checks the keys (loss, output, dW, db, dx; dy and dz optional, both or neither; dscale and
    dshift too when params are pre-LN's, (W, b, scale, shift) per layer), each
    per-layer list's length, every shape and dtype, and, given a `reference` result (already
    validated), that no value is NaN or inf where the reference's is finite.
    """
    dtype = np.dtype(dtype)
    out = normalise(name, result, len(params), norm=is_pre_ln(params))
    shapes = expected_shapes(params, x)
    for key, value in out.items():
        if isinstance(value, list):
            for i, array in enumerate(value):
                out[key][i] = _check(name, f"{key}[{i}]", result[key][i], array, shapes[key][i], dtype)
        else:
            out[key] = _check(name, key, result[key], value, shapes[key], dtype)
    if reference is not None:
        references = {tname: array for tname, _, array in tensors(reference)}
        for tname, _, array in tensors(out):
            ref = references.get(tname)
            if ref is None or np.shape(ref) != array.shape:
                continue
            broken = ~np.isfinite(array) & np.isfinite(ref)
            if broken.any():
                idx = tuple(int(i) for i in np.argwhere(broken)[0])
                raise InputError(
                    f"{name}: {label(tname)}{list(idx) if idx else ''} is {array[idx]} where the reference's is "
                    f"{np.asarray(ref)[idx]:.6g}; expected a finite value"
                )
    return out


def _check(name: str, label: str, raw, array: np.ndarray, shape: tuple, dtype: np.dtype) -> np.ndarray:
    if array.shape != shape:
        hint = ""
        if len(shape) == 2 and array.shape == shape[::-1]:
            hint = " (yours is transposed)"
        elif label.startswith(("db", "dscale", "dshift")) and array.shape[-1:] == shape and array.ndim > 1:
            hint = " (sum over every leading dimension)"
        raise InputError(
            f"{name}: {label!r} has shape {array.shape}; expected {shape}{hint} ({MEANING[label.split('[')[0]]})"
        )
    if type(raw) in (float, int):  # not np.float64, a subclass of float that has a dtype
        return array.astype(dtype)  # a Python number carries no dtype: taken as the requested one
    if array.dtype != dtype:
        raise InputError(f"{name}: {label!r} has dtype {array.dtype}; expected {dtype}, the requested dtype")
    return array


def label(tname: str) -> str:
    """'layers.2.0.weight' -> 'dW[2]', 'layers.2.dy' -> 'dy[2]', 'norms.2.scale' -> 'dscale[2]', 'input' -> 'dx':
    the result's own keys."""
    parts = tname.split(".")
    if parts[0] not in ("layers", "norms"):
        return {"input": "dx"}.get(tname, tname)
    key = {"weight": "dW", "bias": "db", "scale": "dscale", "shift": "dshift"}.get(parts[-1], parts[-1])
    return f"{key}[{parts[1]}]"


def tensors(result: dict, intermediates: bool = True) -> list[tuple[str, int | None, np.ndarray]]:
    """(name, layer, array) in the order backprop produces them, dy and dz folded in where present.

    loss, output; then per layer, last to first: layers.{i}.dy (dL/d its output), layers.{i}.dz
    (dL/d its z), layers.{i}.0.weight, layers.{i}.0.bias, and in a pre-LN result (one with
    dscale and dshift) norms.{i}.scale, norms.{i}.shift, since the norm comes before the Linear
    in the forward; then input. Without dy and dz (or with intermediates=False) and without a
    norm this is exactly shortcut_gradients.verdict.check.tensors.
    """
    with_steps = intermediates and all(key in result for key in INTERMEDIATES)
    with_norm = all(key in result for key in NORM)
    items = [("loss", None, result["loss"]), ("output", None, result["output"])]
    for i in reversed(range(len(result["dW"]))):
        if with_steps:
            items.append((f"layers.{i}.dy", i, result["dy"][i]))
            items.append((f"layers.{i}.dz", i, result["dz"][i]))
        items.append((f"layers.{i}.0.weight", i, result["dW"][i]))
        items.append((f"layers.{i}.0.bias", i, result["db"][i]))
        if with_norm:
            items.append((f"norms.{i}.scale", i, result["dscale"][i]))
            items.append((f"norms.{i}.shift", i, result["dshift"][i]))
    items.append(("input", None, result["dx"]))
    return items


def intermediates(result: dict) -> list[tuple[str, int, np.ndarray]]:
    """Only the dy and dz entries of `tensors(result)`, in backprop order ([] when the result has none)."""
    return [item for item in tensors(result) if item[0].endswith((".dy", ".dz"))]

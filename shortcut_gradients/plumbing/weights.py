"""Weights, input and target: the seeded defaults and the safetensors file format.

A weights file holds the book's state_dict names in torch's layout,
`layers.{i}.0.weight` (d_out, d_in) and `layers.{i}.0.bias` (d_out,), for a pre-LN network
also `norms.{i}.scale` and `norms.{i}.shift` (d_in,) (impl_torch's names), and optionally
`input` (..., sizes[0]) and `target` (broadcastable to the output). A layer's parameters are
(W, b), or for pre-LN (W, b, scale, shift).
"""

import re
from pathlib import Path

import numpy as np

from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, InputError
from shortcut_gradients.plumbing.files import write_atomically

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "book_seed123.safetensors"
TENSOR_NAME = re.compile(r"layers\.(\d+)\.0\.(weight|bias)")
NORM_NAME = re.compile(r"norms\.(\d+)\.(scale|shift)")
FILE_DTYPES = (np.float32, np.float64)


def default_input(d_in: int) -> np.ndarray:
    """(1, d_in) evenly spaced from 1 to -1: the book's [[1., 0., -1.]] when d_in is 3."""
    return np.linspace(1.0, -1.0, d_in).reshape(1, d_in)


def default_target(d_out: int) -> np.ndarray:
    """(1, d_out) zeros: the book's [[0.]] when d_out is 1."""
    return np.zeros((1, d_out))


def seeded_params(layer_sizes, seed: int, norm: str = "none") -> list:
    """The weights torch.manual_seed(seed) then the book's nn.Linear layers give, as NumPy.

    The book's configuration comes from the committed fixture, so that it needs no torch
    (tests/test_weights.py checks that torch still draws the same numbers). With norm "pre"
    each layer also gets its LayerNorm's initial scale 1 and shift 0 (d_in,): they draw
    nothing, so the Linear weights are the book's draws either way.
    """
    if norm == "pre":
        return [
            (W, b, np.ones(W.shape[1], W.dtype), np.zeros(W.shape[1], W.dtype))
            for W, b in seeded_params(layer_sizes, seed)
        ]
    if tuple(layer_sizes) == BOOK_LAYER_SIZES and seed == BOOK_SEED:
        return load_weights(FIXTURE)[0]
    try:
        import torch
    except ImportError:
        raise InputError(
            f"seeded weights for layer sizes {list(layer_sizes)} and seed {seed} are drawn by torch, "
            "which is not installed: pip install torch==2.13.0, or pass --weights FILE"
        ) from None
    torch.manual_seed(seed)
    # Same order of draws as the book's ModuleList of nn.Sequential(nn.Linear, GELU).
    layers = [torch.nn.Linear(d_in, d_out) for d_in, d_out in zip(layer_sizes[:-1], layer_sizes[1:])]
    return [(lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()) for lin in layers]


def load_weights(path, norm: str = "none") -> tuple[list, np.ndarray | None, np.ndarray | None]:
    """Read and check a weights file; returns (params, input or None, target or None).

    norm "pre": every layer needs its norms.{i}.scale and norms.{i}.shift, and params are
    (W, b, scale, shift); "none": the file must hold no norm, and params are (W, b)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.exists():
        raise InputError(f"weights file {path} not found")
    if not path.is_file():
        raise InputError(f"weights file {path} is not a file")
    try:
        tensors = load_file(path)
    except (SafetensorError, ValueError, TypeError, OSError) as err:
        raise InputError(f"{path} is not a readable safetensors file ({err})") from None

    layers: dict[int, dict[str, np.ndarray]] = {}
    norms: dict[int, dict[str, np.ndarray]] = {}
    for name, tensor in tensors.items():
        match, norm_match = TENSOR_NAME.fullmatch(name), NORM_NAME.fullmatch(name)
        if not match and not norm_match and name not in ("input", "target"):
            raise InputError(
                f"{path}: unexpected tensor {name!r}; expected layers.{{i}}.0.weight, layers.{{i}}.0.bias, "
                "norms.{i}.scale, norms.{i}.shift (pre-LN), input, target"
            )
        if norm_match and norm != "pre":
            raise InputError(
                f"{path} holds {name}, a pre-LN network's LayerNorm: pass --norm pre, or use a file without norms.*"
            )
        if tensor.dtype not in FILE_DTYPES:
            raise InputError(f"{path}: tensor {name} has dtype {tensor.dtype}; expected float32 or float64")
        if not np.all(np.isfinite(tensor)):
            raise InputError(f"{path}: tensor {name} contains NaN or inf")
        if match:
            layers.setdefault(int(match[1]), {})[match[2]] = tensor
        if norm_match:
            norms.setdefault(int(norm_match[1]), {})[norm_match[2]] = tensor
    if not layers:
        raise InputError(f"{path}: no layers.{{i}}.0.weight tensors found")

    params, d_in = [], None
    for i in range(max(layers) + 1):
        for kind in ("weight", "bias"):
            if kind not in layers.get(i, {}):
                raise InputError(
                    f"{path}: missing layers.{i}.0.{kind} (layers must run from 0 with a weight and a bias each)"
                )
        W, b = layers[i]["weight"], layers[i]["bias"]
        if W.ndim != 2 or (d_in is not None and W.shape[1] != d_in):
            want = f"(d_out, {d_in})" if d_in is not None else "(d_out, d_in)"
            raise InputError(f"{path}: layers.{i}.0.weight has shape {tuple(W.shape)}; expected {want}")
        if b.shape != (W.shape[0],):
            raise InputError(f"{path}: layers.{i}.0.bias has shape {tuple(b.shape)}; expected ({W.shape[0]},)")
        params.append((W, b, *(norm_params(path, norms.get(i, {}), i, W.shape[1]) if norm == "pre" else ())))
        d_in = W.shape[0]
    if max(norms, default=-1) >= len(params):
        raise InputError(f"{path}: norms.{max(norms)}.* but only {len(params)} layers; a norm belongs to a layer")
    return params, tensors.get("input"), tensors.get("target")


def norm_params(path, found: dict, i: int, d_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Layer i's (scale, shift) from a file, each checked to be (d_in,)."""
    for kind in ("scale", "shift"):
        if kind not in found:
            raise InputError(
                f"{path}: missing norms.{i}.{kind} (--norm pre needs a LayerNorm scale and shift per layer)"
            )
        if found[kind].shape != (d_in,):
            raise InputError(f"{path}: norms.{i}.{kind} has shape {tuple(found[kind].shape)}; expected ({d_in},)")
    return found["scale"], found["shift"]


def check_input(x: np.ndarray, layer_sizes) -> None:
    if x.ndim < 1 or x.shape[-1] != layer_sizes[0]:
        raise InputError(
            f"input has shape {tuple(x.shape)}; its last dimension must be the first layer size {layer_sizes[0]}"
        )


def check_target(target: np.ndarray, output_shape: tuple) -> None:
    try:
        fits = np.broadcast_shapes(target.shape, output_shape) == tuple(output_shape)
    except ValueError:
        fits = False
    if not fits:
        raise InputError(
            f"target has shape {tuple(target.shape)}, which does not broadcast to the output shape {tuple(output_shape)}"
        )


def save_weights(path, params, x: np.ndarray, target: np.ndarray) -> None:
    """Write params, input and target to `path` atomically: a failed write leaves no file.

    params: (W, b) per layer, or (W, b, scale, shift) for pre-LN, whose norms are saved too."""
    from safetensors.numpy import save_file

    tensors = {}
    for i, (W, b, *norm) in enumerate(params):
        tensors[f"layers.{i}.0.weight"] = np.ascontiguousarray(W)
        tensors[f"layers.{i}.0.bias"] = np.ascontiguousarray(b)
        for kind, array in zip(("scale", "shift"), norm):
            tensors[f"norms.{i}.{kind}"] = np.ascontiguousarray(array)
    tensors["input"], tensors["target"] = np.ascontiguousarray(x), np.ascontiguousarray(target)
    write_atomically(path, lambda tmp: save_file(tensors, tmp))

"""Weights, input and target: the seeded defaults and the safetensors file format.

A weights file holds the book's state_dict names in torch's layout,
`layers.{i}.0.weight` (d_out, d_in) and `layers.{i}.0.bias` (d_out,), for a pre-LN network
also `norms.{i}.scale` and `norms.{i}.shift` (d_in,) (impl_torch's names), and optionally
`input` (..., sizes[0]) and `target` (broadcastable to the output). A layer's parameters are
(W, b), or for pre-LN (W, b, scale, shift).
"""

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, InputError
from shortcut_gradients.plumbing.files import write_atomically

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "book_seed123.safetensors"
# \d is any script's digit, so these also match aliases such as layers.00 that read_layout refuses.
TENSOR_NAME = re.compile(r"layers\.(\d{1,9})\.0\.(weight|bias)")
NORM_NAME = re.compile(r"norms\.(\d{1,9})\.(scale|shift)")


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


# Every dtype a safetensors header can name, in words; only float32 and float64 are read.
SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "8-bit float (E4M3)",
    "F8_E5M2": "8-bit float (E5M2)",
    "F8_E8M0": "8-bit exponent-only float (E8M0)",
    "F6_E2M3": "6-bit float (E2M3)",
    "F6_E3M2": "6-bit float (E3M2)",
    "F4": "4-bit float",
    "C64": "complex64",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
FILE_DTYPES = {"F32": np.dtype(np.float32), "F64": np.dtype(np.float64)}
HEADER_BYTES_MAX = 100_000_000  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class Layout:
    """What a weights file holds, from its header alone (no tensor data read)."""

    layer_sizes: tuple[int, ...]  # (d_in, d_out of layer 0, ..., d_out of the last layer)
    input_shape: tuple[int, ...] | None  # (..., sizes[0]), None when the file has no input
    target_shape: tuple[int, ...] | None
    data_bytes: int  # the tensors' bytes: what reading the file allocates


def read_header(path) -> dict:
    """{name: {"dtype", "shape", "data_offsets"}} from a safetensors file's JSON header, reading only the header."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"weights file {path} not found")
    if not path.is_file():
        raise InputError(f"weights file {path} is not a file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
            if not 0 < n <= min(HEADER_BYTES_MAX, size - 8):
                raise ValueError(f"a header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n), object_pairs_hook=unique_keys)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise InputError(f"{path} is not a readable safetensors file ({err})") from None
    header.pop("__metadata__", None)
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InputError(f"{path} is not a readable safetensors file (tensor {name!r} has no valid shape)")
    return header


def unique_keys(pairs: list) -> dict:
    """A JSON object's pairs as a dict, refusing a name given twice (json.loads would keep the last one silently)."""
    result = dict(pairs)
    if len(result) < len(pairs):
        seen = set()
        twice = next(name for name, _ in pairs if name in seen or seen.add(name))
        raise ValueError(f"the header names {twice!r} twice")
    return result


def canonical(path, name: str, index: str, spelled: str, header: dict) -> int:
    """The layer index `index`, as written in tensor `name`, as an int; `spelled` is the name with it in
    plain decimal. Any other spelling (layers.00, a non-ASCII digit) is refused: two spellings of one
    index would be one layer twice, and which of them a run used would depend on the file's order."""
    i = int(index)
    if index == str(i):
        return i
    if spelled.format(i) in header:
        raise InputError(
            f"{path}: {name!r} and {spelled.format(i)!r} both name layer {i}; remove {name!r} (indices are plain decimal)"
        )
    raise InputError(f"{path}: tensor {name!r} writes layer {i} as {index!r}; name it {spelled.format(i)!r}")


def read_layout(path, norm: str = "none") -> Layout:
    """Check a weights file's names, dtypes and shapes from its header; returns its Layout.

    Nothing of the tensors' data is read, so a file too big to run is refused before it costs memory."""
    path = Path(path)
    header = read_header(path)
    layers: dict[int, dict[str, tuple[int, ...]]] = {}  # {i: {"weight": shape, "bias": shape}}
    norms: dict[int, dict[str, tuple[int, ...]]] = {}
    for name, entry in header.items():
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
        dtype = entry.get("dtype")
        if dtype not in FILE_DTYPES:
            words = SAFETENSORS_DTYPES.get(dtype, f"{dtype!r}, unknown to safetensors")
            raise InputError(f"{path}: tensor {name} has dtype {words}; expected float32 or float64 (F32 or F64)")
        shape = tuple(entry["shape"])
        if match:
            i = canonical(path, name, match[1], "layers.{}.0." + match[2], header)
            layers.setdefault(i, {})[match[2]] = shape
        if norm_match:
            i = canonical(path, name, norm_match[1], "norms.{}." + norm_match[2], header)
            norms.setdefault(i, {})[norm_match[2]] = shape
    if not layers:
        raise InputError(f"{path}: no layers.{{i}}.0.weight tensors found")

    d_in = None
    for i in range(max(layers) + 1):
        for kind in ("weight", "bias"):
            if kind not in layers.get(i, {}):
                raise InputError(
                    f"{path}: missing layers.{i}.0.{kind} (layers must run from 0 with a weight and a bias each)"
                )
        W, b = layers[i]["weight"], layers[i]["bias"]
        if len(W) != 2 or (d_in is not None and W[1] != d_in):
            want = f"(d_out, {d_in})" if d_in is not None else "(d_out, d_in)"
            raise InputError(f"{path}: layers.{i}.0.weight has shape {W}; expected {want}")
        if b != (W[0],):
            raise InputError(f"{path}: layers.{i}.0.bias has shape {b}; expected ({W[0]},)")
        if norm == "pre":
            check_norm_shapes(path, norms.get(i, {}), i, W[1])
        d_in = W[0]
    if max(norms, default=-1) >= len(layers):
        raise InputError(f"{path}: norms.{max(norms)}.* but only {len(layers)} layers; a norm belongs to a layer")
    sizes = (layers[0]["weight"][1],) + tuple(layers[i]["weight"][0] for i in range(len(layers)))
    shapes = {name: tuple(entry["shape"]) for name, entry in header.items()}
    data_bytes = sum(math.prod(entry["shape"]) * FILE_DTYPES[entry["dtype"]].itemsize for entry in header.values())
    return Layout(sizes, shapes.get("input"), shapes.get("target"), data_bytes)


def load_weights(path, norm: str = "none") -> tuple[list, np.ndarray | None, np.ndarray | None]:
    """Read and check a weights file; returns (params, input or None, target or None).

    norm "pre": every layer needs its norms.{i}.scale and norms.{i}.shift, and params are
    (W, b, scale, shift); "none": the file must hold no norm, and params are (W, b)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    layout = read_layout(path, norm)  # names, dtypes and shapes, before any data is read
    try:
        tensors = load_file(path)
    except (SafetensorError, ValueError, TypeError, OSError) as err:
        raise InputError(f"{path} is not a readable safetensors file ({err})") from None
    for name, tensor in tensors.items():
        if not np.all(np.isfinite(tensor)):
            raise InputError(f"{path}: tensor {name} contains NaN or inf")

    def tensor(name: str, i: int) -> np.ndarray:
        return tensors[name.format(i)]

    params = []
    for i in range(len(layout.layer_sizes) - 1):
        layer = (tensor("layers.{}.0.weight", i), tensor("layers.{}.0.bias", i))
        if norm == "pre":
            layer += (tensor("norms.{}.scale", i), tensor("norms.{}.shift", i))
        params.append(layer)
    return params, tensors.get("input"), tensors.get("target")


def check_norm_shapes(path, found: dict, i: int, d_in: int) -> None:
    """Layer i's norms.{i}.scale and shift (shapes from the header) are there and (d_in,) each."""
    for kind in ("scale", "shift"):
        if kind not in found:
            raise InputError(
                f"{path}: missing norms.{i}.{kind} (--norm pre needs a LayerNorm scale and shift per layer)"
            )
        if found[kind] != (d_in,):
            raise InputError(f"{path}: norms.{i}.{kind} has shape {found[kind]}; expected ({d_in},)")


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

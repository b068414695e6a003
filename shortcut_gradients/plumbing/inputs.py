"""Everything a run needs, checked before any work: the configuration, weights, input and target."""

import math
import os
from dataclasses import dataclass

import numpy as np

import impl_numerical
from shortcut_gradients.plumbing import files, frameworks, resources, weights
from shortcut_gradients.plumbing.config import (
    BOOK_LAYER_SIZES,
    BOOK_SEED,
    ORACLE,
    SHORTCUT_SETTINGS,
    Config,
    InputError,
)

# Seconds a user's implementation may take to import and for each call: the frameworks' own default.
DEFAULT_TIMEOUT = getattr(frameworks, "DEFAULT_TIMEOUT", 600.0)


@dataclass(frozen=True)
class Inputs:
    """One run's configuration and arrays, every array already in the run's dtype."""

    config: Config
    params: list  # [(W (d_out, d_in), b (d_out,)), ...], pre-LN [(W, b, scale (d_in,), shift (d_in,)), ...]
    x: np.ndarray  # (..., sizes[0])
    target: np.ndarray  # broadcastable to (..., sizes[-1])
    is_book: bool  # the book's weights, input and target in float32: its printed numbers apply
    fns: dict  # {column name: loss_and_grads}, in the order given
    seconds: float = 0.0  # the work's estimate (resources.seconds_needed, with the caller's extra_seconds)


def resolve(
    *,
    frameworks_text: str | None,
    layer_sizes: tuple[int, ...] | None,
    seed: int,
    weights_file: str | None,
    save_weights: str | None,
    shortcut: str,
    gelu: str,
    dtype: str,
    norm: str = "none",
    timeout: float | None = DEFAULT_TIMEOUT,
    allow_long: bool = False,
    extra_seconds: float = 0.0,
    input_shape: tuple[int, ...] | None = None,
) -> Inputs:
    """Check every input before any work; raises InputError with one line for the first bad one.

    The work is estimated from the sizes alone (a weights file's header gives them) and refused
    before any framework is imported or any tensor read, when it would not fit in memory or would
    take longer than resources.LONG_SECONDS without allow_long. extra_seconds: work the caller adds
    (the depth study), counted in that estimate. input_shape: the leading dimensions of a seeded
    random input (--batch N: (N,); --input-shape B,T: (B, T)), uniform in [-1, 1) with a standard
    normal target, both drawn by numpy's generator seeded with `seed`. timeout: seconds a user's implementation may take
    to import and for each call (frameworks.resolve)."""
    if frameworks_text is not None and not frameworks_text.strip():
        raise InputError("--frameworks is empty: name two or more of torch, jax, numpy, numpy-fast, or a .py file")
    frameworks_text = frameworks_text or ",".join(Config().frameworks)
    asked = [p.strip() for p in frameworks_text.split(",") if p.strip()]
    if weights_file is not None and not weights_file:
        raise InputError("--weights was given an empty file name; give a safetensors file, or leave --weights out")
    if save_weights is not None:
        reads = [("--weights", weights_file)] + [("--frameworks", spec) for spec in asked if os.path.isfile(spec)]
        files.check_output_path(save_weights, "--save-weights", inputs=reads)
    resources.check_seed(seed)
    if layer_sizes is not None:
        resources.check_sizes(layer_sizes)

    n_rows, file_bytes = 1, 0
    if input_shape is not None:
        check_input_shape(input_shape)
        n_rows = math.prod(input_shape)
    if weights_file:
        layout = weights.read_layout(weights_file, norm)  # the header only: no tensor is read yet
        if layer_sizes is not None and layer_sizes != layout.layer_sizes:
            raise InputError(
                f"--layer-sizes {','.join(map(str, layer_sizes))} disagrees with {weights_file}, "
                f"which has {','.join(map(str, layout.layer_sizes))}"
            )
        layer_sizes, file_bytes = layout.layer_sizes, layout.data_bytes
        if layout.input_shape and input_shape is not None:
            raise InputError(
                f"{weights_file} holds an input of its own; --batch and --input-shape draw one: use one or the other"
            )
        n_rows = rows(layout.input_shape) if layout.input_shape else n_rows
    layer_sizes = layer_sizes or BOOK_LAYER_SIZES
    resources.check_memory(layer_sizes, n_rows, dtype, frameworks=asked, file_bytes=file_bytes)
    settings = len(SHORTCUT_SETTINGS[shortcut])
    seconds = resources.seconds_needed(layer_sizes, n_rows, frameworks=len(asked), settings=settings, norm=norm)
    seconds += extra_seconds
    resources.check_time(seconds, allow_long)

    narrow = [i for i, d in enumerate(layer_sizes[:-1]) if d < 3]
    if norm == "pre" and narrow:
        d = layer_sizes[narrow[0]]
        raise InputError(
            f"--norm pre: layer {narrow[0]}'s LayerNorm would normalise {d} element{'s' * (d > 1)}, where"
            " (x - mean) / sigma is the same whatever x and its gradient is what rounding leaves of cancelling"
            " terms, which no comparison can tell from a bug; use widths of 3 or more"
        )
    if "jax" in asked:
        from impl_jax.model import SCAN_MIN_LAYERS  # jax is to run anyway: its import costs nothing extra

        resources.check_jax_layers(layer_sizes, SCAN_MIN_LAYERS)

    fns = frameworks.resolve(frameworks_text, timeout=timeout)
    names = tuple(fns)
    if names == (ORACLE,):
        raise InputError(f"--frameworks {ORACLE} checks an implementation: add torch, jax or numpy")
    if norm == "pre" and "numpy-fast" in names:
        raise InputError("--norm pre: numpy-fast has no LayerNorm (it is the book network's fast step); use numpy")
    x = target = None
    if weights_file:
        params, x, target = weights.load_weights(weights_file, norm)
    else:
        params = weights.seeded_params(layer_sizes, seed, norm)
    if input_shape is not None:
        x, target = seeded_batch(input_shape, layer_sizes, seed)
    x = weights.default_input(layer_sizes[0]) if x is None else x
    weights.check_input(x, layer_sizes)
    target = weights.default_target(layer_sizes[-1]) if target is None else target
    weights.check_target(target, x.shape[:-1] + (layer_sizes[-1],))
    names_in_file = ("layers.{}.0.weight", "layers.{}.0.bias", "norms.{}.scale", "norms.{}.shift")
    for i, layer in enumerate(params):
        for name, array in zip(names_in_file, layer):
            resources.check_values(name.format(i), array, dtype)
    resources.check_values("input", x, dtype)
    resources.check_values("target", target, dtype)
    elements = sum(array.size for layer in params for array in layer) + x.size
    if ORACLE in names and elements > impl_numerical.MAX_ELEMENTS:
        raise InputError(
            f"--frameworks {ORACLE} runs eight forward passes per weight, bias and input element; this network has "
            f"{elements:,}, more than {impl_numerical.MAX_ELEMENTS:,}: leave {ORACLE} out or use a smaller network"
        )

    np_dtype = np.dtype(dtype)
    params = [tuple(array.astype(np_dtype) for array in layer) for layer in params]  # upcast (or round) once, here
    x, target = x.astype(np_dtype), target.astype(np_dtype)
    config = Config(layer_sizes, seed, shortcut, gelu, dtype, names, weights_file, norm)
    return Inputs(config, params, x, target, is_book_configuration(config, params, x, target), fns, seconds)


def check_input_shape(shape: tuple[int, ...]) -> None:
    """Leading dimensions for a drawn input: one to three positive integers."""
    if not 1 <= len(shape) <= 3 or any(n <= 0 for n in shape):
        raise InputError(
            f"--batch and --input-shape take one to three positive integers, such as --batch 8 or --input-shape 2,4;"
            f" got {','.join(map(str, shape))}"
        )


def seeded_batch(shape: tuple[int, ...], layer_sizes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x (*shape, d_in) uniform in [-1, 1) and target (*shape, d_out) standard normal, seeded: distinct rows,
    so that a gradient summed over the wrong rows, or taken from one row, shows."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, tuple(shape) + (layer_sizes[0],))  # (*shape, d_in)
    target = rng.normal(size=tuple(shape) + (layer_sizes[-1],))  # (*shape, d_out)
    return x, target


def rows(shape: tuple[int, ...]) -> int:
    """The number of input rows of an input of this shape: the product of its leading dimensions (1 when none)."""
    return math.prod(shape[:-1])


def is_book_configuration(config: Config, params, x, target) -> bool:
    """The book's numbers apply: its sizes, weights, input and target, in float32, and no LayerNorm."""
    if config.layer_sizes != BOOK_LAYER_SIZES or config.dtype != "float32" or config.norm != "none":
        return False
    book_params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    same_weights = all(np.array_equal(W, bW) and np.array_equal(b, bb) for (W, b), (bW, bb) in zip(params, book_params))
    d_in, d_out = BOOK_LAYER_SIZES[0], BOOK_LAYER_SIZES[-1]
    return (
        same_weights
        and np.array_equal(x, weights.default_input(d_in))
        and np.array_equal(np.broadcast_to(target, (1, d_out)), weights.default_target(d_out))
    )

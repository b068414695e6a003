"""Everything a run needs, checked before any work: the configuration, weights, input and target."""

from dataclasses import dataclass

import numpy as np

import impl_numerical
from shortcut_gradients.plumbing import files, frameworks, resources, weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, ORACLE, Config, InputError


@dataclass(frozen=True)
class Inputs:
    """One run's configuration and arrays, every array already in the run's dtype."""

    config: Config
    params: list  # [(W (d_out, d_in), b (d_out,)), ...], pre-LN [(W, b, scale (d_in,), shift (d_in,)), ...]
    x: np.ndarray  # (..., sizes[0])
    target: np.ndarray  # broadcastable to (..., sizes[-1])
    is_book: bool  # the book's weights, input and target in float32: its printed numbers apply
    fns: dict  # {column name: loss_and_grads}, in the order given


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
) -> Inputs:
    """Check every input before any work; raises InputError with one line for the first bad one."""
    if frameworks_text is not None and not frameworks_text.strip():
        raise InputError("--frameworks is empty: name two or more of torch, jax, numpy, numpy-fast, or a .py file")
    fns = frameworks.resolve(frameworks_text or ",".join(Config().frameworks))
    names = tuple(fns)
    if names == (ORACLE,):
        raise InputError(f"--frameworks {ORACLE} checks an implementation: add torch, jax or numpy")
    if norm == "pre" and "numpy-fast" in names:
        raise InputError("--norm pre: numpy-fast has no LayerNorm (it is the book network's fast step); use numpy")
    if save_weights:
        files.check_output_path(save_weights, "--save-weights")
    resources.check_seed(seed)
    if layer_sizes is not None:
        resources.check_sizes(layer_sizes)

    x = target = None
    if weights_file:
        params, x, target = weights.load_weights(weights_file, norm)
        file_sizes = (params[0][0].shape[1],) + tuple(layer[0].shape[0] for layer in params)
        if layer_sizes is not None and layer_sizes != file_sizes:
            raise InputError(
                f"--layer-sizes {','.join(map(str, layer_sizes))} disagrees with {weights_file}, "
                f"which has {','.join(map(str, file_sizes))}"
            )
        layer_sizes = file_sizes
        resources.check_memory(layer_sizes, rows(x), dtype)
    else:
        layer_sizes = layer_sizes or BOOK_LAYER_SIZES
        resources.check_memory(layer_sizes, 1, dtype)  # before the weights are drawn
        params = weights.seeded_params(layer_sizes, seed, norm)
    narrow = [i for i, d in enumerate(layer_sizes[:-1]) if d < 3]
    if norm == "pre" and narrow:
        d = layer_sizes[narrow[0]]
        raise InputError(
            f"--norm pre: layer {narrow[0]}'s LayerNorm would normalise {d} element{'s' * (d > 1)}, where"
            " (x - mean) / sigma is the same whatever x and its gradient is what rounding leaves of cancelling"
            " terms, which no comparison can tell from a bug; use widths of 3 or more"
        )
    if "jax" in names:
        from impl_jax.model import SCAN_MIN_LAYERS  # jax is to run anyway

        resources.check_jax_layers(layer_sizes, SCAN_MIN_LAYERS)
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
    return Inputs(config, params, x, target, is_book_configuration(config, params, x, target), fns)


def rows(x) -> int:
    """The number of input rows: the product of the leading dimensions (1 when there are none)."""
    return int(np.prod(np.shape(x)[:-1], dtype=np.int64)) if x is not None else 1


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

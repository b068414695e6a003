"""The book's ExampleDeepNeuralNetwork as a Flax NNX module; gradients by jax.grad under jax.jit.

The module is split into (graphdef, params) with nnx.split and the loss is differentiated
with plain jax.grad over params, the functional style of Flax's NNX examples: this is
the version that shows what `jit(grad(loss))` does. Flax keeps a kernel as (d_in, d_out),
the transpose of torch's weight: `from_params` transposes the weights in, `loss_and_grads`
the gradients out. A network with a long run of equal layers goes to impl_jax/scan.py.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import scan

GELU_CUBIC = 0.044715  # the 0.044715 in the tanh approximation (Hendrycks & Gimpel, 2016)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # a Python float: JAX applies it in the array's dtype
SQRT_1_OVER_2 = math.sqrt(0.5)
LAYER_NORM_EPS = 1e-5  # the book's eps: keeps 1 / sqrt(var + eps) finite on a constant row
SCAN_MIN_LAYERS = 8  # a run this long of equal layers goes to scan.py, compiled once, not unrolled


def gelu(x: jax.Array, form: str) -> jax.Array:
    """GELU of x, (...,) -> (...,), written out rather than jax.nn.gelu:
    form "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the book's formula
         (jax.nn.gelu's default, approximate=True);
    form "exact": 0.5 x (1 + erf(x / sqrt(2))), torch.nn.GELU()'s default."""
    if form == "tanh":
        return 0.5 * x * (1.0 + jnp.tanh(SQRT_2_OVER_PI * (x + GELU_CUBIC * x**3)))
    if form == "exact":
        return 0.5 * x * (1.0 + jax.scipy.special.erf(x * SQRT_1_OVER_2))
    raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")


class GELU(nnx.Module):
    """gelu(x, form) as a module; `form` is static, part of the graphdef that jit keys on."""

    def __init__(self, form: str):
        self.form = form

    def __call__(self, x: jax.Array) -> jax.Array:
        return gelu(x, self.form)


class LayerNorm(nnx.Module):
    """The book's LayerNorm, written out rather than nnx.LayerNorm: x (..., emb_dim), last axis."""

    def __init__(self, emb_dim: int, *, dtype):
        self.eps = LAYER_NORM_EPS
        self.scale = nnx.Param(jnp.ones(emb_dim, dtype))
        self.shift = nnx.Param(jnp.zeros(emb_dim, dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
        var = x.var(axis=-1, keepdims=True)  # (..., 1)   ddof=0: the book's unbiased=False
        norm_x = (x - mean) / jnp.sqrt(var + self.eps)  # (..., emb_dim)
        return self.scale[...] * norm_x + self.shift[...]


def make_layer(
    d_in: int, d_out: int, rngs: nnx.Rngs, *, gelu_form: str, norm: str, dtype
) -> nnx.Sequential:
    """One of the book's layers, (LayerNorm,) Linear, GELU: x (..., d_in) -> (..., d_out).

    The norm is the layer's first step here (torch keeps it beside): a stacked run scans it too."""
    # HIGHEST: float32 matmuls in full float32 on every backend (no TF32/bf16 passes on a GPU).
    precision = jax.lax.Precision.HIGHEST
    linear = nnx.Linear(d_in, d_out, param_dtype=dtype, precision=precision, rngs=rngs)
    norms = [LayerNorm(d_in, dtype=dtype)] if norm == "pre" else []
    return nnx.Sequential(*norms, linear, GELU(gelu_form))


class ExampleDeepNeuralNetwork(nnx.Module):
    """(LayerNorm +) Linear + GELU layers; use_shortcut: x = x + layer(x) where the shapes match."""

    def __init__(
        self,
        layer_sizes: list[int],
        use_shortcut: bool,
        gelu_form: str,
        norm: str = "none",
        *,
        dtype,
        rngs: nnx.Rngs,
    ):
        """norm "pre": a LayerNorm in front of every layer, x = x + layer(LN(x)), as GPT-2;
        "none": the book's."""
        self.use_shortcut = use_shortcut
        if norm not in ("none", "pre"):
            raise ValueError(f"unknown norm {norm!r}: use 'none' or 'pre'")
        layer = partial(make_layer, gelu_form=gelu_form, norm=norm, dtype=dtype)
        sizes = zip(layer_sizes[:-1], layer_sizes[1:])
        self.layers = nnx.List(layer(d_in, d_out, rngs) for d_in, d_out in sizes)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x (..., sizes[0]) -> (..., sizes[-1])."""
        for layer in self.layers:
            layer_output = layer(x)  # (..., d_out)
            if self.use_shortcut and x.shape == layer_output.shape:
                x = x + layer_output  # the shortcut: the input joins the output
            else:
                x = layer_output
        return x

    @classmethod
    def from_params(cls, params: list, use_shortcut: bool, gelu_form: str, norm: str, *, dtype):
        """The network holding params: [(W (d_out, d_in), b (d_out,)), ...] NumPy arrays in torch's
        layout, with norm "pre" (W, b, scale (d_in,), shift (d_in,)); dtype a jnp.dtype, which
        the parameters take."""
        sizes = [params[0][0].shape[1]] + [layer[0].shape[0] for layer in params]
        # eval_shape builds the structure, drawing no random init: params then take its place.
        model = nnx.eval_shape(
            lambda: cls(sizes, use_shortcut, gelu_form, norm, dtype=dtype, rngs=nnx.Rngs(0))
        )
        for layer, (W, b, *norm_params) in zip(model.layers, params):
            *norm_layer, linear, _ = layer.layers  # norm_layer: [LayerNorm] for pre-LN, else []
            kernel = np.swapaxes(W, -1, -2)  # (d_in, d_out): torch (out, in) -> Flax (in, out)
            linear.kernel = nnx.Param(jnp.asarray(kernel, dtype))
            linear.bias = nnx.Param(jnp.asarray(b, dtype))  # (d_out,)
            for ln in norm_layer:
                ln.scale, ln.shift = (nnx.Param(jnp.asarray(p, dtype)) for p in norm_params)
        return model


def mse_loss(output: jax.Array, target: jax.Array) -> jax.Array:
    """Mean over all elements of (output - target)^2; target broadcasts to output."""
    return jnp.mean((output - target) ** 2)


def loss_fn(params: nnx.State, graphdef: nnx.GraphDef, x: jax.Array, target: jax.Array):
    """The loss as a pure function of (params, x), for jax.grad; the output rides along as aux."""
    model = nnx.merge(graphdef, params)
    output = model(x)  # (..., sizes[-1])
    return mse_loss(output, target), output


# value_and_grad: jax.grad that returns the loss too. graphdef is static: one compile per network.
grad_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True), static_argnums=1)


def loss_and_grads(
    params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str, norm: str = "none"
) -> dict:
    """The common entry point: loss, output and every gradient, as NumPy arrays (docs/contract.md).

    params as from_params takes them; x (..., sizes[0]); target broadcastable to the output;
    dtype "float32" or "float64"; gelu_form "tanh" or "exact". Returns {"loss", "output", "dW",
    "db", "dx"}, pre-LN's dscale, dshift."""
    if any(len(layer) != {"none": 2, "pre": 4}.get(norm) for layer in params):
        raise ValueError(
            f"norm={norm!r} takes layers (W, b) for 'none', (W, b, scale, shift) for 'pre'"
        )
    if scan.longest_run(params) >= SCAN_MIN_LAYERS:  # the same results, each run compiled once
        options = dict(use_shortcut=use_shortcut, gelu_form=gelu_form, dtype=dtype, norm=norm)
        return scan.loss_and_grads(params, x, target, **options)
    # float64 only inside this call: enable_x64 is a context, no global flag is left set.
    with jax.enable_x64(dtype == "float64"):
        jax_dtype = jnp.dtype(dtype)
        model = ExampleDeepNeuralNetwork.from_params(
            params, use_shortcut, gelu_form, norm, dtype=jax_dtype
        )
        graphdef, model_params = nnx.split(model, nnx.Param)
        x = jnp.asarray(x, jax_dtype)
        target = jnp.asarray(target, jax_dtype)

        (loss, output), (dparams, dx) = grad_fn(model_params, graphdef, x, target)

        dlayers = nnx.to_pure_dict(dparams)["layers"]  # {i: layer i's gradients}
        # Layer i's steps: {0: LayerNorm's, 1: Linear's} for pre-LN, else {0: Linear's}.
        steps = [dlayers[i]["layers"] for i in range(len(params))]
        linears = [s[len(s) - 1] for s in steps]
        result = {
            "loss": np.asarray(loss),
            "output": np.asarray(output),
            # Flax (in, out) -> torch (out, in), in NumPy: a JAX transpose compiles per shape.
            "dW": [np.ascontiguousarray(np.asarray(d["kernel"]).T) for d in linears],
            "db": [np.asarray(d["bias"]) for d in linears],
            "dx": np.asarray(dx),
        }
        if norm == "pre":
            result |= {
                "dscale": [np.asarray(s[0]["scale"]) for s in steps],
                "dshift": [np.asarray(s[0]["shift"]) for s in steps],
            }
    return result

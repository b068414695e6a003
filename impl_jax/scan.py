"""Speed beside the reference: long runs of equal layers stacked, and applied under nnx.scan.

model.py is for reading, the book's loop over its layers; this file is what lets a deep network
compile. jit unrolls a Python loop, and at width 1 XLA turns each matmul into an elementwise
multiply that its fusion pass then copies into every layer's gradient: a program quadratic in
depth. Here a run of model.SCAN_MIN_LAYERS or more equal layers is one entry of the network's
layers instead, made by nnx.vmap with its parameters stacked, kernel (L, d, d), and XLA compiles
one layer of it whatever the depth.

What it trades: compile time and memory that no longer grow with depth, against a step that wide
layers pay for, reading each layer's weights out of the stack and writing its gradient back, and
the exact GELU in float32 rounding a few ulps differently (the tanh form and float64 are bit for
bit the loop's). Shorter runs, the book's network among them, stay the book's loop.
docs/jax-depth.md has the measurements.

model.loss_and_grads hands a network with a long run to loss_and_grads here: the same arguments,
the same results. ScannedNetwork is model.ExampleDeepNeuralNetwork with its runs stacked; it
builds its layers with model.make_layer and is differentiated by model.grad_fn.
"""

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import model  # model.py imports this module too: names in it are looked up at call time


def longest_run(params: list) -> int:
    """The most consecutive layers of params, [(W, b(, scale, shift)), ...], that share a shape."""
    shapes = [np.shape(layer[0]) for layer in params]  # W's (d_out, d_in), layer by layer
    return max((len(list(run)) for _, run in itertools.groupby(shapes)), default=0)


def scan_layers(apply_layer, stacked: nnx.Sequential, x: jax.Array) -> jax.Array:
    """apply_layer(layer, x) with each layer of a stacked run in turn, x (..., d) -> (..., d),
    under nnx.scan."""

    # remat keeps each layer's matmul output and recomputes its GELU in the backward: scan alone
    # stores every intermediate of every layer, and a step ran slower than the loop's.
    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
    @nnx.remat(policy=jax.checkpoint_policies.dots_saveable)
    def step(layer, x):  # layer: one slice of the stack, kernel (d, d), bias (d,)
        return apply_layer(layer, x)

    return step(stacked, x)


def stack_runs(
    make_layer, layer_sizes: list[int], min_layers: int, rngs: nnx.Rngs
) -> tuple[nnx.List, tuple]:
    """(layers, run_lengths): make_layer(d_in, d_out, rngs) for each of the book's layers, except
    that a run of min_layers or more consecutive layers of one shape is one entry, its parameters
    stacked: kernel (L, d, d)."""
    layers, run_lengths = nnx.List(), ()
    for (d_in, d_out), run in itertools.groupby(zip(layer_sizes[:-1], layer_sizes[1:])):
        count = len(list(run))  # consecutive layers of one shape
        if count >= min_layers:  # one entry: nnx.vmap makes the run, its parameters stacked
            layers.append(nnx.vmap(partial(make_layer, d_in, d_out))(rngs.split(count)))
            run_lengths += (count,)
        else:
            layers.extend(make_layer(d_in, d_out, rngs) for _ in range(count))
            run_lengths += (1,) * count
    return layers, run_lengths


def stacked(book_layers: list, run_lengths: tuple) -> list[tuple]:
    """The book's per-layer params, [(W, b(, scale, shift)), ...], grouped as stack_runs' layers
    hold them: one layer's arrays as they are, a run's stacked on a new first axis, (L, ...)."""
    layers = iter(book_layers)
    groups = [list(zip(*itertools.islice(layers, n))) for n in run_lengths]  # per entry, per array
    return [tuple(np.stack(a) if len(a) > 1 else a[0] for a in group) for group in groups]


class ScannedNetwork(nnx.Module):
    """model.ExampleDeepNeuralNetwork with its long runs stacked: self.layers[j] is
    self.run_lengths[j] of the book's layers, one as it is or a run stacked, kernel (L, d, d)."""

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
        self.use_shortcut = use_shortcut
        if norm not in ("none", "pre"):
            raise ValueError(f"unknown norm {norm!r}: use 'none' or 'pre'")
        layer = partial(model.make_layer, gelu_form=gelu_form, norm=norm, dtype=dtype)
        min_layers = model.SCAN_MIN_LAYERS
        self.layers, self.run_lengths = stack_runs(layer, layer_sizes, min_layers, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x (..., sizes[0]) -> (..., sizes[-1]): the book's loop, a stacked run taking one step."""
        for layer, count in zip(self.layers, self.run_lengths):
            if count == 1:
                x = self.apply_layer(layer, x)
            else:
                x = scan_layers(self.apply_layer, layer, x)
        return x

    def apply_layer(self, layer: nnx.Sequential, x: jax.Array) -> jax.Array:
        """The book's loop body: x (..., d_in) -> (..., d_out)."""
        layer_output = layer(x)  # (..., d_out)
        if self.use_shortcut and x.shape == layer_output.shape:
            return x + layer_output  # the shortcut: the input joins the output
        return layer_output

    @classmethod
    def from_params(cls, params: list, use_shortcut: bool, gelu_form: str, norm: str, *, dtype):
        """model.ExampleDeepNeuralNetwork.from_params, each run's parameters stacked."""
        sizes = [params[0][0].shape[1]] + [layer[0].shape[0] for layer in params]
        # eval_shape builds the structure without drawing (or compiling) a random init: params
        # then take its place.
        network = nnx.eval_shape(
            lambda: cls(sizes, use_shortcut, gelu_form, norm, dtype=dtype, rngs=nnx.Rngs(0))
        )
        entries = stacked(params, network.run_lengths)  # per entry: (W, b(, scale, shift))
        for layer, (W, b, *norm_params) in zip(network.layers, entries):
            *norm_layer, linear, _ = layer.layers  # norm_layer: [LayerNorm] for pre-LN, else []
            kernel = np.swapaxes(W, -1, -2)  # (..., d_in, d_out): torch (out, in) -> Flax (in, out)
            linear.kernel = nnx.Param(jnp.asarray(kernel, dtype))
            linear.bias = nnx.Param(jnp.asarray(b, dtype))  # (..., d_out)
            for ln in norm_layer:
                ln.scale, ln.shift = (nnx.Param(jnp.asarray(p, dtype)) for p in norm_params)
        return network


def loss_and_grads(
    params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str, norm: str = "none"
) -> dict:
    """model.loss_and_grads for a network with long runs: the same arguments and results, each run
    applied under nnx.scan and its stacked gradients handed back one layer at a time."""
    if any(len(layer) != {"none": 2, "pre": 4}.get(norm) for layer in params):
        raise ValueError(
            f"norm={norm!r} takes layers (W, b) for 'none', (W, b, scale, shift) for 'pre'"
        )
    # float64 only inside this call: enable_x64 is a context, no global flag is left set.
    with jax.enable_x64(dtype == "float64"):
        jax_dtype = jnp.dtype(dtype)
        network = ScannedNetwork.from_params(params, use_shortcut, gelu_form, norm, dtype=jax_dtype)
        graphdef, network_params = nnx.split(network, nnx.Param)
        x = jnp.asarray(x, jax_dtype)
        target = jnp.asarray(target, jax_dtype)

        (loss, output), (dparams, dx) = model.grad_fn(network_params, graphdef, x, target)

        dlayers, grads = nnx.to_pure_dict(dparams)["layers"], {}
        for j, count in enumerate(network.run_lengths):
            # {0: LayerNorm's, 1: Linear's} for pre-LN, else {0: Linear's}
            steps = dlayers[j]["layers"]
            linear = steps[len(steps) - 1]
            # In NumPy: a JAX transpose (np.swapaxes calls the array's own) compiles per shape.
            dW = np.ascontiguousarray(np.swapaxes(np.asarray(linear["kernel"]), -1, -2))
            found = {"dW": dW, "db": linear["bias"]}
            if len(steps) == 2:
                found |= {"dscale": steps[0]["scale"], "dshift": steps[0]["shift"]}
            for key, grad in found.items():  # a run's (L, ...) as L arrays, one layer's as itself
                arrays = np.asarray(grad) if count > 1 else [np.asarray(grad)]
                grads.setdefault(key, []).extend(arrays)
        loss, output, dx = np.asarray(loss), np.asarray(output), np.asarray(dx)
        return {"loss": loss, "output": output, **grads, "dx": dx}

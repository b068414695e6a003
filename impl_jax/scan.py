"""Speed beside the reference: long runs of equal layers stacked, and applied under nnx.scan.

model.py is for reading, the book's loop over its layers; this file is what lets a deep network
compile. jit unrolls a Python loop, and at width 1 XLA turns each matmul into an elementwise
multiply that its fusion pass then copies into every layer's gradient: a program quadratic in depth
(64 layers took 26 s and 1.5 GB to compile). A run of SCAN_MIN_LAYERS or more equal layers
(model.py) is one entry of the network's layers instead, made by nnx.vmap with its parameters
stacked, kernel (L, d, d), and XLA compiles one layer of it whatever the depth.

What it trades: compile time and memory that no longer grow with depth (0.14 to 0.31 s and under
270 MB from 16 to 512 layers; unrolled, 128 layers took 177 s and 7.9 GB) against a step that wide
layers pay 1.1 to 1.4x for, reading each layer's weights out of the stack and writing its gradient
back, and the exact GELU in float32 rounding a few ulps differently (the tanh form and float64 are
bit for bit the loop's). Shorter runs, the book's network among them, stay the book's loop.
docs/jax-depth.md has the measurements.
"""

import itertools
from functools import partial

import jax
import numpy as np
from flax import nnx


def scan_layers(apply_layer, stacked: nnx.Sequential, x: jax.Array) -> jax.Array:
    """apply_layer(layer, x) with each layer of a stacked run in turn, x (..., d) -> (..., d), under nnx.scan."""

    # remat keeps each layer's matmul output and recomputes its GELU in the backward: scan alone
    # stores every intermediate of every layer, and ran 2x slower than the loop at width 256.
    @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
    @nnx.remat(policy=jax.checkpoint_policies.dots_saveable)
    def step(layer, x):  # layer: one slice of the stack, kernel (d, d), bias (d,)
        return apply_layer(layer, x)

    return step(stacked, x)


def stack_runs(make_layer, layer_sizes: list[int], min_layers: int, rngs: nnx.Rngs) -> tuple[nnx.List, tuple]:
    """(layers, run_lengths): make_layer(d_in, d_out, rngs) for each of the book's layers, except that a run of
    min_layers or more consecutive layers of one shape is one entry, its parameters stacked: kernel (L, d, d)."""
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
    """The book's per-layer params, [(W, b(, scale, shift)), ...], grouped as stack_runs' layers hold them: one
    layer's arrays as they are, a run's stacked on a new first axis, (L, ...)."""
    layers = iter(book_layers)
    return [tuple(np.stack(a) if n > 1 else a[0] for a in zip(*itertools.islice(layers, n))) for n in run_lengths]

"""One prepared gradient step per implementation, and the matrix-multiply floor.

Every maker builds the same network from the same seeded float32 arrays: `depth` layers of
width -> width, shortcut on, tanh GELU, batch rows, MSE loss against zeros. It returns a
`Step` whose `run()` does one full gradient step (forward, loss, backward) and returns the
gradients, so that a caller who drops the result frees them, whatever the framework.

Each step is made of the implementation's own public pieces, not a copy of its code: NumPy's
is its loss_and_grads, called as the tests call it; torch's and JAX's are what their
loss_and_grads does around the model once the weights are in (forward, loss, backward; the
jitted grad_fn), with the model built once, here, by their own public pieces (torch: the
constructor and load_state_dict by the book's names; JAX: ExampleDeepNeuralNetwork.from_params),
so that building, copying weights in and compiling are not part of the step.

Each maker imports its framework itself: the benchmark runs each implementation in its own
process, after setting the thread count, and only that process pays for the import.
"""

import math
import os
import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

GELU_FORM = "tanh"  # the book's GELU; the exact form would time NumPy's np.vectorize(math.erf)
USE_SHORTCUT = True
DTYPE = "float32"


class Step(NamedTuple):
    run: Callable[[], object]  # one gradient step; returns the gradients
    loss: float  # the loss of the first step, to check that every implementation ran the same network
    compile_s: float  # seconds spent compiling before the first step (0 for eager frameworks)
    version: str  # the framework's version


def network(batch: int, width: int, depth: int, seed: int):
    """params [(W (width, width), b (width,))] * depth, x (batch, width), target (batch, width): float32."""
    rng = np.random.default_rng(seed)
    bound = 1 / math.sqrt(width)  # nn.Linear's default initialisation range, U(-1/sqrt(d_in), 1/sqrt(d_in))
    params = [
        (
            rng.uniform(-bound, bound, (width, width)).astype(np.float32),  # (d_out, d_in)
            rng.uniform(-bound, bound, width).astype(np.float32),  # (d_out,)
        )
        for _ in range(depth)
    ]
    x = rng.standard_normal((batch, width)).astype(np.float32)  # (batch, width)
    target = np.zeros((batch, width), np.float32)  # (batch, width)
    return params, x, target


def make_floor(batch: int, width: int, depth: int, seed: int) -> Step:
    """The three matrix multiplications per layer that any backward pass must do, in NumPy.

    forward z = x W^T, backward dx = dz W and dW = dz^T x, at the step's sizes, into
    preallocated outputs so that nothing but the multiplications is timed. Each layer has
    its own W, as in the step, so the weights stream from memory the same way.
    """
    params, x, _ = network(batch, width, depth, seed)
    z = np.empty_like(x)  # (batch, width), stands in for dz too: same shape, and values do not change the cost
    dx = np.empty_like(x)  # (batch, width)
    dW = np.empty((width, width), np.float32)  # (width, width)

    def run():
        for W, _ in params:
            np.matmul(x, W.T, out=z)  # z = x W^T
            np.matmul(z, W, out=dx)  # dx = dz W
            np.matmul(z.T, x, out=dW)  # dW = dz^T x

    run()
    return Step(run, float("nan"), 0.0, np.__version__)


def make_entry_point(name: str, batch: int, width: int, depth: int, seed: int) -> Step:
    """A NumPy implementation's loss_and_grads, as registered in shortcut_gradients.plumbing.frameworks ("numpy",
    "numpy-fast"): the whole step is the entry point, and float32 arrays in make its casts free."""
    from shortcut_gradients.plumbing.frameworks import load

    loss_and_grads = load(name)
    params, x, target = network(batch, width, depth, seed)

    def run():
        return loss_and_grads(params, x, target, use_shortcut=USE_SHORTCUT, gelu_form=GELU_FORM, dtype=DTYPE)

    return Step(run, float(run()["loss"]), 0.0, np.__version__)


def make_torch(batch: int, width: int, depth: int, seed: int) -> Step:
    """impl_torch's model with the weights in by the book's state_dict names; run() is forward, loss, backward."""
    import torch

    from impl_torch.model import ExampleDeepNeuralNetwork, full_float32_matmuls, mse_loss

    # The benchmark pins this process to its thread count's CPUs; torch's intra-op pool gets as many.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    params, x, target = network(batch, width, depth, seed)
    with torch.device("meta"):  # as impl_torch.loss_and_grads: no random init, the weights go in below
        model = ExampleDeepNeuralNetwork([width] * (depth + 1), USE_SHORTCUT, GELU_FORM)
    weights = {}
    for i, (W, b) in enumerate(params):
        weights[f"layers.{i}.0.weight"] = torch.from_numpy(W)  # (d_out, d_in)
        weights[f"layers.{i}.0.bias"] = torch.from_numpy(b)  # (d_out,)
    model.load_state_dict(weights, assign=True)  # strict: every parameter is the shared one
    x = torch.from_numpy(x).requires_grad_(True)  # (batch, width): dL/dx too, as NumPy and JAX compute it
    target = torch.from_numpy(target)

    def run():
        with full_float32_matmuls():
            loss = mse_loss(model(x), target)
            loss.backward()
        grads = ([p.grad for p in model.parameters()], x.grad, loss.detach())
        # Hand the gradients to the caller, as the others return fresh ones: the next step
        # allocates its own rather than accumulating into these.
        model.zero_grad(set_to_none=True)
        x.grad = None
        return grads

    return Step(run, float(run()[2]), 0.0, torch.__version__)


def make_jax(batch: int, width: int, depth: int, seed: int) -> Step:
    """impl_jax's jitted grad_fn on the model ExampleDeepNeuralNetwork.from_params builds, as loss_and_grads
    calls it; compiled ahead, timed apart. At depth >= SCAN_MIN_LAYERS the layers are one stacked run under
    nnx.scan, their weights stacked by from_params."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from impl_jax.model import ExampleDeepNeuralNetwork, grad_fn

    params, x, target = network(batch, width, depth, seed)
    model = ExampleDeepNeuralNetwork.from_params(params, USE_SHORTCUT, GELU_FORM, "none", dtype=jnp.dtype(DTYPE))
    graphdef, state = nnx.split(model, nnx.Param)
    x, target = jnp.asarray(x), jnp.asarray(target)

    start = time.perf_counter()
    grad_fn.lower(state, graphdef, x, target).compile()  # trace, lower to XLA, compile
    compile_s = time.perf_counter() - start

    def run():
        # JAX dispatches asynchronously: without the block the clock would stop before the work does.
        return jax.block_until_ready(grad_fn(state, graphdef, x, target))

    (loss, _), _ = run()
    return Step(run, float(loss), compile_s, jax.__version__)


MAKERS = {
    "floor": make_floor,
    "torch": make_torch,
    "jax": make_jax,
    "numpy-fast": partial(make_entry_point, "numpy-fast"),
    "numpy": partial(make_entry_point, "numpy"),
}

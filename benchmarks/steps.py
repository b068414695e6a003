"""One prepared gradient step per implementation, and the matrix-multiply floor.

Every maker builds the same network from the same seeded float32 arrays: `depth` layers of
width -> width, shortcut on, tanh GELU, batch rows, MSE loss against zeros. It returns a
`Step` whose `run()` does one full gradient step (forward, loss, backward) and returns the
gradients, so that a caller who drops the result frees them, whatever the framework.
Everything that is not the step (building the model, copying weights in, compiling) is
done once, here, outside `run`.

Each maker imports its framework itself: the benchmark runs each implementation in its own
process, after setting the thread count, and only that process pays for the import.
"""

import math
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

GELU_FORM = "tanh"  # the book's GELU; the exact form would time NumPy's np.vectorize(math.erf)
USE_SHORTCUT = True


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


def make_numpy(batch: int, width: int, depth: int, seed: int) -> Step:
    """impl_numpy's public entry point: float32 arrays in, so its casts copy nothing."""
    from impl_numpy.model import loss_and_grads

    params, x, target = network(batch, width, depth, seed)

    def run():
        return loss_and_grads(params, x, target, use_shortcut=USE_SHORTCUT, gelu_form=GELU_FORM, dtype="float32")

    return Step(run, float(run()["loss"]), 0.0, np.__version__)


def make_torch(batch: int, width: int, depth: int, seed: int) -> Step:
    """impl_torch's model, built once with the weights copied in; run() is forward, loss, backward."""
    import torch

    from impl_torch.model import ExampleDeepNeuralNetwork, mse_loss

    # The benchmark pins this process to its thread count's CPUs; torch's intra-op pool gets as many.
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    params, x, target = network(batch, width, depth, seed)
    model = ExampleDeepNeuralNetwork([width] * (depth + 1), USE_SHORTCUT, GELU_FORM)  # float32
    with torch.no_grad():
        for layer, (W, b) in zip(model.layers, params):
            layer[0].weight.copy_(torch.from_numpy(W))
            layer[0].bias.copy_(torch.from_numpy(b))
    x = torch.from_numpy(x).requires_grad_(True)  # (batch, width): dL/dx too, as NumPy and JAX compute it
    target = torch.from_numpy(target)

    def run():
        loss = mse_loss(model(x), target)
        loss.backward()
        grads = ([p.grad for p in model.parameters()], x.grad, loss.detach())
        # Hand the gradients to the caller, as the other two return fresh ones: the next step
        # allocates its own rather than accumulating into these.
        model.zero_grad(set_to_none=True)
        x.grad = None
        return grads

    return Step(run, float(run()[2]), 0.0, torch.__version__)


def make_jax(batch: int, width: int, depth: int, seed: int) -> Step:
    """impl_jax's jitted grad_fn on the model's nnx.split params; compiled ahead, timed apart."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from impl_jax.model import ExampleDeepNeuralNetwork, grad_fn

    params, x, target = network(batch, width, depth, seed)
    sizes = [width] * (depth + 1)
    # eval_shape: the structure without drawing a random init; the shared weights go in at once.
    model = nnx.eval_shape(
        lambda: ExampleDeepNeuralNetwork(sizes, USE_SHORTCUT, GELU_FORM, dtype=jnp.float32, rngs=nnx.Rngs(0))
    )
    for layer, (W, b) in zip(model.layers, params):
        linear = layer.layers[0]
        linear.kernel = nnx.Param(jnp.asarray(W.T))  # torch (out, in) -> Flax (in, out)
        linear.bias = nnx.Param(jnp.asarray(b))
    graphdef, model_params = nnx.split(model, nnx.Param)
    x, target = jnp.asarray(x), jnp.asarray(target)

    start = time.perf_counter()
    grad_fn.lower(model_params, graphdef, x, target).compile()  # trace, lower to XLA, compile
    compile_s = time.perf_counter() - start

    def run():
        # JAX dispatches asynchronously: without the block the clock would stop before the work does.
        return jax.block_until_ready(grad_fn(model_params, graphdef, x, target))

    (loss, _), _ = run()
    return Step(run, float(loss), compile_s, jax.__version__)


MAKERS = {"floor": make_floor, "torch": make_torch, "jax": make_jax, "numpy": make_numpy}

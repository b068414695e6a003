"""Deep networks in JAX: long runs of equal layers go through nnx.scan, with the same gradients.

No timings here (docs/jax-depth.md has them, from benchmarks/jax_depth.py): these tests check
the structure that keeps compilation flat in depth, and the numbers against torch and NumPy.
"""

import warnings

import numpy as np
import pytest
from conftest import needs

from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params
from shortcut_gradients.verdict.check import compare

# (layer sizes, input shape or None for compare.py's default input, dtype): a width-1 chain of
# 300 layers, the shape that made the unrolled loop's compilation quadratic; a non-square network
# whose 19 square layers are one scanned run between two plain layers, on a 3-D batch; a width-8
# run of 40. float64 where the shortcut makes values outgrow float32 (the chain reaches 1e49) or
# where 40 layers without one pile float32 noise up to the tolerance in every framework pair.
NETWORKS = {
    "chain-1x300": ((1,) * 301, None, "float64"),
    "non-square-3d": ((3,) + (5,) * 20 + (2,), (2, 3, 3), "float32"),
    "width-8x40": ((8,) * 41, (4, 8), "float64"),
}
CASES = [
    pytest.param(net, form, shortcut, id=f"{net}-{form}-{'shortcut' if shortcut else 'plain'}")
    for net in NETWORKS
    for form, shortcut in (("tanh", True), ("exact", False))
]


def network(name: str):
    sizes, input_shape, dtype = NETWORKS[name]
    params = [(W.astype(dtype), b.astype(dtype)) for W, b in seeded_params(sizes, 123)]
    if input_shape is None:
        return params, default_input(sizes[0]).astype(dtype), default_target(sizes[-1]).astype(dtype), dtype
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, input_shape).astype(dtype)
    target = rng.uniform(-1.0, 1.0, input_shape[:-1] + (sizes[-1],)).astype(dtype)
    return params, x, target, dtype


def build(sizes, network_class=None, dtype="float32"):
    """The structure of a network for these sizes, without drawing an init: impl_jax.scan's
    ScannedNetwork unless another class (the reference's) is given."""
    import jax.numpy as jnp
    from flax import nnx

    from impl_jax.scan import ScannedNetwork

    cls = network_class or ScannedNetwork
    return nnx.eval_shape(lambda: cls(list(sizes), True, "tanh", dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)))


def lowered_text(sizes, network_class=None) -> str:
    """grad_fn lowered to StableHLO for a (1, sizes[0]) input: the program XLA is handed to compile."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from impl_jax.model import grad_fn

    graphdef, params = nnx.split(build(sizes, network_class), nnx.Param)
    x, target = jax.ShapeDtypeStruct((1, sizes[0]), jnp.float32), jax.ShapeDtypeStruct((1, sizes[-1]), jnp.float32)
    return grad_fn.lower(params, graphdef, x, target).as_text()


@pytest.mark.parametrize("net, form, use_shortcut", CASES)
def test_deep_networks_agree_with_torch_and_numpy(net, form, use_shortcut):
    params, x, target, dtype = network(net)
    kw = dict(use_shortcut=use_shortcut, gelu_form=form, dtype=dtype)
    results = {fw: needs(fw)(params, x, target, **kw) for fw in ("torch", "jax", "numpy")}
    report = compare(results, dtype)
    assert report["first_mismatch"] is None, report["first_mismatch"]
    sizes = NETWORKS[net][0]
    jax_result = results["jax"]
    assert [dW.shape for dW in jax_result["dW"]] == [(o, i) for i, o in zip(sizes[:-1], sizes[1:])]
    assert [db.shape for db in jax_result["db"]] == [(o,) for o in sizes[1:]]
    assert jax_result["dx"].shape == x.shape and jax_result["output"].shape == target.shape
    assert all(g.dtype == np.dtype(dtype) for g in jax_result["dW"] + jax_result["db"] + [jax_result["dx"]])


@pytest.mark.parametrize("net", ["non-square-3d", "width-8x40"])
@pytest.mark.parametrize("form", ["tanh", "exact"])
def test_scan_gives_the_unrolled_loops_numbers(net, form, monkeypatch):
    """The same network with the scan turned off: the reference class, the book's loop over every layer.

    Measured: bit-identical here. 4 ulps of each tensor's largest element passes a reordering by
    XLA and fails a gradient sent to the wrong slice of the stack (a neighbouring layer's, 1e-2 away)."""
    import impl_jax.model

    params, x, target, dtype = network(net)
    kw = dict(use_shortcut=True, gelu_form=form, dtype=dtype)
    scanned = impl_jax.model.loss_and_grads(params, x, target, **kw)
    monkeypatch.setattr(impl_jax.model, "SCAN_MIN_LAYERS", len(params) + 1)
    unrolled = impl_jax.model.loss_and_grads(params, x, target, **kw)
    for a, b in zip(
        scanned["dW"] + scanned["db"] + [scanned["dx"]], unrolled["dW"] + unrolled["db"] + [unrolled["dx"]]
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=4 * np.finfo(dtype).eps * np.abs(b).max())


def test_long_runs_are_stacked_and_short_ones_stay_the_books_layers():
    from impl_jax.model import SCAN_MIN_LAYERS, ExampleDeepNeuralNetwork

    book = build((3, 3, 3, 3, 3, 1))
    assert book.run_lengths == (1, 1, 1, 1, 1)
    assert book.layers[0].layers[0].kernel.shape == (3, 3)
    just_short = build((4,) * SCAN_MIN_LAYERS)  # SCAN_MIN_LAYERS - 1 layers: still a loop
    assert just_short.run_lengths == (1,) * (SCAN_MIN_LAYERS - 1)
    deep = build((3,) + (5,) * 20 + (2,))
    assert deep.run_lengths == (1, 19, 1)
    stacked = deep.layers[1].layers[0]
    assert (stacked.kernel.shape, stacked.bias.shape) == ((19, 5, 5), (19, 5))  # (L, d_in, d_out), (L, d_out)
    reference = build((3,) + (5,) * 20 + (2,), ExampleDeepNeuralNetwork)  # the book's loop: one entry a layer
    assert [layer.layers[0].kernel.shape for layer in reference.layers] == [(3, 5)] + [(5, 5)] * 19 + [(5, 2)]


def test_the_program_does_not_grow_with_depth():
    """The lowered program is one scanned layer whatever the depth: only the stack's length changes.

    Unrolled, the lowered text grew by one layer's worth per layer, and XLA's fusion made that
    quadratic (docs/jax-depth.md)."""
    from impl_jax.model import SCAN_MIN_LAYERS

    short, deep = lowered_text((1,) * (SCAN_MIN_LAYERS + 1)), lowered_text((1,) * 513)
    assert "stablehlo.while" in deep
    assert len(deep.splitlines()) == len(short.splitlines())
    assert deep.count("stablehlo.tanh") == short.count("stablehlo.tanh")


def test_the_books_network_is_not_scanned():
    assert "stablehlo.while" not in lowered_text((3, 3, 3, 3, 3, 1))


@pytest.mark.parametrize("net, scanned", [("book", False), ("non-square-3d", True)], ids=["book", "deep"])
def test_the_reference_hands_only_long_runs_to_the_scan(net, scanned, monkeypatch):
    """impl_jax.model.loss_and_grads runs the book's loop itself, and calls impl_jax.scan's entry
    point where a run of SCAN_MIN_LAYERS equal layers or more would make the unrolled program large."""
    import impl_jax.model
    import impl_jax.scan

    if net == "book":
        params = seeded_params((3, 3, 3, 3, 3, 1), 123)
        x, target, dtype = default_input(3), default_target(1), "float32"
    else:
        params, x, target, dtype = network(net)
    calls = []
    scan_entry = impl_jax.scan.loss_and_grads
    monkeypatch.setattr(impl_jax.scan, "loss_and_grads", lambda *a, **kw: calls.append(1) or scan_entry(*a, **kw))
    result = impl_jax.model.loss_and_grads(params, x, target, use_shortcut=True, gelu_form="tanh", dtype=dtype)
    assert calls == [1] * scanned
    assert [dW.shape for dW in result["dW"]] == [W.shape for W, _ in params]


def test_no_deprecation_warnings_on_the_scanned_path():
    params, x, target, dtype = network("non-square-3d")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        needs("jax")(params, x, target, use_shortcut=True, gelu_form="tanh", dtype=dtype)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)]
    assert deprecations == [], [str(w.message) for w in deprecations]

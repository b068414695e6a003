"""impl_numpy/fast.py against the reference impl_numpy/model.py, element by element."""

import numpy as np
import pytest
from conftest import needs

from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED

# Every element may differ by ULPS ulps of its tensor's largest element. The two files round
# differently only in the tanh GELU (the reference writes the book's k (x + c x**3), fast.py
# k (1 + c z^2) z; the exact form comes out bit for bit the same). Measured over the networks
# below: at most 8 ulps in float32 and 5 in float64. 32 passes that with room, and catches a
# GELU constant off by 1e-4 relative in fast.py alone (0.04472 for 0.044715: 390 ulps in
# float32, 2e11 in float64), let alone a wrong rule.
ULPS = 32


def network(name: str):
    """(params, x, target): the book's, a non-square one on a 3-D batch, and a deeper one."""
    rng = np.random.default_rng(0)
    if name == "book":
        return weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED), weights.default_input(3), weights.default_target(1)
    sizes, x_shape = {"non-square-3d": ((8, 8, 5, 5, 2), (2, 4, 8)), "deep": ((16,) * 9 + (4,), (32, 16))}[name]
    params = [(rng.normal(size=(o, i)) / np.sqrt(i), 0.1 * rng.normal(size=o)) for i, o in zip(sizes[:-1], sizes[1:])]
    return params, rng.normal(size=x_shape), rng.normal(size=x_shape[:-1] + (sizes[-1],))


def tensors(result: dict) -> list[tuple[str, np.ndarray]]:
    n = len(result["dW"])
    return [("loss", result["loss"]), ("output", result["output"]), ("dx", result["dx"])] + [
        (f"{key}[{i}]", result[key][i]) for key in ("dW", "db") for i in range(n)
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
@pytest.mark.parametrize("form", ["tanh", "exact"])
@pytest.mark.parametrize("name", ["book", "non-square-3d", "deep"])
def test_fast_matches_the_reference(name, form, use_shortcut, dtype):
    needs("numpy")
    from impl_numpy import fast, model

    params, x, target = network(name)
    kw = dict(use_shortcut=use_shortcut, gelu_form=form, dtype=dtype)
    expected, got = model.loss_and_grads(params, x, target, **kw), fast.loss_and_grads(params, x, target, **kw)
    assert set(got) == {"loss", "output", "dW", "db", "dx"}
    for (key, want), (_, have) in zip(tensors(expected), tensors(got)):
        assert have.shape == want.shape and have.dtype == want.dtype == np.dtype(dtype), key
        assert np.all(np.isfinite(have)), key
        bound = ULPS * np.finfo(dtype).eps * np.max(np.abs(want))
        np.testing.assert_array_less(np.abs(have - want), bound + np.finfo(dtype).tiny, err_msg=key)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
@pytest.mark.parametrize("name", ["book", "non-square-3d", "deep"])
def test_fast_intermediates_match_the_reference(name, use_shortcut, dtype):
    """intermediates=True adds dy and dz (the bound measures with them), each (..., d_out) like the
    reference's, within the same ULPS; every other tensor is bit for bit what the plain call returns."""
    needs("numpy")
    from impl_numpy import fast, model

    params, x, target = network(name)
    kw = dict(use_shortcut=use_shortcut, gelu_form="tanh", dtype=dtype)
    expected = model.loss_and_grads(params, x, target, **kw)
    plain, got = (
        fast.loss_and_grads(params, x, target, **kw),
        fast.loss_and_grads(params, x, target, **kw, intermediates=True),
    )
    for (key, want), (_, have) in zip(tensors(plain), tensors(got)):
        np.testing.assert_array_equal(have, want, err_msg=key)
    for key in ("dy", "dz"):
        assert len(got[key]) == len(params)
        for i, (want, have) in enumerate(zip(expected[key], got[key])):
            assert have.shape == want.shape and have.dtype == want.dtype == np.dtype(dtype), (key, i)
            bound = ULPS * np.finfo(dtype).eps * np.max(np.abs(want))
            np.testing.assert_array_less(np.abs(have - want), bound + np.finfo(dtype).tiny, err_msg=f"{key}[{i}]")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_leaves_its_inputs_alone(dtype):
    """fast.py works in place on its own arrays only: the caller's x, weights and target are untouched."""
    needs("numpy")
    from impl_numpy import fast

    params, x, target = network("non-square-3d")
    params = [(W.astype(dtype), b.astype(dtype)) for W, b in params]  # already in dtype: fast.py gets these very arrays
    x, target = x.astype(dtype), target.astype(dtype)
    before = [a.copy() for W, b in params for a in (W, b)] + [x.copy(), target.copy()]
    fast.loss_and_grads(params, x, target, use_shortcut=True, gelu_form="tanh", dtype=dtype)
    after = [a for W, b in params for a in (W, b)] + [x, target]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("form", ["tanh", "exact"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_gelu_slope_is_finite_far_out(dtype, form):
    """As tests/test_numpy_reference.py checks for the reference: 1 on the right, 0 on the left, no NaN."""
    needs("numpy")
    from impl_numpy import fast

    z = np.array([[-1e15, -1e13, -1e6, -50.0, 50.0, 1e6, 1e13, 1e15]], dtype)  # (1, 8): one row
    with np.errstate(over="ignore"):  # u = k (z + c z^3) is inf at 1e15 in float32; tanh(inf) = 1 is right
        phi, _ = fast.gelu_forward(z, np.zeros(8, dtype), None, form)
        slope = fast.gelu_backward(np.ones_like(z), z, phi, np.empty((2, *z.shape), dtype), form)
    np.testing.assert_array_equal(slope, np.array([[0, 0, 0, 0, 1, 1, 1, 1]], dtype))


def test_fast_refuses_an_unknown_gelu_form():
    needs("numpy")
    from impl_numpy import fast

    params, x, target = network("book")
    with pytest.raises(ValueError, match="use 'tanh' or 'exact'"):
        fast.loss_and_grads(params, x, target, use_shortcut=True, gelu_form="erf", dtype="float64")

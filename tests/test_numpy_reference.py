"""The hand-written NumPy reference on its own: each backward rule against its forward."""

import numpy as np
import pytest
from conftest import needs

FORMS = ["tanh", "exact"]
DTYPES = ["float32", "float64"]
FAR_OUT = [-1e15, -1e13, -1e6, -50.0, 50.0, 1e6, 1e13, 1e15]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_slope_is_finite_far_out(dtype, form):
    """gelu'(z) at |z| up to 1e15 (deep shortcut networks reach 1e13): 1 on the right, 0 on the left.

    Written naively, z u' (~z^3) overflows float32 there and inf * 0 gives NaN.
    """
    needs("numpy")
    from impl_numpy.model import gelu_backward

    z = np.array(FAR_OUT, dtype)
    with np.errstate(over="ignore"):  # u = k (z + c z^3) is inf at 1e15 in float32; tanh(inf) = 1 is right
        slope = gelu_backward(np.ones_like(z), z, form)
    np.testing.assert_array_equal(slope, np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_result_is_in_the_asked_dtype_and_shape(dtype, form):
    """Constants are cast to the computation's dtype: a float32 run never drifts into float64."""
    needs("numpy")
    from impl_numpy.model import loss_and_grads

    rng = np.random.default_rng(0)
    sizes = (4, 4, 3)
    params = [(rng.normal(size=(o, i)), rng.normal(size=o)) for i, o in zip(sizes[:-1], sizes[1:])]
    x = rng.normal(size=(2, 5, 4))  # (2, 5, 4): two leading dimensions
    r = loss_and_grads(params, x, np.zeros(3), use_shortcut=True, gelu_form=form, dtype=dtype)
    assert r["loss"].shape == () and r["output"].shape == (2, 5, 3) and r["dx"].shape == x.shape
    assert [dW.shape for dW in r["dW"]] == [(4, 4), (3, 4)] and [db.shape for db in r["db"]] == [(4,), (3,)]
    assert [dy.shape for dy in r["dy"]] == [dz.shape for dz in r["dz"]] == [(2, 5, 4), (2, 5, 3)]
    arrays = [r["loss"], r["output"], r["dx"], *r["dW"], *r["db"], *r["dy"], *r["dz"]]
    assert {a.dtype for a in arrays} == {np.dtype(dtype)}


@pytest.mark.parametrize("form", FORMS)
def test_each_layer_dz_is_its_dy_through_the_gelu(form):
    """The per-layer "dy" and "dz" the reference returns are the ones its backward used."""
    needs("numpy")
    from impl_numpy import model

    rng = np.random.default_rng(1)
    params = [(rng.normal(size=(3, 3)), rng.normal(size=3)) for _ in range(3)]
    x = rng.normal(size=(4, 3))
    r = model.loss_and_grads(params, x, np.zeros(3), use_shortcut=True, gelu_form=form, dtype="float64")
    network = model.ExampleDeepNeuralNetwork(params, True, form)
    network.forward(x)
    for i, (_, z, shortcut) in enumerate(network.cache):
        assert shortcut
        np.testing.assert_array_equal(r["dz"][i], model.gelu_backward(r["dy"][i], z, form))
    np.testing.assert_array_equal(r["dy"][-1], model.mse_loss_backward(r["output"], np.zeros(3)))


def test_an_unknown_gelu_form_is_refused():
    needs("numpy")
    from impl_numpy import model

    z = np.zeros(3)
    for call in (lambda: model.gelu(z, "erf"), lambda: model.gelu_backward(z, z, "erf")):
        with pytest.raises(ValueError, match="use 'tanh' or 'exact'"):
            call()

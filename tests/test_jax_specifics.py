"""What the JAX version must get right beyond the numbers: no global x64, no Flax deprecations."""

import warnings

import numpy as np
from conftest import needs

from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES
from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params


def book_call(dtype: str):
    loss_and_grads = needs("jax")
    params = [(W.astype(dtype), b.astype(dtype)) for W, b in seeded_params((3, 3, 3, 3, 3, 1), 123)]
    return loss_and_grads(
        params,
        default_input(BOOK_LAYER_SIZES[0]),
        default_target(BOOK_LAYER_SIZES[-1]),
        use_shortcut=True,
        gelu_form="tanh",
        dtype=dtype,
    )


def test_float64_is_really_float64_and_does_not_leak():
    import jax
    import jax.numpy as jnp

    result = book_call("float64")
    assert all(g.dtype == np.float64 for g in result["dW"] + result["db"] + [result["dx"]])
    # float64 was enabled only inside the call: the global flag and default dtype are untouched.
    assert not jax.config.jax_enable_x64
    assert jnp.ones(1).dtype == jnp.float32


def test_float64_differs_from_float32_beyond_float32_noise():
    """A float64 run that secretly computed in float32 would match float32 to the last bit."""
    f32, f64 = book_call("float32"), book_call("float64")
    diff = np.abs(f64["dW"][0] - f32["dW"][0].astype(np.float64)).max()
    assert 0 < diff < 1e-5


def test_no_deprecation_warnings_from_flax():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        book_call("float32")
    flax_warnings = [w for w in caught if "flax" in str(w.filename) or "flax" in str(w.message).lower()]
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning | FutureWarning)]
    assert flax_warnings == [] and deprecations == [], [str(w.message) for w in caught]

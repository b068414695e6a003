"""The hand-written NumPy reference on its own: each backward rule against its forward."""

import numpy as np
import pytest
from conftest import needs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gelu_slope_is_finite_far_out(dtype):
    """gelu'(z) at |z| up to 1e15 (deep shortcut networks reach 1e13): 1 on the right, 0 on the left.

    Written naively, z u' (~z^3) overflows float32 there and inf * 0 gives NaN.
    """
    needs("numpy")
    from impl_numpy.model import gelu, gelu_backward

    z = np.array([-1e15, -1e13, -1e6, -50.0, 50.0, 1e6, 1e13, 1e15], dtype)
    with np.errstate(over="ignore"):  # u = k (z + c z^3) is inf at 1e15 in float32; tanh(inf) = 1 is right
        _, phi_cdf = gelu(z, "tanh")
        slope = gelu_backward(np.ones_like(z), z, phi_cdf, "tanh")
    np.testing.assert_array_equal(slope, np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype))

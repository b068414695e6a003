"""A fourth implementation, written unlike the three: every contraction is an einsum, GELU's slope comes from sech^2.

It follows docs/contract.md (and returns the optional dy and dz), so compare.py can check it
against torch, JAX and NumPy: `python compare.py --frameworks torch,numpy,tests/byo/einsum_backprop.py`.
"""

import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu_and_slope(z: np.ndarray, form: str) -> tuple[np.ndarray, np.ndarray]:
    """gelu(z) and gelu'(z), both (...,), in z's dtype."""
    one = z.dtype.type(1)
    if form == "tanh":
        k, c = z.dtype.type(math.sqrt(2 / math.pi)), z.dtype.type(0.044715)
        t = np.tanh(k * (z + c * z * z * z))
        sech2 = one - t * t  # tanh' = sech^2 = 1 - tanh^2
        return 0.5 * z * (one + t), 0.5 * (one + t) + 0.5 * z * sech2 * k * (one + 3 * c * z * z)
    if form == "exact":
        cdf = 0.5 * (one + _erf(z / z.dtype.type(math.sqrt(2))).astype(z.dtype))
        pdf = np.exp(-0.5 * z * z) / z.dtype.type(math.sqrt(2 * math.pi))
        return z * cdf, cdf + z * pdf
    raise ValueError(f"unknown GELU form {form!r}")


def loss_and_grads(params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str) -> dict:
    params = [(np.asarray(W, dtype), np.asarray(b, dtype)) for W, b in params]
    h, target = np.asarray(x, dtype), np.asarray(target, dtype)
    saved = []
    for W, b in params:
        z = np.einsum("...i,oi->...o", h, W) + b  # (..., d_out)
        a, slope = _gelu_and_slope(z, gelu_form)
        skip = use_shortcut and a.shape == h.shape
        saved.append((h, slope, skip))
        h = h + a if skip else a
    diff = h - target
    loss = np.einsum("i,i->", diff.ravel(), diff.ravel()) / diff.dtype.type(diff.size)
    g = diff * diff.dtype.type(2 / diff.size)  # dL/d output
    n = len(params)
    dW, db, dy, dz = [None] * n, [None] * n, [None] * n, [None] * n
    for i in range(n - 1, -1, -1):
        h_in, slope, skip = saved[i]
        dy[i] = g
        dz[i] = g * slope
        # einsum cannot sum over '...': the leading dimensions are flattened into rows r first.
        dz_rows, h_rows = dz[i].reshape(-1, dz[i].shape[-1]), h_in.reshape(-1, h_in.shape[-1])
        dW[i] = np.einsum("ro,ri->oi", dz_rows, h_rows)
        db[i] = np.einsum("ro->o", dz_rows)
        g = np.einsum("...o,oi->...i", dz[i], params[i][0]) + (g if skip else 0)
    return {"loss": loss, "output": h, "dW": dW, "db": db, "dx": g, "dy": dy, "dz": dz}

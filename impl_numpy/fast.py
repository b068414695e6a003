"""The step of impl_numpy/model.py written for speed: same entry point, same results up to rounding.

model.py is for reading; this file is for running, as llm.c keeps train_gpt2.c beside its
CUDA kernels. What it trades against the reference, each trick said where it is used:

- The GELU lines are rearranged for fewer passes over memory: u = (k c z^2 + k) z from
  z * z, never z**3 (NumPy's `** 3` calls pow() element by element).
- Every elementwise line writes into an existing array (`out=`, `*=`), so a layer allocates
  only what its cache keeps. The forward keeps Phi(z), so the backward needs no second
  tanh or erf, and the backward writes dz and dx into cached arrays it has finished with.
- The exact GELU's erf is SciPy's ufunc where SciPy is installed (it comes with JAX), within
  2 ulps of the C library's erf that model.py calls element by element, and 9 times faster;
  without SciPy it is model.py's. For arrays under SCIPY_ERF_FROM elements it is model.py's
  too: importing scipy.special costs more than their erf.
- The backward pops the cache: each layer's arrays are freed as soon as its gradients are
  done, as autograd frees its graph, so the peak is not every activation plus every gradient
  (unless `intermediates=True` asks for each layer's dy and dz, which live in those arrays).

The price: the lines no longer read as the book's formula, and the tanh form rounds
differently from model.py's (a few ulps); tests/test_numpy_fast.py checks every tensor.

It is the book's network only: norm "pre" (a LayerNorm in every layer) is model.py's alone,
and is refused here with a ValueError rather than run without its norms.
"""

import functools

import numpy as np

from . import model  # the constants, named once there

# Below this many elements the C erf, element by element, costs less than importing SciPy.
SCIPY_ERF_FROM = 2**16


def _erf(v: np.ndarray) -> np.ndarray:
    """erf(v) in double: SciPy's ufunc for big arrays (one pass over the array, 9 times the C erf's
    speed), the reference's C erf for small ones, whose run need not pay most of a second
    importing scipy.special. The two are within 2 ulps of each other."""
    erf = _scipy_erf() if v.size >= SCIPY_ERF_FROM else None
    return (erf or model._erf)(v)


@functools.cache
def _scipy_erf():
    """scipy.special.erf, imported on first use; None without SciPy."""
    try:
        from scipy.special import erf
    except ImportError:
        return None
    return erf


def gelu_forward(z: np.ndarray, b: np.ndarray, x: np.ndarray | None, form: str) -> tuple[np.ndarray, np.ndarray]:
    """z (rows, d_out) = x W^T, fresh from the matmul, gets b added in place; returns (Phi(z), y),
    y = x + z Phi(z) where x (rows, d_out) is given (the shortcut), else z Phi(z); all (rows, d_out)."""
    dtype = z.dtype.type
    k, c, half = dtype(model.SQRT_2_OVER_PI), dtype(model.GELU_CUBIC), dtype(0.5)
    z += b  # z = x W^T + b, in place: no second (rows, d_out) array
    if form == "tanh":
        phi = z * z  # (rows, d_out)  z^2, then built up in this one buffer, one pass per line
        phi *= k * c  # k c z^2
        phi += k  # k (1 + c z^2)
        phi *= z  # u = k (z + c z^3)
        np.tanh(phi, out=phi)  # t = tanh(u)
        phi *= half
        phi += half  # Phi = 0.5 (1 + t)
    elif form == "exact":
        phi = _erf(z * dtype(model.SQRT_1_OVER_2)).astype(z.dtype, copy=False)  # erf(z / sqrt(2))
        phi += 1
        phi *= half  # Phi = 0.5 (1 + erf(z / sqrt(2)))
    else:
        raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")
    y = z * phi  # (rows, d_out)  a = z Phi: a new array, kept as the next layer's input
    if x is not None:
        y += x  # y = x + a: the shortcut, in place in the array just made
    return phi, y


def gelu_backward(dy: np.ndarray, z: np.ndarray, phi: np.ndarray, scratch: np.ndarray, form: str) -> np.ndarray:
    """dz = dy * gelu'(z), written into z's buffer (z is not needed again) and returned; all (rows, d_out).

    gelu'(z) = Phi + z Phi', derived in model.gelu_backward; phi is Phi(z) from gelu_forward.
    scratch: two arrays of z's shape, (2, rows, d_out), overwritten.
    """
    dtype = z.dtype.type
    k, c, p = dtype(model.SQRT_2_OVER_PI), dtype(model.GELU_CUBIC), dtype(model.SQRT_1_OVER_2PI)
    w, q = scratch
    np.multiply(z, z, out=w)  # z^2
    if form == "tanh":
        w *= dtype(6) * k * c
        w += dtype(2) * k  # 2 u' = 2 k (1 + 3 c z^2)
        w *= np.subtract(1, phi, out=q)  # 1 - Phi into the second scratch: Phi is needed again below
        w *= phi  # Phi' = 2 u' (1 - Phi) Phi
    elif form == "exact":
        w *= dtype(-0.5)
        np.exp(w, out=w)
        w *= p  # Phi' = exp(-z^2 / 2) / sqrt(2 pi)
    else:
        raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")
    # z last, as in model.py: far out (1 - Phi) Phi is exactly 0 while z u' overflows float32.
    w *= z  # z Phi'
    w += phi  # gelu'(z) = Phi + z Phi'
    return np.multiply(w, dy, out=z)  # dz = dy gelu'(z), into z's buffer


def loss_and_grads(
    params,
    x,
    target,
    *,
    use_shortcut: bool,
    gelu_form: str,
    dtype: str,
    norm: str = "none",
    intermediates: bool = False,
) -> dict:
    """model.loss_and_grads, fast: the same arguments, and {"loss", "output", "dW", "db", "dx"}; norm "none" only.

    intermediates: also "dy" and "dz" (dL/d each layer's output and z, in layer order, (..., d_out) each),
    as model.py returns them. They live in the buffers the backward would otherwise free, so the
    step then holds every layer's arrays to the end, as the reference does."""
    if norm != "none" or any(len(layer) != 2 for layer in params):
        raise ValueError(
            f"impl_numpy.fast runs the book's network only (norm 'none', (W, b) per layer), not norm={norm!r}: use impl_numpy.model"
        )
    params = [(np.asarray(W, dtype), np.asarray(b, dtype)) for W, b in params]
    x, target = np.asarray(x, dtype), np.asarray(target, dtype)
    h = x.reshape(-1, x.shape[-1])  # (rows, d_in): leading dimensions flattened; a view for a contiguous x

    cache = []
    for W, b in params:
        z = h @ W.T  # (rows, d_out)  fresh: gelu_forward adds b into it
        shortcut = use_shortcut and W.shape[0] == W.shape[1]  # the layer keeps the width
        phi, y = gelu_forward(z, b, h if shortcut else None, gelu_form)
        cache.append((h, z, phi, shortcut))
        h = y  # (rows, d_out)
    output = h.reshape(*x.shape[:-1], h.shape[-1])  # (..., d_last)

    dout = output - target  # (..., d_last)
    loss = np.mean(np.square(dout))
    dout *= dout.dtype.type(2.0 / output.size)  # dL/d output = 2 (output - target) / N, in place
    dy = dout.reshape(h.shape)  # (rows, d_last)

    # One pair of scratch arrays for every layer's gelu_backward, sized for the widest layer.
    scratch = np.empty((2, dy.shape[0] * max(W.shape[0] for W, _ in params)), dtype)
    dWs, dbs, dys, dzs = ([None] * len(params) for _ in range(4))
    for i in reversed(range(len(params))):
        W = params[i][0]
        h_in, z, phi, shortcut = cache.pop()  # popped: this layer's arrays are freed when the loop moves on
        dz = gelu_backward(dy, z, phi, scratch[:, : z.size].reshape(2, *z.shape), gelu_form)  # (rows, d_out), in z
        if intermediates:  # kept, not freed: dz is in z's buffer, dy in the next layer's input's
            dys[i], dzs[i] = dy.reshape(*x.shape[:-1], -1), dz.reshape(*x.shape[:-1], -1)
        dWs[i] = dz.T @ h_in  # (d_out, d_in)   z = x W^T + b  =>  dW = dz^T x
        dbs[i] = dz.sum(axis=0)  # (d_out,)   db = sum_rows dz
        # dx = dz W into the layer input's buffer, unused after dW; not for layer 0: that is the caller's x.
        dx = np.matmul(dz, W, out=h_in) if i > 0 else dz @ W  # (rows, d_in)
        if shortcut:
            dx += dy  # the identity path: y = x + a  =>  dx += dy
        dy = dx
    result = {"loss": loss, "output": output, "dW": dWs, "db": dbs, "dx": dy.reshape(x.shape)}
    return result | ({"dy": dys, "dz": dzs} if intermediates else {})

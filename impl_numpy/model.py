"""The book's ExampleDeepNeuralNetwork with a hand-written backward pass, in NumPy.

No autograd of any kind: `forward` keeps an explicit cache and `backward` walks it
in reverse, one line per step, each beside the local rule it applies. Notation:
`dname` is dL/d(name) and has the shape of `name`; `...` is any number of leading
batch dimensions; N is the number of elements of the output.

Forward, layer i (x has shape (..., d_in), W (d_out, d_in), b (d_out,)):

    z = x @ W.T + b                     (..., d_out)
    a = gelu(z) = z Phi(z)              (..., d_out)
    y = x + a  if shortcut and shapes match, else  y = a

Phi is the standard normal CDF (form "exact") or its tanh approximation (form "tanh");
either way the forward keeps Phi(z) for the backward.

Backward, the same steps in reverse (rows summed over the leading dimensions):

    dz = dy * gelu'(z),   gelu'(z) = Phi(z) + z Phi'(z)
    dW = dz^T x      db = sum(dz)      dx = dz @ W   (+ dy through the identity path)

The identity path is the "1" in dy/dx = 1 + da/dx: whatever the layer does to the
gradient, dy reaches x unchanged.

Speed: an elementwise NumPy operation is one pass over memory and, unless told `out=`,
one new array. Where a line below works in place, it says why; the math is unchanged.
"""

import math

import numpy as np

GELU_CUBIC = 0.044715  # the 0.044715 in the tanh approximation (Hendrycks & Gimpel, 2016)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # Python float (double): cast to the dtype at use
SQRT_1_OVER_2 = math.sqrt(0.5)
SQRT_1_OVER_2PI = math.sqrt(0.5 / math.pi)  # the standard normal density's 1/sqrt(2 pi)

# NumPy has no erf ufunc; math.erf is the C library's, applied element by element in
# double and rounded to the computation's dtype. Only the exact form pays for it.
_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(z: np.ndarray, form: str) -> tuple[np.ndarray, np.ndarray]:
    """GELU of z, (...,) -> (...,), with Phi(z), which its derivative reuses.

    form "tanh": 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))), the book's formula,
         = z Phi(z) with Phi(z) ~ 0.5 (1 + tanh(u)),  u = sqrt(2/pi) (z + 0.044715 z^3).
    form "exact": z Phi(z) = 0.5 z (1 + erf(z / sqrt(2))), torch.nn.GELU()'s default.
    Constants are cast to z's dtype, so float32 stays float32 and float64 is float64.
    """
    one, half = z.dtype.type(1), z.dtype.type(0.5)
    if form == "tanh":
        k, c = z.dtype.type(SQRT_2_OVER_PI), z.dtype.type(GELU_CUBIC)
        # u = k (z + c z^3) = z (k + k c z^2), built up in one buffer: in place, each line is one
        # pass over memory and no new array. z * z, not z**3: NumPy's ** 3 calls pow() per element.
        phi_cdf = z * z  # (...,) z^2
        phi_cdf *= k * c  # k c z^2
        phi_cdf += k  # k + k c z^2
        phi_cdf *= z  # u
        np.tanh(phi_cdf, out=phi_cdf)  # t = tanh(u), in place: u is not needed again
        phi_cdf *= half
        phi_cdf += half  # Phi(z) ~ 0.5 (1 + t)
        return z * phi_cdf, phi_cdf
    if form == "exact":
        phi_cdf = half * (one + _erf(z * z.dtype.type(SQRT_1_OVER_2)).astype(z.dtype))  # (...,)
        return z * phi_cdf, phi_cdf
    raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")


def gelu_backward(dout: np.ndarray, z: np.ndarray, saved: np.ndarray, form: str) -> np.ndarray:
    """dL/dz given dout = dL/d(gelu(z)), all (...,); `saved` is gelu's Phi(z).

    g = z Phi(z)  =>  g' = Phi + z Phi'
    tanh:  Phi = 0.5 (1 + t),  t = tanh(u),  u = k (z + c z^3),  k = sqrt(2/pi)
           Phi' = 0.5 (1 - t^2) u' = 2 Phi (1 - Phi) u',   u' = k (1 + 3 c z^2)
           g' = Phi + 2 z u' Phi (1 - Phi)
    exact: Phi' = phi(z) = exp(-z^2 / 2) / sqrt(2 pi)
    """
    one, half = z.dtype.type(1), z.dtype.type(0.5)
    phi_cdf = saved
    if form == "tanh":
        k, c = z.dtype.type(SQRT_2_OVER_PI), z.dtype.type(GELU_CUBIC)
        # Built up in one buffer, in place, as in gelu: one pass over memory per line.
        dz = z * z  # (...,) z^2
        dz *= z.dtype.type(6) * k * c  # 6 k c z^2
        dz += z.dtype.type(2) * k  # 2 k (1 + 3 c z^2) = 2 u'
        dz *= one - phi_cdf  # 2 u' (1 - Phi)     (one temporary, 1 - Phi)
        dz *= phi_cdf  # 2 u' Phi (1 - Phi) = Phi'
        # z after Phi (1 - Phi): far out, Phi or 1 - Phi is exactly 0 while z u' (~z^3)
        # overflows float32 above |z| ~ 3e12; multiplying by z last keeps 0 * z, never inf * 0.
        dz *= z  # z Phi'
        dz += phi_cdf  # g' = Phi + z Phi'
        dz *= dout  # dz = dout g'
        return dz
    if form == "exact":
        phi_pdf = z.dtype.type(SQRT_1_OVER_2PI) * np.exp(-half * z**2)  # (...,)
        return dout * (phi_cdf + z * phi_pdf)
    raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")


def forward(params: list, x: np.ndarray, use_shortcut: bool, gelu_form: str):
    """Run the network on x (..., sizes[0]); returns (output (..., sizes[-1]), cache).

    params: [(W (d_out, d_in), b (d_out,)), ...], torch's layout.
    cache: one (x, z, Phi(z), shortcut) per layer, what backward needs, in forward order.
    """
    cache = []
    for W, b in params:
        z = x @ W.T  # (..., d_out)
        z += b  # in place: the bias joins the fresh matmul result, no second (..., d_out) array
        a, phi_cdf = gelu(z, gelu_form)  # (..., d_out)
        shortcut = use_shortcut and a.shape == x.shape
        cache.append((x, z, phi_cdf, shortcut))
        if shortcut:
            a += x  # y = x + a, in place: a is gelu's fresh array, which nothing else holds yet
        x = a  # (..., d_out)
    return x, cache


def mse_loss(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean over all elements of (output - target)^2; target broadcasts to output."""
    return np.mean((output - target) ** 2)


def mse_loss_backward(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """dL/d(output), (...,): L = sum((output - target)^2) / N  =>  2 (output - target) / N."""
    return output.dtype.type(2.0 / output.size) * (output - target)


def backward(params: list, cache: list, dout: np.ndarray, gelu_form: str):
    """Walk the cache in reverse; returns ([dW], [db], dx) in the layout of params and x.

    The cache is consumed: each layer's entry is popped, so its arrays are freed as soon as
    its gradients are done (as autograd frees its graph) and the peak is not every
    activation plus every gradient.
    """
    dWs, dbs = [], []
    dy = dout  # (..., d_out) of the last layer
    for W, _ in reversed(params):
        x, z, phi_cdf, shortcut = cache.pop()
        dz = gelu_backward(dy, z, phi_cdf, gelu_form)  # (..., d_out)  a = gelu(z)
        dz2 = dz.reshape(-1, dz.shape[-1])  # (rows, d_out)      rows = all leading dims
        x2 = x.reshape(-1, x.shape[-1])  # (rows, d_in)
        dWs.append(dz2.T @ x2)  # (d_out, d_in)    z = x W^T + b  =>  dW = dz^T x
        dbs.append(dz2.sum(axis=0))  # (d_out,)   b is added to every row  =>  db = sum_rows dz
        dx = dz @ W  # (..., d_in)              z = x W^T + b  =>  dx = dz W
        if shortcut:
            dx += dy  # the identity path: y = x + a  =>  dx += dy (in place: dx is the fresh matmul result)
        dy = dx
    return dWs[::-1], dbs[::-1], dy


def loss_and_grads(params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str) -> dict:
    """The common entry point: loss, output and every gradient, as NumPy arrays.

    params: [(W (d_out, d_in), b (d_out,)), ...] in torch's layout; x (..., sizes[0]);
    target broadcastable to the output (..., sizes[-1]); gelu_form "tanh" or "exact";
    dtype "float32" or "float64" (everything is cast to it).
    Returns {"loss": (), "output": (..., sizes[-1]), "dW": [(d_out, d_in)], "db": [(d_out,)],
    "dx": (..., sizes[0])}.
    """
    params = [(np.asarray(W, dtype), np.asarray(b, dtype)) for W, b in params]
    x, target = np.asarray(x, dtype), np.asarray(target, dtype)
    output, cache = forward(params, x, use_shortcut, gelu_form)
    loss = mse_loss(output, target)
    dout = mse_loss_backward(output, target)
    dWs, dbs, dx = backward(params, cache, dout, gelu_form)
    return {"loss": loss, "output": output, "dW": dWs, "db": dbs, "dx": dx}

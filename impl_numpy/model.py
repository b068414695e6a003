"""The book's ExampleDeepNeuralNetwork in NumPy; gradients by a backward pass written by hand.

Each backward sits under its forward and runs its steps in reverse, one line per rule, the
rule beside it. `dname` is dL/d(name), with the shape of `name`; `...` is any number of
leading batch dimensions. impl_numpy/fast.py is the same step written for speed.
"""

import math

import numpy as np

GELU_CUBIC = 0.044715  # the 0.044715 in the tanh approximation (Hendrycks & Gimpel, 2016)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # Python floats (double): cast to x's dtype at use
SQRT_1_OVER_2 = math.sqrt(0.5)
SQRT_1_OVER_2PI = math.sqrt(0.5 / math.pi)  # the normal density's 1 / sqrt(2 pi)
LAYER_NORM_EPS = 1e-5  # the book's eps: keeps 1 / sqrt(var + eps) finite on a constant row
_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf ufunc: C's, in double


def gelu(x: np.ndarray, form: str) -> np.ndarray:
    """GELU of x, (...,) -> (...,), in x's dtype, written out as the book does:
    form "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the book's formula;
    form "exact": 0.5 x (1 + erf(x / sqrt(2))), what torch.nn.GELU() computes by default."""
    k, c, s = (x.dtype.type(v) for v in (SQRT_2_OVER_PI, GELU_CUBIC, SQRT_1_OVER_2))
    if form == "tanh":
        return 0.5 * x * (1.0 + np.tanh(k * (x + c * x**3)))
    if form == "exact":
        return 0.5 * x * (1.0 + _erf(x * s).astype(x.dtype))
    raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")


def gelu_backward(dout: np.ndarray, x: np.ndarray, form: str) -> np.ndarray:
    """dL/dx given dout = dL/d gelu(x), all (...,). Both forms are g = x Phi(x): g' = Phi + x Phi'.
    tanh:  Phi = 0.5 (1 + tanh(u)), u = k (x + c x^3)  =>  Phi' = 2 Phi (1 - Phi) k (1 + 3 c x^2)
    exact: Phi = 0.5 (1 + erf(x / sqrt(2)))  =>  Phi' = exp(-x^2 / 2) / sqrt(2 pi)"""
    k, c, s, p = map(x.dtype.type, (SQRT_2_OVER_PI, GELU_CUBIC, SQRT_1_OVER_2, SQRT_1_OVER_2PI))
    if form == "tanh":
        phi = 0.5 * (1.0 + np.tanh(k * (x + c * x**3)))  # (...,)  Phi(x)
        dphi = 2.0 * phi * (1.0 - phi) * k * (1.0 + 3.0 * c * x**2)  # (...,)  Phi'(x)
    elif form == "exact":
        phi = 0.5 * (1.0 + _erf(x * s).astype(x.dtype))  # (...,)  Phi(x)
        dphi = p * np.exp(-0.5 * x**2)  # (...,)  Phi'(x)
    else:
        raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")
    # x multiplies last: far out, Phi (1 - Phi) is exactly 0 while x^3 overflows float32.
    return dout * (phi + x * dphi)  # (...,)   g = x Phi  =>  g' = Phi + x Phi'


def layer_norm(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The book's LayerNorm: x (..., d) over its last axis, then scale (d,) and shift (d,)."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = x.var(axis=-1, keepdims=True)  # (..., 1)   ddof=0: the book's unbiased=False
    norm_x = (x - mean) / np.sqrt(var + x.dtype.type(LAYER_NORM_EPS))  # (..., d)
    return scale * norm_x + shift  # (..., d)


def layer_norm_backward(dout: np.ndarray, x: np.ndarray, scale: np.ndarray) -> tuple:
    """(dx (..., d), dscale (d,), dshift (d,)) given dout = dL/d layer_norm(x, scale, shift).
    out = scale xhat + shift, xhat = (x - mu) / sigma: dxhat = dout scale; each x_k also moves its
    row's mu (dmu/dx_k = 1/d) and sigma (dsigma/dx_k = xhat_k / d), two shares that dxhat / sigma
    leaves out: dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sigma, means over the row."""
    sigma = np.sqrt(x.var(axis=-1, keepdims=True) + x.dtype.type(LAYER_NORM_EPS))  # (..., 1)
    xhat = (x - x.mean(axis=-1, keepdims=True)) / sigma  # (..., d)
    dscale = (dout * xhat).reshape(-1, x.shape[-1]).sum(axis=0)  # (d,)   sum_rows dout xhat
    dshift = dout.reshape(-1, x.shape[-1]).sum(axis=0)  # (d,)   sum_rows dout
    dxhat = dout * scale  # (..., d)
    mean_share = dxhat.mean(-1, keepdims=True)  # (..., 1)
    var_share = xhat * (dxhat * xhat).mean(-1, keepdims=True)  # (..., d)
    dx = (dxhat - mean_share - var_share) / sigma  # (..., d)
    return dx, dscale, dshift


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (..., d_in) -> (..., d_out), with W (d_out, d_in) and b (d_out,) in torch's layout."""
    return x @ W.T + b  # (..., d_out)


def linear_backward(dz: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple:
    """(dx (..., d_in), dW (d_out, d_in), db (d_out,)) given dz (..., d_out), every row's added."""
    dz2 = dz.reshape(-1, dz.shape[-1])  # (rows, d_out)
    x2 = x.reshape(-1, x.shape[-1])  # (rows, d_in)
    dx = dz @ W  # (..., d_in)        z = x W^T + b  =>  dx = dz W
    dW = dz2.T @ x2  # (d_out, d_in)  z = x W^T + b  =>  dW = dz^T x, summed over the rows
    db = dz2.sum(axis=0)  # (d_out,)  b is added to every row  =>  db = sum_rows dz
    return dx, dW, db


class ExampleDeepNeuralNetwork:
    """(LayerNorm +) Linear + GELU layers; use_shortcut: x = x + layer(x) where the shapes match."""

    def __init__(self, params: list, use_shortcut: bool, gelu_form: str):
        """params: [(W (d_out, d_in), b (d_out,)), ...] in torch's layout; pre-LN layers
        (W, b, scale (d_in,), shift (d_in,))."""
        self.params, self.use_shortcut, self.gelu_form = params, use_shortcut, gelu_form

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (..., sizes[0]) -> (..., sizes[-1]); self.cache: (x, z, shortcut taken?) per layer."""
        self.cache = []
        for W, b, *norm in self.params:  # norm: (scale, shift) in a pre-LN layer, else ()
            h = layer_norm(x, *norm) if norm else x  # (..., d_in)   the Linear's input
            z = linear(h, W, b)  # (..., d_out)
            layer_output = gelu(z, self.gelu_form)  # (..., d_out)
            shortcut = self.use_shortcut and x.shape == layer_output.shape
            self.cache.append((x, z, shortcut))
            if shortcut:
                x = x + layer_output  # the shortcut: the input joins the output
            else:
                x = layer_output
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dL/dx (..., sizes[0]) given dout = dL/d output, from the cache in reverse. Sets self.dW,
        self.db, self.dy (dL/d each layer's output), self.dz (dL/d each z), and for pre-LN layers
        self.dscale, self.dshift (None elsewhere): lists in layer order."""
        n = len(self.params)
        self.dW, self.db, self.dy, self.dz = ([None] * n for _ in range(4))
        self.dscale, self.dshift = [None] * n, [None] * n  # set for pre-LN layers only
        dy = dout  # (..., d_out) of the last layer
        for i in reversed(range(n)):
            (x, z, shortcut), (W, _, *norm) = self.cache[i], self.params[i]
            self.dy[i] = dy
            self.dz[i] = gelu_backward(dy, z, self.gelu_form)  # (..., d_out)   a = gelu(z)
            h = layer_norm(x, *norm) if norm else x  # (..., d_in)   the Linear's input, recomputed
            dx, self.dW[i], self.db[i] = linear_backward(self.dz[i], h, W)  # z = h W^T + b
            if norm:  # h = layer_norm(x, scale, shift)
                dx, self.dscale[i], self.dshift[i] = layer_norm_backward(dx, x, norm[0])
            dy = dx + dy if shortcut else dx  # (..., d_in)   y = x + a  =>  dx += dy
        return dy


def mse_loss(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean over all elements of (output - target)^2; target broadcasts to output."""
    return np.mean((output - target) ** 2)


def mse_loss_backward(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """dL/d output (...,): L = sum((output - target)^2) / N  =>  2 (output - target) / N."""
    return output.dtype.type(2.0 / output.size) * (output - target)


def loss_and_grads(
    params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str, norm: str = "none"
) -> dict:
    """The common entry point: loss, output and every gradient, as NumPy arrays (docs/contract.md).

    params as ExampleDeepNeuralNetwork takes them; x (..., sizes[0]); target broadcastable to the
    output; dtype "float32" or "float64"; gelu_form "tanh" or "exact". Returns {"loss", "output",
    "dW", "db", "dx"}, "dy" and "dz" (dL/d each layer's output and z, in layer order), pre-LN's
    dscale, dshift."""
    if any(len(layer) != {"none": 2, "pre": 4}.get(norm) for layer in params):
        raise ValueError(
            f"norm={norm!r} takes layers (W, b) for 'none', (W, b, scale, shift) for 'pre'"
        )
    params = [tuple(np.asarray(p, dtype) for p in layer) for layer in params]
    x, target = np.asarray(x, dtype), np.asarray(target, dtype)
    model = ExampleDeepNeuralNetwork(params, use_shortcut, gelu_form)

    output = model.forward(x)
    loss = mse_loss(output, target)
    dx = model.backward(mse_loss_backward(output, target))

    result = {"loss": loss, "output": output, "dW": model.dW, "db": model.db, "dx": dx}
    result |= {"dy": model.dy, "dz": model.dz}
    return result | ({"dscale": model.dscale, "dshift": model.dshift} if norm == "pre" else {})

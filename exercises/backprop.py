"""Backprop by hand through the book's network: the forward is given, each backward rule is yours.

Copy this file, fill in each `raise NotImplementedError(...)` and grade your copy:

    cp exercises/backprop.py mine.py
    python -m shortcut_gradients.grader.grade mine.py

The grader checks the blanks in the order they are learned, each on its own against torch's
autograd in float64 (exercises/README.md walks through it):

    1. mse_loss_backward                    step loss
    2. gelu_backward, form "tanh"           step gelu
    3. gelu_backward, form "exact"          step gelu
    4. linear_backward                      step linear
    5. ExampleDeepNeuralNetwork.backward    step shortcut (one layer with its shortcut), then step network
    6. layer_norm_backward                  step layernorm (the book's next step: pre-LN layers)

Everything else is the NumPy reference's forward, line for line (impl_numpy/model.py, which
is also a full-marks answer: no peeking until the grader says ok). `dname` is dL/d(name) and
has the shape of `name`; `...` is any number of leading batch dimensions. Layer i, W (d_out, d_in):

    z = x @ W.T + b         (..., d_out)
    a = gelu(z)             (..., d_out)
    y = x + a (shortcut)    or  y = a

A pre-LN layer, (W, b, scale, shift), first normalises its input: h = layer_norm(x, scale,
shift), z = h @ W.T + b (the book's next step, as GPT-2 does).
"""

import math

import numpy as np

GELU_CUBIC = 0.044715  # the 0.044715 in the tanh approximation (Hendrycks & Gimpel, 2016)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # Python floats (double): cast to x's dtype at use
SQRT_1_OVER_2 = math.sqrt(0.5)
SQRT_1_OVER_2PI = math.sqrt(0.5 / math.pi)  # the normal density's 1 / sqrt(2 pi)
LAYER_NORM_EPS = 1e-5  # the book's LayerNorm eps: keeps 1 / sqrt(var + eps) finite on a constant row
_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf ufunc: C's, in double


def gelu(x: np.ndarray, form: str) -> np.ndarray:
    """GELU of x, (...,) -> (...,), in x's dtype, written out as the book does.

    form "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the book's formula.
    form "exact": 0.5 x (1 + erf(x / sqrt(2))), what torch.nn.GELU() computes by default.
    """
    k, c, s = (x.dtype.type(v) for v in (SQRT_2_OVER_PI, GELU_CUBIC, SQRT_1_OVER_2))
    if form == "tanh":
        return 0.5 * x * (1.0 + np.tanh(k * (x + c * x**3)))
    if form == "exact":
        return 0.5 * x * (1.0 + _erf(x * s).astype(x.dtype))
    raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")


def gelu_backward(dout: np.ndarray, x: np.ndarray, form: str) -> np.ndarray:
    """dL/dx given dout = dL/d gelu(x), all (...,): blanks 2 and 3.

    Both forms are gelu(x) = x Phi(x), Phi the standard normal CDF or its tanh approximation.
    Work in x's dtype: use k, c, s, p below, never a rounded number.
    """
    k, c, s, p = (x.dtype.type(v) for v in (SQRT_2_OVER_PI, GELU_CUBIC, SQRT_1_OVER_2, SQRT_1_OVER_2PI))
    if form == "tanh":
        raise NotImplementedError(
            "step gelu, tanh form: return dout * gelu'(x), shape (...,), for "
            "gelu(x) = 0.5 x (1 + tanh(u)), u = k (x + c x^3); k = sqrt(2/pi), c = 0.044715"
        )
    if form == "exact":
        raise NotImplementedError(
            "step gelu, exact form: return dout * gelu'(x), shape (...,), for gelu(x) = x Phi(x), "
            "Phi(x) = 0.5 (1 + erf(x s)), s = 1/sqrt(2); Phi' is the normal density exp(-x^2 / 2) p, p = 1/sqrt(2 pi)"
        )
    raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")


def layer_norm(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """x (..., d) normalised over its last dimension, then scaled and shifted by scale, shift (d,): the book's LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = x.var(axis=-1, keepdims=True)  # (..., 1)   ddof=0: no Bessel's correction, as the book's unbiased=False
    norm_x = (x - mean) / np.sqrt(var + x.dtype.type(LAYER_NORM_EPS))  # (..., d)
    return scale * norm_x + shift  # (..., d)


def layer_norm_backward(dout: np.ndarray, x: np.ndarray, scale: np.ndarray) -> tuple:
    """(dx (..., d), dscale (d,), dshift (d,)) given dout = dL/d layer_norm(x, scale, shift): blank 6.

    out = scale xhat + shift with xhat = (x - mu) / sigma, sigma = sqrt(var + eps), mu and var
    the row's mean and variance. Mind that mu and sigma depend on every x_k of the row.
    """
    raise NotImplementedError(
        "step layernorm: return (dx, dscale, dshift) with the shapes of x (..., d), scale (d,) and shift (d,); "
        "xhat = (x - mu) / sigma, sigma = sqrt(var + eps), and mu and var are the row's: every x_k of a row moves them"
    )


def linear(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (..., d_in) -> (..., d_out), with W (d_out, d_in) and b (d_out,) in torch's layout."""
    return x @ W.T + b  # (..., d_out)


def linear_backward(dz: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple:
    """(dx (..., d_in), dW (d_out, d_in), db (d_out,)) given dz = dL/dz (..., d_out), z = linear(x, W, b): blank 4.

    x may have any number of leading dimensions: (d_in,), (rows, d_in), (B, T, d_in).
    """
    raise NotImplementedError(
        "step linear: z = x @ W.T + b; return (dx, dW, db) with the shapes of x (..., d_in), "
        "W (d_out, d_in) and b (d_out,). Every row of the leading dimensions used the same W and b"
    )


class ExampleDeepNeuralNetwork:
    """(LayerNorm +) Linear + GELU layers; with use_shortcut, x = x + layer(x) wherever the shapes match.

    params: [(W (d_out, d_in), b (d_out,)), ...], torch's layout, in the computation's dtype;
    a pre-LN layer is (W, b, scale (d_in,), shift (d_in,)).
    """

    def __init__(self, params: list, use_shortcut: bool, gelu_form: str):
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
        """dL/d input (..., sizes[0]) given dout = dL/d output (..., sizes[-1]): blank 5.

        Sets self.dW, self.db, self.dy (dL/d each layer's output y) and self.dz (dL/d each
        layer's z): lists in layer order, each entry with the shape of its W, b, y, z. And
        self.dscale, self.dshift: per pre-LN layer its norm's (d_in,) gradients, None for a layer
        without one. In a pre-LN layer the linear's input is h = layer_norm(x, scale, shift) (not
        cached: compute it again), and its dx (dL/dh) goes through layer_norm_backward to reach x.
        """
        raise NotImplementedError(
            "step shortcut, then step network: walk self.cache, one (x, z, shortcut) per layer, from the last "
            "layer to the first; per layer, dz from dy with gelu_backward, then (dx, dW, db) with linear_backward; "
            "where the shortcut was taken, y = x + a. Fill self.dW, self.db, self.dy, self.dz; return dL/d input"
        )


def mse_loss(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean over all elements of (output - target)^2; target broadcasts to output."""
    return np.mean((output - target) ** 2)


def mse_loss_backward(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """dL/d output, with output's shape (...,), given the loss mse_loss(output, target): blank 1."""
    raise NotImplementedError(
        "step loss: L = mean((output - target)^2) over all N = output.size elements; "
        "return dL/d output, shape of output (...,), in output's dtype"
    )


def loss_and_grads(params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str, norm: str = "none") -> dict:
    """The common entry point: loss, output and every gradient, as NumPy arrays.

    params: [(W (d_out, d_in), b (d_out,)), ...] in torch's layout, with norm "pre" (W, b, scale
    (d_in,), shift (d_in,)); x (..., sizes[0]); target broadcastable to the output; gelu_form
    "tanh" or "exact"; dtype "float32" or "float64". Returns {"loss", "output", "dW", "db", "dx"}
    and, per layer in layer order, "dy" (dL/d its output) and "dz" (dL/d its pre-activation z);
    with norm "pre" also "dscale" and "dshift".
    """
    if any(len(layer) != {"none": 2, "pre": 4}.get(norm) for layer in params):
        raise ValueError(f"norm={norm!r} takes layers (W, b) for 'none', (W, b, scale, shift) for 'pre'")
    params = [tuple(np.asarray(p, dtype) for p in layer) for layer in params]
    x, target = np.asarray(x, dtype), np.asarray(target, dtype)
    model = ExampleDeepNeuralNetwork(params, use_shortcut, gelu_form)

    output = model.forward(x)
    loss = mse_loss(output, target)
    dx = model.backward(mse_loss_backward(output, target))

    result = {"loss": loss, "output": output, "dW": model.dW, "db": model.db, "dx": dx}
    result |= {"dy": model.dy, "dz": model.dz}
    return result | ({"dscale": model.dscale, "dshift": model.dshift} if norm == "pre" else {})

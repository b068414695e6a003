"""A fourth, independent answer: every gradient by central differences of a float64 forward.

No backward code of any kind, and none of the three implementations: this module has its
own tiny forward (plain NumPy, float64; with norm "pre", a LayerNorm before each layer's
Linear, x = x + GELU(Linear(LN(x))), its scale and shift differentiated like any weight),
and a gradient element is

    D(h) = (L(theta + h) - L(theta - h)) / 2h  =  dL/dtheta + c2 h^2 + c4 h^4 + ...

taken at four steps h, h/2, h/4, h/8 and combined by Richardson extrapolation: each round
R = (4^j R(h/2) - R(h)) / (4^j - 1) cancels the next even power of h, so three rounds leave
an O(h^8) truncation error. The rounding error of L (a few float64 ulps of the terms it is
summed from) is divided by the step, so the step wants to be large, and extrapolation is
what lets it be large. STEP sits between the two limits: a sweep of h against float64
autograd (docs/tolerances.md, "The finite-difference oracle") found the larger steps limited by
truncation, the smaller by rounding, and 2^-4 best on a deep random network and near-best on
the book's.

Steps are powers of two times max(1, |theta|), so a large input element gets a larger step.

A LayerNorm (norm "pre") bends the loss on the scale of a row's spread: a weight stepped by
2^-4 of itself can move a downstream row by as much as its spread, and then neither the
estimate nor its bound holds (a false alarm). PRE_LN_STEP is the step the same sweep, against
the hand-written float64 backward on pre-LN networks, found most accurate with its bound
holding (docs/tolerances.md).

Every element also gets an error bound, returned as "error", from two parts:
  truncation: how much the last round of extrapolation moved the estimate, from the round
              before and from the best of the three larger steps (Ridders' estimate);
  rounding:   ROUNDING_ULPS * eps * S / h_smallest, S = mean((|out| + |target|)^2).
An analytic gradient a agrees with the estimate d when |a - d| <= tol |d| + error, tol being
the run's relative tolerance (shortcut_gradients.verdict.check.TOLERANCE). An element with |d| <= error cannot
be told from 0 by differences; `check` counts those separately and reports how much of
their bound they use, rather than hiding them behind a blanket absolute tolerance.

To stay fast, many perturbed networks are evaluated at once: a leading axis P holds one
copy per perturbed element, and only the layers from the perturbed one on are recomputed
(the earlier ones give the same numbers either way).
"""

import math

import numpy as np

GELU_CUBIC = 0.044715  # the tanh approximation's cubic coefficient (Hendrycks & Gimpel, 2016)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
SQRT_1_OVER_2 = math.sqrt(0.5)
LAYER_NORM_EPS = 1e-5  # the book's LayerNorm: (x - mean) / sqrt(var + eps), var without Bessel's correction

STEP = 2.0**-4  # h, the largest step; docs/tolerances.md has the measurements behind it
STEPS = (STEP, STEP / 2, STEP / 4, STEP / 8)  # four steps: three rounds of extrapolation
PRE_LN_STEP = 2.0**-9  # h with a LayerNorm in every layer (module docstring, docs/tolerances.md)
PRE_LN_STEPS = (PRE_LN_STEP, PRE_LN_STEP / 2, PRE_LN_STEP / 4, PRE_LN_STEP / 8)
# float64 ulps of S that a computed loss may be off by: it is a few dozen roundings deep, and
# Richardson's weights (adding up to ~2.3) are folded in. docs/tolerances.md measures how much of
# the bound elements use.
ROUNDING_ULPS = 64.0
EPS = float(np.finfo(np.float64).eps)
COPY_BUDGET = 2**20  # float64 elements per stack of perturbed copies (8 MB): bounds the memory
# compare.py refuses the oracle above this many weights, biases (scales, shifts) and input elements: it costs
# eight forwards per element, so the time grows with the elements (docs/tolerances.md times a study
# notebook's network).
MAX_ELEMENTS = 20_000
GRADIENT_KEYS = ("dW", "db", "dscale", "dshift")  # a layer's arrays in order: (W, b[, scale, shift])

# math.erf is the C library's double-precision erf; NumPy has no erf ufunc of its own.
_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(z: np.ndarray, form: str) -> np.ndarray:
    """GELU of z, (...,) -> (...,), in float64: the tanh formula or the exact z Phi(z)."""
    if form == "tanh":
        return 0.5 * z * (1.0 + np.tanh(SQRT_2_OVER_PI * (z + GELU_CUBIC * z**3)))
    if form == "exact":
        return 0.5 * z * (1.0 + _erf(z * SQRT_1_OVER_2).astype(np.float64))
    raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")


def layer_norm(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """x (P, rows, d) over its last axis, scale and shift (P or 1, d): the book's LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)  # (P, rows, 1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # (P, rows, 1): divided by d, not d - 1
    return scale[:, None, :] * (x - mean) / np.sqrt(var + LAYER_NORM_EPS) + shift[:, None, :]


def layer(arrays: tuple, x: np.ndarray, use_shortcut: bool, form: str) -> np.ndarray:
    """One layer on (P, rows, d_in) -> (P, rows, d_out). arrays: (W (P, d_out, d_in), b (P, d_out)),
    and pre-LN's scale, shift (P, d_in) after them; P = 1 broadcasts over the copies."""
    W, b, *norm = arrays
    h = layer_norm(x, *norm) if norm else x  # (P, rows, d_in)
    z = h @ W.swapaxes(-1, -2) + b[:, None, :]  # (P, rows, d_out)
    a = gelu(z, form)  # (P, rows, d_out)
    return x + a if use_shortcut and a.shape[-1] == x.shape[-1] else a


def losses(params: list, start: int, x: np.ndarray, target: np.ndarray, use_shortcut: bool, form: str) -> np.ndarray:
    """The MSE loss of each copy, (P,), running layers start.. on x (P, rows, d_in).

    params: [(W (P or 1, d_out, d_in), b (P or 1, d_out)[, scale, shift (P or 1, d_in)]), ...];
    target (rows, d_out)."""
    for arrays in params[start:]:
        x = layer(arrays, x, use_shortcut, form)  # (P, rows, d_out)
    return np.mean((x - target) ** 2, axis=(1, 2))  # (P,)


def differences(f, theta: np.ndarray, h: float) -> np.ndarray:
    """Central differences (f(theta + s e_k) - f(theta - s e_k)) / 2s for every element k, (n,).

    s = h max(1, |theta_k|), taken as rounded. f maps (P, *theta.shape) copies to P losses;
    the copies are made COPY_BUDGET elements at a time, so memory stays bounded."""
    flat = theta.reshape(-1)  # (n,)
    n = flat.size
    out = np.empty(n)
    per_chunk = max(1, COPY_BUDGET // n)
    for start in range(0, n, per_chunk):
        k = np.arange(start, min(n, start + per_chunk))  # the elements this chunk perturbs
        copy = np.arange(len(k))  # copy i perturbs element k[i]
        plus, minus = np.repeat(flat[None], len(k), axis=0), np.repeat(flat[None], len(k), axis=0)  # (P, n)
        step = h * np.maximum(1.0, np.abs(flat[k]))  # (P,)
        plus[copy, k] += step
        minus[copy, k] -= step
        taken = plus[copy, k] - minus[copy, k]  # (P,) twice the step, as rounded
        shape = (len(k),) + theta.shape
        out[k] = (f(plus.reshape(shape)) - f(minus.reshape(shape))) / taken
    return out


def partials(f, theta: np.ndarray, steps: tuple = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Every element's derivative, Richardson-extrapolated over `steps`, and its truncation bound.

    f maps a stack of P copies of theta, (P, *theta.shape), to P losses. Returns the
    estimate and its error bound, each of theta's shape, both without the rounding part.
    """
    estimates = [differences(f, theta, h) for h in steps]  # each (n,)
    table = [estimates[0]]  # Richardson's table, one row per step, kept to its last two rows
    for d in estimates[1:]:
        row = [d]
        for j, previous in enumerate(table, start=1):
            row.append((4**j * row[-1] - previous) / (4**j - 1))  # cancels the h^(2j) term
        table, above = row, table
    best = table[-1]
    # Ridders' estimate: how far the last extrapolation moved from the one before it, and from
    # the best the three larger steps gave; the larger of the two.
    error = np.maximum(np.abs(best - table[-2]), np.abs(best - above[-1]))
    return best.reshape(theta.shape), error.reshape(theta.shape)


def loss_and_grads(
    params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str = "float64", norm: str = "none"
) -> dict:
    """The common entry point, by finite differences; always computed in float64.

    Same arguments and keys as the implementations' loss_and_grads (dtype is accepted and
    ignored: the oracle is float64 whatever it is compared with; with norm "pre" params are
    (W, b, scale, shift) per layer and "dscale", "dshift" come too), plus "error": the bound
    on each estimate, {"dW": [...], "db": [...], "dx": ...} (and "dscale", "dshift") in the gradients' shapes.
    """
    if any(len(arrays) != {"none": 2, "pre": 4}.get(norm) for arrays in params):
        raise ValueError(f"norm={norm!r} takes layers (W, b) for 'none', (W, b, scale, shift) for 'pre'")
    keys = GRADIENT_KEYS[: len(params[0])]  # "dW", "db"[, "dscale", "dshift"]: one per array of a layer
    steps = PRE_LN_STEPS if norm == "pre" else STEPS
    params = [tuple(np.asarray(a, np.float64) for a in arrays) for arrays in params]
    x = np.asarray(x, np.float64)
    rows_shape, d_in, d_out = x.shape[:-1], x.shape[-1], params[-1][0].shape[0]
    out_shape = rows_shape + (d_out,)
    target = np.broadcast_to(np.asarray(target, np.float64), out_shape).reshape(-1, d_out)  # (rows, d_out)
    stacked = [tuple(a[None] for a in arrays) for arrays in params]  # P = 1: the unperturbed network

    # The unperturbed forward, keeping each layer's input: perturbing layer i reruns i.. only.
    inputs = [x.reshape(1, -1, d_in)]  # (1, rows, d_in)
    for arrays in stacked:
        inputs.append(layer(arrays, inputs[-1], use_shortcut, gelu_form))
    output = inputs[-1][0]  # (rows, d_out)
    loss = np.mean((output - target) ** 2)
    magnitude = np.mean((np.abs(output) + np.abs(target)) ** 2)  # S: what the loss is summed from

    def in_layer(i, which):
        """f for partials: the loss with layer i's array `which` (0 W, 1 b, 2 scale, 3 shift) replaced by a stack."""

        def f(copies):
            layers = list(stacked)
            layers[i] = stacked[i][:which] + (copies,) + stacked[i][which + 1 :]
            return losses(layers, i, inputs[i], target, use_shortcut, gelu_form)

        return f

    grads, errors = {key: [] for key in keys}, {key: [] for key in keys}
    for i, arrays in enumerate(params):
        for which, (key, theta) in enumerate(zip(keys, arrays)):
            estimate, truncation = partials(in_layer(i, which), theta, steps)
            grads[key].append(estimate)
            errors[key].append(truncation + rounding(theta, magnitude, steps))
    x2 = x.reshape(-1, d_in)  # (rows, d_in)
    dx, ex = partials(lambda copies: losses(stacked, 0, copies, target, use_shortcut, gelu_form), x2, steps)
    ex = ex + rounding(x2, magnitude, steps)
    return {
        "loss": np.float64(loss),
        "output": output.reshape(out_shape),
        **grads,
        "dx": dx.reshape(x.shape),
        "error": {**errors, "dx": ex.reshape(x.shape)},
    }


def rounding(theta: np.ndarray, magnitude: float, steps: tuple = STEPS) -> np.ndarray:
    """The rounding part of the bound: ROUNDING_ULPS ulps of S, divided by the smallest step.

    Richardson's weights (4/3 and 1/3 on two differences) are folded into ROUNDING_ULPS."""
    return ROUNDING_ULPS * EPS * magnitude / (steps[-1] * np.maximum(1.0, np.abs(theta)))

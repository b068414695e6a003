"""An outside implementation written for the tests, with one classic slip switched on by name.

Plain loops over layers and matmuls on rows (not the reference's code): `loss_and_grads(...,
slip=None)` is right; each file beside this one fixes `slip` to one of SLIPS, as a student's
mistake would, so that compare.py must catch it on its own command and name it.
"""

import math

import numpy as np

SLIPS = (
    "bias-one-row",  # db = dz of the first row, not summed over rows
    "loss-summed",  # the loss summed over the output's elements, not averaged
    "transposed",  # dW = x^T dz on square layers, the transpose of dz^T x
    "gelu-form",  # the other GELU form than the one asked for
    "float32-constant",  # sqrt(2 / pi) rounded to float32, as torch.tensor(2.0 / torch.pi) makes it
    "identity-missing",  # the forward adds x, the backward forgets to
    "sign",  # dL/d output with its sign flipped
    "mean-var-constant",  # LayerNorm's dx = dxhat / sigma: its row mean and variance taken as constants
)
EPS = 1e-5  # LayerNorm's eps, as the book's


def gelu(z, form, slip):
    """(gelu(z), gelu'(z)), both (..., d)."""
    one = z.dtype.type(1)
    if form == "tanh":
        k = math.sqrt(2 / math.pi)
        k = z.dtype.type(np.float32(k) if slip == "float32-constant" else k)
        c = z.dtype.type(0.044715)
        t = np.tanh(k * (z + c * z**3))
        return 0.5 * z * (one + t), 0.5 * (one + t) + 0.5 * z * (one - t * t) * k * (one + 3 * c * z * z)
    cdf = 0.5 * (one + np.vectorize(math.erf)(z / z.dtype.type(math.sqrt(2))).astype(z.dtype))
    return z * cdf, cdf + z * np.exp(-0.5 * z * z) / z.dtype.type(math.sqrt(2 * math.pi))


def loss_and_grads(params, x, target, *, use_shortcut, gelu_form, dtype, norm="none", slip=None) -> dict:
    if slip == "gelu-form":
        gelu_form = "exact" if gelu_form == "tanh" else "tanh"
    params = [tuple(np.asarray(a, dtype) for a in layer) for layer in params]
    shape = np.shape(x)[:-1]
    h = np.asarray(x, dtype).reshape(-1, np.shape(x)[-1])  # (rows, d_in)
    target = np.broadcast_to(np.asarray(target, dtype), shape + (params[-1][0].shape[0],)).reshape(len(h), -1)
    saved = []
    for layer in params:
        W, b = layer[:2]
        u = h
        if norm == "pre":
            mu, sigma = h.mean(1, keepdims=True), np.sqrt(h.var(1, keepdims=True) + h.dtype.type(EPS))
            xhat = (h - mu) / sigma
            u = xhat * layer[2] + layer[3]
        z = u @ W.T + b  # (rows, d_out)
        a, slope = gelu(z, gelu_form, slip)
        skip = use_shortcut and a.shape == h.shape
        saved.append((u, slope, skip, xhat if norm == "pre" else None, sigma if norm == "pre" else None))
        h = h + a if skip else a
    diff = h - target
    n = diff.dtype.type(1 if slip == "loss-summed" else diff.size)
    loss = (diff * diff).sum() / n
    g = 2 * diff / n * diff.dtype.type(-1 if slip == "sign" else 1)  # (rows, d_out)
    out = {"dW": [], "db": [], "dscale": [], "dshift": []}
    for layer, (u, slope, skip, xhat, sigma) in zip(reversed(params), reversed(saved)):
        W = layer[0]
        dz = g * slope
        dW = dz.T @ u
        out["dW"].insert(0, dW.T if slip == "transposed" and dW.shape[0] == dW.shape[1] else dW)
        out["db"].insert(0, dz[0] if slip == "bias-one-row" else dz.sum(0))
        du = dz @ W
        if norm == "pre":
            out["dscale"].insert(0, (du * xhat).sum(0))
            out["dshift"].insert(0, du.sum(0))
            dxhat = du * layer[2]
            if slip == "mean-var-constant":
                du = dxhat / sigma
            else:
                du = (dxhat - dxhat.mean(1, keepdims=True) - xhat * (dxhat * xhat).mean(1, keepdims=True)) / sigma
        g = du + (g if skip and slip != "identity-missing" else 0)
    result = {"loss": loss, "output": h.reshape(shape + (-1,)), "dx": g.reshape(shape + (-1,))}
    result |= {"dW": out["dW"], "db": out["db"]}
    return result | ({"dscale": out["dscale"], "dshift": out["dshift"]} if norm == "pre" else {})

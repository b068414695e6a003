"""Where the gradient goes: the hand-written NumPy backward, one layer at a time, split into its two paths.

Layer i maps its input x (..., d_in) to its output y (..., d_out):

    z = x @ W.T + b        a = gelu(z)        y = x + a  (shortcut)   or   y = a

so the gradient arriving at the output, dy = dL/dy, reaches the input along two paths:

    dx = dz @ W      +      dy                  dz = dy * gelu'(z)
         through the layer  the identity path   (only where the shortcut is taken)

This is the textbook dL/dx1 = dL/dx2 (1 + d layer/dx1): the "1" is the identity path. Without
it, every layer multiplies the gradient by its own through-layer factor, and the running
product of those factors is what vanishes. Every figure is mean |.| over the elements,
the book's measure for dL/dW.

A pre-LN layer (params (W, b, scale, shift), the book's next step) puts a LayerNorm before
the Linear, h = layer_norm(x, scale, shift) and z = h @ W.T + b, so the path through the layer
runs through the norm's backward too, while the identity path does not:

    dx = layer_norm_backward(dz @ W, x, scale)   +   dy

Every figure comes from impl_numpy.model's own functions: ExampleDeepNeuralNetwork's
forward (its cache) and backward, mse_loss_backward, layer_norm, and linear_backward and
layer_norm_backward, whose dx is the path through the layer; only the split of dx into its
two terms is done here. tests/test_explain.py and tests/test_layernorm.py check every figure
against torch's autograd.
"""

from dataclasses import dataclass

import numpy as np

from shortcut_gradients.verdict.check import mean_abs


@dataclass(frozen=True)
class LayerPaths:
    """One layer's backward step, every array in the layer's dtype and shape."""

    layer: int
    shortcut: bool  # the identity path exists: use_shortcut and d_in == d_out
    x: np.ndarray  # (..., d_in)    the layer's input, from forward's cache
    dy: np.ndarray  # (..., d_out)  dL/dy, arriving at the layer's output
    dz: np.ndarray  # (..., d_out)  dL/dz = dy * gelu'(z)
    through: np.ndarray  # (..., d_in)  the path through the layer: dz @ W, through the LayerNorm's backward if pre-LN
    identity: np.ndarray  # (..., d_in)  dy if the shortcut is taken, else zeros
    dx: np.ndarray  # (..., d_in)  dL/dx = through + identity
    dW: np.ndarray  # (d_out, d_in)
    db: np.ndarray  # (d_out,)
    h: np.ndarray  # (..., d_in)    the Linear's input: layer_norm(x, scale, shift) if pre-LN, else x itself
    dh: np.ndarray  # (..., d_in)   dz @ W, dL/dh: the path through the layer before the LayerNorm's backward
    norm: bool = False  # a pre-LN layer: through = layer_norm_backward(dh, x, scale), not dh


def gradient_paths(params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str) -> dict:
    """The backward pass of impl_numpy.model, layer by layer from the last to the first.

    Same arguments as loss_and_grads; params (W, b) per layer, or (W, b, scale, shift) for a
    pre-LN network. Returns {"loss", "output", "dout" (dL/d output), "norm" ("none" or "pre"),
    "layers": [LayerPaths for the last layer, ..., for layer 0]}.
    """
    from impl_numpy import model

    params = [tuple(np.asarray(a, dtype) for a in layer) for layer in params]
    x, target = np.asarray(x, dtype), np.asarray(target, dtype)
    network = model.ExampleDeepNeuralNetwork(params, use_shortcut, gelu_form)
    output = network.forward(x)  # network.cache: (x, z, shortcut taken?) per layer
    dout = model.mse_loss_backward(output, target)  # (..., d_last)
    dx = network.backward(dout)  # sets network.dy, .dz, .dW, .db, in layer order
    dxs = [dx, *network.dy[:-1]]  # dL/d each layer's input: the network's input, then the output below
    layers = []
    for i in reversed(range(len(params))):
        x_i, _, shortcut = network.cache[i]
        W, _, *norm = params[i]  # norm: (scale, shift) in a pre-LN layer, else ()
        dy, dz = network.dy[i], network.dz[i]  # (..., d_out)
        h = model.layer_norm(x_i, *norm) if norm else x_i  # (..., d_in)   the Linear's input
        dh, _, _ = model.linear_backward(dz, h, W)  # (..., d_in)   the Linear's dx: dz W
        through = model.layer_norm_backward(dh, x_i, norm[0])[0] if norm else dh  # (..., d_in)  h = LN(x)
        identity = dy if shortcut else np.zeros_like(through)  # (..., d_in)   y = x + a  =>  dx += dy
        paths = (through, identity, dxs[i], network.dW[i], network.db[i], h, dh, bool(norm))
        layers.append(LayerPaths(i, shortcut, x_i, dy, dz, *paths))
    norm_name = "pre" if len(params[0]) == 4 else "none"
    return {"loss": model.mse_loss(output, target), "output": output, "dout": dout, "norm": norm_name, "layers": layers}


def breakdown(paths: dict) -> list[dict]:
    """The figures --explain prints, one dict per layer from the last to the first.

    "running" is mean|dy| / mean|dL/d output|: the product of the gains of every layer
    above this one. "gelu" is mean|dz| / mean|dy| and "gain" is mean|dx| / mean|dy|. A
    pre-LN layer's row also has "dh" (mean|dz @ W|), "ln" (mean|through| / mean|dh|: what
    the LayerNorm's backward makes of the path) and "h" (mean|LN(x)|, the Linear's input).
    """
    rows, out = [], mean_abs(paths["dout"])
    for p in paths["layers"]:
        dy, dz, dx = mean_abs(p.dy), mean_abs(p.dz), mean_abs(p.dx)
        rows.append(
            {
                "layer": p.layer,
                "shortcut": p.shortcut,
                "dy": dy,
                "running": dy / out if out else float("nan"),
                "gelu": dz / dy if dy else float("nan"),
                "dz": dz,
                "through": mean_abs(p.through),
                "identity": mean_abs(p.identity),
                "dx": dx,
                "gain": dx / dy if dy else float("nan"),
                "x": mean_abs(p.x),
                "dW": mean_abs(p.dW),
            }
        )
        if p.norm:
            dh = mean_abs(p.dh)
            rows[-1] |= {"dh": dh, "ln": mean_abs(p.through) / dh if dh else float("nan"), "h": mean_abs(p.h)}
    return rows


def explain(params, x, target, *, settings, gelu_form: str, dtype: str) -> dict:
    """--explain's report: {"dtype", "gelu", "runs": [{"use_shortcut", "loss", "dout", "rows", "layers"}]},
    and "norm": "pre" where params are a pre-LN network's, (W, b, scale, shift) per layer."""
    runs = []
    for use_shortcut in settings:
        paths = gradient_paths(params, x, target, use_shortcut=use_shortcut, gelu_form=gelu_form, dtype=dtype)
        runs.append(
            {
                "use_shortcut": use_shortcut,
                "loss": float(paths["loss"]),
                "dout": mean_abs(paths["dout"]),
                "rows": int(np.prod(np.shape(x)[:-1], dtype=int)),  # input rows: leading dimensions
                "layers": breakdown(paths),
            }
        )
    report = {"dtype": dtype, "gelu": gelu_form, "runs": runs}
    return report | ({"norm": "pre"} if len(params[0]) == 4 else {})


GELU_PRIME = "gelu'"
LN_PRIME = "LN'"
COLUMNS = (
    ("dL/dy", "arrives at the layer's output"),
    ("running", "dL/dy / dL/d output: the product of the gains of the layers above"),
    (GELU_PRIME, "dL/dz / dL/dy, where dz = dy * gelu'(z)"),
    ("through", "dL/dz @ W: the path through the layer"),
    ("identity", "dL/dy again, where the shortcut is taken (y = x + a): the identity path"),
    ("dL/dx", "through + identity, leaving by the layer's input (the two can partly cancel)"),
    ("gain", "dL/dx / dL/dy"),
    ("|x|, dL/dW", "the layer's input and its weight gradient (the book's figure)"),
)
# A pre-LN network's table: the path through the layer is followed through the LayerNorm's backward.
PRE_LN_COLUMNS = (
    *COLUMNS[:3],
    ("dL/dh", "dL/dz @ W: the Linear's dx, arriving at the LayerNorm's output h = LN(x)"),
    (LN_PRIME, "through / dL/dh: what the LayerNorm's backward makes of it"),
    ("through", "the LayerNorm's backward of dL/dh: the path through the layer"),
    *COLUMNS[4:7],
    ("|h|, dL/dW", "the Linear's input h = LN(x) and its weight gradient (the book's figure)"),
)


def format_explain(report: dict) -> str:
    """The breakdown as text: one table per shortcut setting, then layer 0 taken apart."""
    pre = report.get("norm") == "pre"
    network = ", pre-LN: each layer is x + GELU(Linear(LN(x)))" if pre else ""
    lines = [
        f"Gradient paths, from the hand-written NumPy backward ({report['gelu']} GELU, {report['dtype']}{network}).",
        "Each figure is mean |.| over the elements; layers from the output down to the input.",
        *(f"  {name:<10} {meaning}" for name, meaning in (PRE_LN_COLUMNS if pre else COLUMNS)),
    ]
    ln_header = f" {'dL/dh':>10} {LN_PRIME:>7}" if pre else ""
    header = (
        f"{'layer':>5} {'dL/dy':>10} {'running':>10} {GELU_PRIME:>7} {'dL/dz':>10}{ln_header} {'through':>10}"
        f" {'identity':>10} {'dL/dx':>10} {'gain':>7} {'|h|' if pre else '|x|':>7} {'dL/dW':>10}"
    )
    for run in report["runs"]:
        setting = "With" if run["use_shortcut"] else "Without"
        lines += ["", f"{setting} shortcut: loss {run['loss']:.4g}, dL/d output {run['dout']:.4g}", header]
        for r in run["layers"]:
            identity = f"{r['identity']:>10.4g}" if r["shortcut"] else f"{'-':>10}"
            ln = f" {r['dh']:>10.4g} {r['ln']:>7.4g}" if pre else ""
            lines.append(
                f"{r['layer']:>5} {r['dy']:>10.4g} {r['running']:>10.4g} {r['gelu']:>7.4g} {r['dz']:>10.4g}{ln}"
                f" {r['through']:>10.4g} {identity} {r['dx']:>10.4g} {r['gain']:>7.4g}"
                f" {r['h' if pre else 'x']:>7.4g} {r['dW']:>10.4g}"
            )
    lines += ["", *why_layer0(report)]
    return "\n".join(lines)


def why_layer0(report: dict) -> list[str]:
    """Layer 0's mean |dL/dW| as a product of its row's figures (one input row only).

    With one input row, dW = dz^T x is an outer product, so mean|dW| = mean|dz| mean|x|
    exactly, and mean|dz| = mean|dL/d output| x running x gelu' by the definitions above.
    In a pre-LN network the Linear's input is h = LN(x), so the last factor is mean|h|.
    """
    runs = [run for run in report["runs"] if run["rows"] == 1]
    inp = "h" if report.get("norm") == "pre" else "x"  # the Linear's input
    lines = []
    for run in runs:
        r = run["layers"][-1]  # layer 0
        setting = "with" if run["use_shortcut"] else "without"
        lines.append(
            f"Layer 0 {setting} shortcut: dL/dW {r['dW']:.4g} = dL/d output {run['dout']:.4g} x running {r['running']:.4g}"
            f" x gelu' {r['gelu']:.4g} x |{inp}| {r[inp]:.4g}"
        )
    if len(runs) == 2 and [run["use_shortcut"] for run in runs] == [False, True]:
        (off, on), (off_run, on_run) = (run["layers"][-1] for run in runs), runs
        alone = [r["gain"] for r in off_run["layers"][:-1]]  # the layers above layer 0, without shortcut
        kept = [r["gain"] for r in on_run["layers"][:-1]]
        ratio = on["dW"] / off["dW"]
        how = f"{ratio:.4g} times larger" if ratio >= 1 else f"{1 / ratio:.4g} times smaller ({ratio:.4g} times)"
        lines.append(
            f"So with the shortcut layer 0's dL/dW is {how} ="
            f" {on_run['dout'] / off_run['dout']:.4g} (dL/d output) x {on['running'] / off['running']:.4g} (running)"
            f" x {on['gelu'] / off['gelu']:.4g} (gelu') x {on[inp] / off[inp]:.4g} (|{inp}|)."
        )
        if alone:  # the layers above layer 0: none in a one-layer network
            decides = ratio >= 1 and on["running"] > off["running"]  # the book's case; a random draw may differ
            lines.append(
                f"The running product{' makes the difference' if decides else ''}: the layers above layer 0 have gains"
                f" {min(alone):.4g}"
                f" to {max(alone):.4g} alone, {min(kept):.4g} to {max(kept):.4g} with the identity path."
            )
    return lines

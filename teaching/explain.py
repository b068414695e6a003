"""Where the gradient goes: the hand-written NumPy backward, one layer at a time, split into its two paths.

Layer i maps its input x (..., d_in) to its output y (..., d_out):

    z = x @ W.T + b        a = gelu(z)        y = x + a  (shortcut)   or   y = a

so the gradient arriving at the output, dy = dL/dy, reaches the input along two paths:

    dx = dz @ W      +      dy                  dz = dy * gelu'(z)
         through the layer  the identity path   (only where the shortcut is taken)

This is the seed's dL/dx1 = dL/dx2 (1 + d layer/dx1): the "1" is the identity path. Without
it, every layer multiplies the gradient by its own through-layer factor, and the running
product of those factors is what vanishes. Every figure is mean |.| over the elements,
the book's measure for dL/dW.

Every figure comes from impl_numpy.model's own functions: ExampleDeepNeuralNetwork's
forward (its cache) and backward, mse_loss_backward, and linear_backward, whose dx is the
path through the layer; only the split of dx into its two terms is done here.
tests/test_explain.py checks every figure against torch's autograd.
"""

from dataclasses import dataclass

import numpy as np

from crosscheck.check import mean_abs


@dataclass(frozen=True)
class LayerPaths:
    """One layer's backward step, every array in the layer's dtype and shape."""

    layer: int
    shortcut: bool  # the identity path exists: use_shortcut and d_in == d_out
    x: np.ndarray  # (..., d_in)    the layer's input, from forward's cache
    dy: np.ndarray  # (..., d_out)  dL/dy, arriving at the layer's output
    dz: np.ndarray  # (..., d_out)  dL/dz = dy * gelu'(z)
    through: np.ndarray  # (..., d_in)  dz @ W, the path through the layer
    identity: np.ndarray  # (..., d_in)  dy if the shortcut is taken, else zeros
    dx: np.ndarray  # (..., d_in)  dL/dx = through + identity
    dW: np.ndarray  # (d_out, d_in)
    db: np.ndarray  # (d_out,)


def gradient_paths(params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str) -> dict:
    """The backward pass of impl_numpy.model, layer by layer from the last to the first.

    Same arguments as loss_and_grads. Returns {"loss", "output", "dout" (dL/d output),
    "layers": [LayerPaths for the last layer, ..., for layer 0]}.
    """
    from impl_numpy import model

    params = [(np.asarray(W, dtype), np.asarray(b, dtype)) for W, b in params]
    x, target = np.asarray(x, dtype), np.asarray(target, dtype)
    network = model.ExampleDeepNeuralNetwork(params, use_shortcut, gelu_form)
    output = network.forward(x)  # network.cache: (x, z, shortcut taken?) per layer
    dout = model.mse_loss_backward(output, target)  # (..., d_last)
    dx = network.backward(dout)  # sets network.dy, .dz, .dW, .db, in layer order
    dxs = [dx, *network.dy[:-1]]  # dL/d each layer's input: the network's input, then the output below
    layers = []
    for i in reversed(range(len(params))):
        x_i, _, shortcut = network.cache[i]
        dy, dz = network.dy[i], network.dz[i]  # (..., d_out)
        through, _, _ = model.linear_backward(dz, x_i, params[i][0])  # (..., d_in)  its dx: dz W
        identity = dy if shortcut else np.zeros_like(through)  # (..., d_in)   y = x + a  =>  dx += dy
        layers.append(LayerPaths(i, shortcut, x_i, dy, dz, through, identity, dxs[i], network.dW[i], network.db[i]))
    return {"loss": model.mse_loss(output, target), "output": output, "dout": dout, "layers": layers}


def breakdown(paths: dict) -> list[dict]:
    """The figures --explain prints, one dict per layer from the last to the first.

    "running" is mean|dy| / mean|dL/d output|: the product of the gains of every layer
    above this one. "gelu" is mean|dz| / mean|dy| and "gain" is mean|dx| / mean|dy|.
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
    return rows


def explain(params, x, target, *, settings, gelu_form: str, dtype: str) -> dict:
    """--explain's report: {"dtype", "gelu", "runs": [{"use_shortcut", "loss", "dout", "rows", "layers"}]}."""
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
    return {"dtype": dtype, "gelu": gelu_form, "runs": runs}


GELU_PRIME = "gelu'"
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


def format_explain(report: dict) -> str:
    """The breakdown as text: one table per shortcut setting, then layer 0 taken apart."""
    lines = [
        f"Gradient paths, from the hand-written NumPy backward ({report['gelu']} GELU, {report['dtype']}).",
        "Each figure is mean |.| over the elements; layers from the output down to the input.",
        *(f"  {name:<10} {meaning}" for name, meaning in COLUMNS),
    ]
    header = (
        f"{'layer':>5} {'dL/dy':>10} {'running':>10} {GELU_PRIME:>7} {'dL/dz':>10} {'through':>10}"
        f" {'identity':>10} {'dL/dx':>10} {'gain':>7} {'|x|':>7} {'dL/dW':>10}"
    )
    for run in report["runs"]:
        setting = "With" if run["use_shortcut"] else "Without"
        lines += ["", f"{setting} shortcut: loss {run['loss']:.4g}, dL/d output {run['dout']:.4g}", header]
        for r in run["layers"]:
            identity = f"{r['identity']:>10.4g}" if r["shortcut"] else f"{'-':>10}"
            lines.append(
                f"{r['layer']:>5} {r['dy']:>10.4g} {r['running']:>10.4g} {r['gelu']:>7.4g} {r['dz']:>10.4g}"
                f" {r['through']:>10.4g} {identity} {r['dx']:>10.4g} {r['gain']:>7.4g} {r['x']:>7.4g} {r['dW']:>10.4g}"
            )
    lines += ["", *why_layer0(report)]
    return "\n".join(lines)


def why_layer0(report: dict) -> list[str]:
    """Layer 0's mean |dL/dW| as a product of its row's figures (one input row only).

    With one input row, dW = dz^T x is an outer product, so mean|dW| = mean|dz| mean|x|
    exactly, and mean|dz| = mean|dL/d output| x running x gelu' by the definitions above.
    """
    runs = [run for run in report["runs"] if run["rows"] == 1]
    lines = []
    for run in runs:
        r = run["layers"][-1]  # layer 0
        setting = "with" if run["use_shortcut"] else "without"
        lines.append(
            f"Layer 0 {setting} shortcut: dL/dW {r['dW']:.4g} = dL/d output {run['dout']:.4g} x running {r['running']:.4g}"
            f" x gelu' {r['gelu']:.4g} x |x| {r['x']:.4g}"
        )
    if len(runs) == 2 and [run["use_shortcut"] for run in runs] == [False, True]:
        (off, on), (off_run, on_run) = (run["layers"][-1] for run in runs), runs
        alone = [r["gain"] for r in off_run["layers"][:-1]]  # the layers above layer 0, without shortcut
        kept = [r["gain"] for r in on_run["layers"][:-1]]
        lines.append(
            f"So with the shortcut layer 0's dL/dW is {on['dW'] / off['dW']:.4g} times larger ="
            f" {on_run['dout'] / off_run['dout']:.4g} (dL/d output) x {on['running'] / off['running']:.4g} (running)"
            f" x {on['gelu'] / off['gelu']:.4g} (gelu') x {on['x'] / off['x']:.4g} (|x|)."
        )
        lines.append(
            f"The running product makes the difference: the layers above layer 0 have gains {min(alone):.4g}"
            f" to {max(alone):.4g} alone, {min(kept):.4g} to {max(kept):.4g} with the identity path."
        )
    return lines

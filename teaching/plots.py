"""The pictures: per-layer mean |dL/dW| (the book's Figure 4.12, measured) and the depth sweep.

matplotlib is an optional extra (`pip install -e ".[plot]"`), imported only when a picture
is drawn. Figures are built with matplotlib.figure.Figure and the Agg canvas, never pyplot,
so no window or global state is involved. Each drawing function returns the Figure; the
numbers on it can be read back from its lines (tests/test_plots.py does).
"""

import importlib.util
from dataclasses import dataclass

import numpy as np

from plumbing.config import InputError
from plumbing.files import write_atomically

FIGSIZE_IN = (9.0, 5.5)  # inches; at DPI this is PIXELS
DPI = 100
PIXELS = (900, 550)  # (width, height) of every PNG written here
# One hollow marker per framework, each drawn a little to the side of the layer's tick
# ("dodged"), so that values that agree stay visible side by side instead of on top of each other.
MARKERS = {"torch": ("o", 8), "jax": ("s", 7), "numpy": ("^", 8), "numerical": ("D", 6)}
DODGE_STEP = 0.08  # in layers, between neighbouring series (per-layer plot only)
COLORS = {False: "tab:red", True: "tab:blue"}  # without shortcut, with shortcut
SETTING = {False: "without shortcut", True: "with shortcut"}


def require_matplotlib(flag: str) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError(f'{flag} draws with matplotlib, which is not installed: pip install -e ".[plot]"')


def save_png(fig, path) -> None:
    """The figure as a PIXELS-sized PNG at `path`, written atomically."""
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _loggable(values) -> np.ndarray:
    """The values as float64, with NaN where a log axis cannot go (zero, inf, nan, None): the line breaks there."""
    ys = np.array([np.nan if v is None else v for v in values], np.float64)  # None: overflowed
    return np.where(np.isfinite(ys) & (ys > 0), ys, np.nan)


def dodge(names) -> dict[str, float]:
    """Each series' offset from the layer's tick, centred: DODGE_STEP apart, in the order given."""
    return {name: (k - (len(names) - 1) / 2) * DODGE_STEP for k, name in enumerate(names)}


@dataclass(frozen=True)
class LayerSeries:
    """One line of the per-layer plot: a framework's (or the book's) mean |dL/dW| per layer."""

    name: str  # a framework, or "book" for the book's printed values (drawn as crosses)
    use_shortcut: bool
    values: list[float]  # one per layer, layer 0 first


def layer_gradients_figure(series: list[LayerSeries], *, layer_sizes, gelu_form: str, dtype: str):
    """Mean |dL/dW| per layer on a log axis.

    One colour per shortcut setting, one marker per framework, and the book's printed
    values as crosses; layer i's points sit at i + dodge(names)[name], so that series that
    agree stay visible side by side. Line labels are "{name} {without|with} shortcut".
    """
    fig, ax = _figure()
    offsets = dodge(list(dict.fromkeys(s.name for s in series)))
    for s in series:
        color, label, xs = COLORS[s.use_shortcut], f"{s.name} {SETTING[s.use_shortcut]}", np.arange(len(s.values))
        if s.name == "book":
            ax.plot(
                xs + offsets[s.name], s.values, marker="x", markersize=9, linestyle="none", color="black", label=label
            )
            continue
        marker, size = MARKERS.get(s.name, ("D", 6))
        ax.plot(
            xs + offsets[s.name],
            _loggable(s.values),
            marker=marker,
            markersize=size,
            fillstyle="none",
            linestyle="-",
            linewidth=0.8,
            color=color,
            label=label,
        )
    n_layers = len(layer_sizes) - 1
    ax.set_yscale("log")
    ax.set_xticks(range(n_layers))
    ax.set_xticklabels([f"layers.{i}" for i in range(n_layers)])
    ax.set_xlabel("layer (0 is next to the input)")
    ax.set_ylabel("mean |dL/dW|  (log scale)")
    ax.set_title(f"Per-layer weight gradient, layer sizes {list(layer_sizes)}, {gelu_form} GELU, {dtype}", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center", ncol=2, fontsize=9)  # in the empty band between the two settings
    return fig


def sweep_figure(sweep: dict, *, gelu_form: str, dtype: str):
    """The depth sweep (explain.sweep_depth plus "fits") as a plot: layer 0's mean |dL/dW| against depth.

    Line labels are "{framework} {without|with} shortcut", with "(k at 0 or overflowed, not
    shown)" where k values are zero (a log axis has no 0) or None, and "{framework} fit without shortcut: x{factor}
    per layer" for the fitted line (dashed).
    """
    fig, ax = _figure()
    depths = np.asarray(sweep["depths"], np.float64)
    for name, values in sweep["values"].items():
        marker, size = MARKERS.get(name, ("D", 6))
        for key, use_shortcut in (("off", False), ("on", True)):
            ys = _loggable(values[key])
            hidden = int(np.isnan(ys).sum())
            label = f"{name} {SETTING[use_shortcut]}" + (f" ({hidden} at 0 or overflowed, not shown)" if hidden else "")
            ax.plot(
                depths,
                ys,
                marker=marker,
                markersize=size,
                fillstyle="none",
                linestyle="-",
                linewidth=0.8,
                color=COLORS[use_shortcut],
                label=label,
            )
        fit = sweep["fits"][name]["off"]
        if fit["factor"] is not None:
            ax.plot(
                depths,
                10 ** (fit["intercept"] + fit["slope"] * depths),
                linestyle="--",
                linewidth=1,
                color="gray",
                label=f"{name} fit without shortcut: x{fit['factor']:.3g} per layer",
            )
    ax.set_yscale("log")
    ax.set_xlabel("depth (number of layers; the book's network has 5)")
    ax.set_ylabel("layer 0: mean |dL/dW|  (log scale)")
    ax.set_title(f"First layer's weight gradient against depth, {gelu_form} GELU, {dtype}", fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)  # under the shortcut line, left of where the plain line falls
    return fig

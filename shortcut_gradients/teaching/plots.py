"""The pictures: per-layer mean |dL/dW| (the book's Figure 4.12, measured) and the depth study.

matplotlib is an optional extra (`pip install -e ".[plot]"`), imported only when a picture
is drawn. Figures are built with matplotlib.figure.Figure and the Agg canvas, never pyplot,
so no window or global state is involved. Each drawing function returns the Figure; the
numbers on it can be read back from its lines (tests/test_plots.py does).
"""

import importlib.util
from dataclasses import dataclass

import numpy as np

from shortcut_gradients.plumbing.config import InputError
from shortcut_gradients.plumbing.files import write_atomically

FIGSIZE_IN = (9.0, 5.5)  # inches; at DPI this is PIXELS
DPI = 100
PIXELS = (900, 550)  # (width, height) of every PNG written here
# One hollow marker per framework, each drawn a little to the side of the layer's tick
# ("dodged"), so that values that agree stay visible side by side instead of on top of each other.
MARKERS = {"torch": ("o", 8), "jax": ("s", 7), "numpy": ("^", 8), "numerical": ("D", 6)}
DODGE_STEP = 0.08  # in layers, between neighbouring series (per-layer plot only)
COLORS = {False: "tab:red", True: "tab:blue"}  # without shortcut, with shortcut
SETTING = {False: "without shortcut", True: "with shortcut"}
# The depth study: two panels side by side, lettered for a slide.
DEPTH_FIGSIZE_IN = (14.0, 8.0)
DEPTH_PIXELS = (1400, 800)
FONT = 13
VARIANT_COLORS = {"plain": COLORS[False], "shortcut": COLORS[True], "pre-ln": "tab:green"}


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


def fit_label(name: str, fit: dict, draws: int) -> str:
    """A depth-study line's legend entry: the variant, its per-layer factor with interval, its dead draws of `draws`."""
    text = name + (
        f": x{fit['factor']:.3f} per layer [{fit['low']:.3f}, {fit['high']:.3f}]" if fit["factor"] is not None else ""
    )
    return text + (f"; {fit['dead']} of {draws} draws dead" if fit["dead"] else "")


def depth_study_figure(study: dict):
    """shortcut_gradients.teaching.depth.study as a picture: one column per width.

    Top: layer 0's mean |dL/dW| against depth on a log axis, the median over seeds as a line
    (label: fit_label) and the 25th to 75th percentile as a band of the same colour. A
    quartile of exactly 0 (dead draws) has no place on a log axis: the band runs off the
    bottom there, and a median of 0 breaks the line. Bottom: the share of dead draws per
    depth, in percent, with the 50% line above which the median is 0.
    """
    from matplotlib.figure import Figure

    depths, n_seeds = np.asarray(study["depths"], np.float64), len(study["seeds"])
    columns = len(study["panels"])
    fig = Figure(figsize=DEPTH_FIGSIZE_IN, dpi=DPI, layout="constrained")
    axes = fig.subplots(2, columns, sharex="col", sharey="row", height_ratios=(3, 1), squeeze=False)
    positive = [
        v for p in study["panels"] for r in p["variants"].values() for v in r["q25"] + r["q75"] + r["median"] if v > 0
    ]
    bottom, top = min(positive, default=1.0) / 10, max(positive, default=1.0) * 10  # a decade of room around each value
    for column, panel in enumerate(study["panels"]):
        ax, dead_ax = axes[0, column], axes[1, column]
        for name, run in panel["variants"].items():
            color = VARIANT_COLORS.get(name, "tab:gray")
            # A quartile of 0 is drawn below the axis, so the band visibly runs off the bottom.
            low = np.where(np.asarray(run["q25"]) > 0, run["q25"], bottom / 10)
            ax.fill_between(depths, low, _loggable(run["q75"]), color=color, alpha=0.2, linewidth=0)
            ax.plot(
                depths,
                _loggable(run["median"]),
                marker="o",
                markersize=5,
                color=color,
                label=fit_label(name, run["fit"], n_seeds * len(depths)),
            )
            dead_ax.plot(
                depths, 100 * np.asarray(run["dead"]) / n_seeds, marker="o", markersize=4, color=color, label=name
            )
        dead_ax.axhline(50, color="black", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_ylim(bottom, top)
        ax.set_title(f"width {panel['width']}: layer sizes ({panel['width']},) x depth + (1,)", fontsize=FONT)
        ax.legend(loc="upper left", fontsize=FONT - 2)
        ax.grid(True, which="major", alpha=0.3)
        dead_ax.set_ylim(-5, 105)
        dead_ax.set_xlabel("depth (number of layers; the book's network has 5)", fontsize=FONT)
        dead_ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=FONT - 2)
        dead_ax.tick_params(labelsize=FONT - 2)
    axes[0, 0].set_ylabel("layer 0: mean |dL/dW|  (log scale)", fontsize=FONT)
    axes[1, 0].set_ylabel(f"dead draws, % of {n_seeds}", fontsize=FONT)
    axes[1, 0].text(depths[0], 52, "above this line the median is 0", fontsize=FONT - 3, va="bottom")
    fig.suptitle(
        f"Layer 0's weight gradient against depth: median of {n_seeds} random networks (line), 25th to 75th"
        f" percentile (band); {study['gelu']} GELU, {study['dtype']}\nper-layer factor: least squares of log10 through"
        f" the live draws, with a {study['confidence']:.0%} bootstrap interval over seeds",
        fontsize=FONT,
    )
    return fig

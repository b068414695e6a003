"""compare.py's learning flags: --explain, --plot, the depth sweep and the side-by-side page.

`check` runs before any work (bad flags exit 2 with nothing written); `produce` adds the
figures to the report and writes the pictures and the page, each atomically.
"""

import os
import sys
from dataclasses import dataclass

from plumbing import files, frameworks
from plumbing.config import SHORTCUT_SETTINGS, InputError
from plumbing.inputs import Inputs
from teaching import explain


@dataclass(frozen=True)
class Request:
    """What the learning flags ask for; None or False where not asked."""

    explain: bool = False
    plot: str | None = None  # FILE.png: per-layer mean |dL/dW|
    sweep_depth: str | None = None  # "A:B[:STEP]"
    sweep_plot: str | None = None  # FILE.png: the depth sweep
    side_by_side: str | None = None  # FILE.html


def check(request: Request, *, weights_file: str | None) -> range | None:
    """Check the output paths and the sweep's range before any work; returns the sweep's depths or None."""
    from teaching import plots, side_by_side

    flags = {"--plot": (request.plot, ".png"), "--sweep-plot": (request.sweep_plot, ".png")}
    flags["--side-by-side"] = (request.side_by_side, ".html")
    outputs = [(flag, path, suffix) for flag, (path, suffix) in flags.items() if path]
    for flag, path, suffix in outputs:
        if suffix == ".png":
            plots.require_matplotlib(flag)
        else:
            side_by_side.require_pygments(flag)
        files.check_output_path(path, flag, suffix)
    paths = [os.path.realpath(path) for _, path, _ in outputs]
    if len(set(paths)) < len(paths):
        raise InputError("--plot, --sweep-plot and --side-by-side must name different files")
    if request.sweep_depth is None and not request.sweep_plot:
        return None
    if weights_file:
        raise InputError(
            "--sweep-depth and --sweep-plot draw seeded weights for every depth; leave out --weights (--seed picks them)"
        )
    return explain.parse_depths(request.sweep_depth or explain.DEFAULT_SWEEP)


def layer_series(report: dict) -> list:
    """The per-layer plot's lines from a cross-check report: each framework, then the book, per setting."""
    from teaching.plots import LayerSeries

    series = []
    for run in report["runs"]:
        for name, fw in run["frameworks"].items():
            series.append(LayerSeries(name, run["use_shortcut"], fw["weight_grad_mean_abs"]))
        if run["book"]:
            series.append(LayerSeries("book", run["use_shortcut"], run["book"]["values"]))
    return series


def produce(report: dict, request: Request, inputs: Inputs, depths, *, frameworks_named: bool) -> None:
    """Add --explain's and the sweep's figures to the report, and write the pictures and the page."""
    from teaching import plots, side_by_side

    config = inputs.config
    if request.explain:
        settings = SHORTCUT_SETTINGS[config.shortcut]
        report["explain"] = explain.explain(
            inputs.params, inputs.x, inputs.target, settings=settings, gelu_form=config.gelu, dtype=config.dtype
        )
    if depths is not None:
        names = [name for name in config.frameworks if name in frameworks.REQUIRES and name != "numerical"]
        if not frameworks_named and "jax" in names and len(names) > 1:
            # JAX compiles every depth anew: a default sweep of torch and NumPy takes seconds.
            names.remove("jax")
            print("sweep: torch and numpy (add --frameworks torch,jax,numpy to sweep JAX too)", file=sys.stderr)
        sweep = explain.sweep_depth(
            {name: frameworks.load(name) for name in names},
            depths,
            width=config.layer_sizes[0],
            d_out=config.layer_sizes[-1],
            seed=config.seed,
            gelu_form=config.gelu,
            dtype=config.dtype,
            progress=lambda text: print(text, file=sys.stderr),
        )
        report["sweep"] = {**sweep, "fits": explain.fit_sweep(sweep)}
    if request.plot:
        figure = plots.layer_gradients_figure(
            layer_series(report), layer_sizes=config.layer_sizes, gelu_form=config.gelu, dtype=config.dtype
        )
        plots.save_png(figure, request.plot)
    if request.sweep_plot:
        plots.save_png(
            plots.sweep_figure(report["sweep"], gelu_form=config.gelu, dtype=config.dtype), request.sweep_plot
        )
    if request.side_by_side:
        side_by_side.write_page(request.side_by_side)


def format_learning(report: dict) -> str:
    """The learning flags' text, to print after the report ("" when none was asked)."""
    parts = []
    if "explain" in report:
        parts.append(explain.format_explain(report["explain"]))
    if "sweep" in report:
        parts.append(explain.format_sweep(report["sweep"], report["sweep"]["fits"]))
    return "".join("\n\n" + part for part in parts)

"""compare.py's learning flags: --explain, --plot, the depth study and the side-by-side page.

`check` runs before any work (bad flags exit 2 with nothing written); `produce` adds the
figures to the report and writes the pictures and the page, each atomically.
"""

import sys
from dataclasses import dataclass

from shortcut_gradients.plumbing import files
from shortcut_gradients.plumbing.config import SHORTCUT_SETTINGS, InputError
from shortcut_gradients.plumbing.inputs import Inputs
from shortcut_gradients.teaching import explain

# The depth study's flags (shortcut_gradients/teaching/depth.py): their defaults, and how far they go. The limits
# catch typos (6400 for 64) at once instead of after an hour or an out-of-memory kill.
DEFAULT_SWEEP_DEPTHS = "2:32:2"  # every other depth up to 32: the book's 5 inside, 16 points for each fit
DEFAULT_SWEEP_WIDTHS = "3,64"  # the book's width, and a wide one
DEFAULT_SWEEP_SEEDS = 32  # draws per depth; the default study takes about 3 s (docs/depth.md)
MAX_SWEEP_DEPTH = 256
MAX_SWEEP_WIDTH = 1024
MAX_SWEEP_SEEDS = 4096
MAX_SWEEP_ELEMENTS = 2**27  # seeds x depth x width^2 weights held at once: 512 MiB in float32, as much again for dW
# The study's time model (sweep_seconds), fitted to timed depth.study runs on a 2-core machine and rounded up:
# each layer of each network shape costs tracing (for all seeds at once), each seed's layer its kernel calls, and
# each weight its arithmetic.
SWEEP_SECONDS_PER_LAYER = 2.5e-3
SWEEP_SECONDS_PER_SEED_LAYER = 6.5e-5
SWEEP_SECONDS_PER_ELEMENT = 1e-7


@dataclass(frozen=True)
class Request:
    """What the learning flags ask for; None or False where not asked."""

    explain: bool = False
    plot: str | None = None  # FILE.png: per-layer mean |dL/dW|
    sweep_depth: str | None = None  # "A:B[:STEP]"
    sweep_plot: str | None = None  # FILE.png: the depth study
    side_by_side: str | None = None  # FILE.html
    sweep_seeds: int | None = None  # networks per depth
    sweep_widths: str | None = None  # "3,64"


@dataclass(frozen=True)
class Sweep:
    """The depth study the flags ask for, checked."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    n_seeds: int


def parse_depths(text: str) -> tuple[int, ...]:
    """'2:32' -> depths 2..32; 'A:B:STEP' takes every STEP-th; 2 <= A <= B <= MAX_SWEEP_DEPTH.

    Depth 1 is one layer, width -> 1, which has no shortcut (the shapes differ) and no layer 0 to
    compare with a last one: the study's variants would all be the same network."""
    parts = text.split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (2, 3):
        raise InputError(f"--sweep-depth takes FIRST:LAST or FIRST:LAST:STEP in layers, such as 2:32; got {text!r}")
    first, last, step = numbers + [1] * (3 - len(numbers))
    if not 2 <= first <= last <= MAX_SWEEP_DEPTH or step < 1:
        raise InputError(
            f"--sweep-depth needs 2 <= FIRST <= LAST <= {MAX_SWEEP_DEPTH} and STEP >= 1 (depth 1 has no shortcut);"
            f" got {text!r}"
        )
    return tuple(range(first, last + 1, step))


def parse_widths(text: str) -> tuple[int, ...]:
    """'3,64' -> (3, 64): distinct widths from 3 (a LayerNorm over fewer elements outputs the same
    whatever its input, so the pre-LN variant would say nothing) to MAX_SWEEP_WIDTH."""
    try:
        widths = tuple(int(p) for p in text.split(","))
    except ValueError:
        widths = ()
    if not widths or not all(3 <= w <= MAX_SWEEP_WIDTH for w in widths) or len(set(widths)) < len(widths):
        raise InputError(
            f"--sweep-widths takes distinct comma-separated widths from 3 (the pre-LN variant's LayerNorm needs"
            f" 3 elements) to {MAX_SWEEP_WIDTH}, such as 3,64; got {text!r}"
        )
    return widths


def parse_sweep(request: Request) -> Sweep:
    """The study's depths, widths and seeds from the flags (the defaults where not given), checked."""
    depths = parse_depths(request.sweep_depth if request.sweep_depth is not None else DEFAULT_SWEEP_DEPTHS)
    widths = parse_widths(request.sweep_widths if request.sweep_widths is not None else DEFAULT_SWEEP_WIDTHS)
    n_seeds = request.sweep_seeds if request.sweep_seeds is not None else DEFAULT_SWEEP_SEEDS
    if not 2 <= n_seeds <= MAX_SWEEP_SEEDS:
        raise InputError(
            f"--sweep-seeds takes a number of networks per depth from 2 (the fit's interval resamples the seeds) to"
            f" {MAX_SWEEP_SEEDS}; got {n_seeds}"
        )
    elements = n_seeds * max(depths) * max(widths) ** 2
    if elements > MAX_SWEEP_ELEMENTS:
        raise InputError(
            f"the depth study would hold {elements:,} weights at once (--sweep-seeds x deepest x widest^2), over"
            f" {MAX_SWEEP_ELEMENTS:,}; ask for fewer seeds, a smaller width or a shallower depth"
        )
    return Sweep(depths, widths, n_seeds)


def sweep_seconds(sweep: Sweep | None) -> float:
    """The study's time estimate in seconds, from its sizes alone (0 when no study is asked for)."""
    if sweep is None:
        return 0.0
    layers = sum(sweep.depths) * len(sweep.widths)
    seed_layers = sweep.n_seeds * layers
    elements = sweep.n_seeds * sum(sweep.depths) * sum(w * w for w in sweep.widths)
    return (
        SWEEP_SECONDS_PER_LAYER * layers
        + SWEEP_SECONDS_PER_SEED_LAYER * seed_layers
        + SWEEP_SECONDS_PER_ELEMENT * elements
    )


def check(request: Request, *, weights_file: str | None, save_weights: str | None = None) -> Sweep | None:
    """Check the output paths and the study's flags before any work; returns the study asked for, or None.

    Every output must be a new or regular file, none of them the --weights file or another output."""
    from shortcut_gradients.teaching import plots, side_by_side

    flags = {"--plot": (request.plot, ".png"), "--sweep-plot": (request.sweep_plot, ".png")}
    flags["--side-by-side"] = (request.side_by_side, ".html")
    outputs = [(flag, path, suffix) for flag, (path, suffix) in flags.items() if path is not None]
    for flag, path, suffix in outputs:
        files.check_output_path(path, flag, suffix, inputs=[("--weights", weights_file)])
        if suffix == ".png":
            plots.require_matplotlib(flag)
        else:
            side_by_side.require_pygments(flag)
    files.check_distinct({"--save-weights": save_weights} | {flag: path for flag, path, _ in outputs})
    sweep_flags = (request.sweep_depth, request.sweep_plot, request.sweep_seeds, request.sweep_widths)
    if all(flag is None for flag in sweep_flags):
        return None
    if weights_file:
        raise InputError(
            "the depth study (--sweep-*) draws seeded weights for every network; leave out --weights"
            " (--seed picks the first seed)"
        )
    return parse_sweep(request)


def layer_series(report: dict) -> list:
    """The per-layer plot's lines from a cross-check report: each framework, then the book, per setting."""
    from shortcut_gradients.teaching.plots import LayerSeries

    series = []
    for run in report["runs"]:
        for name, fw in run["frameworks"].items():
            series.append(LayerSeries(name, run["use_shortcut"], fw["weight_grad_mean_abs"]))
        if run["book"]:
            series.append(LayerSeries("book", run["use_shortcut"], run["book"]["values"]))
    return series


def produce(report: dict, request: Request, inputs: Inputs, sweep: Sweep | None) -> None:
    """Add --explain's and the depth study's figures to the report, and write the pictures and the page."""
    from shortcut_gradients.teaching import plots, side_by_side

    config = inputs.config
    if request.explain:
        settings = SHORTCUT_SETTINGS[config.shortcut]
        report["explain"] = explain.explain(
            inputs.params, inputs.x, inputs.target, settings=settings, gelu_form=config.gelu, dtype=config.dtype
        )
    if sweep is not None:
        from shortcut_gradients.teaching import depth

        report["sweep"] = depth.study(
            sweep.depths,
            sweep.widths,
            n_seeds=sweep.n_seeds,
            first_seed=config.seed,
            gelu_form=config.gelu,
            dtype=config.dtype,
            progress=lambda text: print(text, file=sys.stderr),
        )
    if request.plot:
        figure = plots.layer_gradients_figure(
            layer_series(report), layer_sizes=config.layer_sizes, gelu_form=config.gelu, dtype=config.dtype
        )
        plots.save_png(figure, request.plot)
        wrote(request.plot)
    if request.sweep_plot:
        plots.save_png(plots.depth_study_figure(report["sweep"]), request.sweep_plot)
        wrote(request.sweep_plot)
    if request.side_by_side:
        side_by_side.write_page(request.side_by_side)
        wrote(request.side_by_side)


def wrote(path) -> None:
    """Confirm a written file with one line on stderr (stdout holds the report, or the JSON)."""
    print(f"wrote {path}", file=sys.stderr)


def format_learning(report: dict) -> str:
    """The learning flags' text, to print after the report ("" when none was asked)."""
    parts = []
    if "explain" in report:
        parts.append(explain.format_explain(report["explain"]))
    if "sweep" in report:
        from shortcut_gradients.teaching import depth

        parts.append(depth.format_study(report["sweep"]))
    return "".join("\n\n" + part for part in parts)

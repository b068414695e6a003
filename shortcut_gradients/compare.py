"""Run the book's network in torch, JAX and NumPy on shared weights and check that the gradients agree.

    python compare.py                      # the book's configuration, with and without shortcut
    python compare.py --dtype float64      # agreement to 1e-12
    python compare.py --json               # one JSON object on stdout
    python compare.py --explain            # each layer's gradient: identity path vs through the layer
    python compare.py --plot layers.png    # the book's Figure 4.12, measured (and --sweep-plot depth.png)
    python compare.py --side-by-side page.html   # the three model.py files in aligned columns
    python compare.py --batch 8            # eight seeded random rows in place of the book's one
    python compare.py --diagnose-numbers table.txt   # which configuration printed these numbers

A run with an implementation of your own also checks every implementation on a small seeded
probe (verdict/probes.py) on which the classic slips show; --no-probes leaves it out.

Exit status: 0 when every element of every gradient agrees (and the book's numbers match,
where the configuration is the book's), 1 when anything disagrees, 2 for bad input (work
estimated past a couple of minutes included, unless --allow-long), 130 after Ctrl-C and
143 after SIGTERM. Each file written is confirmed on stderr (`wrote FILE`).
"""

import argparse
import math
import signal
import sys
import threading
import time
from contextlib import contextmanager

from shortcut_gradients.cli import OneLineParser
from shortcut_gradients.plumbing.config import DTYPES, GELU_FORMS, NORMS, ORACLE, SHORTCUT_SETTINGS, Config, InputError

# Only light modules above: the rest (NumPy, the frameworks) is imported in main, under its signal handling,
# so that Ctrl-C while they load is one line too.
PROGRESS_SECONDS = 5  # work estimated past this reports progress on stderr: each stage as it starts, and the time
PROGRESS_EVERY = 10  # seconds between the time reports


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as Ctrl-C does: temporary files are removed."""


def terminate(signum, frame):
    raise Terminated


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"takes a positive number of seconds, such as 60; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from shortcut_gradients.plumbing import inputs
    from shortcut_gradients.plumbing.frameworks import MODULES
    from shortcut_gradients.teaching import outputs

    defaults = Config()
    p = OneLineParser(prog="compare.py", description=__doc__.splitlines()[0])
    p.add_argument("--layer-sizes", help="comma-separated widths, input first (default: the book's 3,3,3,3,3,1)")
    p.add_argument(
        "--seed", type=int, default=defaults.seed, help="torch.manual_seed for the weights (default: %(default)s)"
    )
    p.add_argument(
        "--weights", metavar="FILE", help="safetensors file with layers.{i}.0.weight/bias and optional input, target"
    )
    p.add_argument("--save-weights", metavar="FILE", help="write this run's weights, input and target (safetensors)")
    p.add_argument(
        "--shortcut", choices=tuple(SHORTCUT_SETTINGS), default=defaults.shortcut, help="default: %(default)s"
    )
    p.add_argument(
        "--gelu", choices=GELU_FORMS, default=defaults.gelu, help="GELU form (default: %(default)s, the book's)"
    )
    p.add_argument("--dtype", choices=DTYPES, default=defaults.dtype, help="default: %(default)s")
    p.add_argument(
        "--norm",
        choices=NORMS,
        default=defaults.norm,
        help="pre: a LayerNorm in front of every layer, x = x + GELU(Linear(LN(x))), the book's next step "
        "(default: %(default)s, the book's network)",
    )
    p.add_argument(
        "--frameworks",
        help=f"comma-separated, from {','.join(m for m in MODULES if m != ORACLE)} "
        f"(default: {','.join(defaults.frameworks)}), a .py file or module of your own (docs/contract.md),"
        f" and {ORACLE} for finite differences (float64, small networks)",
    )
    p.add_argument(
        "--batch",
        metavar="N",
        help="N random rows (seeded by --seed) in place of the book's one row, with a random target",
    )
    p.add_argument(
        "--input-shape",
        metavar="B,T",
        help="a random (B, T, width) input (seeded by --seed), as a batch of sequences, with a random target",
    )
    p.add_argument(
        "--no-probes",
        action="store_true",
        help="with an implementation of your own, check the run's input only, not the probe (verdict/probes.py)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr, however long the work")
    p.add_argument(
        "--diagnose-numbers",
        metavar="TEXT",
        help="which configuration printed these per-layer numbers (a file, - for stdin, or the text itself);"
        " runs nothing else: exit 0 explained, 1 not",
    )
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=positive_seconds,
        default=inputs.DEFAULT_TIMEOUT,
        help="time limit for outside code: a plug-in's import and each call (default: %(default)s)",
    )
    p.add_argument(
        "--allow-long",
        action="store_true",
        help="run work estimated to take more than a few minutes, instead of refusing it (progress goes to stderr)",
    )
    learn = p.add_argument_group("learning backprop from it (docs/backprop.md)")
    learn.add_argument(
        "--explain", action="store_true", help="per layer, the gradient through the layer and through the identity path"
    )
    learn.add_argument("--plot", metavar="FILE.png", help="per-layer mean |dL/dW| on a log scale (needs matplotlib)")
    learn.add_argument(
        "--sweep-depth",
        metavar="A:B[:STEP]",
        help="the depth study (docs/depth.md): layer 0's mean |dL/dW| over many random networks of A to B layers,"
        f" plain, with shortcut and pre-LN, with fitted per-layer factors (default {outputs.DEFAULT_SWEEP_DEPTHS})",
    )
    learn.add_argument(
        "--sweep-plot",
        metavar="FILE.png",
        help="draw the depth study (needs matplotlib; the --sweep-* flags or their defaults)",
    )
    learn.add_argument(
        "--sweep-seeds",
        metavar="N",
        type=int,
        help=f"random networks per depth in the depth study, seeds --seed onwards (default {outputs.DEFAULT_SWEEP_SEEDS})",
    )
    learn.add_argument(
        "--sweep-widths", metavar="W,W", help=f"the depth study's widths (default {outputs.DEFAULT_SWEEP_WIDTHS})"
    )
    learn.add_argument(
        "--side-by-side", metavar="FILE.html", help="the three implementations in aligned columns (needs pygments)"
    )
    return p


def main(argv=None) -> int:
    """The command line: 0 agree, 1 disagree, 2 bad input; 130 after Ctrl-C and 143 after SIGTERM,
    each with one line on stderr and no temporary file left behind. As a command (main_exit) the
    signals end the process from their handler (plumbing.files.exit_on_signals); called in another
    program's process (a test, a notebook), they raise KeyboardInterrupt and main returns the status."""
    with sigterm_raises():
        try:
            return checked_main(argv)
        except KeyboardInterrupt as err:  # Terminated too: temporary files were removed on the way here
            print("compare.py: interrupted", file=sys.stderr)
            return 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)


def checked_main(argv) -> int:
    try:
        from shortcut_gradients.plumbing import frameworks, inputs, weights
        from shortcut_gradients.plumbing.config import parse_layer_sizes
        from shortcut_gradients.teaching import outputs

        args = build_parser().parse_args(argv)
        if args.diagnose_numbers is not None:
            return diagnose_numbers(args.diagnose_numbers, args.json)
        request = outputs.Request(
            args.explain,
            args.plot,
            args.sweep_depth,
            args.sweep_plot,
            args.side_by_side,
            sweep_seeds=args.sweep_seeds,
            sweep_widths=args.sweep_widths,
        )
        sweep = outputs.check(request, weights_file=args.weights, save_weights=args.save_weights)
        run_inputs = inputs.resolve(
            frameworks_text=args.frameworks,
            layer_sizes=parse_layer_sizes(args.layer_sizes) if args.layer_sizes is not None else None,
            seed=args.seed,
            weights_file=args.weights,
            save_weights=args.save_weights,
            shortcut=args.shortcut,
            gelu=args.gelu,
            dtype=args.dtype,
            norm=args.norm,
            timeout=args.timeout,
            allow_long=args.allow_long,
            extra_seconds=outputs.sweep_seconds(sweep),
            input_shape=drawn_input_shape(args.batch, args.input_shape),
        )
        from shortcut_gradients.verdict import report as reporting
        from shortcut_gradients.verdict.run import run

        try:
            with progress(0.0 if args.quiet else run_inputs.seconds):
                if args.save_weights is not None:
                    weights.save_weights(args.save_weights, run_inputs.params, run_inputs.x, run_inputs.target)
                    outputs.wrote(args.save_weights)
                quiet = args.quiet or run_inputs.seconds <= PROGRESS_SECONDS
                report = run(run_inputs, probe=not args.no_probes, progress=None if quiet else stage)
                outputs.produce(report, request, run_inputs, sweep)
        finally:
            frameworks.close(run_inputs.fns)  # a user's implementation runs in a process of its own
    except (InputError, OSError) as err:  # bad input, or a file that could not be written (none is left half-written)
        print(f"compare.py: error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "compare.py: error: out of memory (more than the estimate allowed for): use a smaller network or batch,"
            " or raise the memory limit (ulimit -v)",
            file=sys.stderr,
        )
        return 2
    if args.json:
        print(reporting.to_json(report))
    else:
        print(reporting.format_report(report) + outputs.format_learning(report))
    return 0 if report["agree"] else 1


def drawn_input_shape(batch: str | None, input_shape: str | None) -> tuple[int, ...] | None:
    """--batch N -> (N,), --input-shape B,T -> (B, T): the leading dimensions of a seeded input, or None."""
    from shortcut_gradients.cli import parse_ints

    if batch is not None and input_shape is not None:
        raise InputError("--batch and --input-shape both give the input's rows: use one of them")
    if batch is not None:
        if "," in batch:
            raise InputError(f"--batch takes one positive integer, the number of rows, such as 8; got {batch!r}")
        return parse_ints(batch, "--batch", example="8")
    if input_shape is not None:
        return parse_ints(input_shape, "--input-shape", example="2,4")
    return None


def diagnose_numbers(text: str, as_json: bool) -> int:
    """--diagnose-numbers: explain a reader's printed per-layer numbers; runs nothing else. 0 explained, 1 not."""
    from shortcut_gradients.cli import to_json
    from shortcut_gradients.teaching import book_numbers

    record = book_numbers.explain(book_numbers.read_text(text))
    print(to_json(book_numbers.record_to_json(record)) if as_json else book_numbers.format_explanation(record))
    return 0 if record.explained else 1


def stage(line: str) -> None:
    """A progress line on stderr: which stage of the work starts now."""
    print(f"compare.py: {line}", file=sys.stderr, flush=True)


@contextmanager
def sigterm_raises():
    """SIGTERM raises Terminated for the block (on the main thread; elsewhere signals cannot be handled),
    unless the process is a command that already ends on it (main_exit)."""
    from shortcut_gradients.plumbing import files

    if threading.current_thread() is not threading.main_thread() or files.exits_on(signal.SIGTERM):
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def progress(estimate: float):
    """For work estimated past PROGRESS_SECONDS, a line on stderr now and every PROGRESS_EVERY seconds."""
    if estimate <= PROGRESS_SECONDS:
        yield
        return
    start, done = time.monotonic(), threading.Event()
    print(f"compare.py: about {estimate:.0f} s of work, estimated from the sizes", file=sys.stderr, flush=True)

    def report_progress():
        while not done.wait(PROGRESS_EVERY):
            elapsed = time.monotonic() - start
            print(
                f"compare.py: working, {elapsed:.0f} s so far (estimate {estimate:.0f} s)", file=sys.stderr, flush=True
            )

    reporter = threading.Thread(target=report_progress, daemon=True)
    reporter.start()
    try:
        yield
    finally:
        done.set()
        reporter.join()


def main_exit() -> None:
    """The console script `shortcut-compare`, and compare.py."""
    from shortcut_gradients.plumbing import files, resources

    files.exit_on_signals("compare.py")
    resources.keep_freed_memory()
    resources.plain_pages()
    sys.exit(main())


if __name__ == "__main__":
    main_exit()

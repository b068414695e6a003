"""Where the hand-written NumPy step spends its time: a line profile of forward, loss and backward.

    pip install line_profiler                      # a tool for this script only, not a dependency
    python -m benchmarks.profile_numpy             # impl_numpy/model.py at batch 256, width 1024, depth 8
    git show 0608b2a:impl_numpy/model.py > /tmp/model_before.py
    python -m benchmarks.profile_numpy --model /tmp/model_before.py      # the first version, to compare

Prints the most expensive lines, in milliseconds per step and as a share of the step. A line
that calls gelu or gelu_backward is not counted twice: their own lines are listed instead.
The profiler adds a little to every line, so the total is a little above bench.py's step time.
"""

import argparse
import importlib.util
import linecache
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import steps  # noqa: E402
from plumbing.config import InputError  # noqa: E402

PROFILED = ("forward", "backward", "gelu", "gelu_backward", "mse_loss", "mse_loss_backward")
WARMUP_STEPS = 2
SHOWN_LINES = 14


def load_model(path: Path):
    spec = importlib.util.spec_from_file_location("profiled_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def profile(model, batch: int, width: int, depth: int, steps_run: int) -> tuple[float, list]:
    """(ms per step, [(ms per step, function, source line)] most expensive first)."""
    from line_profiler import LineProfiler

    params, x, target = steps.network(batch, width, depth, seed=0)

    def step():
        output, cache = model.forward(params, x, steps.USE_SHORTCUT, steps.GELU_FORM)
        model.mse_loss(output, target)
        dout = model.mse_loss_backward(output, target)
        return model.backward(params, cache, dout, steps.GELU_FORM)

    for _ in range(WARMUP_STEPS):
        step()
    profiler = LineProfiler(*(getattr(model, name) for name in PROFILED), step)
    profiled_step = profiler(step)
    for _ in range(steps_run):
        profiled_step()
    stats = profiler.get_stats()
    total, lines = 0.0, []
    for (filename, _, function), timings in stats.timings.items():
        for lineno, _, elapsed in timings:
            ms = elapsed * stats.unit * 1e3 / steps_run
            source = linecache.getline(filename, lineno).strip()
            if function.split(".")[-1] == "step":
                total += ms  # the whole step, every line of it
            elif not ("gelu(" in source or "gelu_backward(" in source) or function.startswith("gelu"):
                lines.append((ms, function, source))
    return total, sorted(lines, reverse=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_numpy", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "impl_numpy" / "model.py", help="a NumPy model file")
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="profiled steps, averaged (default: %(default)s)")
    args = p.parse_args(argv)
    try:
        if importlib.util.find_spec("line_profiler") is None:
            raise InputError("needs line_profiler, which is not installed: pip install line_profiler")
        if not args.model.is_file():
            raise InputError(f"--model {args.model}: no such file")
        if min(args.width, args.depth, args.batch, args.steps) < 1:
            raise InputError("--width, --depth, --batch and --steps must be positive")
    except InputError as err:
        print(f"profile_numpy: error: {err}", file=sys.stderr)
        return 2
    total, lines = profile(load_model(args.model), args.batch, args.width, args.depth, args.steps)
    print(
        f"{args.model}: batch {args.batch}, width {args.width}, depth {args.depth}; "
        f"{total:.1f} ms per step under line_profiler (mean of {args.steps})"
    )
    for ms, function, source in lines[:SHOWN_LINES]:
        print(f"{ms:8.2f} ms {100 * ms / total:5.1f}%  {function:<14} {source[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

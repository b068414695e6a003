"""Where a NumPy step spends its time: a line profile of its loss_and_grads and the functions it calls.

    pip install line_profiler                          # a tool for this script only, not a dependency
    python -m benchmarks.profile_numpy                 # impl_numpy/fast.py at batch 256, width 1024, depth 8
    python -m benchmarks.profile_numpy --model impl_numpy/model.py     # the reference, line by line
    python -m benchmarks.profile_numpy --model /tmp/older_model.py     # any file defining loss_and_grads

The step is bench.py's (benchmarks/steps.py's network: shortcut on, tanh GELU, float32), run with
NumPy's own thread count (OPENBLAS_NUM_THREADS=2 in front of the command sets it). Every function
and method defined in the model's file is profiled; prints the most expensive lines, in milliseconds
per step and as a share of the step. A line that calls another profiled function is not listed:
that function's own lines are. The profiler adds a little to every line, so the total is a little
above bench.py's step time.
"""

import argparse
import importlib
import importlib.util
import inspect
import linecache
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import steps  # noqa: E402
from shortcut_gradients.plumbing.config import InputError  # noqa: E402

WARMUP_STEPS = 2
SHOWN_LINES = 14


def load_model(path: Path):
    """The module in `path`: imported by its package name when it is in this repository (impl_numpy/fast.py
    imports its sibling model.py), else loaded from the file on its own."""
    path = path.resolve()
    if path.is_relative_to(ROOT):
        return importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    spec = importlib.util.spec_from_file_location("profiled_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def own_functions(module) -> list:
    """Every function defined in the module's file, methods of its classes included."""
    found = []
    for value in vars(module).values():
        members = (
            [value] + [v for v in vars(value).values() if inspect.isfunction(v)] if inspect.isclass(value) else [value]
        )
        found += [f for f in members if inspect.isfunction(f) and f.__module__ == module.__name__]
    return found


def profile(model, batch: int, width: int, depth: int, steps_run: int) -> tuple[float, list]:
    """(ms per step, [(ms per step, function, source line)] most expensive first)."""
    from line_profiler import LineProfiler

    params, x, target = steps.network(batch, width, depth, seed=0)

    def step():
        return model.loss_and_grads(
            params, x, target, use_shortcut=steps.USE_SHORTCUT, gelu_form=steps.GELU_FORM, dtype=steps.DTYPE
        )

    for _ in range(WARMUP_STEPS):
        step()
    functions = own_functions(model)
    calls = re.compile(r"\b(" + "|".join(re.escape(f.__name__) for f in functions) + r")\(")
    profiler = LineProfiler(*functions)
    for _ in range(steps_run):
        profiler.runcall(step)
    stats = profiler.get_stats()
    total, lines = 0.0, []
    for (filename, _, function), timings in stats.timings.items():
        for lineno, _, elapsed in timings:
            ms = elapsed * stats.unit * 1e3 / steps_run
            source = linecache.getline(filename, lineno).strip()
            if function == "loss_and_grads":
                total += ms  # the whole step, every line of it
            if not calls.search(source.split("#")[0]):
                lines.append((ms, function, source))
    return total, sorted(lines, reverse=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_numpy", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "impl_numpy" / "fast.py", help="a file defining loss_and_grads")
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
        model = load_model(args.model)
        if not callable(getattr(model, "loss_and_grads", None)):
            raise InputError(f"--model {args.model}: defines no loss_and_grads")
    except InputError as err:
        print(f"profile_numpy: error: {err}", file=sys.stderr)
        return 2
    total, lines = profile(model, args.batch, args.width, args.depth, args.steps)
    print(
        f"{args.model}: batch {args.batch}, width {args.width}, depth {args.depth}; "
        f"{total:.1f} ms per step under line_profiler (mean of {args.steps})"
    )
    shown = lines[:SHOWN_LINES]
    pad = max((len(function) for _, function, _ in shown), default=0)
    for ms, function, source in shown:
        print(f"{ms:8.2f} ms {100 * ms / total:5.1f}%  {function:<{pad}} {source[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The cost of isolation: a plug-in's loss_and_grads in a worker process against the same file imported here.

    python -m benchmarks.isolation              # 200 calls per row on the book, 20 at width 1024 batch 256
    python -m benchmarks.isolation --quick      # a few calls on small sizes: checks the machinery in seconds

compare.py runs a user's implementation in a process of its own (shortcut_gradients.plumbing.worker,
started by frameworks.resolve): the arrays go out and the gradients come back through pipes, as .npy
bytes. In process means importing the same file with shortcut_gradients.plumbing.user_code.load and
calling its loss_and_grads directly, as a checker that trusted it would. Everything is measured in one
run: the worker's start-up (spawn, import, first reply) on its own row, then for each network and
shortcut setting the two ways called alternately, call by call, so that a change in the machine's load
hits both; each row is the median call. The machine's load average is printed before and after, as a
busy machine slows the worker's extra process switches more than the arithmetic.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from shortcut_gradients.plumbing import user_code, weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED
from shortcut_gradients.plumbing.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
PLUG_IN = ROOT / "tests" / "byo" / "einsum_backprop.py"
DTYPE = "float32"
GELU_FORM = "tanh"
WIDE = 1024  # the wide network: WIDE_LAYERS layers of WIDE -> WIDE on WIDE_ROWS rows
WIDE_LAYERS = 4
WIDE_ROWS = 256
QUICK_WIDE, QUICK_ROWS = 64, 8  # --quick's stand-in for the wide network
CALLS = {"book": 200, "wide": 20}
QUICK_CALLS = 3


def networks(quick: bool) -> dict:
    """{label: (params, x, target, calls)}: the book's network and input, and a wide random one."""
    book = (weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED), weights.default_input(3), weights.default_target(1))
    width, rows = (QUICK_WIDE, QUICK_ROWS) if quick else (WIDE, WIDE_ROWS)
    rng = np.random.default_rng(0)
    wide_params = [
        (rng.uniform(-1, 1, (width, width)) / np.sqrt(width), rng.uniform(-1, 1, width) / np.sqrt(width))
        for _ in range(WIDE_LAYERS)
    ]  # nn.Linear's range: U(-1/sqrt(d_in), 1/sqrt(d_in))
    wide = (wide_params, rng.normal(size=(rows, width)), np.zeros((rows, width)))
    calls = dict.fromkeys(CALLS, QUICK_CALLS) if quick else CALLS
    as_dtype = [[(W.astype(DTYPE), b.astype(DTYPE)) for W, b in p] for p in (book[0], wide[0])]
    return {
        "book (3,3,3,3,3,1), 1 row": (as_dtype[0], book[1].astype(DTYPE), book[2].astype(DTYPE), calls["book"]),
        f"{WIDE_LAYERS} x {width} wide, {rows} rows": (
            as_dtype[1],
            wide[1].astype(DTYPE),
            wide[2].astype(DTYPE),
            calls["wide"],
        ),
    }


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def same(a: dict, b: dict) -> bool:
    """Bit-identical loss and gradients: the worker must change where the code runs, not what it returns."""
    return all(
        np.array_equal(np.asarray(x), np.asarray(y)) for key in ("loss", "output", "dx") for x, y in [(a[key], b[key])]
    ) and all(np.array_equal(x, y) for key in ("dW", "db") for x, y in zip(a[key], b[key]))


def measure(quick: bool) -> dict:
    """Every figure the table prints, from this one run."""
    spec = str(PLUG_IN)
    start_up, first = [], None
    for _ in range(1 if quick else 5):
        seconds, worker = timed(lambda: Worker(spec, timeout=600).ready())
        start_up.append(seconds)
        if first is None:
            first = worker  # kept for the calls below
        else:
            worker.close()
    _, module = user_code.load(spec)
    rows = []
    try:
        for label, (params, x, target, calls) in networks(quick).items():
            for use_shortcut in (False, True):
                kw = {"use_shortcut": use_shortcut, "gelu_form": GELU_FORM, "dtype": DTYPE}
                in_process, in_worker = [], []
                for _ in range(calls + 1):  # the first call of each warms caches and is dropped
                    t_here, here = timed(module.loss_and_grads, params, x, target, **kw)
                    t_there, there = timed(first.call, "loss_and_grads", params, x, target, **kw)
                    in_process.append(t_here)
                    in_worker.append(t_there)
                    if not same(here, there):
                        raise SystemExit(f"isolation.py: the worker's result differs from the in-process one ({label})")
                rows.append(
                    {
                        "network": label,
                        "shortcut": use_shortcut,
                        "calls": calls,
                        "in_process_s": statistics.median(in_process[1:]),
                        "worker_s": statistics.median(in_worker[1:]),
                    }
                )
    finally:
        first.close()
    return {"start_up_s": statistics.median(start_up), "start_ups": len(start_up), "rows": rows}


def format_table(report: dict) -> str:
    lines = [
        "| run | calls | in process | in a worker | worker - in process | ratio |",
        "|---|---|---|---|---|---|",
        f"| worker start-up (spawn, import, first reply) | {report['start_ups']} | - |"
        f" {report['start_up_s'] * 1e3:.0f} ms | - | - |",
    ]
    for r in report["rows"]:
        here, there = r["in_process_s"], r["worker_s"]
        lines.append(
            f"| {r['network']}, shortcut {'on' if r['shortcut'] else 'off'} | {r['calls']} | {here * 1e3:.3g} ms"
            f" | {there * 1e3:.3g} ms | {(there - here) * 1e3:+.3g} ms | {there / here:.3g} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few calls on small sizes (seconds)")
    args = p.parse_args(argv)
    before = os.getloadavg()
    report = measure(args.quick)
    after = os.getloadavg()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"plug-in {PLUG_IN.relative_to(ROOT)}, {DTYPE}, GELU {GELU_FORM}; median call of each row{' (--quick)' * args.quick}"
    )
    print(format_table(report))
    print(f"load average (1 min) {before[0]:.2f} before, {after[0]:.2f} after, on {cpus} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

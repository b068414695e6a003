"""Time one gradient step of torch, JAX and the two NumPy steps against the matrix-multiply floor.

    python -m benchmarks.bench                  # batch 256, widths 256,1024, depths 8,32: a table
    python -m benchmarks.bench --json           # the same run as one JSON object on stdout
    python -m benchmarks.bench --batch 16 --widths 64 --depths 8,16 --repeats 2     # a quick check

The network is the book's, scaled up: `depth` layers of width -> width, shortcut on, tanh
GELU, float32, MSE loss (benchmarks/steps.py builds each implementation's step from its own
public pieces). A step is forward, loss and backward: gradients for every weight, bias and the
input. `numpy-fast` is impl_numpy/fast.py, `numpy` the reference impl_numpy/model.py.

How it measures (exit status 0; 2 for bad input; 1, with its error, if an implementation's process fails):
  - Each implementation, and the floor, runs in its own process, pinned to the same `--threads`
    CPUs with OMP/MKL/OpenBLAS_NUM_THREADS set to the same number and torch.set_num_threads
    likewise. XLA has no thread-count flag; it sizes its pool from the CPUs the process may use,
    so the pinning is what limits JAX (the JAX maintainers' advice, jax-ml/jax#1539).
  - The processes take turns, one turn each per round, so that a change in the machine's load
    during the run falls on all of them alike. A turn runs untimed steps for 0.1 s (at least
    one), so caches and thread pools are as warm as in a training loop, then times steps back
    to back for 0.2 s (at least one) and reports seconds per step. The figure is the median
    over the rounds.
  - The floor is the three matrix multiplications per layer that any backward pass must do
    (x W^T, dz W, dz^T x), in NumPy at the same sizes, into preallocated outputs: floor/step is
    the fraction of the floor's speed an implementation reaches.
  - JAX's compilation is timed on its own (lower + compile) and is not in its step time.
  - Peak memory: in a separate fresh process per implementation, the growth of the resident
    set during one step (VmHWM after it minus VmRSS before it, the high-water mark reset just
    before), with glibc's mmap threshold fixed at 64 KiB so that every freed buffer goes back
    to the system and the resident set follows live memory. It counts what the step adds on top
    of the prepared model and input: saved activations, temporaries and the gradients it returns.
  - The targets below are judged on this run's figures and printed met or MISSED; nothing
    asserts them.
"""

import argparse
import gc
import json
import multiprocessing
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/bench.py` works as well as `python -m benchmarks.bench`

from shortcut_gradients.plumbing.config import InputError  # noqa: E402

IMPLS = ("torch", "jax", "numpy-fast", "numpy")  # the table's order; names as shortcut_gradients.plumbing.frameworks has them

DEFAULT_BATCH = 256
DEFAULT_WIDTHS = (256, 1024)
DEFAULT_DEPTHS = (8, 32)
DEFAULT_REPEATS = 7  # turns per implementation and size; the median is reported
SEED = 0  # the weights and input, shared by every implementation
WARMUP_STEPS = 2  # after building (and compiling): thread pools start, buffers are paged in
# Each turn: at least one untimed step and TURN_WARM_S of them, then at least one timed step and
# TURN_TIMED_S of them. Measured: JAX at width 256, depth 8, takes 11 ms a step back to back but
# 12 to 24 ms for the first steps after a 0.15 s pause, while its idle threads wake up.
TURN_WARM_S = 0.1
TURN_TIMED_S = 0.2
# Between one process's turn and the next: OpenBLAS's idle threads keep spinning for about 0.1 s
# after a call (measured here: 0.05 CPU-s in each of the first two 50 ms windows, then nothing)
# and would take a CPU from the next process's step.
PAUSE_S = 0.15
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# glibc: a fixed threshold (it is otherwise raised as buffers are freed) makes every buffer of
# 64 KiB or more its own mapping, unmapped on free, so the resident set tracks live memory.
MEMORY_PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

# Other work competed for the benchmark's CPUs when the 1-minute load average before the run
# exceeds the CPUs it leaves free by more than this.
BUSY_MARGIN = 0.5
BUSY_WARNING = (
    "WARNING: the machine was busy before the run: every time is inflated, and unevenly (a multi-threaded"
    " matmul stalls whenever one of its threads is descheduled), so the ratios below are not to be trusted"
)

# The targets, judged on this run's figures (stated for a 2-core machine, 2 threads).
FAST, REFERENCE = "numpy-fast", "numpy"
TARGET_BATCH, TARGET_WIDTH, TARGET_THREADS = 256, 1024, 2
FAST_FLOOR_MIN = 0.85  # numpy-fast's floor time / step time, at least, at TARGET_BATCH and TARGET_WIDTH
FAST_OVER_TORCH_MAX = 1.0  # numpy-fast's step / torch's step, at most, likewise
DEPTH_FLATNESS = 0.15  # every implementation: time per layer at the deepest within 15% of the shallowest
# and numpy-fast's peak memory at most torch's, at every size


# ---- in the child processes -------------------------------------------------------------


def status_kib(field: str) -> int:
    """A /proc/self/status figure such as VmRSS or VmHWM, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Set the high-water mark VmHWM back to the current resident set (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def timed_turn(run) -> float:
    """One turn: untimed steps for TURN_WARM_S, then seconds per step over TURN_TIMED_S of steps.

    The untimed steps bring caches and idle thread pools back to the state of a training loop
    after the other processes' turns; a short step is timed over several, back to back.
    """
    start = time.perf_counter()
    while True:
        run()
        if time.perf_counter() - start >= TURN_WARM_S:
            break
    count, start = 0, time.perf_counter()
    while True:
        result = run()
        count += 1
        elapsed = time.perf_counter() - start
        del result
        if elapsed >= TURN_TIMED_S:
            return elapsed / count


def serve(conn, impl: str, cpus: list[int]) -> None:
    """A timing process: builds `impl`'s step for a size on request, then times one turn per request."""
    os.sched_setaffinity(0, cpus)  # this process and every thread it starts
    from benchmarks import steps  # after pinning: the frameworks size their thread pools on import

    step = None
    while (request := conn.recv()) is not None:
        kind, size = request
        try:
            if kind == "setup":
                step = None  # free the previous size's arrays before building the next
                step = steps.MAKERS[impl](*size, SEED)
                for _ in range(WARMUP_STEPS):
                    step.run()
                conn.send(("ok", {"compile_s": step.compile_s, "loss": step.loss, "version": step.version}))
            else:
                conn.send(("ok", timed_turn(step.run)))
        except Exception as err:  # the parent reports it; a worker must not hang the run
            conn.send(("error", f"{type(err).__name__}: {err}"))


def memory_probe(conn, impl: str, cpus: list[int], sizes: list[tuple]) -> None:
    """A fresh process (with MEMORY_PROBE_ENV) that sends [peak MiB of one step] for each size."""
    os.sched_setaffinity(0, cpus)
    try:
        from benchmarks import steps

        peaks = []
        for size in sizes:
            step = steps.MAKERS[impl](*size, SEED)  # builds, compiles and runs one step
            step.run()  # and a second: anything created lazily on the first exists now
            gc.collect()
            reset_peak_rss()
            before = status_kib("VmRSS")
            result = step.run()
            peaks.append((status_kib("VmHWM") - before) / 1024)
            del result, step
            gc.collect()
        conn.send(("ok", peaks))
    except Exception as err:
        conn.send(("error", f"{type(err).__name__}: {err}"))


# ---- in the parent ----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


@contextmanager
def environment(variables: dict):
    """Set environment variables for the processes started inside the block, then restore them."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def receive(conn, name: str):
    status, value = conn.recv()
    if status == "error":
        raise RuntimeError(f"the {name} process failed: {value}")
    return value


def benchmark(sizes: list[tuple], impls: tuple[str, ...], threads: int, repeats: int, log) -> dict:
    """Run the grid; returns the report --json prints. sizes: [(batch, width, depth)]."""
    processes = ("floor",) + impls  # one timing process each, taking turns in this order
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no framework state inherited from this one
    started = []

    def start(target, name, *args):
        parent, child = ctx.Pipe()
        process = ctx.Process(target=target, args=(child, name, cpus, *args), daemon=True)
        process.start()
        started.append((process, parent))
        return parent

    try:
        with environment({name: str(threads) for name in THREAD_VARIABLES}):
            with environment(MEMORY_PROBE_ENV):
                probes = {impl: start(memory_probe, impl, sizes) for impl in impls}
            timers = {name: start(serve, name) for name in processes}  # they import while the probes run
        log(f"measuring peak memory of one step ({', '.join(impls)}, each in a fresh process)")
        peaks = {impl: receive(conn, f"{impl} memory") for impl, conn in probes.items()}

        rows, floors, versions = [], [], {}
        for n, size in enumerate(sizes):
            batch, width, depth = size
            log(f"[{n + 1}/{len(sizes)}] batch {batch} width {width} depth {depth}: building, compiling, warming up")
            for conn in timers.values():
                conn.send(("setup", size))
            setups = {name: receive(conn, name) for name, conn in timers.items()}
            times = {name: [] for name in processes}
            for _ in range(repeats):
                for name, conn in timers.items():
                    time.sleep(PAUSE_S)
                    conn.send(("time", None))
                    times[name].append(receive(conn, name))
            median = {name: statistics.median(t) for name, t in times.items()}
            floors.append({"batch": batch, "width": width, "depth": depth, "floor_s": median["floor"]})
            floors[-1]["floor_times_s"] = times["floor"]
            for impl in impls:
                versions[impl] = setups[impl]["version"]
                rows.append(
                    {
                        "batch": batch,
                        "width": width,
                        "depth": depth,
                        "impl": impl,
                        "step_s": median[impl],
                        "floor_s": median["floor"],
                        "compile_s": setups[impl]["compile_s"],
                        "peak_mib": peaks[impl][n],
                        "layer_s": median[impl] / depth,
                        "floor_over_step": median["floor"] / median[impl],
                        "step_over_torch": median[impl] / median["torch"] if "torch" in median else None,
                        "loss": setups[impl]["loss"],
                        "step_times_s": times[impl],
                    }
                )
            log(
                f"    floor {median['floor'] * 1e3:.1f} ms; "
                + ", ".join(f"{i} {median[i] * 1e3:.1f} ms" for i in impls)
            )
    finally:
        for _, conn in started:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process, _ in started:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()

    return {
        "config": {
            "batch": sorted({s[0] for s in sizes}),
            "widths": sorted({s[1] for s in sizes}),
            "depths": sorted({s[2] for s in sizes}),
            "dtype": "float32",
            "use_shortcut": True,
            "gelu": "tanh",
            "threads": threads,
            "cpus": cpus,
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "repeats": repeats,
            "seed": SEED,
            "versions": versions,
        },
        "rows": rows,
        "floors": floors,
        "targets": targets(rows),
    }


def targets(rows: list[dict]) -> list[dict]:
    """Each target with this run's value: {"target": what was asked, "value", "met"}; value and met
    are None for a target whose sizes or implementations the run did not measure."""
    by = {(r["impl"], r["batch"], r["width"], r["depth"]): r for r in rows}
    out = []

    def judge(name, value, met):
        out.append({"target": name, "value": value, "met": met})

    at = f"batch {TARGET_BATCH} width {TARGET_WIDTH}"
    fast_rows = [r for r in rows if r["impl"] == FAST and (r["batch"], r["width"]) == (TARGET_BATCH, TARGET_WIDTH)]
    for r in fast_rows:
        name = f"{FAST} floor/step at {at} depth {r['depth']} >= {FAST_FLOOR_MIN}"
        judge(name, r["floor_over_step"], r["floor_over_step"] >= FAST_FLOOR_MIN)
    for r in fast_rows:
        name = f"{FAST} step / torch step at {at} depth {r['depth']} <= {FAST_OVER_TORCH_MAX}"
        value = r["step_over_torch"]
        judge(name, value, None if value is None else value <= FAST_OVER_TORCH_MAX)
    if not fast_rows:
        judge(
            f"{FAST} floor/step >= {FAST_FLOOR_MIN} and step / torch step <= {FAST_OVER_TORCH_MAX} at {at}", None, None
        )

    impls = list(dict.fromkeys(r["impl"] for r in rows))
    for impl in impls:
        for batch, width in dict.fromkeys((r["batch"], r["width"]) for r in rows if r["impl"] == impl):
            depths = sorted(k[3] for k in by if k[:3] == (impl, batch, width))
            lo, hi = by[(impl, batch, width, depths[0])], by[(impl, batch, width, depths[-1])]
            across = f"depth {hi['depth']} over depth {lo['depth']}" if len(depths) > 1 else "across depths"
            name = f"{impl} time per layer at batch {batch} width {width}, {across}, within {DEPTH_FLATNESS:.0%}"
            if len(depths) < 2:
                judge(name, None, None)
            else:
                ratio = hi["layer_s"] / lo["layer_s"]
                judge(name, ratio, abs(ratio - 1) <= DEPTH_FLATNESS)

    for r in rows:
        if r["impl"] == FAST:
            torch_row = by.get(("torch", r["batch"], r["width"], r["depth"]))
            name = f"{FAST} peak memory / torch's at batch {r['batch']} width {r['width']} depth {r['depth']} <= 1"
            if torch_row is None or torch_row["peak_mib"] <= 0:
                judge(name, None, None)
            else:
                ratio = r["peak_mib"] / torch_row["peak_mib"]
                judge(name, ratio, ratio <= 1)
    return out


def readability_cost(rows: list[dict]) -> list[str]:
    """The reference NumPy beside numpy-fast, one line per size both ran: what readability costs."""
    fast = {(r["batch"], r["width"], r["depth"]): r for r in rows if r["impl"] == FAST}
    lines = []
    for r in rows:
        f = fast.get((r["batch"], r["width"], r["depth"]))
        if r["impl"] == REFERENCE and f is not None:
            vs_torch = "" if r["step_over_torch"] is None else f", {r['step_over_torch']:.2f}x torch's"
            lines.append(
                f"  batch {r['batch']} width {r['width']} depth {r['depth']}: {REFERENCE} {r['step_s'] * 1e3:.1f} ms a step,"
                f" {r['step_s'] / f['step_s']:.2f}x {FAST}'s{vs_torch}, floor/step {r['floor_over_step']:.2f}"
                f" ({FAST} {f['floor_over_step']:.2f}); peak {r['peak_mib']:.1f} MiB ({FAST} {f['peak_mib']:.1f})"
            )
    return lines


def format_report(report: dict) -> str:
    cfg = report["config"]
    busy = cfg["load_average"]["before"] > cfg["cpu_count"] - cfg["threads"] + BUSY_MARGIN
    lines = [
        f"One gradient step (forward, loss, backward), float32, shortcut on, tanh GELU, {cfg['threads']} threads "
        f"(CPUs {cfg['cpus']} of {cfg['cpu_count']}, {cfg['cpu_model']}); median of {cfg['repeats']} turns; versions "
        + ", ".join(f"{k} {v}" for k, v in cfg["versions"].items()),
        "floor: the three matmuls per layer (x W^T, dz W, dz^T x) in NumPy at the same sizes; "
        "floor/step: 1.0 means as fast as the floor",
        f"load average (1 min) {cfg['load_average']['before']:.2f} before the run, "
        f"{cfg['load_average']['after']:.2f} after; run took {cfg['wall_s']:.0f} s",
        *([BUSY_WARNING] if busy else []),
        "",
        f"{'batch':>5} {'width':>5} {'depth':>5}  {'impl':<10} {'step ms':>9} {'ms/layer':>9} {'floor ms':>9}"
        f" {'floor/step':>10} {'vs torch':>9} {'compile s':>9} {'peak MiB':>9}",
    ]
    for r in report["rows"]:
        compile_s = f"{r['compile_s']:.2f}" if r["compile_s"] else "-"
        vs_torch = "-" if r["step_over_torch"] is None else f"{r['step_over_torch']:.2f}"
        lines.append(
            f"{r['batch']:>5} {r['width']:>5} {r['depth']:>5}  {r['impl']:<10} {r['step_s'] * 1e3:>9.1f}"
            f" {r['layer_s'] * 1e3:>9.2f} {r['floor_s'] * 1e3:>9.1f} {r['floor_over_step']:>10.2f}"
            f" {vs_torch:>9} {compile_s:>9} {r['peak_mib']:>9.1f}"
        )
    stated = f"stated for {TARGET_THREADS} threads on a 2-core machine"
    if cfg["threads"] != TARGET_THREADS:
        stated += f"; this run used {cfg['threads']}"
    lines += ["", f"Targets ({stated}), from this run"]
    for t in report["targets"]:
        if t["met"] is None:
            lines.append(f"  -      {t['target']}: not measured in this run (or too small to measure)")
        else:
            lines.append(f"  {'met   ' if t['met'] else 'MISSED'} {t['target']}: {t['value']:.2f}")
    cost = readability_cost(report["rows"])
    if cost:
        lines += ["", f"The reference {REFERENCE} (impl_numpy/model.py) beside {FAST}: what readability costs", *cost]
    return "\n".join(lines)


def positive_int(text: str) -> int:
    """An argparse type: one integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_ints(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated integers >= 1, such as 256,1024."""
    try:
        return tuple(positive_int(p) for p in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 256,1024, got {text!r}"
        ) from None


def impl_names(text: str) -> tuple[str, ...]:
    """An argparse type: a comma-separated subset of IMPLS, kept in IMPLS's order."""
    names = text.split(",")
    if not set(names) <= set(IMPLS) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(IMPLS)}, got {text!r}")
    return tuple(name for name in IMPLS if name in names)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit 2, like every other bad input."""

    def error(self, message):
        raise InputError(message)


def parse(argv) -> argparse.Namespace:
    available = len(os.sched_getaffinity(0))
    p = OneLineParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=positive_int, default=DEFAULT_BATCH, help="rows per step (default: %(default)s)")
    p.add_argument("--widths", type=positive_ints, default=DEFAULT_WIDTHS, help="default: 256,1024")
    p.add_argument("--depths", type=positive_ints, default=DEFAULT_DEPTHS, help="default: 8,32")
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=DEFAULT_REPEATS,
        help="timed turns per implementation and size (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=available,
        help="threads for every implementation (default: %(default)s, the CPUs this process may use)",
    )
    p.add_argument("--impls", type=impl_names, default=IMPLS, help=f"comma-separated subset of {','.join(IMPLS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.threads > available:
        raise InputError(f"--threads {args.threads}: this process may use only {available} CPUs")
    return args


def main(argv=None) -> int:
    try:
        args = parse(argv)
    except InputError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    sizes = [(args.batch, width, depth) for width in args.widths for depth in args.depths]
    load_before = os.getloadavg()[0]  # other processes' demand for the CPUs, shown beside the figures
    start = time.perf_counter()
    try:
        report = benchmark(sizes, args.impls, args.threads, args.repeats, log=lambda m: print(m, file=sys.stderr))
    except RuntimeError as err:  # an implementation's process failed: its error, in one line
        print(f"bench: error: {err}", file=sys.stderr)
        return 1
    report["config"]["wall_s"] = time.perf_counter() - start
    report["config"]["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

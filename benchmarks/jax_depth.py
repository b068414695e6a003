"""How long JAX takes to compile the network's gradient, and how much memory, against depth.

    python -m benchmarks.jax_depth                          # docs/jax-depth.md's compile tables
    python -m benchmarks.jax_depth --widths 1 --depths 16,32 --modes loop
    python -m benchmarks.jax_depth --steps --widths 256,1024 --depths 16,32 --batch 256   # step times

A network is `depth` layers of width -> width, shortcut on, tanh GELU, float32, a (batch,
width) input, batch 1 by default: what `compare.py --layer-sizes 1,1,...` runs.

Two modes: "scan" is impl_jax/scan.py's ScannedNetwork, which impl_jax.loss_and_grads runs for
these networks; "loop" is impl_jax/model.py's reference class, the book's Python loop over every
layer, which jit unrolls (the same gradients: tests/test_deep_jax.py).

Compile tables: each point runs in a fresh process, so that its peak resident set (ru_maxrss,
read after compiling) is its own. It times grad_fn.lower(...).compile() on abstract shapes and
counts HLO instructions as lowered (what JAX hands to XLA) and as compiled (after XLA's passes,
fusion among them). Within a width and mode, once a point takes over --give-up-after seconds
the deeper ones are not run; a point over --timeout or the --memory-cap is reported as such.

--steps: both modes compiled in one process, then STEP_ROUNDS steps of each, taken in turns
so that a change in the machine's load falls on both alike; the medians are reported.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/jax_depth.py` works as well as `python -m benchmarks.jax_depth`

MODES = ("loop", "scan")
STEP_ROUNDS = 15


def lower(mode: str, width: int, depth: int, batch: int):
    """impl_jax's grad_fn lowered for this network, on abstract shapes; returns (lowered, args)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from impl_jax import model, scan

    network_class = model.ExampleDeepNeuralNetwork if mode == "loop" else scan.ScannedNetwork
    net = nnx.eval_shape(
        lambda: network_class([width] * (depth + 1), True, "tanh", dtype=jnp.float32, rngs=nnx.Rngs(0))
    )
    graphdef, params = nnx.split(net, nnx.Param)
    x = jax.ShapeDtypeStruct((batch, width), jnp.float32)  # (batch, width), and the target alike
    return model.grad_fn.lower(params, graphdef, x, x), (params, x, x)


def measure(mode: str, width: int, depth: int, batch: int) -> dict:
    """One point, in this process: compile seconds, peak resident MB, HLO instructions."""
    import impl_jax.model  # noqa: F401  (with JAX and Flax: imported before the clock starts)

    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    start = time.perf_counter()
    lowered, _ = lower(mode, width, depth, batch)
    compiled = lowered.compile()
    seconds = time.perf_counter() - start

    def instructions(hlo_text: str) -> int:
        return sum(" = " in line for line in hlo_text.splitlines())

    return {
        "compile_s": seconds,  # building the model's structure, tracing, lowering, XLA
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "before_mb": before_mb,  # the imports' share of the peak
        "hlo_lowered": instructions(lowered.as_text(dialect="hlo")),
        "hlo_compiled": instructions(compiled.as_text()),
    }


def step_times(width: int, depth: int, batch: int) -> dict:
    """{mode: median seconds per step}, both modes in this process, their steps taken in turns."""
    import jax
    import jax.numpy as jnp

    programs = {}
    for mode in MODES:
        lowered, args = lower(mode, width, depth, batch)
        values = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), args)  # small: nothing overflows
        programs[mode] = (lowered.compile(), values)
        jax.block_until_ready(programs[mode][0](*values))  # warm
    times = {mode: [] for mode in MODES}
    for _ in range(STEP_ROUNDS):
        for mode, (compiled, values) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*values))
            times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(t) for mode, t in times.items()}


def run_point(mode: str, width: int, depth: int, batch: int, timeout: float, memory_cap_gb: float) -> dict:
    """measure() in a fresh process, its address space capped; {"error": why} if it did not finish."""
    cap = int(memory_cap_gb * 2**30)
    cmd = [sys.executable, "-m", "benchmarks.jax_depth", "--point", mode, str(width), str(depth), str(batch)]

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:g} s"}
    if done.returncode != 0:
        return {"error": f"failed under the {memory_cap_gb:g} GiB cap (exit {done.returncode})"}
    return json.loads(done.stdout)


def compile_table(width: int, batch: int, rows: dict) -> str:
    """Markdown: per depth, a row per mode: compile time, peak memory, HLO instructions."""
    lines = [
        f"Width {width}, batch {batch}:",
        "",
        "| depth | mode | compile | peak RSS | HLO instructions, lowered -> compiled |",
        "|---:|---|---:|---:|---:|",
    ]
    for depth, points in rows.items():
        for mode, p in points.items():
            if "error" in p:
                lines.append(f"| {depth} | {mode} | {p['error']} | | |")
            else:
                hlo = f"{p['hlo_lowered']:,} -> {p['hlo_compiled']:,}"
                lines.append(f"| {depth} | {mode} | {p['compile_s']:.2f} s | {p['peak_mb']:,.0f} MB | {hlo} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="1,8,64", help="comma-separated (default: %(default)s)")
    p.add_argument("--depths", default="16,32,64,128,256,512", help="comma-separated (default: %(default)s)")
    p.add_argument("--modes", default=",".join(MODES), help="loop, scan or both (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="rows of the input (default: %(default)s)")
    p.add_argument("--steps", action="store_true", help="time steps of both modes instead of compiling")
    p.add_argument("--timeout", type=float, default=600, help="seconds per point (default: %(default)s)")
    p.add_argument("--give-up-after", type=float, default=60, help="skip deeper points after one this slow (s)")
    p.add_argument("--memory-cap", type=float, default=12, help="GiB of address space per point (default: %(default)s)")
    p.add_argument("--point", nargs=4, metavar=("MODE", "WIDTH", "DEPTH", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.point:
        mode, width, depth, batch = args.point
        print(json.dumps(measure(mode, int(width), int(depth), int(batch))))
        return 0
    widths, depths, modes = (
        [int(w) for w in args.widths.split(",")],
        [int(d) for d in args.depths.split(",")],
        args.modes.split(","),
    )
    if not set(modes) <= set(MODES) or min(widths + depths + [args.batch]) < 1:
        print(
            "jax_depth.py: error: --modes takes loop and scan; widths, depths and batch are positive", file=sys.stderr
        )
        return 2
    if args.steps:
        print(f"Batch {args.batch}, median of {STEP_ROUNDS} steps each, in turns:\n")
        print("| width | depth | loop: step | scan: step | scan / loop |\n|---:|---:|---:|---:|---:|")
        for width in widths:
            for depth in depths:
                t = step_times(width, depth, args.batch)
                print(
                    f"| {width} | {depth} | {t['loop'] * 1e3:.2f} ms | {t['scan'] * 1e3:.2f} ms | {t['scan'] / t['loop']:.2f} |"
                )
        return 0
    for width in widths:
        rows = {depth: {} for depth in depths}
        for mode in modes:
            for depth in depths:
                point = run_point(mode, width, depth, args.batch, args.timeout, args.memory_cap)
                rows[depth][mode] = point
                print(f"width {width} depth {depth} {mode}: {point}", file=sys.stderr)
                if "error" in point or point["compile_s"] > args.give_up_after:
                    break
        print(compile_table(width, args.batch, rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

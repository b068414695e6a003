"""What the verdict costs: `python compare.py` against the frameworks' own gradient steps, in one run.

    python -m benchmarks.verdict                    # the book, 512 x 3 and 128 x 24 on 8192 rows, 3 rounds
    python -m benchmarks.verdict --sizes book --rounds 1      # a quick check
    python -m benchmarks.verdict --sizes 128x24 --bound       # and the rounding bound alone, its own process

Per size, each round runs, one after the other so that a change in the machine's load hits all three:
  - import: `python -c "import torch, jax, flax.nnx, numpy"`, what any run of the three frameworks pays;
  - steps: in a fresh process, torch's, JAX's and NumPy's loss_and_grads on the size's weights, both
    shortcut settings, float32, once untimed (warm: compiled, paged in) and then timed;
  - compare.py: `python compare.py --weights FILE --allow-long --json` (the book: `--json` alone), its
    wall time, its peak resident set (the child's ru_maxrss) and its verdict.
The figure is compare.py's time over import + steps, each the median over the rounds; the book's is
compare.py over the import alone (its steps take milliseconds). The sizes: random networks of
width -> width layers, nn.Linear's uniform initialisation, 8192 standard normal rows and targets,
seeded, written to a temporary safetensors file. Targets are judged and printed met or MISSED;
nothing asserts them.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/verdict.py` works as well as `python -m benchmarks.verdict`

from shortcut_gradients.cli import OneLineParser  # noqa: E402
from shortcut_gradients.plumbing.config import InputError  # noqa: E402

SIZES = {"book": None, "512x3": (512, 3), "128x24": (128, 24)}  # name: (width, layers); the book: compare.py's own
ROWS = 8192
SEED = 0
IMPORT = [sys.executable, "-c", "import torch, jax, flax.nnx, numpy"]
# compare.py at most this many times import + steps at the random sizes (stretch: 2), and peak memory
# at most PEAK_GIB there; the book's run at most BOOK_RATIO times the import alone.
RATIO, STRETCH, PEAK_GIB, BOOK_RATIO = 3.0, 2.0, 1.5, 1.3

# Run in a fresh process: the frameworks' own steps on the weights file argv[1], warm, timed.
STEPS = """
import sys, time, warnings
import numpy as np
import impl_jax, impl_numpy, impl_torch
from shortcut_gradients.plumbing.weights import load_weights
params, x, target = load_weights(sys.argv[1])
warnings.simplefilter("ignore")
np.seterr(all="ignore")
def everything():
    for fn in (impl_torch.loss_and_grads, impl_jax.loss_and_grads, impl_numpy.loss_and_grads):
        for use_shortcut in (False, True):
            fn(params, x, target, use_shortcut=use_shortcut, gelu_form="tanh", dtype="float32")
everything()
start = time.perf_counter()
everything()
print(time.perf_counter() - start)
"""

# With --bound, in a fresh process: the rounding bound alone on argv[1], both shortcut settings:
# bound.measure and the GELU forms' resolution, as compare.py calls them.
BOUND = """
import sys, time, warnings
import numpy as np
from shortcut_gradients.plumbing.weights import load_weights
from shortcut_gradients.verdict import bound
params, x, target = load_weights(sys.argv[1])
warnings.simplefilter("ignore")
np.seterr(all="ignore")
start = time.perf_counter()
for use_shortcut in (False, True):
    kw = {"use_shortcut": use_shortcut, "gelu_form": "tanh"}
    measured = bound.measure(params, x, target, **kw)
    bound.gelu_form_resolution(params, x, target, measured, "float32", **kw)
    del measured
print(time.perf_counter() - start)
"""


def write_network(path: str, width: int, layers: int) -> None:
    """`layers` layers width -> width, W and b ~ U(-1/sqrt(width), 1/sqrt(width)) as nn.Linear draws
    them, ROWS standard normal rows and targets, float32, saved as compare.py --weights reads them."""
    from shortcut_gradients.plumbing.weights import save_weights

    rng = np.random.default_rng(SEED)
    a = 1 / np.sqrt(width)
    params = [
        (rng.uniform(-a, a, (width, width)).astype(np.float32), rng.uniform(-a, a, width).astype(np.float32))
        for _ in range(layers)
    ]
    x = rng.standard_normal((ROWS, width)).astype(np.float32)  # (ROWS, width)
    target = rng.standard_normal((ROWS, width)).astype(np.float32)  # (ROWS, width)
    save_weights(path, params, x, target)


def timed(cmd: list[str], ok=(0,)) -> tuple[float, float, str]:
    """(wall seconds, peak resident GiB, stdout) of one child process, its rusage read by os.wait4
    (its own peak, not the largest of all children); raises RuntimeError with its stderr if it
    exits with a status not in `ok`."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0), err.seek(0)
        if proc.returncode not in ok:
            raise RuntimeError(f"{' '.join(cmd[1:3])} failed (exit {proc.returncode}): {err.read().strip()[-500:]}")
        return wall, usage.ru_maxrss / 2**20, out.read()  # ru_maxrss in KiB


def measure_size(name: str, path: str | None, rounds: int, log, bound_too: bool = False) -> dict:
    """Medians over `rounds` of the import, the steps (not for the book) and compare.py at one size;
    with bound_too, the bound alone as well (its time and peak)."""
    compare = [sys.executable, str(ROOT / "compare.py")] + (["--weights", path, "--allow-long"] if path else [])
    imports, steps, runs, peaks, bounds, verdicts_seen = [], [], [], [], [], []
    for i in range(rounds):
        imports.append(timed(IMPORT)[0])
        if path:
            steps.append(float(timed([sys.executable, "-c", STEPS, path])[2].strip()))
        if path and bound_too:
            _, peak, out = timed([sys.executable, "-c", BOUND, path])
            bounds.append((float(out.strip()), peak))
            log(f"{name} round {i + 1}/{rounds}: the bound alone {bounds[-1][0]:.1f} s, peak {peak:.2f} GiB")
        wall, peak, out = timed(compare + ["--json"], ok=(0, 1))  # 1: a verdict of DISAGREE, timed all the same
        verdict = "AGREE" if json.loads(out)["agree"] else "DISAGREE"
        runs.append(wall)
        peaks.append(peak)
        verdicts_seen.append(verdict)
        log(
            f"{name} round {i + 1}/{rounds}: import {imports[-1]:.1f} s, steps {steps[-1] if steps else 0:.1f} s, "
            f"compare.py {wall:.1f} s, peak {peak:.2f} GiB, {verdict}"
        )
    row = {"size": name, "import_s": statistics.median(imports), "compare_s": statistics.median(runs)}
    row["steps_s"] = statistics.median(steps) if steps else 0.0
    row["peak_gib"] = max(peaks)
    row["verdicts"] = ", ".join(sorted(set(verdicts_seen)))
    if bounds:
        row["bound_s"], row["bound_peak_gib"] = statistics.median(b[0] for b in bounds), max(b[1] for b in bounds)
    row["ratio"] = row["compare_s"] / (row["import_s"] + row["steps_s"])
    return row


def verdicts(row: dict) -> str:
    """The targets, judged on this row: met or MISSED."""
    if row["size"] == "book":
        return f"target <= {BOOK_RATIO} x import: {'met' if row['ratio'] <= BOOK_RATIO else 'MISSED'}"
    ratio = "met" if row["ratio"] <= RATIO else "MISSED"
    stretch = "met" if row["ratio"] <= STRETCH else "missed"
    peak = "met" if row["peak_gib"] <= PEAK_GIB else "MISSED"
    return f"target <= {RATIO}x: {ratio} (stretch {STRETCH}x: {stretch}); peak <= {PEAK_GIB} GiB: {peak}"


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m benchmarks.verdict", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, from {','.join(SIZES)}")
    p.add_argument("--rounds", type=int, default=3, help="rounds per size; the medians are reported (default: 3)")
    p.add_argument("--bound", action="store_true", help="also time the rounding bound alone, in its own process")
    try:
        args = p.parse_args(argv)
        sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
        if not sizes or any(s not in SIZES for s in sizes):
            raise InputError(f"--sizes takes a comma-separated list from {','.join(SIZES)}, got {args.sizes!r}")
        if args.rounds < 1:
            raise InputError(f"--rounds must be at least 1, got {args.rounds}")
    except InputError as err:
        print(f"verdict.py: error: {err}", file=sys.stderr)
        return 2

    def log(text):
        print(text, file=sys.stderr, flush=True)

    log(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sizes:
            path = None
            if SIZES[name]:
                path = os.path.join(tmp, f"{name}.safetensors")
                write_network(path, *SIZES[name])
            try:
                rows.append(measure_size(name, path, args.rounds, log, args.bound))
            except RuntimeError as err:
                print(f"verdict.py: {err}", file=sys.stderr)
                return 1
    print(f"{'size':8s} {'import s':>9s} {'steps s':>8s} {'compare s':>10s} {'ratio':>6s} {'peak GiB':>9s}")
    for r in rows:
        print(
            f"{r['size']:8s} {r['import_s']:9.1f} {r['steps_s']:8.1f} {r['compare_s']:10.1f} {r['ratio']:6.2f} "
            f"{r['peak_gib']:9.2f}  {r['verdicts']}; {verdicts(r)}"
        )
        if "bound_s" in r:
            print(
                f"{'':8s} the bound alone (measure + resolution, both settings): {r['bound_s']:.1f} s, peak {r['bound_peak_gib']:.2f} GiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long `python compare.py` takes against its floor, importing the frameworks.

    python -m benchmarks.startup            # 7 rounds, alternating the two commands
    python -m benchmarks.startup --rounds 3

Each round runs `python -c "import torch, jax, flax.nnx, numpy"` (the floor: any run of all
three frameworks pays for these imports) and `python compare.py` (no arguments: the book's
configuration, both shortcut settings, three frameworks), alternately, so that a change in
the machine's load hits both. Prints the medians and their ratio; the target is at most 1.5.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = [sys.executable, "-c", "import torch, jax, flax.nnx, numpy"]
COMPARE = [sys.executable, str(ROOT / "compare.py")]


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (default: %(default)s)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        print("startup.py: error: --rounds must be at least 1", file=sys.stderr)
        return 2
    floor, compare = [], []
    for i in range(args.rounds):
        floor.append(wall(FLOOR))
        compare.append(wall(COMPARE))
        print(f"round {i + 1}/{args.rounds}: import {floor[-1]:.2f} s, compare.py {compare[-1]:.2f} s", file=sys.stderr)
    f, c = statistics.median(floor), statistics.median(compare)
    print(f"import torch, jax, flax.nnx, numpy: median {f:.2f} s over {args.rounds} runs")
    print(f"python compare.py:                  median {c:.2f} s over {args.rounds} runs")
    print(f"ratio {c / f:.2f} (target: at most 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What fresh pages cost numpy-fast's step: glibc's and NumPy's defaults against freed pages kept and plain pages, in one run.

    python -m benchmarks.fresh_pages                    # batch 256, width 1024, depths 8 and 32
    python -m benchmarks.fresh_pages --depths 8 --rounds 3

A step returns fresh arrays (each layer's dW, and its z and Phi along the way). glibc hands big
freed blocks back to the system and maps new ones for the next step, so every step pays those
pages' faults again; told to keep freed pages (shortcut_gradients.plumbing.resources.
keep_freed_memory, what compare.py does for its own process), the next step reuses them. NumPy
asks for transparent huge pages for each array of 4 MiB or more, which a kernel set to grant them
on request may compact memory for on the fault; "plain" turns the hint off (resources.plain_pages,
compare.py's too). Each setting runs in a process of its own (each is process-wide), the four taking turns per round:
the floor (benchmarks/steps.py: the three matrix products per layer into preallocated outputs),
the step, and inside the step the GELU's forward and backward, timed around fast.py's own
functions; "the rest" is the step less those two (the products, the loss, the sums). Medians
over the rounds, in milliseconds; nothing asserts them.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shortcut_gradients.cli import OneLineParser, parse_ints  # noqa: E402
from shortcut_gradients.plumbing.config import InputError  # noqa: E402

SETTINGS = ("default", "plain", "kept", "kept+plain")  # "+": both, what compare.py does
STEPS = 40  # timed steps per figure, after 3 untimed


def measure(setting: str, batch: int, width: int, depth: int) -> dict:
    """In this process: {floor, step, forward, backward} in seconds, medians or means over STEPS steps."""
    from shortcut_gradients.plumbing import resources

    if "kept" in setting:
        resources.keep_freed_memory()
    if "plain" in setting:
        resources.plain_pages()
    import impl_numpy.fast as fast
    from benchmarks import steps

    floor = steps.make_floor(batch, width, depth, 0).run
    params, x, target = steps.network(batch, width, depth, 0)

    def step():
        return fast.loss_and_grads(params, x, target, use_shortcut=True, gelu_form="tanh", dtype="float32")

    def median(run) -> float:
        for _ in range(3):
            run()
        times = []
        for _ in range(STEPS):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    figures = {"floor": median(floor), "step": median(step)}
    spent = {"forward": 0.0, "backward": 0.0}
    originals = {"forward": fast.gelu_forward, "backward": fast.gelu_backward}

    def timed(name):
        def call(*args):
            start = time.perf_counter()
            result = originals[name](*args)
            spent[name] += time.perf_counter() - start
            return result

        return call

    fast.gelu_forward, fast.gelu_backward = timed("forward"), timed("backward")
    try:
        for _ in range(STEPS):
            step()
    finally:
        fast.gelu_forward, fast.gelu_backward = originals["forward"], originals["backward"]
    return figures | {name: seconds / STEPS for name, seconds in spent.items()}


def main(argv=None) -> int:
    p = OneLineParser(prog="python -m benchmarks.fresh_pages", description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="256", help="rows (default: 256)")
    p.add_argument("--width", default="1024", help="layer width (default: 1024)")
    p.add_argument("--depths", default="8,32", help="comma-separated depths (default: 8,32)")
    p.add_argument("--rounds", default="5", help="rounds, each setting once per round (default: 5)")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # setting batch width depth: one process's figures
    try:
        args = p.parse_args(argv)
        if args.child:  # one setting's figures, as JSON, for the parent
            setting, *sizes = args.child
            print(json.dumps(measure(setting, *map(int, sizes))))
            return 0
        batch, width, rounds = (
            one(text, flag)
            for text, flag in ((args.batch, "--batch"), (args.width, "--width"), (args.rounds, "--rounds"))
        )
        depths = parse_ints(args.depths, "--depths", "8,32")
    except InputError as err:
        print(f"fresh_pages.py: error: {err}", file=sys.stderr)
        return 2
    for depth in depths:
        runs = {setting: [] for setting in SETTINGS}
        for _ in range(rounds):
            for setting in SETTINGS:
                cmd = [
                    sys.executable,
                    "-m",
                    "benchmarks.fresh_pages",
                    "--child",
                    setting,
                    str(batch),
                    str(width),
                    str(depth),
                ]
                done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
                runs[setting].append(json.loads(done.stdout))
        for setting in SETTINGS:
            ms = {key: 1e3 * statistics.median(r[key] for r in runs[setting]) for key in runs[setting][0]}
            rest = ms["step"] - ms["forward"] - ms["backward"]
            print(
                f"batch {batch} width {width} depth {depth}, pages {setting:10s}: floor {ms['floor']:.1f} ms,"
                f" step {ms['step']:.1f} ms (floor/step {ms['floor'] / ms['step']:.2f}); GELU forward"
                f" {ms['forward']:.1f} ms, backward {ms['backward']:.1f} ms, the rest {rest:.1f} ms"
                f" ({rest - ms['floor']:+.1f} ms over the floor)"
            )
    return 0


def one(text: str, flag: str) -> int:
    """One positive integer, or one line naming `flag`."""
    values = parse_ints(text, flag, "256")
    if len(values) != 1:
        raise InputError(f"{flag} takes one positive integer, got {text!r}")
    return values[0]


if __name__ == "__main__":
    sys.exit(main())

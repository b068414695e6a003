"""Does the error model hold at size? False alarms, caught faults and rerun stability, over a grid.

    python -m studies.survey                    # the default grid, a few minutes: docs/tolerances.md's table
    python -m studies.survey --rows 256,1024 --widths 64 --depths 16 --reruns 3    # a quick look
    python -m studies.survey --threads          # whose results change with the thread count

Every cell runs each framework on one input, compares them with shortcut_gradients.verdict.check.compare
under the bound of shortcut_gradients.verdict.bound (measured once per input with the NumPy reference, in
float64), and takes the verdict with verdict/decide.py, as compare.py does (again in float64 where
float32 cannot tell the GELU forms apart), and counts:
a DISAGREE between correct implementations is a false alarm; each fault (FAULTS, the
studies/faults.py's catalogue, those that show on any network) must turn the verdict to
DISAGREE; and the same input is run `reruns` times, every result compared bit for bit with
the first and the verdict taken again wherever one differs.

The grid: the book's weights on its own one-row input, on identical rows (all-ones input,
zero target: the batch sums of dW and db add the same term n times) and on random rows
(uniform in [-1, 1]) for each of --rows; a padded batch, its first half random and its
second half identical rows; --widths wide networks of 3 layers and --depths deep ones of width
64, with weights drawn like nn.Linear's. Exit status 0 when there are no false alarms, every
fault is caught and every rerun gives the first run's verdict, 1 otherwise.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

from shortcut_gradients.cli import parse_ints
from shortcut_gradients.plumbing import frameworks, weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, InputError
from shortcut_gradients.verdict import bound, check, decide
from shortcut_gradients.verdict.run import first_overflow, own_copies, read_only


@dataclass(frozen=True)
class SurveyConfig:
    """The grid. Defaults run in a few minutes on two cores."""

    rows: tuple[int, ...] = (256, 1024, 4096, 16384)  # identical and random rows through the book's weights
    widths: tuple[int, ...] = (256, 1024)  # 3 layers of each width
    wide_rows: int = 256  # a 1024-wide float32 run of NumPy's reference is ~0.1 s at 256 rows
    depths: tuple[int, ...] = (16, 64)  # layers of width DEEP_WIDTH
    deep_rows: int = 4096  # the 16-layer case users reported; fewer rows as depth grows (deep_case)
    dtypes: tuple[str, ...] = ("float32", "float64")
    frameworks: tuple[str, ...] = ("torch", "jax", "numpy")
    reruns: int = 20
    gelu: str = "tanh"  # the book's


DEEP_WIDTH = 64


@dataclass(frozen=True)
class Case:
    """One input: a network and its rows."""

    name: str
    sizes: tuple[int, ...]
    rows: str  # "book", "identical", "random" or "padded"
    n: int  # rows in the batch


def cases(config: SurveyConfig) -> list[Case]:
    """The grid's inputs, in the order the table lists them."""
    book = BOOK_LAYER_SIZES
    grid = [Case("book input", book, "book", 1)]
    grid += [Case(f"identical {n}", book, "identical", n) for n in config.rows]
    grid += [Case(f"random {n}", book, "random", n) for n in config.rows]
    grid += [Case(f"padded {max(config.rows)}", book, "padded", max(config.rows))]
    grid += [Case(f"wide {w}", (w,) * 4, "random", config.wide_rows) for w in config.widths]
    grid += [deep_case(depth, config.deep_rows) for depth in config.depths]
    return grid


def deep_case(depth: int, rows: int) -> Case:
    """depth layers of width DEEP_WIDTH; past 16 layers the batch shrinks so that the work stays that of 16."""
    n = max(1, rows * 16 // max(depth, 16))
    return Case(f"deep {depth}", (DEEP_WIDTH,) * (depth + 1), "random", n)


def case_inputs(case: Case) -> tuple[list, np.ndarray, np.ndarray]:
    """(params, x (n, sizes[0]), target (n, sizes[-1])) in float64, the same on every call."""
    rng = np.random.default_rng(0)
    if case.sizes == BOOK_LAYER_SIZES:
        params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    else:  # nn.Linear's init: uniform in +-1/sqrt(d_in), weights and biases
        params = []
        for d_in, d_out in zip(case.sizes[:-1], case.sizes[1:]):
            bound = 1 / np.sqrt(d_in)
            params.append((rng.uniform(-bound, bound, (d_out, d_in)), rng.uniform(-bound, bound, d_out)))
    d_in, d_out = case.sizes[0], case.sizes[-1]
    if case.rows == "book":
        return params, weights.default_input(d_in), weights.default_target(d_out)
    x = rng.uniform(-1.0, 1.0, (case.n, d_in))  # (n, d_in)
    target = rng.uniform(-1.0, 1.0, (case.n, d_out))  # (n, d_out)
    identical = slice(0, case.n) if case.rows == "identical" else slice(case.n // 2, case.n)
    if case.rows in ("identical", "padded"):
        x[identical], target[identical] = 1.0, 0.0
    return [(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in params], x, target


def typed(inputs: tuple, dtype: str) -> tuple[list, np.ndarray, np.ndarray]:
    """case_inputs's (params, x, target) in `dtype`."""
    params, x, target = inputs
    return [(W.astype(dtype), b.astype(dtype)) for W, b in params], x.astype(dtype), target.astype(dtype)


# --- faults: studies/faults.py's catalogue, those that show on any network of the grid -----------

SURVEYED = ("exact-gelu-in-one", "sign-flipped", "dW-transposed", "bias-first-row-only", "jax-float32-told-float64")


def surveyed_faults() -> list:
    """The catalogue's Fault records named in SURVEYED (imported here: the catalogue loads every framework)."""
    from studies.faults import FAULTS

    return [fault for fault in FAULTS if fault.name in SURVEYED]


def patched(fault):
    """The faulty framework's loss_and_grads: the catalogue's patch applied for the length of each call."""
    import pytest

    def loss_and_grads(params, x, target, **kw):
        with pytest.MonkeyPatch.context() as mp:
            fault.patch(mp)
            return frameworks.load(fault.framework)(params, x, target, **kw)

    return loss_and_grads


def fingerprint(result: dict) -> str:
    """A hash of every array of a result, bit for bit."""
    h = hashlib.sha256()
    for _, _, a in check.tensors(result):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def survey_cell(
    case: Case, dtype: str, use_shortcut: bool, measured: dict, resolution: dict, fns: dict, config: SurveyConfig
) -> dict:
    """One input in one dtype and shortcut setting: the verdict, the faults, the reruns, each
    verdict decided by verdict/decide.py as compare.py's is (its float64 rerun on the case's
    float64 inputs)."""
    inputs = {d: typed(case_inputs(case), d) for d in {dtype, "float64"}}
    kw = {"use_shortcut": use_shortcut, "gelu_form": config.gelu}  # dtype: per call

    def results_of(implementations: dict, d: str) -> dict:
        return {name: fn(*own_copies(*inputs[d]), **kw, dtype=d) for name, fn in implementations.items()}

    def verdict(implementations: dict, results: dict) -> tuple[decide.Verdict, dict]:
        """The verdict on `results`, and the comparison behind it (the float64 rerun's where it decided)."""
        gathered = decide.Gathered(
            dtype=dtype,
            compared=len(results),
            comparison=check.compare(results, dtype, measured),
            resolution=resolution,
            overflow=first_overflow(results),
        )
        decided = decide.decide(gathered)
        if not decided.rerun:
            return decided, gathered.comparison
        rerun = check.compare(results_of(implementations, "float64"), "float64", measured)
        if rerun["first_mismatch"]:
            rerun["first_mismatch"] |= {"dtype": "float64"}
        return decide.decide(replace(gathered, rerun=rerun)), rerun

    correct = results_of(fns, dtype)
    first = check.compare(correct, dtype, measured)  # the room and allowances are the cell's own dtype's
    decided, _ = verdict(fns, correct)
    tensor, room = max(first["room"].items(), key=lambda item: item[1])
    fixed = check.compare(correct, dtype)  # the per-dtype tolerance, for comparison

    caught, missed = [], []
    params = inputs[dtype][0]
    square = any(W.shape[0] == W.shape[1] for W, _ in params)
    for fault in surveyed_faults():
        if fault.framework not in fns or len(fns) < 2 or dtype not in fault.dtypes:
            continue
        if (fault.batched and case.n < 2) or (fault.square and not square):
            continue
        faulty = {**fns, fault.framework: patched(fault)}
        results = {
            **correct,
            fault.framework: results_of({fault.framework: faulty[fault.framework]}, dtype)[fault.framework],
        }
        faulty_verdict, comparison = verdict(faulty, results)
        if (
            faulty_verdict.status == decide.AGREE
        ):  # with how close it came: its largest share of an allowance, and where
            closest, share = max(comparison["room"].items(), key=lambda item: item[1])
            missed.append(f"{fault.name} ({share:.2f} of the allowance at {closest})")
        else:
            caught.append((fault.name, found_at(faulty_verdict.first_mismatch)))

    prints = {name: {fingerprint(r)} for name, r in correct.items()}
    flips = 0
    for _ in range(config.reruns - 1):
        again = results_of(fns, dtype)
        changed = False
        for name, r in again.items():
            changed |= fingerprint(r) not in prints[name]
            prints[name].add(fingerprint(r))
        if changed:  # only a result that differs can change the verdict
            flips += check.compare(again, dtype, measured)["agree"] != first["agree"]
    return {
        "agree": decided.status == decide.AGREE,
        "first_mismatch": decided.first_mismatch,
        "fixed_agree": fixed["agree"],
        "fixed_worst": max(fixed["max_rel_diff"].values()),
        "room": room,
        "room_tensor": tensor,
        "allowed_rel_diff": first["allowed_rel_diff"],
        "max_rel_diff": first["max_rel_diff"],
        "in_float64": dtype == "float32" and not resolution["resolved"],
        "caught": caught,
        "missed": missed,
        "distinct": {name: len(p) for name, p in prints.items()},
        "flips": flips,
    }


def found_at(mismatch: dict) -> str:
    """A first mismatch's tensor, marked where the float64 rerun found it."""
    return mismatch["tensor"] + (" in float64" if mismatch.get("dtype") == "float64" else "")


def survey(config: SurveyConfig, progress=lambda text: None) -> list[dict]:
    """Every case, dtype and shortcut setting; one dict per cell, with its case and timing."""
    fns = {name: frameworks.load(name) for name in config.frameworks}
    rows = []
    for case in cases(config):
        params, x, target = case_inputs(case)
        for use_shortcut in (False, True):
            start = time.perf_counter()
            kw = {"use_shortcut": use_shortcut, "gelu_form": config.gelu}
            measured = bound.measure(*read_only(params, x, target), **kw)  # float64, once for both dtypes
            for dtype in config.dtypes:
                resolution = bound.gelu_form_resolution(*read_only(params, x, target), measured, dtype, **kw)
                cell = survey_cell(case, dtype, use_shortcut, measured, resolution, fns, config)
                cell.update(case=case, dtype=dtype, use_shortcut=use_shortcut, gelu_resolution=resolution)
                cell.update(seconds=time.perf_counter() - start)
                start = time.perf_counter()
                progress(format_row(cell, config))
                rows.append(cell)
    return rows


# --- rendering ---------------------------------------------------------------------------------


HEADER = (
    "| input | layers x width | rows | dtype | shortcut | fixed rule (worst rel. diff) | verdict | room (tensor) | allowed rel. diff, last dW "
    "| faults caught (first seen at) | reruns: distinct results, verdict changes |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def format_row(cell: dict, config: SurveyConfig) -> str:
    case = cell["case"]
    verdict = "AGREE" if cell["agree"] else f"**DISAGREE** at {found_at(cell['first_mismatch'])}"
    verdict += " (and in float64)" if cell["in_float64"] and cell["agree"] else ""
    last = f"layers.{len(case.sizes) - 2}.0.weight"  # the last layer's dW: a batch sum, never underflowing
    faults = len(cell["caught"]) + len(cell["missed"])
    where = sorted({tensor for _, tensor in cell["caught"]})
    caught = f"{len(cell['caught'])}/{faults}" + (f" ({', '.join(where)})" if where else "")
    caught += "".join(f"; **missed {name}**" for name in cell["missed"])
    distinct = ", ".join(f"{name} {n}" for name, n in cell["distinct"].items())
    shape = f"{len(case.sizes) - 1} x {case.sizes[1]}" if case.sizes != BOOK_LAYER_SIZES else "book"
    return (
        f"| {case.rows} | {shape} | {case.n} | {cell['dtype']} | {'on' if cell['use_shortcut'] else 'off'} "
        f"| {'AGREE' if cell['fixed_agree'] else 'DISAGREE'} {cell['fixed_worst']:.1e} | {verdict} "
        f"| {cell['room']:.2f} ({cell['room_tensor']}) | {cell['allowed_rel_diff'][last]:.1e} | {caught} "
        f"| {distinct}; {cell['flips']} of {config.reruns - 1} |"
    )


def summary(rows: list[dict], config: SurveyConfig) -> tuple[str, bool]:
    """The headline figures, and whether the survey passed."""
    alarms = sum(not r["agree"] for r in rows)
    fixed = sum(not r["fixed_agree"] for r in rows)
    caught = sum(len(r["caught"]) for r in rows)
    faults = caught + sum(len(r["missed"]) for r in rows)
    reran = sum(r["in_float64"] for r in rows)
    flips = sum(r["flips"] for r in rows)
    varied = sorted({name for r in rows for name, n in r["distinct"].items() if n > 1})
    worst = max(rows, key=lambda r: r["room"])
    text = (
        f"{len(rows)} cells: {alarms} false alarms (the fixed tolerance: {fixed}); faults caught {caught} of {faults}"
        f" ({reran} cell{'' if reran == 1 else 's'} taken again in float64, where float32 could not tell the GELU"
        " forms apart); "
        f"worst room {worst['room']:.2f} ({worst['case'].name}, {worst['dtype']}, {worst['room_tensor']}); "
        f"{config.reruns} runs of each input: results that varied: {', '.join(varied) or 'none'}, "
        f"verdict changes {flips}; {sum(r['seconds'] for r in rows):.0f} s"
    )
    return text, alarms == 0 and caught == faults and flips == 0


# --- thread counts -----------------------------------------------------------------------------

SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",  # torch's ATen (OpenMP)
    "MKL_NUM_THREADS": "1",  # torch's matmuls (MKL)
    "OPENBLAS_NUM_THREADS": "1",  # NumPy's matmuls (OpenBLAS)
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",  # JAX on CPU
}


def fingerprints(config: SurveyConfig) -> dict[str, str]:
    """{case/framework/dtype: fingerprint} for the reruns' inputs, with shortcuts."""
    out = {}
    for case in cases(config):
        params, x, target = case_inputs(case)
        for dtype in config.dtypes:
            p = [(W.astype(dtype), b.astype(dtype)) for W, b in params]
            for name in config.frameworks:
                fn = frameworks.load(name)
                r = fn(p, x.astype(dtype), target.astype(dtype), use_shortcut=True, gelu_form=config.gelu, dtype=dtype)
                out[f"{case.name}/{name}/{dtype}"] = fingerprint(r)
    return out


def thread_dependence(argv: list[str]) -> str:
    """Run --fingerprint in two fresh processes, default threads and one thread, and name what changed."""
    cmd = [sys.executable, "-m", "studies.survey", *argv, "--fingerprint"]
    outputs = []
    for env in ({}, SINGLE_THREAD):
        done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
        outputs.append(dict(line.split() for line in done.stdout.splitlines() if line.strip()))
    changed = sorted(key for key in outputs[0] if outputs[0][key] != outputs[1].get(key))
    by_framework = {}
    for key in changed:
        by_framework.setdefault(key.split("/")[1], []).append(key)
    lines = [f"{len(outputs[0])} results, default threads vs one thread ({', '.join(SINGLE_THREAD)}):"]
    for name in sorted({key.split("/")[1] for key in outputs[0]}):
        keys = by_framework.get(name, [])
        total = sum(1 for key in outputs[0] if key.split("/")[1] == name)
        lines.append(f"  {name}: {len(keys)} of {total} changed" + (f" ({', '.join(keys)})" if keys else ""))
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    d = SurveyConfig()
    p = argparse.ArgumentParser(prog="python -m studies.survey", description=__doc__.splitlines()[0])
    p.add_argument(
        "--rows", default=",".join(map(str, d.rows)), help="batch sizes on the book's weights (default: %(default)s)"
    )
    p.add_argument(
        "--widths", default=",".join(map(str, d.widths)), help="widths of 3-layer networks (default: %(default)s)"
    )
    p.add_argument("--wide-rows", type=int, default=d.wide_rows, help="their batch (default: %(default)s)")
    p.add_argument(
        "--depths",
        default=",".join(map(str, d.depths)),
        help=f"depths of width-{DEEP_WIDTH} networks (default: %(default)s)",
    )
    p.add_argument(
        "--deep-rows",
        type=int,
        default=d.deep_rows,
        help="their batch at 16 layers, less when deeper (default: %(default)s)",
    )
    p.add_argument("--dtypes", default=",".join(d.dtypes), help="default: %(default)s")
    p.add_argument("--frameworks", default=",".join(d.frameworks), help="default: %(default)s")
    p.add_argument("--reruns", type=int, default=d.reruns, help="runs of each input (default: %(default)s)")
    p.add_argument("--gelu", choices=("tanh", "exact"), default=d.gelu, help="default: %(default)s")
    p.add_argument("--threads", action="store_true", help="compare results with default threads and with one thread")
    p.add_argument("--fingerprint", action="store_true", help=argparse.SUPPRESS)  # --threads's child processes
    return p


def config_from(args) -> SurveyConfig:
    dtypes = tuple(t.strip() for t in args.dtypes.split(",") if t.strip())
    if not dtypes or set(dtypes) - {"float32", "float64"}:
        raise InputError(f"--dtypes takes float32, float64 or both; got {args.dtypes!r}")
    if args.reruns < 1 or args.wide_rows < 1 or args.deep_rows < 1:
        raise InputError("--reruns, --wide-rows and --deep-rows must be at least 1")
    names = tuple(n.strip() for n in args.frameworks.split(",") if n.strip())
    for name in names:
        if name not in frameworks.MODULES:
            raise InputError(f"--frameworks takes built-in names, {', '.join(frameworks.MODULES)}; got {name!r}")
        frameworks.check_installed(name)
    return SurveyConfig(
        rows=parse_ints(args.rows, "--rows"),
        widths=parse_ints(args.widths, "--widths") if args.widths else (),
        wide_rows=args.wide_rows,
        depths=parse_ints(args.depths, "--depths") if args.depths else (),
        deep_rows=args.deep_rows,
        dtypes=dtypes,
        frameworks=names,
        reruns=args.reruns,
        gelu=args.gelu,
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        config = config_from(args)
    except InputError as err:
        print(f"survey: error: {err}", file=sys.stderr)
        return 2
    if args.fingerprint:
        for key, value in fingerprints(config).items():
            print(key.replace(" ", "_"), value)
        return 0
    if args.threads:
        print(thread_dependence([a for a in argv if a != "--threads"]))
        return 0
    print(HEADER)
    rows = survey(config, progress=print)
    text, passed = summary(rows, config)
    print("\n" + text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""Grade hand-written backward rules, step by step, against torch's autograd in float64, with points.

    shortcut-grade                          # the skeleton, exercises/backprop.py: every step todo
    shortcut-grade mine.py                  # your copy: every step ok, todo or wrong (with the likely slip); a score
    shortcut-grade mine.py --json
    shortcut-grade class/ --csv grades.csv  # a folder (or several files): a row per file as it is graded
    shortcut-grade /autograder/submission/mine.py --gradescope /autograder/results/results.json
    shortcut-grade /grade/student/mine.py --prairielearn /grade/results/results.json
    shortcut-grade class/ --points loss=1,gelu=2,linear=2,shortcut=1,network=2,layernorm=2 --timeout 30

`python -m shortcut_gradients.grader.grade` is the same command. Steps, in the order they are
learned: loss, gelu, linear, shortcut, network, layernorm (shortcut_gradients/grader/steps.py,
against the answer key in shortcut_gradients/grader/answers.py); each is graded whatever the
others gave, and an ok step earns its points (shortcut_gradients/grader/courses.py). Every
submission is read before any runs, and each runs in a worker process of its own, within
--timeout seconds (shortcut_gradients/grader/isolation.py). Exit status: 0 when every step of
every file is ok, 1 otherwise, 2 for bad input (a missing file, a bad flag) or a submission that
could not be graded (it does not import, lacks a function, exits or runs out of time): one
line on stderr. docs/grader.md has the details.
"""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from shortcut_gradients.cli import OneLineParser, to_json
from shortcut_gradients.grader import courses, isolation, render, steps
from shortcut_gradients.grader.render import format_step, format_steps, passed  # noqa: F401  (the notebooks')
from shortcut_gradients.plumbing import files, frameworks, user_code
from shortcut_gradients.plumbing.config import InputError

# The skeleton students copy: exercises/backprop.py in the repository, installed as shortcut_gradients.exercises.
SKELETON = Path(importlib.util.find_spec("shortcut_gradients.exercises.backprop").origin)
PROG = "shortcut-grade"  # the console script; python -m shortcut_gradients.grader.grade runs the same main
# Submissions graded at once, each in its own process: the machine's cores, the parent's share included.
JOBS = max(1, min(8, 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)))


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument(
        "paths", nargs="*", metavar="FILE", help="submissions (.py files or folders of them; default: the skeleton)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    p.add_argument("--points", metavar="SPEC", help="points per step: step=N,... or a JSON file (default: 1 each)")
    p.add_argument(
        "--timeout",
        type=float,
        default=isolation.DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"time limit per submission, all its calls together (default {isolation.DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("--csv", metavar="FILE", help="write one row per file: each step's points and the total")
    p.add_argument("--gradescope", metavar="FILE", help="write Gradescope's results.json (one submission)")
    p.add_argument("--prairielearn", metavar="FILE", help="write PrairieLearn's results.json (one submission)")
    return p  # fmt: skip


def submissions(paths: list[str]) -> tuple[list[Path], bool]:
    """The .py files to grade, every one checked before any grading; and whether to print a summary per file."""
    if not paths:
        return [SKELETON], False
    found_files, summary = [], len(paths) > 1
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.py") if p.name != "__init__.py")
            if not found:
                raise InputError(f"folder {path} holds no .py files")
            found_files += found
            summary = True
        elif not path.exists():
            raise InputError(f"{path}: no such file or folder")
        elif path.suffix != ".py":
            raise InputError(f"{path} is not a .py file")
        else:
            found_files.append(path)
    return found_files, summary


def grade_file(path: Path, timeout: float = isolation.DEFAULT_TIMEOUT) -> list[steps.StepResult]:
    """One submission graded in a worker process of its own; InputError (one line) when it cannot be graded."""
    graded = isolation.grade_all(isolation.read_all([path]), timeout, jobs=1)[0]
    if not graded.results:
        raise InputError(graded.error)
    return graded.results


def to_row(graded: isolation.Graded, points: dict) -> dict:
    """One file's JSON: whether it passed, why it could not (all) be graded, its score, and every step's."""
    earned = courses.score(graded.results, points)
    return {
        "file": str(graded.path),
        "passed": graded.error is None and render.passed(graded.results),
        "error": graded.error,
        "score": sum(earned.values()),
        "max_score": sum(points.values()),
        "steps": [r.to_json() | {"points": earned[r.step], "max_points": points[r.step]} for r in graded.results],
    }


def write_json(path: str, value) -> None:
    text = to_json(value) + "\n"
    files.write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        frameworks.check_installed("torch")  # autograd is the grader's answer key
        points = courses.parse_points(args.points)
        isolation.check_timeout(args.timeout)
        paths, summary = submissions(args.paths)
        if summary and (args.gradescope or args.prairielearn):
            raise InputError("--gradescope and --prairielearn grade one submission; for a class, use --csv")
        outputs = {"--csv": args.csv, "--gradescope": args.gradescope, "--prairielearn": args.prairielearn}
        inputs = [("submission", str(path)) for path in paths]
        for flag, path in outputs.items():
            if path:
                files.check_output_path(path, flag, inputs=inputs)
        files.check_distinct(outputs)
        sources = isolation.read_all(paths)  # every submission's bytes, before any of them runs
    except InputError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2

    names = [user_code.shown(path) for path in paths]
    width = max(len("file"), *map(len, names))
    report = sys.stderr if args.json else sys.stdout  # the JSON alone on stdout; the rows as they come, elsewhere
    if summary:
        print(render.header(width), file=report, flush=True)

    def on_graded(graded: isolation.Graded) -> None:
        if summary:
            print(render.row(user_code.shown(graded.path), width, to_row(graded, points)), file=report, flush=True)

    graded = isolation.grade_all(sources, args.timeout, isolation_jobs(len(sources)), on_graded)
    rows = [to_row(g, points) for g in graded]
    if args.csv:
        table = courses.csv_table(rows, points)
        files.write_atomically(args.csv, lambda tmp: Path(tmp).write_text(table))
    if not summary:
        (one,) = graded
        if args.gradescope:
            write_json(args.gradescope, courses.gradescope(one.results, points, one.error))
        if args.prairielearn:
            write_json(args.prairielearn, courses.prairielearn(one.results, points, one.error))
        if not one.results:  # it could not be graded at all: one line, nothing on stdout
            print(f"{PROG}: error: {one.error}", file=sys.stderr)
            return 2
        if args.json:
            (row,) = rows
            print(to_json({"passed": row["passed"], "error": row["error"], "score": row["score"],
                           "max_score": row["max_score"], "steps": row["steps"]}))  # fmt: skip
        else:
            print(render.format_steps(one.path, one.results, courses.total(one.results, points)))
        if one.error:
            return 2
        return 0 if rows[0]["passed"] else 1

    if args.json:
        print(to_json({"passed": all(row["passed"] for row in rows), "files": rows}))
    else:
        print(render.footer(rows))
    if any(row["error"] for row in rows):
        return 2
    return 0 if all(row["passed"] for row in rows) else 1


def isolation_jobs(n_files: int) -> int:
    return max(1, min(JOBS, n_files))


def main_exit() -> None:
    """The console script `shortcut-grade`: Ctrl-C and SIGTERM end it with one line (the rows already
    printed stay), status 130 or 143."""
    files.exit_on_signals(PROG)
    sys.exit(main())


if __name__ == "__main__":
    main_exit()

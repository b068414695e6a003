"""Grade hand-written backward rules, step by step, against torch's autograd in float64.

    python -m shortcut_gradients.grader.grade                 # the skeleton, exercises/backprop.py: every step todo
    python -m shortcut_gradients.grader.grade mine.py         # your copy: ok, todo or wrong (with the likely slip) per step
    python -m shortcut_gradients.grader.grade mine.py --all   # grade every step, not only up to the first wrong one
    python -m shortcut_gradients.grader.grade class/          # a folder (or several files): one summary row per file
    python -m shortcut_gradients.grader.grade mine.py --json

Steps, in the order they are learned: loss, gelu, linear, shortcut, network, layernorm
(shortcut_gradients/grader/steps.py). Exit status: 0 when every step of every file is ok, 1 otherwise, 2 for
bad input: a missing file, one that does not import, or a submission that raises anything
but NotImplementedError (one line, with its file and line). docs/grader.md has the details.
"""

import argparse
import contextlib
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from shortcut_gradients.grader import steps
from shortcut_gradients.plumbing import frameworks, user_code
from shortcut_gradients.plumbing.config import InputError

# The skeleton students copy: exercises/backprop.py in the repository, installed as shortcut_gradients.exercises.
SKELETON = Path(importlib.util.find_spec("shortcut_gradients.exercises.backprop").origin)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit 2), like every other bad input."""

    def error(self, message):
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m shortcut_gradients.grader.grade", description=__doc__.splitlines()[0])
    p.add_argument(
        "paths", nargs="*", metavar="FILE", help="submissions (.py files or folders of them; default: the skeleton)"
    )
    p.add_argument("--all", action="store_true", help="grade every step, not only up to the first wrong one")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text")
    return p


def submissions(paths: list[str]) -> tuple[list[Path], bool]:
    """The .py files to grade, every one checked before any grading; and whether to print a summary per file."""
    if not paths:
        return [SKELETON], False
    files, summary = [], len(paths) > 1
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.py") if p.name != "__init__.py")
            if not found:
                raise InputError(f"folder {path} holds no .py files")
            files += found
            summary = True
        elif not path.exists():
            raise InputError(f"{path}: no such file or folder")
        elif path.suffix != ".py":
            raise InputError(f"{path} is not a .py file")
        else:
            files.append(path)
    return files, summary


def grade_file(path: Path, every_step: bool) -> list[steps.StepResult]:
    """Load and grade one submission; InputError (one line) when it cannot be graded.

    Whatever their code prints goes to stderr, so that stdout holds only the grader's report.
    """
    with contextlib.redirect_stdout(sys.stderr), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _, module = user_code.load(str(path))
        return steps.grade(module, every_step)


def passed(results: list[steps.StepResult]) -> bool:
    return len(results) == len(steps.STEPS) and all(r.status == "ok" for r in results)


# --- rendering ----------------------------------------------------------------------------------


def format_step(r: steps.StepResult, label: str, width: int = 9, locate=lambda text: text) -> list[str]:
    """One step's lines: ok with its worst difference, todo with where the blank is (`locate` may
    rewrite that place, as the notebooks name their cells), or wrong with the tensor, its worst
    element and the diagnosis."""
    head = f"  {label:<{width}} {r.status:<6}"
    if r.status == "ok":
        return [f"{head} worst rel diff {r.max_rel_diff:.1e}"]
    if r.status == "todo":
        return [f"{head} not written yet: {locate(r.diagnosis).replace('NotImplementedError: ', '', 1)}"]
    pad = " " * len(head)
    lines = [f"{head} {r.tensor or 'the result'}, on {r.case}"]
    if r.worst:
        where = ", ".join(map(str, r.worst["index"]))
        lines.append(
            f"{pad} worst element [{where}]: yours {r.worst['yours']:.9g}, expected {r.worst['expected']:.9g}"
            f" (rel diff {r.max_rel_diff:.1e})"
        )
    return lines + [f"{pad} diagnosis: {r.diagnosis}"]


def format_steps(path: Path, results: list[steps.StepResult]) -> str:
    lines = [
        f"{user_code.shown(path)}: each step against torch autograd in float64 "
        f"(elementwise relative tolerance {steps.TOLERANCE:g})"
    ]
    for r in results:
        lines += format_step(r, r.step)
    if len(results) < len(steps.STEPS):
        lines.append(f"  stopped at the first wrong step; --all grades {', '.join(steps.STEPS[len(results) :])} too")
    ok = sum(r.status == "ok" for r in results)
    if passed(results):
        lines.append("PASSED: every step ok")
    else:
        nxt = next(r for r in results if r.status != "ok")
        lines.append(f"{ok} of {len(steps.STEPS)} steps ok; next: step {nxt.step} ({nxt.status})")
    return "\n".join(lines)


def format_summary(rows: list[dict]) -> str:
    """One row per file: each step's status, and the first problem in a few words."""
    names = [user_code.shown(Path(row["file"])) for row in rows]
    width = max(len("file"), *map(len, names))
    lines = [f"{'file':<{width}}  " + "".join(f"{s:<10}" for s in steps.STEPS) + "first problem"]
    for name, row in zip(names, rows):
        if row["error"]:
            lines.append(f"{name:<{width}}  {'error':<{10 * len(steps.STEPS)}}{row['error']}")
            continue
        status = {r["step"]: r["status"] for r in row["steps"]}
        cells = "".join(f"{status.get(s, '-'):<10}" for s in steps.STEPS)
        problem = next((r for r in row["steps"] if r["status"] != "ok"), None)
        note = ""
        if problem and problem["status"] == "wrong":
            note = f"{problem['step']}: {problem['tensor'] or 'the result'}: {problem['diagnosis']}"
        elif problem:
            note = f"{problem['step']}: not written yet"
        lines.append(f"{name:<{width}}  {cells}{note}".rstrip())
    n_passed = sum(row["passed"] for row in rows)
    n_error = sum(row["error"] is not None for row in rows)
    lines.append(
        f"{len(rows)} files: {n_passed} passed, {len(rows) - n_passed - n_error} not yet, {n_error} could not be graded"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        frameworks.check_installed("torch")  # autograd is the grader's answer key
        files, summary = submissions(args.paths)
        if not summary:
            results = grade_file(files[0], args.all)
    except InputError as err:
        print(f"shortcut_gradients.grader.grade: error: {err}", file=sys.stderr)
        return 2
    if not summary:
        ok = passed(results)
        if args.json:
            print(json.dumps({"passed": ok, "steps": [r.to_json() for r in results]}, indent=2))
        else:
            print(format_steps(files[0], results))
        return 0 if ok else 1

    rows = []
    for path in files:
        try:
            results, error = grade_file(path, args.all), None
        except InputError as err:
            results, error = [], str(err)
        rows.append({"file": str(path), "passed": error is None and passed(results), "error": error,
                     "steps": [r.to_json() for r in results]})  # fmt: skip
    if args.json:
        print(json.dumps({"passed": all(row["passed"] for row in rows), "files": rows}, indent=2))
    else:
        print(format_summary(rows))
    if any(row["error"] for row in rows):
        return 2
    return 0 if all(row["passed"] for row in rows) else 1


def main_exit() -> None:
    """The console script `shortcut-grade`."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()

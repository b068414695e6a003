"""The grader's text: one step's lines, one submission's report, a class's rows. Renders only: the verdicts
and points come from shortcut_gradients/grader/steps.py and shortcut_gradients/grader/courses.py."""

from pathlib import Path

from shortcut_gradients.grader import steps
from shortcut_gradients.plumbing import user_code

COLUMN = 11  # a class table's step column: "not graded" and a space


def format_step(r: steps.StepResult, label: str, width: int = 9, locate=lambda text: text) -> list[str]:
    """One step's lines: ok with its worst difference, todo with where the blank is (`locate` may
    rewrite that place, as the notebooks name their cells), wrong with the tensor, its worst
    element and the diagnosis (or, where their rule raised, the case and the line), error and
    not graded with why."""
    head = f"  {label:<{width}} {r.status:<6}"
    pad = " " * len(head)
    standing = [f"{pad} graded with the reference's {', '.join(r.stand_ins)} in place of yours"] if r.stand_ins else []
    if r.status == "ok":
        return [f"{head} worst rel diff {r.max_rel_diff:.1e}", *standing]
    if r.status == "todo":
        return [f"{head} not written yet: {locate(r.diagnosis).replace('NotImplementedError: ', '', 1)}"]
    if r.status == "not graded":
        return [f"  {label:<{width}} not graded: {r.diagnosis}"]
    if r.status == "error":
        return [f"{head} {locate(r.diagnosis)}"]
    if r.slip == "raised":
        return [f"{head} raised on {r.case}: {locate(r.diagnosis)}", *standing]
    lines = [f"{head} {r.tensor or 'the result'}, on {r.case}"]
    if r.worst:
        where = ", ".join(map(str, r.worst["index"]))
        lines.append(
            f"{pad} worst element [{where}]: yours {r.worst['yours']:.9g}, expected {r.worst['expected']:.9g}"
            f" (rel diff {r.max_rel_diff:.1e})"
        )
    return lines + [f"{pad} diagnosis: {r.diagnosis}", *standing]


def step_message(r: steps.StepResult) -> str:
    """A step's lines as the terminal shows them, without the step's name and indent: a course's test message."""
    lines = format_step(r, "", width=0)
    indent = len(lines[0]) - len(lines[0].lstrip())
    return "\n".join(line[indent:].rstrip() for line in lines)


def format_steps(path: Path, results: list[steps.StepResult], score: tuple[float, float]) -> str:
    lines = [
        f"{user_code.shown(path)}: each step against torch autograd in float64, and in float32 its dtype "
        f"(elementwise relative tolerance {steps.TOLERANCE:g})"
    ]
    for r in results:
        lines += format_step(r, r.step)
    ok = sum(r.status == "ok" for r in results)
    if passed(results):
        lines.append("PASSED: every step ok")
    else:
        nxt = next(r for r in results if r.status != "ok")
        lines.append(f"{ok} of {len(steps.STEPS)} steps ok; next: step {nxt.step} ({nxt.status})")
    lines.append(f"score: {score[0]:g} of {score[1]:g} points")
    return "\n".join(lines)


def passed(results: list[steps.StepResult]) -> bool:
    return len(results) == len(steps.STEPS) and all(r.status == "ok" for r in results)


def header(width: int) -> str:
    return f"{'file':<{width}}  " + "".join(f"{s:<{COLUMN}}" for s in steps.STEPS) + f"{'score':<8}first problem"


def row(name: str, width: int, row: dict) -> str:
    """One file's row: each step's status, its score, and the first problem in a few words."""
    score = f"{row['score']:g}/{row['max_score']:g}"
    if not row["steps"]:
        return f"{name:<{width}}  {'error':<{COLUMN * len(steps.STEPS)}}{score:<8}{row['error']}"
    status = {r["step"]: r["status"] for r in row["steps"]}
    cells = "".join(f"{status.get(s, '-'):<{COLUMN}}" for s in steps.STEPS)
    problem = next((r for r in row["steps"] if r["status"] != "ok"), None)
    note = ""
    if problem and problem["status"] == "wrong" and problem["slip"] == "raised":
        note = f"{problem['step']}: raised: {problem['diagnosis']}"
    elif problem and problem["status"] == "wrong":
        note = f"{problem['step']}: {problem['tensor'] or 'the result'}: {problem['diagnosis']}"
    elif problem and problem["status"] == "todo":
        note = f"{problem['step']}: not written yet"
    elif problem:
        note = f"{problem['step']}: {problem['status']}: {problem['diagnosis']}"
    return f"{name:<{width}}  {cells}{score:<8}{note}".rstrip()


def footer(rows: list[dict]) -> str:
    n_passed = sum(row["passed"] for row in rows)
    n_error = sum(row["error"] is not None for row in rows)
    return (
        f"{len(rows)} files: {n_passed} passed, {len(rows) - n_passed - n_error} not yet, "
        f"{n_error} could not be graded (or not all of it)"
    )

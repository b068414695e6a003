"""Points per step, and the files a course's platform reads: Gradescope's and PrairieLearn's results.json, a CSV.

    points = parse_points("loss=1,gelu=2,linear=2,shortcut=1,network=2,layernorm=2")   # or a .json file
    earned = score(results, points)                       # {step: points earned}, ok steps only
    gradescope(results, points)                           # {"score", "output", "tests": [...]}
    prairielearn(results, points, error)                  # {"gradable", "score" in [0, 1], "tests": [...]}
    csv_table(rows, points)                               # one row per file: a column per step, the total

A step that is ok earns its points; any other status (wrong, todo, error, not graded) earns 0.
Each test's message is the step's lines as the terminal prints them (render.step_message).
exercises/README.md shows how a course wires these into each platform.
"""

import csv
import io
import json
from pathlib import Path

from shortcut_gradients.grader import render, steps
from shortcut_gradients.plumbing.config import InputError

DEFAULT_POINTS = {step: 1.0 for step in steps.STEPS}  # equal by default


def parse_points(spec: str | None) -> dict[str, float]:
    """Points per step from `step=points,...` or a JSON file {"step": points}; steps not named keep 1."""
    if spec is None:
        return dict(DEFAULT_POINTS)
    if "=" in spec:
        pairs = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"--points: {item!r} is not step=points")
            pairs.append((name.strip(), value.strip()))
    else:
        try:
            table = json.loads(Path(spec).read_text())
        except OSError as err:
            raise InputError(f"--points: {spec}: {err.strerror}; give step=points,... or a JSON file") from None
        except json.JSONDecodeError as err:
            raise InputError(f"--points: {spec}:{err.lineno}: not JSON ({err.msg})") from None
        if not isinstance(table, dict):
            raise InputError(f"--points: {spec} holds a {type(table).__name__}; expected an object {{step: points}}")
        pairs = list(table.items())
    points = dict(DEFAULT_POINTS)
    for name, value in pairs:
        if name not in points:
            raise InputError(f"--points: no step {name!r}; the steps are {', '.join(steps.STEPS)}")
        try:
            points[name] = float(value)
        except (TypeError, ValueError):
            raise InputError(f"--points: {name}={value!r} is not a number") from None
        if not 0 <= points[name] < float("inf"):
            raise InputError(f"--points: {name}={value!r}; points are a finite number >= 0")
    return points


def score(results: list[steps.StepResult], points: dict[str, float]) -> dict[str, float]:
    """{step: points earned} for every step: its points when ok, else 0."""
    status = {r.step: r.status for r in results}
    return {step: points[step] if status.get(step) == "ok" else 0.0 for step in steps.STEPS}


def total(results: list[steps.StepResult], points: dict[str, float]) -> tuple[float, float]:
    """(points earned, points possible)."""
    return sum(score(results, points).values()), sum(points.values())


def gradescope(results: list[steps.StepResult], points: dict[str, float], error: str | None = None) -> dict:
    """Gradescope's results.json: the total, and one visible test per step with its points and message."""
    earned = score(results, points)
    by_step = {r.step: r for r in results}
    tests = []
    for number, step in enumerate(steps.STEPS, 1):
        r = by_step.get(step)
        message = render.step_message(r) if r is not None else f"not graded: {error}"
        tests.append(
            {
                "name": f"step {step}",
                "number": str(number),
                "score": earned[step],
                "max_score": points[step],
                "status": "passed" if r is not None and r.status == "ok" else "failed",
                "output": message,
                "visibility": "visible",
            }
        )
    report = {"score": sum(earned.values()), "tests": tests, "visibility": "visible"}
    if error is not None:
        report["output"] = error
    return report


def prairielearn(results: list[steps.StepResult], points: dict[str, float], error: str | None = None) -> dict:
    """PrairieLearn's external-grader results.json. A submission that could not be imported is not gradable:
    `gradable: false`, the one-line reason as the message, and no tests."""
    if not results:
        return {"gradable": False, "score": 0.0, "message": error or "nothing graded", "tests": []}
    earned = score(results, points)
    possible = sum(points.values())
    tests = [
        {
            "name": f"step {r.step}",
            "points": earned[r.step],
            "max_points": points[r.step],
            "message": render.step_message(r),
        }
        for r in results
    ]
    report = {"gradable": True, "score": sum(earned.values()) / possible if possible else 0.0, "tests": tests}
    if error is not None:
        report["message"] = error
    return report


def csv_table(rows: list[dict], points: dict[str, float]) -> str:
    """One row per file: its path, the points of each step, the total, the possible total, and any error line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", *steps.STEPS, "total", "max", "error"])
    for row in rows:
        earned = {r["step"]: r["points"] for r in row["steps"]}
        cells = [f"{earned.get(step, 0.0):g}" for step in steps.STEPS]
        writer.writerow([row["file"], *cells, f"{row['score']:g}", f"{row['max_score']:g}", row["error"] or ""])
    return out.getvalue()

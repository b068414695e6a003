"""The grader in a course: points, Gradescope's and PrairieLearn's results.json, a class CSV, a PASS that keeps
docs/contract.md, and a class graded safely next to hostile submissions (tests/students/)."""

import csv
import json
import shutil

import jsonschema
import numpy as np
import pytest
from conftest import ROOT, needs

from shortcut_gradients.grader import grade, slips, steps
from shortcut_gradients.plumbing.config import InputError
from shortcut_gradients.plumbing.user_code import load
from shortcut_gradients.verdict import contract

REFERENCE = ROOT / "impl_numpy" / "model.py"
SKELETON = ROOT / "exercises" / "backprop.py"
STUDENTS = ROOT / "tests" / "students"

# Gradescope's results.json, as its autograder specification documents it: a score, and tests each with a
# score, max_score, name, output and visibility.
VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
GRADESCOPE = {
    "type": "object",
    "required": ["score", "tests"],
    "properties": {
        "score": {"type": "number"},
        "output": {"type": "string"},
        "visibility": VISIBILITY,
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "score", "max_score", "output", "visibility"],
                "properties": {
                    "name": {"type": "string"},
                    "number": {"type": "string"},
                    "score": {"type": "number", "minimum": 0},
                    "max_score": {"type": "number", "minimum": 0},
                    "status": {"enum": ["passed", "failed"]},
                    "output": {"type": "string"},
                    "visibility": VISIBILITY,
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
# PrairieLearn's external grader results.json: gradable, a score in [0, 1], tests with name, points,
# max_points and message.
PRAIRIELEARN = {
    "type": "object",
    "required": ["gradable", "score", "tests"],
    "properties": {
        "gradable": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "message": {"type": "string"},
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "points", "max_points", "message"],
                "properties": {
                    "name": {"type": "string"},
                    "points": {"type": "number", "minimum": 0},
                    "max_points": {"type": "number", "minimum": 0},
                    "message": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}


@pytest.fixture(autouse=True)
def frameworks():
    needs("torch")
    needs("numpy")


def run(argv, capsys):
    code = grade.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def slip_file(folder, name, as_name=None):
    path = slips.write(next(s for s in slips.SLIPS if s.name == name), folder)
    return path.rename(folder / as_name) if as_name else path


def report(argv, capsys) -> dict:
    _, out, _ = run([*argv, "--json"], capsys)
    return json.loads(out)


# --- points --------------------------------------------------------------------------------------------------


def test_full_marks_the_skeleton_zero_and_one_wrong_step_strictly_between(tmp_path, capsys):
    full, blank = report([REFERENCE], capsys), report([SKELETON], capsys)
    one_wrong = report([slip_file(tmp_path, "gelu_cubic_inner")], capsys)
    assert (full["score"], full["max_score"], blank["score"]) == (6, 6, 0)
    assert 0 < one_wrong["score"] < 6
    by_step = {s["step"]: s for s in one_wrong["steps"]}
    assert (by_step["gelu"]["status"], by_step["gelu"]["points"]) == ("wrong", 0)
    assert all(by_step[s]["points"] == 1 for s in ("loss", "linear"))  # steps after the wrong one still earn


def test_points_weight_the_steps_from_a_table_or_a_file(tmp_path, capsys):
    path = slip_file(tmp_path, "linear_bias_mean")
    weighted = report([path, "--points", "loss=2,gelu=3,linear=5,layernorm=0"], capsys)
    earned = {s["step"]: (s["points"], s["max_points"]) for s in weighted["steps"]}
    # linear_bias_mean: linear earns nothing; the steps after it run with the reference's rule and earn theirs.
    assert earned == {"loss": (2, 2), "gelu": (3, 3), "linear": (0, 5), "shortcut": (1, 1), "network": (1, 1),
                      "layernorm": (0, 0)}  # fmt: skip
    assert (weighted["score"], weighted["max_score"]) == (7, 12)
    table = tmp_path / "points.json"
    table.write_text(json.dumps({"loss": 2, "gelu": 3, "linear": 5, "layernorm": 0}))
    assert report([path, "--points", table], capsys)["steps"] == weighted["steps"]
    code, out, _ = run([path, "--points", "loss=2,gelu=3,linear=5,layernorm=0"], capsys)
    assert out.splitlines()[-1] == "score: 7 of 12 points"


@pytest.mark.parametrize(
    "spec, words",
    [("lost=1", "no step 'lost'"), ("loss=-1", "points are a finite number >= 0"), ("loss=one", "is not a number"),
     ("nope.json", "nope.json")],
    ids=["unknown-step", "negative", "not-a-number", "no-file"],
)  # fmt: skip
def test_bad_points_are_one_line(capsys, spec, words):
    code, out, err = run([REFERENCE, "--points", spec], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and words in err


# --- course formats -------------------------------------------------------------------------------------------


def test_gradescope_and_prairielearn_files_validate_and_carry_each_steps_message(tmp_path, capsys):
    path = slip_file(tmp_path, "loss_missing_2", "mine.py")
    gs, pl = tmp_path / "gs.json", tmp_path / "pl.json"
    code, out, _ = run([path, "--gradescope", gs, "--prairielearn", pl], capsys)
    gradescope, prairielearn = json.loads(gs.read_text()), json.loads(pl.read_text())
    jsonschema.validate(gradescope, GRADESCOPE)
    jsonschema.validate(prairielearn, PRAIRIELEARN)
    assert code == 1
    assert [t["name"] for t in gradescope["tests"]] == [f"step {s}" for s in steps.STEPS]
    # The loss rule is wrong; the networks built on it run with the reference's in its place: 5 of 6.
    assert gradescope["score"] == sum(t["score"] for t in gradescope["tests"]) == 5
    assert prairielearn["gradable"] and prairielearn["score"] == pytest.approx(5 / 6)
    # Each message is what the terminal prints for the step, without its name and indent.
    loss = gradescope["tests"][0]["output"]
    assert loss.startswith("wrong  dout, on output (1, 1), target (1, 1)\n")
    assert (
        loss.splitlines()[-1].strip() == "diagnosis: off by a constant factor 1/2: a factor 2 missing: d(u^2)/du = 2u"
    )
    assert "  loss      " + loss.replace("\n", "\n" + " " * 12) in out
    assert prairielearn["tests"][0]["message"] == loss


def test_a_submission_that_does_not_import_is_not_gradable_with_its_one_line(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("def mse_loss_backward(:\n")
    gs, pl = tmp_path / "gs.json", tmp_path / "pl.json"
    code, out, err = run([path, "--gradescope", gs, "--prairielearn", pl], capsys)
    prairielearn, gradescope = json.loads(pl.read_text()), json.loads(gs.read_text())
    jsonschema.validate(prairielearn, PRAIRIELEARN)
    jsonschema.validate(gradescope, GRADESCOPE)
    assert (code, out) == (2, "") and "broken.py:1: SyntaxError" in err
    assert prairielearn["gradable"] is False and "broken.py:1: SyntaxError" in prairielearn["message"]
    assert "\n" not in prairielearn["message"] and gradescope["score"] == 0


def test_a_class_csv_has_a_row_per_file_a_column_per_step_and_the_total(tmp_path, capsys):
    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copy(REFERENCE, folder / "alice.py")
    slip_file(folder, "linear_bias_first_axis", "bob.py")
    shutil.copy(SKELETON, folder / "carol.py")
    table = tmp_path / "grades.csv"
    code, _, _ = run([folder, "--csv", table], capsys)
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert code == 1
    assert list(rows[0]) == ["file", *steps.STEPS, "total", "max", "error"]
    assert [(r["file"].rsplit("/", 1)[-1], r["total"], r["max"]) for r in rows] == [
        ("alice.py", "6", "6"), ("bob.py", "5", "6"), ("carol.py", "0", "6")]  # fmt: skip
    assert [rows[1][s] for s in steps.STEPS] == ["1", "1", "0", "1", "1", "1"]


def test_course_files_for_one_submission_only(tmp_path, capsys):
    code, out, err = run([REFERENCE, SKELETON, "--gradescope", tmp_path / "gs.json"], capsys)
    assert (code, out) == (2, "") and "for a class, use --csv" in err
    assert not (tmp_path / "gs.json").exists()


# --- a PASS keeps the contract --------------------------------------------------------------------------------


def test_a_float64_leak_fails_at_the_rule_where_it_starts_and_the_contract_refuses_it_too(tmp_path):
    path = slip_file(tmp_path, "gelu_exact_float64_leak")
    results = grade.grade_file(path)
    gelu = results[1]
    assert (gelu.step, gelu.status, gelu.slip) == ("gelu", "wrong", "dtype")
    assert gelu.diagnosis.startswith("float64 in a float32 run: ") and gelu.case.endswith("float32")
    network = results[4]
    # The network step runs with the reference's gelu_backward in place of the leaking one: graded on its own.
    assert (network.status, network.stand_ins) == ("ok", ["gelu_backward"])
    # compare.py's own check refuses the same file's result: the grader's verdict is the contract's.
    _, module = load(str(path))
    case = next(c for c in steps.network_cases() if c.label == "book network, exact, shortcut, float32")
    params, x, target = case.inputs
    with pytest.raises(InputError, match="has dtype float64; expected float32"):
        contract.validate("that", module.loss_and_grads(params, x, target, **case.extra), params, x, "float32")


# --- a class graded safely ------------------------------------------------------------------------------------


def test_hostile_submissions_change_no_other_grade_and_every_file_is_listed(tmp_path, capsys):
    clean = tmp_path / "clean"
    clean.mkdir()
    shutil.copy(REFERENCE, clean / "alice.py")
    slip_file(clean, "linear_bias_first_axis", "bob.py")
    shutil.copy(SKELETON, clean / "carol.py")
    folder = tmp_path / "class"
    # Each file's grades when graded alone, as the class's files are named (a todo line names its file).
    alone = json.loads(json.dumps(report([clean], capsys)["files"]).replace(str(clean), str(folder)))
    alone = {f["file"].rsplit("/", 1)[-1]: f for f in alone}

    shutil.copytree(clean, folder)
    for name in ("cheater", "vandal", "exits", "loops"):
        shutil.copy(STUDENTS / f"{name}.py", folder / f"{name}.py")
    code, out, err = run([folder, "--json", "--timeout", "2"], capsys)
    graded = {f["file"].rsplit("/", 1)[-1]: f for f in json.loads(out)["files"]}
    assert code == 2
    assert sorted(graded) == sorted(["alice.py", "bob.py", "carol.py", "cheater.py", "vandal.py", "exits.py",
                                     "loops.py"])  # fmt: skip
    for name in ("alice.py", "bob.py", "carol.py"):
        assert graded[name] == alone[name], name
    # The vandal did rewrite the others on disk; each was graded from the bytes read before any ran.
    assert "vandalised" in (folder / "alice.py").read_text()
    assert graded["vandal.py"]["passed"]
    # The cheater's patches stayed in its own process: its sign-flipped rule is named.
    cheater = graded["cheater.py"]["steps"][0]
    assert (cheater["status"], cheater["slip"]) == ("wrong", "sign")
    assert graded["exits.py"]["steps"] == [] and "exited with status 0" in graded["exits.py"]["error"]
    loops = {s["step"]: s["status"] for s in graded["loops.py"]["steps"]}
    assert (loops["loss"], loops["gelu"], loops["linear"], loops["layernorm"]) == ("ok", "ok", "error", "not graded")
    assert "still running after 2 s" in graded["loops.py"]["error"]
    assert graded["loops.py"]["score"] == 2
    # Each row was printed as its file was graded, on stderr beside the JSON.
    assert sum(line.startswith(str(folder)) for line in err.splitlines()) == 7
    assert np.isfinite(graded["alice.py"]["score"])

"""exercises/: the skeleton stays the reference minus its backward rules, and the grader names each slip at its step."""

import ast
import json
import shutil

import numpy as np
import pytest
from conftest import ROOT, needs

from shortcut_gradients.grader import answers, diagnose, grade, slips, steps

SKELETON = ROOT / "exercises" / "backprop.py"
REFERENCE = ROOT / "impl_numpy" / "model.py"


@pytest.fixture(autouse=True)
def frameworks():
    needs("torch")  # the grader's answer key
    needs("numpy")


def run(argv, capsys):
    code = grade.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- the skeleton is the reference with its blanks ------------------------------------------------


def blanks(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """Every function or method (by qualified name) whose body raises NotImplementedError."""
    found = {}
    for scope, prefix in [(tree, "")] + [(c, c.name + ".") for c in tree.body if isinstance(c, ast.ClassDef)]:
        for node in scope.body:
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(n, ast.Raise) and "NotImplementedError" in ast.unparse(n) for n in ast.walk(node)
            ):
                found[prefix + node.name] = node
    return found


def functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    found = {}
    for scope, prefix in [(tree, "")] + [(c, c.name + ".") for c in tree.body if isinstance(c, ast.ClassDef)]:
        found.update({prefix + n.name: n for n in scope.body if isinstance(n, ast.FunctionDef)})
    return found


def without_docstrings(tree: ast.Module) -> str:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and ast.get_docstring(node) is not None:
            node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def filled_skeleton() -> ast.Module:
    """The skeleton with each blank function's body replaced by the reference's."""
    skeleton, reference = ast.parse(SKELETON.read_text()), ast.parse(REFERENCE.read_text())
    answers = functions(reference)
    for name, node in blanks(skeleton).items():
        node.body = answers[name].body
    return skeleton


def test_the_blanks_are_the_backward_rules_in_the_order_they_are_learned():
    names = list(blanks(ast.parse(SKELETON.read_text())))
    assert sorted(names) == sorted(
        [
            "mse_loss_backward",
            "gelu_backward",
            "layer_norm_backward",
            "linear_backward",
            "ExampleDeepNeuralNetwork.backward",
        ]
    )
    text = SKELETON.read_text()
    order = [
        "step loss",
        "step gelu, tanh form",
        "step gelu, exact form",
        "step linear",
        "step shortcut",
        "step layernorm",
    ]
    assert all(phrase in text for phrase in order)
    gelu = ast.unparse(blanks(ast.parse(text))["gelu_backward"])
    assert gelu.count("NotImplementedError") == 2  # tanh and exact: two blanks, learned one after the other


def test_the_skeleton_filled_from_the_reference_is_the_reference():
    """Everything but the blanks (and docstrings) is the reference's code, so the two cannot drift apart."""
    assert without_docstrings(filled_skeleton()) == without_docstrings(ast.parse(REFERENCE.read_text()))


def test_the_skeleton_filled_from_the_reference_gets_full_marks(tmp_path, capsys):
    path = tmp_path / "filled.py"
    path.write_text(ast.unparse(filled_skeleton()))
    code, out, err = run([path], capsys)
    assert (code, err) == (0, "")
    assert out.strip().splitlines()[-2:] == ["PASSED: every step ok", "score: 6 of 6 points"]


# --- the reference, the skeleton, and bad input ---------------------------------------------------


def test_the_reference_gets_full_marks_and_the_json_says_so(capsys):
    code, out, err = run([REFERENCE, "--json"], capsys)
    report = json.loads(out)
    assert (code, err, report["passed"]) == (0, "", True)
    assert (report["score"], report["max_score"]) == (6, 6)
    assert [s["step"] for s in report["steps"]] == list(steps.STEPS)
    for s in report["steps"]:
        assert s["status"] == "ok" and s["tensor"] is None and s["diagnosis"] is None
        # float64 autograd and the reference agree to rounding: far inside the 1e-12 tolerance.
        assert 0.0 <= s["max_rel_diff"] < 1e-13
        assert {"step", "status", "tensor", "max_rel_diff", "diagnosis"} <= set(s)
        assert (s["points"], s["max_points"]) == (1, 1)


def test_the_skeleton_is_todo_from_the_first_step_without_a_traceback(capsys):
    code, out, err = run([], capsys)
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[1].split()[:2] == ["loss", "todo"]
    assert "exercises/backprop.py:" in lines[1] and "in mse_loss_backward" in lines[1]
    # Every step is graded; the network step needs the shortcut step: both are their backward method.
    assert [line.split()[1] for line in lines[1:7]] == ["todo"] * 4 + ["not", "todo"]
    assert lines[5] == "  network   not graded: needs step shortcut (todo)"
    assert lines[-2:] == ["0 of 6 steps ok; next: step loss (todo)", "score: 0 of 6 points"]
    assert "Traceback" not in out


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


def reference_with(folder, name, old, new):
    """A copy of the reference with one piece of text changed (exactly once)."""
    text = REFERENCE.read_text()
    assert text.count(old) == 1, old
    return write(folder, name, text.replace(old, new))


def test_a_rule_that_raises_is_wrong_at_its_case_with_one_line_and_the_other_grades_are_kept(tmp_path, capsys):
    path = reference_with(tmp_path, "mine.py", "    db = dz2.sum(axis=0)", "    db = dz2.sum(axis=0) @ dz2")
    code, out, err = run([path, "--json"], capsys)
    by_step = {s["step"]: s for s in json.loads(out)["steps"]}
    assert (code, err) == (1, "")
    linear = by_step["linear"]
    assert (linear["status"], linear["slip"], linear["case"]) == ("wrong", "raised", "x (1, 3), W (3, 3)")
    number = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "@ dz2" in text)
    assert f"mine.py:{number} in linear_backward: ValueError: matmul: " in linear["diagnosis"]
    assert "\n" not in linear["diagnosis"] and "Traceback" not in out
    # The other steps keep their grades: those built from it run with the reference's rule in its place.
    assert [by_step[s]["status"] for s in ("loss", "gelu", "shortcut", "network", "layernorm")] == ["ok"] * 5
    assert by_step["shortcut"]["stand_ins"] == ["linear_backward"] and by_step["gelu"]["stand_ins"] is None
    code, out, _ = run([path], capsys)
    (line,) = [text for text in out.splitlines() if text.startswith("  linear")]
    assert line.startswith("  linear    wrong  raised on x (1, 3), W (3, 3): ") and f"mine.py:{number} in " in line


@pytest.mark.parametrize(
    "text, words",
    [
        ("def mse_loss_backward(:\n", "broken.py:1: SyntaxError"),
        ("import numpy\n", "has no mse_loss_backward, gelu_backward, linear_backward, ExampleDeepNeuralNetwork"),
    ],
    ids=["syntax-error", "missing-functions"],
)
def test_a_file_that_cannot_be_graded_is_one_line(tmp_path, capsys, text, words):
    code, out, err = run([write(tmp_path, "broken.py", text)], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and words in err and err.startswith("shortcut-grade: error: ")


def test_bad_arguments_are_one_line(tmp_path, capsys):
    for argv, words in (
        ([tmp_path / "nope.py"], "no such file or folder"),
        ([write(tmp_path, "notes.txt", "")], "is not a .py file"),
        ([tmp_path / "empty"], "holds no .py files"),
        (["--frobnicate"], "unrecognized arguments"),
    ):
        (tmp_path / "empty").mkdir(exist_ok=True)
        code, out, err = run(argv, capsys)
        assert (code, out) == (2, "") and err.count("\n") == 1 and words in err, err


# --- every slip caught at its step, with its diagnosis ------------------------------------------


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory, worker_id) -> tuple:
    """Every slip graded once, as a class (each in a worker process of its own), once per test run:
    with the tests spread over processes (pytest-xdist), the first to need it grades, and the
    others read its rows."""
    if worker_id == "master":  # one process: nothing to share
        return tuple(slips.catalogue())
    import pickle

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / "slips-catalogue.pickle"
    with FileLock(f"{shared}.lock"):
        if shared.is_file():
            return pickle.loads(shared.read_bytes())  # written by this test run, just above
        rows = tuple(slips.catalogue())
        shared.write_bytes(pickle.dumps(rows))
        return rows


@pytest.mark.parametrize("index", range(len(slips.SLIPS)), ids=[s.name for s in slips.SLIPS])
def test_each_classic_slip_is_caught_at_its_step_with_its_diagnosis(catalogue, index):
    row = catalogue[index]
    slip, results = row["slip"], row["results"]
    assert [r.step for r in results] == list(steps.STEPS)  # every step graded, the slip's and the others
    first = [r.step for r in results].index(slip.step)
    *before, caught = results[: first + 1]
    assert all(r.status == "ok" for r in before), before  # every earlier step still passes
    assert (caught.step, caught.status, caught.slip) == (slip.step, "wrong", slip.slip), caught
    assert caught.diagnosis and caught.case
    if caught.max_rel_diff is not None and caught.slip != "dtype":  # a dtype slip can have the right values
        assert caught.max_rel_diff > steps.TOLERANCE


def test_a_slip_whose_line_is_gone_from_the_reference_fails_loudly():
    gone = slips.Slip("gone", "linear_backward", "no such text", "x", "linear", "unknown", "")
    with pytest.raises(ValueError, match="occurs 0 times in linear_backward"):
        slips.apply(gone, REFERENCE.read_text())


def test_the_wrong_step_prints_tensor_worst_element_and_diagnosis_and_the_score_last(tmp_path, capsys):
    slip = next(s for s in slips.SLIPS if s.name == "linear_bias_mean")
    code, out, _ = run([slips.write(slip, tmp_path)], capsys)
    lines = out.splitlines()
    assert code == 1
    assert lines[3].split()[:3] == ["linear", "wrong", "db,"] and "x (5, 3), W (3, 3)" in lines[3]
    assert "worst element [" in lines[4] and "yours" in lines[4] and "expected" in lines[4]
    assert "diagnosis: off by a constant factor 1/rows = 1/5: bias averaged over rows" in lines[5]
    # The later steps are graded on their own, with the reference's linear_backward in place of theirs, and say so.
    status = [line.split()[:2] for line in lines if line.startswith(("  shortcut", "  network", "  layernorm"))]
    assert status == [["shortcut", "ok"], ["network", "ok"], ["layernorm", "ok"]]
    assert lines[7].strip() == "graded with the reference's linear_backward in place of yours"
    assert lines[-2:] == ["5 of 6 steps ok; next: step linear (wrong)", "score: 5 of 6 points"]


def test_every_step_is_graded_after_a_wrong_one(tmp_path, capsys):
    slip = next(s for s in slips.SLIPS if s.name == "gelu_density_scale")
    code, out, _ = run([slips.write(slip, tmp_path), "--json"], capsys)
    status = {s["step"]: s["status"] for s in json.loads(out)["steps"]}
    # The steps built from gelu_backward run with the reference's in its place: each is graded on its own.
    assert code == 1 and status == {
        "loss": "ok",
        "gelu": "wrong",
        "linear": "ok",
        "shortcut": "ok",
        "network": "ok",
        "layernorm": "ok",
    }


def test_a_wrong_shortcut_leaves_the_network_not_graded(tmp_path, capsys):
    slip = next(s for s in slips.SLIPS if s.step == "shortcut")
    code, out, _ = run([slips.write(slip, tmp_path), "--json"], capsys)
    by_step = {s["step"]: s for s in json.loads(out)["steps"]}
    # Both are their ExampleDeepNeuralNetwork.backward: the network cannot be graded apart from it.
    assert code == 1 and by_step["shortcut"]["status"] == "wrong"
    assert (by_step["network"]["status"], by_step["network"]["diagnosis"]) == ("not graded", "needs step shortcut (wrong)")


# --- grading a class ------------------------------------------------------------------------------


def test_a_folder_gets_one_summary_row_per_file(tmp_path, capsys):
    shutil.copy(REFERENCE, tmp_path / "alice.py")
    slips.write(next(s for s in slips.SLIPS if s.name == "linear_bias_first_axis"), tmp_path).rename(
        tmp_path / "bob.py"
    )
    shutil.copy(SKELETON, tmp_path / "carol.py")
    code, out, err = run([tmp_path], capsys)
    rows = sorted(out.splitlines()[1:-1])  # printed as each file is graded: in the order they finish
    assert (code, err) == (1, "")
    assert out.splitlines()[0].split() == ["file", *steps.STEPS, "score", "first", "problem"]
    assert [row.split()[0] for row in rows] == [str(tmp_path / f"{n}.py") for n in ("alice", "bob", "carol")]
    assert rows[0].split()[1:8] == ["ok"] * 6 + ["6/6"]
    assert rows[1].split()[1:8] == ["ok", "ok", "wrong", "ok", "ok", "ok", "5/6"]
    assert "linear: db: bias summed over the first dimension only" in rows[1]
    assert rows[2].split()[1:5] == ["todo"] * 4 and rows[2].endswith("0/6     loss: not written yet")
    assert out.splitlines()[-1] == "3 files: 1 passed, 2 not yet, 0 could not be graded (or not all of it)"


def test_a_class_with_a_broken_file_still_gets_its_table_and_exit_2(tmp_path, capsys):
    shutil.copy(REFERENCE, tmp_path / "alice.py")
    write(tmp_path, "dave.py", "import numpy as np\n\nnp.zeros(2) @ np.zeros(3)\n")
    code, out, err = run([tmp_path / "alice.py", tmp_path / "dave.py", "--json"], capsys)
    files = json.loads(out)["files"]
    assert code == 2
    assert err.splitlines()[0].split()[0] == "file" and len(err.splitlines()) == 3  # the rows, as each is graded
    assert [f["passed"] for f in files] == [True, False]
    assert "dave.py:3 in <module>: ValueError: matmul" in files[1]["error"] and files[1]["steps"] == []


# --- diagnoses that no one-line slip of the reference reaches -------------------------------------


def test_diagnose_names_shapes_dtypes_zeros_and_unnamed_factors():
    rng = np.random.default_rng(0)
    expected = rng.normal(size=(3, 4))
    cases = {
        "transposed": expected.T,
        "shape": expected[:2],
        "dtype": expected.astype(np.float32),
        "not-finite": np.where(expected > 0, np.inf, expected),
        "zeros": np.zeros_like(expected),
        "sign": -expected,
        "factor": 1.7 * expected,
        "float32-constants": expected * (1 + 1e-7),
        "unknown": expected + rng.normal(size=(3, 4)),
    }
    assert {slip: diagnose.diagnose(yours, expected).slip for slip, yours in cases.items()} == {s: s for s in cases}
    assert "1.7" in diagnose.diagnose(1.7 * expected, expected).text
    # One element: any wrong value is "a constant factor", so only a named one is claimed.
    assert diagnose.diagnose(np.array([1.7]), np.array([1.0])).slip == "unknown"
    assert diagnose.diagnose(np.array([0.5]), np.array([1.0])).slip == "factor"


def test_linear_returned_in_another_order_and_a_missing_return(tmp_path):
    order = reference_with(tmp_path, "order.py", "    return dx, dW, db", "    return dW, db, dx")
    nothing = reference_with(tmp_path, "nothing.py", "    return dx, dW, db", "    dx, dW, db")
    assert grade.grade_file(order)[2].slip == "return-order"
    assert grade.grade_file(nothing)[2].slip == "not-an-array"


def test_network_diagnoses_layer_order_and_a_missing_identity_path():
    """Network-level slips that the shortcut step would catch first, checked on the network's own arrays."""
    case = answers.network_cases()[1]  # the book network with its shortcuts
    assert case.extra["use_shortcut"]
    ref = case.expected["reference"]
    n = len(ref["dW"])
    candidates = steps._network_candidates("layers.1.0.weight", 1, ref, True)
    found = diagnose.diagnose(ref["dW"][n - 2], ref["dW"][1], candidates)
    assert found.slip == "layer-order", found
    candidates = steps._network_candidates("layers.2.dy", 2, ref, True)
    found = diagnose.diagnose(ref["dy"][2] - ref["dy"][3], ref["dy"][2], candidates)
    assert found.slip == "identity-missing", found


def test_the_slips_table_in_docs_grader_md_is_a_fresh_run(catalogue):
    """docs/grader.md shows what the grader says today; regenerate with python -m shortcut_gradients.grader.slips --write docs/grader.md."""
    page = (ROOT / "docs" / "grader.md").read_text()
    table = slips.format_table(list(catalogue))
    assert "NOT CAUGHT" not in table and "(expected" not in table
    assert slips.replace_table(page, table) == page
    with pytest.raises(ValueError, match="needs one"):
        slips.replace_table("no markers here", table)


def test_the_readme_quotes_the_grader_as_it_prints(tmp_path, capsys):
    """exercises/README.md's todo lines (file:line in function) are what the grader prints for a copy of the skeleton."""
    import re

    shutil.copy(SKELETON, tmp_path / "mine.py")
    quoted = re.findall(r"(mine\.py:\d+ in \w+: step [^:]+:)", (ROOT / "exercises" / "README.md").read_text())
    assert len(quoted) >= 2
    out = grade.format_steps(tmp_path / "mine.py", grade.grade_file(tmp_path / "mine.py"), (0, 6))
    for text in quoted:
        assert text in out.replace(str(tmp_path / "mine.py"), "mine.py"), text


def test_a_non_finite_gradient_is_named_and_the_json_stays_strict(tmp_path, capsys):
    path = reference_with(tmp_path, "inf.py", "return dout * (phi + x * dphi)", "return dout * (phi + x * dphi) / 0.0")
    code, out, err = run([path, "--json"], capsys)

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    step = json.loads(out, parse_constant=refuse)["steps"][1]
    assert (code, err) == (1, "")
    assert (step["step"], step["status"], step["slip"]) == ("gelu", "wrong", "not-finite")
    # JSON has no number for inf: null, as in every JSON this project writes (shortcut_gradients.cli.finite).
    assert step["max_rel_diff"] is None and step["worst"]["yours"] is None
    assert isinstance(step["worst"]["expected"], float)  # a finite number stays a number

"""notebooks/: each runs from a clean kernel, its committed outputs are the current code's, and the exercises grade.

The two notebooks run once per session, at once, each in its own kernel (notebooks.make.execute),
copied to a temporary folder outside the repository and run there, as a copy a reader downloads
would run: they import only the installed project. Cells are added after their own: `compare.py --json` after the shortcut notebook's, and after the
exercises' the blanks filled from the reference, then two slips. A kernel start and the imports
of torch and JAX are most of the time, so the additions ride in the same two kernels.
"""

import ast
import json
import re
import shutil
import time

import pytest
from conftest import ROOT, needs

from notebooks import make
from shortcut_gradients.verdict import report as reporting

SHORTCUT, EXERCISES = make.NOTEBOOKS
REFERENCE = ROOT / "impl_numpy" / "model.py"
SKELETON = ROOT / "exercises" / "backprop.py"
# Executing the two notebooks at once took 10 to 15 s on this project's 2-core machine (most of it
# importing torch and JAX, and compiling JAX). 45 s passes a machine three times as busy and catches a
# study or sweep left at full size, which takes minutes.
BUDGET_S = 45

# float32 results can differ in their last bits from one CPU to another (the same sums in another order, other
# vector kernels): outputs committed from another machine have read 2.0173587e-04 where this one prints
# 2.0173589e-04. So a committed output is compared with a fresh run's as text with its numbers set aside, which
# must match exactly, and number by number: an integer exactly; a decimal within FLOAT_RTOL of itself or one
# unit of its last printed digit (a value within an ulp of a rounding boundary of the print flips that digit).
# A stale output, from changed code, moves by far more.
FLOAT_RTOL = 1e-6  # about 16 float32 ulps; between CPUs the committed means moved by 1e-7, 2 ulps
# A measured rounding error, a relative difference between frameworks of order 1e-7, moves by as much as it is
# (4.2e-07 here, 3.0e-07 elsewhere): within ROUNDING_ATOL, 8 float32 ulps of 1, and the share of its allowance
# (about 1e-5) it used within SHARE_POINTS. A slip's relative difference, 2.0e+00, is still checked to 1e-6.
ROUNDING_ATOL = 1e-6
SHARE_POINTS = 10
NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?")
_NUM = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
ROUNDING = [  # (where a rounding measurement is printed: group 1 is the number, its kind)
    (re.compile(rf"rel diff ({_NUM})"), "rounding"),  # the verdict's worst, or a first mismatch's
    (re.compile(rf"matches the book within ({_NUM})"), "rounding"),
    (re.compile(rf"^layers\.\S+(?: +{_NUM}){{4}} +({_NUM})$", re.M), "rounding"),  # the 'max rel diff' column
    (re.compile(rf"used ({_NUM})% of its allowance"), "share"),
]
# A wall-clock figure ("1.3 s") differs on every run: the committed notebooks print none.
TIMING = re.compile(r"\d s\b")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """({"shortcut", "exercises"}: the notebooks as executed now, with the added cells; the seconds it took).

    Each runs from a copy in a temporary folder, its working directory, as a downloaded copy would.
    """
    import nbformat

    for name in ("torch", "jax", "numpy"):
        needs(name)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    assert ROOT not in elsewhere.parents
    for name in (SHORTCUT, EXERCISES):
        shutil.copy(make.FOLDER / name, elsewhere / name)
    shortcut = nbformat.read(elsewhere / SHORTCUT, as_version=4)
    shortcut.cells.append(
        nbformat.v4.new_code_cell(
            "from shortcut_gradients import compare\n\ncompare.main(['--json'])", id="compare-json"
        )
    )
    exercises = nbformat.read(elsewhere / EXERCISES, as_version=4)
    exercises.cells += filled_exercises(exercises)
    start = time.perf_counter()
    executed = make.execute({"shortcut": shortcut, "exercises": exercises}, cwd=elsewhere)
    return executed, time.perf_counter() - start


def cells(nb) -> dict:
    return {cell.id: cell for cell in nb.cells}


def text(cell) -> str:
    """A code cell's outputs as text: streams, plain-text results, errors; an image by its type only."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(f"[{out.name}] {out.text}")
        elif out.output_type == "error":
            parts.append(f"[error] {out.ename}: {out.evalue} | " + " | ".join(out.traceback))
        else:
            parts.append(f"[{out.output_type}] " + " ".join(sorted(out.data)) + " " + out.data.get("text/plain", ""))
    return "\n".join(parts)


def numbers(text_: str) -> tuple[str, list[tuple[str, str]]]:
    """The text with each number replaced by #, and its numbers as printed, each with its kind: int, float,
    rounding (a measured relative difference) or share (the percentage of an allowance used)."""
    kinds = {match.start(1): kind for pattern, kind in ROUNDING for match in pattern.finditer(text_)}
    found = [
        (m[0], kinds.get(m.start(), "int" if m[1] is None and m[2] is None else "float"))
        for m in NUMBER.finditer(text_)
    ]
    return NUMBER.sub("#", text_), found


def last_unit(number: str) -> float:
    """One unit of the last printed digit: 1e-11 for 2.0173589e-04, 1e-07 for -0.0036374."""
    mantissa, _, exponent = number.lower().partition("e")
    return 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))


def same_number(committed: str, fresh: str, kind: str) -> bool:
    if committed == fresh:
        return True
    a, b = float(committed), float(fresh)
    if kind == "int":
        return False
    if kind == "rounding":
        return abs(a - b) <= ROUNDING_ATOL
    if kind == "share":
        return abs(a - b) <= SHARE_POINTS
    allowed = max(FLOAT_RTOL * max(abs(a), abs(b)), last_unit(committed), last_unit(fresh))
    return abs(a - b) <= allowed * (1 + 1e-9)  # 0.252 - 0.251 is a hair over 0.001 in binary


def same_output(committed, fresh) -> bool:
    """The two cells printed the same text and the same numbers, up to float32's last bits (FLOAT_RTOL, above)."""
    (words, committed_numbers), (fresh_words, fresh_numbers) = numbers(text(committed)), numbers(text(fresh))
    return (
        committed.get("execution_count") == fresh.get("execution_count")
        and words == fresh_words
        and all(same_number(a, b, kind) for (a, kind), (b, _) in zip(committed_numbers, fresh_numbers))
    )


# --- every notebook runs, fast enough, with no error but the one it shows on purpose ------------------------


def test_every_notebook_runs_from_a_clean_kernel_within_the_budget(runs):
    executed, seconds = runs
    print(f"notebooks executed in {seconds:.1f} s")  # pytest -s shows it
    assert seconds < BUDGET_S
    for name, nb in executed.items():
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), name
        for cell in code:
            errors = [out for out in cell.outputs if out.output_type == "error"]
            assert not errors or "raises-exception" in cell.metadata.get("tags", []), (name, cell.id, errors)


def test_bad_input_is_one_line_as_in_the_cli(runs):
    (error,) = cells(runs[0]["shortcut"])["bad-input"].outputs
    assert error.output_type == "error" and error.ename == "InputError"
    assert error.traceback == ["InputError: --layer-sizes must all be positive integers; got '3,3,0,1'"]


# --- the committed outputs are those of the current code ------------------------------------------------------


@pytest.mark.parametrize("key, name", [("shortcut", SHORTCUT), ("exercises", EXERCISES)], ids=["shortcut", "exercises"])
def test_the_committed_outputs_are_the_current_codes(runs, key, name):
    committed, fresh = cells(make.read(name)), cells(runs[0][key])
    assert list(committed) == list(fresh)[: len(committed)]  # the test's own cells come after
    stale = [cell_id for cell_id, cell in committed.items() if not same_output(cell, fresh[cell_id])]
    assert not stale, (
        f"notebooks/{name}: the outputs of cells {stale} are not the current code's: python -m notebooks.make"
    )
    for cell_id, cell in committed.items():
        if cell.cell_type == "code":
            assert cell.outputs or not fresh[cell_id].outputs, (
                f"{name}: cell {cell_id} is committed without its outputs"
            )


def test_the_committed_outputs_hold_no_wall_clock_time():
    """A timing would differ on every run, and python -m notebooks.make would leave a difference each time."""
    for name in (SHORTCUT, EXERCISES):
        for cell in make.read(name).cells:
            assert not TIMING.search(text(cell)), (name, cell.id, TIMING.search(text(cell)))


def test_float32_last_bits_may_move_and_nothing_else():
    """same_number: what the committed-outputs test lets through, and what it must still catch."""
    assert same_number("2.0173587e-04", "2.0173589e-04", "float")  # another CPU's float32
    assert same_number("-0.0036373", "-0.0036374", "float")  # a last printed digit flipped
    assert same_number("0.251", "0.252", "float") and not same_number("0.251", "0.253", "float")
    assert same_number("3.0e-07", "4.2e-07", "rounding") and same_number("4", "5", "share")
    assert not same_number("2.0173589e-04", "2.0183589e-04", "float")  # 5e-4 off: changed code
    assert not same_number("2", "3", "int")  # a cell number, a seed, a count
    assert not same_number("2.0e+00", "1.9e+00", "rounding")  # a slip's relative difference
    words, found = numbers("layers.3.0.weight   1.3988735e-03  1.3988735e-03  1.3988735e-03  1.3988739e-03  6.8e-08")
    assert words.endswith("#  #  #  #  #") and [kind for _, kind in found][-2:] == ["float", "rounding"]


def test_the_cross_check_cell_prints_compare_jsons_table(runs):
    """The cross-check cell's table is compare.py's, rebuilt from `compare.py --json` run now, number for number."""
    (out, result) = cells(runs[0]["shortcut"])["compare-json"].outputs
    assert (out.name, result.data["text/plain"]) == ("stdout", "0")  # exit status 0: everything agrees
    report = json.loads(out.text)
    table = text(cells(runs[0]["shortcut"])["cross-check"]).removeprefix("[stdout] ").rstrip("\n")
    assert table == reporting.format_report(report)
    rows = [line.split() for line in table.splitlines() if line.startswith("layers.")]
    assert len(rows) == 10  # 5 layers x 2 settings
    for k, run in enumerate(report["runs"]):
        for i, row in enumerate(rows[5 * k : 5 * k + 5]):
            printed = [float(v) for v in row[1:4]]
            exact = [run["frameworks"][n]["weight_grad_mean_abs"][i] for n in ("torch", "jax", "numpy")]
            # printed to 8 significant digits (%.7e): within half a unit of the last one
            assert printed == pytest.approx(exact, rel=5e-8), (run["use_shortcut"], i)


def test_the_means_agree_with_each_other_and_the_book_in_the_three_ways_cell(runs):
    from shortcut_gradients.plumbing.config import BOOK_RTOL, BOOK_WEIGHT_GRAD_MEANS

    lines = text(cells(runs[0]["shortcut"])["three-ways"]).removeprefix("[stdout] ").splitlines()
    for k, use_shortcut in enumerate((False, True)):
        block = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines[5 * k + 1 : 5 * k + 5]}
        assert list(block) == ["torch", "jax", "numpy", "book"]
        # printed to 8 significant digits (%.7e): within half a unit of the last one
        assert block["book"] == pytest.approx(BOOK_WEIGHT_GRAD_MEANS[("tanh", use_shortcut)], rel=5e-8)
        for name in ("torch", "jax", "numpy"):  # the book's own tolerance (shortcut_gradients.plumbing.config says why)
            assert block[name] == pytest.approx(block["book"], rel=BOOK_RTOL), (use_shortcut, name)


def test_the_slips_keep_every_mean_and_fail_the_elementwise_verdict(runs):
    """The closing section: a sign flip and a transposed dW leave the means as they are; the verdict names them."""
    output = text(cells(runs[0]["shortcut"])["means-miss"])
    named = {"sign_flipped": "sign flipped", "dW_transposed": "transposed"}  # the diagnosis each gets
    for slip, first in (("sign_flipped", "layers.4.0.weight"), ("dW_transposed", "layers.3.0.weight")):
        end = output.index(f"{slip} included: True")  # the book's check passes on the slip's means
        section, output = output[:end], output[end:]
        rows = [line.split() for line in section.splitlines() if line.startswith("layers.")]
        assert len(rows) == 10
        assert all(row[2] == row[3] for row in rows)  # numpy's mean and the slip's, to all 8 digits
        verdict = next(line for line in section.splitlines() if line.startswith("DISAGREE"))
        assert verdict.startswith(f"DISAGREE: {first}[")
        assert f"; {slip} is the odd one out; likely cause: {named[slip]}: " in verdict


# --- the exercises ------------------------------------------------------------------------------------------

CHECKS = {  # grading cell -> (its checks, the exercise cell each one grades)
    "grade-loss": [("loss", "exercise-loss")],
    "grade-gelu-tanh": [("gelu tanh", "exercise-gelu-tanh")],
    "grade-gelu-exact": [("gelu exact", "exercise-gelu-exact")],
    "grade-linear": [("linear", "exercise-linear")],
    "grade-backward": [("shortcut", "exercise-backward"), ("network", "exercise-backward")],
    "grade-layernorm": [("layernorm", "exercise-layernorm")],
}


def raise_line(cell) -> int:
    """The line of the cell's `raise NotImplementedError`, counted from 1 as IPython counts a cell's lines."""
    return next(i for i, line in enumerate(cell.source.splitlines(), 1) if "raise NotImplementedError" in line)


def test_the_shipped_exercises_are_blank_and_each_grading_cell_points_at_its_blank(runs):
    nb = cells(runs[0]["exercises"])
    for grading, checks in CHECKS.items():
        lines = text(nb[grading]).removeprefix("[stdout] ").splitlines()
        assert len(lines) == len(checks), grading
        for line, (check, exercise) in zip(lines, checks):
            cell = nb[exercise]
            assert line.split()[: len(check.split()) + 1] == [*check.split(), "todo"], line
            if check != "network":  # the network check stops at the loss's blank, in another cell
                assert f"not written yet: Cell In[{cell.execution_count}], line {raise_line(cell)} in " in line, line
    assert "not written yet: step loss: " in text(nb["grade-backward"])  # no cell named: not the wrong one
    summary = text(nb["grade-all"]).splitlines()
    assert len(summary) == 8 and summary[-1] == "0 of 7 checks ok; next: loss (todo)"


def test_the_blanks_say_what_the_skeletons_blanks_say():
    """Each blank's message is one of exercises/backprop.py's, so that the notebook and the file cannot drift."""

    def messages(tree) -> set[str]:
        return {
            node.exc.args[0].value if isinstance(node.exc.args[0], ast.Constant) else ast.literal_eval(node.exc.args[0])
            for node in ast.walk(tree)
            if isinstance(node, ast.Raise)
            and isinstance(node.exc, ast.Call)
            and ast.unparse(node.exc.func) == "NotImplementedError"
        }

    skeleton = messages(ast.parse(SKELETON.read_text()))
    notebook = set()
    for cell in make.read(EXERCISES).cells:
        if cell.id.startswith("exercise-"):
            notebook |= messages(ast.parse(cell.source))
    assert len(notebook) == 6 and notebook == skeleton


def test_the_exercises_filled_from_the_reference_get_full_marks(runs):
    nb = cells(runs[0]["exercises"])
    for grading, checks in CHECKS.items():
        lines = text(nb["filled-" + grading]).removeprefix("[stdout] ").splitlines()
        assert [line.split()[: len(c.split()) + 1] for line, (c, _) in zip(lines, checks)] == [
            [*c.split(), "ok"] for c, _ in checks
        ], lines
    assert text(nb["filled-grade-all"]).splitlines()[-1] == "PASSED: every step ok"


def test_a_wrong_rule_gets_its_diagnosis_and_a_raising_one_its_cell_and_line(runs):
    nb = cells(runs[0]["exercises"])
    wrong = text(nb["grade-slip"]).removeprefix("[stdout] ").splitlines()
    assert wrong[0].split()[:3] == ["loss", "wrong", "dout,"]
    assert wrong[-1].strip() == "diagnosis: off by a constant factor 1/2: a factor 2 missing: d(u^2)/du = 2u"
    (line,) = text(nb["grade-raises"]).removeprefix("[stdout] ").splitlines()  # one line, no traceback
    cell = nb["raises"]
    number = next(i for i, source in enumerate(cell.source.splitlines(), 1) if "@ dz2" in source)
    assert line.startswith(f"  linear     error  Cell In[{cell.execution_count}], line {number} in linear_backward: ")
    assert "ValueError: matmul: " in line and line.endswith("(step linear, x (1, 3), W (3, 3))")


def test_a_check_before_its_cell_has_run_says_which_cell_to_run(capsys):
    from shortcut_gradients.teaching import notebook as support

    assert support.check("linear", {}) == "todo"
    assert (
        capsys.readouterr().out
        == "  linear     todo   linear_backward is not defined: run the cell of exercise 4 first\n"
    )
    with pytest.raises(ValueError, match="grade\\(\\) takes one of loss, gelu tanh"):
        support.grade("gelu", {})


# --- filling the exercises from the reference -----------------------------------------------------------------


def reference_functions() -> dict:
    """The reference's functions and methods by qualified name, with their source."""
    text_ = REFERENCE.read_text()
    tree, found = ast.parse(text_), {}
    for scope, prefix in [(tree, "")] + [(c, c.name + ".") for c in tree.body if isinstance(c, ast.ClassDef)]:
        for node in scope.body:
            if isinstance(node, ast.FunctionDef):
                found[prefix + node.name] = (node, ast.get_source_segment(text_, node))
    return found


def filled_source(source: str, answers: dict) -> str:
    """An exercise cell with each blank's body replaced: the reference's body for a function it has, and a
    call of the reference's gelu_backward for the two one-form rules the notebook splits it into."""
    tree = ast.parse(source)
    for scope, prefix in [(tree, "")] + [(c, c.name + ".") for c in tree.body if isinstance(c, ast.ClassDef)]:
        for node in scope.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            docstring = node.body[:1] if ast.get_docstring(node) else []
            name = prefix + node.name
            if name in answers:
                node.body = docstring + answers[name][0].body
            else:
                form = name.removeprefix("gelu_backward_")
                assert form in ("tanh", "exact"), name
                node.body = docstring + ast.parse(f"return reference.gelu_backward(dout, x, {form!r})").body
    return "from impl_numpy import model as reference\n\n" + ast.unparse(tree)


def filled_exercises(nb) -> list:
    """Cells to run after the exercises' own: each exercise and grading cell again, every blank filled from the
    reference, then two slips, each with its grading cell."""
    import copy

    import nbformat

    answers = reference_functions()
    again = []
    for cell in nb.cells:
        if cell.id.startswith(("exercise-", "gelu-dispatch", "grade-")):
            cell = copy.deepcopy(cell)
            if cell.id.startswith("exercise-"):
                cell.source = filled_source(cell.source, answers)
            cell.id = "filled-" + cell.id
            again.append(cell)

    def slip(name: str, old: str, new: str) -> str:
        source = answers[name][1]
        assert source.count(old) == 1, old
        return source.replace(old, new)

    return again + [
        nbformat.v4.new_code_cell(slip("mse_loss_backward", "2.0 / output.size", "1.0 / output.size"), id="slip"),
        nbformat.v4.new_code_cell('grade("loss", globals())', id="grade-slip"),
        nbformat.v4.new_code_cell(
            slip("linear_backward", "db = dz2.sum(axis=0)", "db = dz2.sum(axis=0) @ dz2"), id="raises"
        ),
        nbformat.v4.new_code_cell('grade("linear", globals())', id="grade-raises"),
    ]


# --- python -m notebooks.make ---------------------------------------------------------------------------------


def test_make_stops_at_a_failing_cell_with_one_line(capsys):
    import nbformat

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1", id="fine"), nbformat.v4.new_code_cell("x / 0", id="boom")]
    )
    with pytest.raises(make.NotebookError) as caught:
        make.execute({"broken.ipynb": nb})
    assert str(caught.value) == "broken.ipynb: cell 1 (id boom) raised ZeroDivisionError: division by zero"
    assert make.main(["nonesuch.ipynb"]) == 2
    assert capsys.readouterr().err.count("\n") == 1

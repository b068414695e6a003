"""The three model.py files scroll together: one skeleton, the same names in the same order, about the same lines."""

import ast

import pytest

from shortcut_gradients.teaching import side_by_side

FILES = {fw: side_by_side.source_file(m) for fw, (m, _) in side_by_side.SOURCES.items()}
SOURCES = {fw: path.read_text(encoding="utf-8") for fw, path in FILES.items()}
SKELETON = ["gelu", "ExampleDeepNeuralNetwork", "mse_loss", "loss_and_grads"]  # in this order, in all three
MAX_LINES = 190  # small enough to read top to bottom
MAX_COLUMNS = 100  # three panes side by side on one screen; no line packed to meet MAX_LINES
MAX_OFFSET = 12  # lines between the earliest and the latest start of a shared definition


def starts(source: str) -> dict[str, int]:
    """{top-level name: the line its definition starts on}."""
    return {side_by_side._defined_name(n): n.lineno for n in ast.parse(source).body if side_by_side._defined_name(n)}


def test_the_skeleton_is_shared_in_order():
    for fw, source in SOURCES.items():
        names = [n for n in side_by_side.public_names(source) if n in SKELETON]
        assert names == SKELETON, fw
    assert side_by_side.shared_names(SOURCES) == SKELETON


@pytest.mark.parametrize("fw", FILES)
def test_each_file_reads_top_to_bottom(fw):
    assert SOURCES[fw].count("\n") <= MAX_LINES


@pytest.mark.parametrize("fw", FILES)
def test_each_file_fits_a_pane(fw):
    wide = {n: len(line) for n, line in enumerate(SOURCES[fw].splitlines(), 1) if len(line) > MAX_COLUMNS}
    assert wide == {}, f"{FILES[fw]}: lines over {MAX_COLUMNS} columns, {{line: length}}: {wide}"


@pytest.mark.parametrize("name", SKELETON)
def test_shared_definitions_start_on_about_the_same_line(name):
    lines = {fw: starts(source)[name] for fw, source in SOURCES.items()}
    assert max(lines.values()) - min(lines.values()) <= MAX_OFFSET, lines


def test_each_numpy_backward_sits_right_under_its_forward():
    tree = ast.parse(SOURCES["numpy"])
    names = [side_by_side._defined_name(n) for n in tree.body if side_by_side._defined_name(n)]
    backwards = [n for n in names if n.endswith("_backward")]
    assert {"gelu_backward", "linear_backward", "mse_loss_backward"} <= set(backwards)
    for name in backwards:
        assert names[names.index(name) - 1] == name.removesuffix("_backward"), names
    network = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ExampleDeepNeuralNetwork")
    methods = [n.name for n in network.body if isinstance(n, ast.FunctionDef)]
    assert methods[methods.index("forward") + 1] == "backward"


def test_the_numpy_reference_has_no_in_place_tricks():
    """The reference is for reading: no out= buffers and no cache popping (those live in impl_numpy/fast.py)."""
    tree = ast.parse(SOURCES["numpy"])
    keywords = {k.arg for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords}
    calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert "out" not in keywords and "pop" not in calls

"""The side-by-side page: the files line up, and the page is built from them, every line and every definition."""

import html.parser
import importlib.util
import itertools

import pytest

from shortcut_gradients import compare
from shortcut_gradients.teaching import side_by_side

pytest.importorskip("pygments", reason='the page needs pygments: pip install -e ".[html]"')

SOURCES = {fw: side_by_side.source_file(m).read_text(encoding="utf-8") for fw, (m, _) in side_by_side.SOURCES.items()}


class Cells(html.parser.HTMLParser):
    """{(framework, row name): text} of every cell's code, or of its note, as the browser shows it."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells, self.key, self.depth, self.skip = {}, None, 0, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("class") == "cell":
            self.key, self.depth = (attrs["data-framework"], attrs["data-name"]), 0
            self.cells[self.key] = ""
        elif self.key and tag == "div":
            self.depth += 1
            self.skip += attrs.get("class") == "where"  # the line-number caption is not code

    def handle_endtag(self, tag):
        if self.key and tag == "div":
            if self.depth == 0:
                self.key = None
            else:
                self.depth -= 1
                self.skip = 0

    def handle_data(self, data):
        if self.key and not self.skip:
            self.cells[self.key] += data


@pytest.fixture(scope="module")
def cells():
    parser = Cells()
    parser.feed(side_by_side.build_page())
    return parser.cells


@pytest.mark.parametrize("a, b", list(itertools.combinations(SOURCES, 2)), ids=lambda fw: fw)
def test_names_two_implementations_share_come_in_the_same_order(a, b):
    names_a, names_b = side_by_side.public_names(SOURCES[a]), side_by_side.public_names(SOURCES[b])
    shared = set(names_a) & set(names_b)
    assert [n for n in names_a if n in shared] == [n for n in names_b if n in shared]
    assert {"gelu", "mse_loss", "loss_and_grads"} <= shared  # the names all three must have


def test_rows_start_at_the_names_all_three_share():
    names, texts = side_by_side.rows()
    assert names[1:] == side_by_side.shared_names(SOURCES)
    assert {"gelu", "ExampleDeepNeuralNetwork", "mse_loss", "loss_and_grads"} <= set(names)
    for fw in SOURCES:
        for name in names[1:]:
            starts = (f"def {name}(", f"class {name}")
            first_code = next(line for line in texts[fw][name][1].splitlines() if line and not line.startswith("#"))
            assert first_code.startswith(starts), (fw, name)


@pytest.mark.parametrize("fw", SOURCES)
def test_the_column_is_the_whole_file_in_order(cells, fw):
    """Generated from the file, nothing left out, nothing added: the column's non-blank lines,
    row by row down the page, are the file's non-blank lines."""
    names, texts = side_by_side.rows()
    shown = [line for name in names if name in texts[fw] for line in cells[(fw, name)].splitlines()]
    assert [line for line in shown if line.strip()] == [line for line in SOURCES[fw].splitlines() if line.strip()]


def test_line_numbers_point_at_the_definition():
    _, texts = side_by_side.rows()
    for fw, source in SOURCES.items():
        lines = source.splitlines(keepends=True)
        for first, text in texts[fw].values():
            assert "".join(lines[first - 1 : first - 1 + text.count("\n")]) == text


def test_a_wrapped_line_hangs_under_its_own_indentation(cells):
    """Each line's span is padded past its own leading spaces, so a long line wraps under its code, not column 0."""
    page = side_by_side.build_page()
    _, texts = side_by_side.rows()
    text = texts["numpy"]["loss_and_grads"][1].strip("\n")
    for k, line in enumerate(text.splitlines(), start=1):
        n = len(line) - len(line.lstrip(" ")) + 4
        assert f'<span id="numpy-loss_and_grads-{k}" style="padding-left:{n}ch;text-indent:-{n}ch">' in page


def test_cli_writes_the_page(tmp_path, capsys):
    path = tmp_path / "page.html"
    assert compare.main(["--side-by-side", str(path), "--frameworks", "numpy"]) == 0
    assert path.read_text(encoding="utf-8") == side_by_side.build_page()
    assert capsys.readouterr().err == f"wrote {path}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]  # no temporary file beside it


def test_without_pygments_the_flag_names_the_extra(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pygments" else real(name, *a))
    code = compare.main(["--side-by-side", str(tmp_path / "page.html"), "--frameworks", "numpy"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and not list(tmp_path.iterdir())
    assert (
        err
        == 'compare.py: error: --side-by-side highlights with pygments, which is not installed: pip install -e ".[html]"\n'
    )


def test_wrong_suffix_exits_2(tmp_path, capsys):
    assert compare.main(["--side-by-side", str(tmp_path / "page.htm"), "--frameworks", "numpy"]) == 2
    assert "--side-by-side writes a .html file" in capsys.readouterr().err

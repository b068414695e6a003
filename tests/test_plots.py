"""The pictures: real PNGs of the promised size, carrying exactly the computed numbers; every bad flag exits 2."""

import importlib.util
import json
import struct

import numpy as np
import pytest
from conftest import needs

from shortcut_gradients import compare
from shortcut_gradients.teaching import outputs, plots

pytest.importorskip("matplotlib", reason='the plots need matplotlib: pip install -e ".[plot]"')

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, after checking that it is a PNG at all."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def lines_by_label(fig) -> dict:
    return {line.get_label(): line for line in fig.axes[0].get_lines()}


def run(argv, capsys):
    code = compare.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def the_fast_frameworks():
    needs("numpy"), needs("torch")


def test_layer_plot_is_a_png_of_the_promised_size_with_the_reported_numbers(tmp_path, capsys):
    path = tmp_path / "layers.png"
    code, out, err = run(["--plot", str(path), "--frameworks", "numpy,torch"], capsys)
    assert code == 0, err
    assert png_size(path) == plots.PIXELS
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed, not left behind

    report = json.loads(run(["--frameworks", "numpy,torch", "--json"], capsys)[1])
    figure = plots.layer_gradients_figure(
        outputs.layer_series(report), layer_sizes=(3,) * 5 + (1,), gelu_form="tanh", dtype="float32"
    )
    lines = lines_by_label(figure)
    offsets = plots.dodge(["numpy", "torch", "book"])
    assert offsets["numpy"] < offsets["torch"] < offsets["book"] and offsets["torch"] == 0  # centred
    for r in report["runs"]:
        setting = plots.SETTING[r["use_shortcut"]]
        for name, fw in r["frameworks"].items():
            line = lines[f"{name} {setting}"]
            np.testing.assert_array_equal(line.get_ydata(), fw["weight_grad_mean_abs"])
            np.testing.assert_array_equal(line.get_xdata(), np.arange(5) + offsets[name])
            assert f"{fw['weight_grad_mean_abs'][0]:.7e}" in out  # the same numbers as the printed table
        np.testing.assert_array_equal(lines[f"book {setting}"].get_ydata(), r["book"]["values"])


SMALL_STUDY = ["--sweep-depth", "2:4", "--sweep-seeds", "3", "--sweep-widths", "3,4", "--frameworks", "numpy"]


def test_depth_study_plot_carries_the_studys_numbers(tmp_path, capsys):
    path = tmp_path / "depth.png"
    code, out, err = run([*SMALL_STUDY, "--sweep-plot", str(path), "--json"], capsys)
    assert code == 0, err
    assert png_size(path) == plots.DEPTH_PIXELS
    assert "depth study: width 4, depth 4" in err  # progress goes to stderr
    assert err.splitlines()[-1] == f"wrote {path}"  # and so does the confirmation, once the file is whole
    study = json.loads(out)["sweep"]
    assert study["depths"] == [2, 3, 4] and study["widths"] == [3, 4] and study["seeds"] == [123, 124, 125]

    figure = plots.depth_study_figure(study)
    for column, panel in enumerate(study["panels"]):
        ax, dead_ax = figure.axes[column], figure.axes[len(study["panels"]) + column]
        assert f"width {panel['width']}" in ax.get_title()
        lines = {line.get_label(): line for line in ax.get_lines()}
        dead_lines = {line.get_label(): line for line in dead_ax.get_lines()}
        assert len(ax.collections) == len(panel["variants"])  # one band per variant
        for (name, r), band in zip(panel["variants"].items(), ax.collections):
            line = lines[plots.fit_label(name, r["fit"], 3 * 3)]
            np.testing.assert_array_equal(line.get_xdata(), [2, 3, 4])
            np.testing.assert_array_equal(line.get_ydata(), r["median"])
            # The band's outline runs along the 75th percentiles and back along the 25th.
            edge = band.get_paths()[0].vertices[:, 1]
            assert set(r["q75"]) <= set(edge) and set(r["q25"]) <= set(edge)
            np.testing.assert_array_equal(dead_lines[name].get_ydata(), 100 * np.array(r["dead"]) / 3)

    text = outputs.format_learning({"sweep": study})  # what compare.py prints after the report
    for panel in study["panels"]:
        for name, r in panel["variants"].items():
            assert f"{r['median'][-1]:.2e} [{r['q25'][-1]:.2e}, {r['q75'][-1]:.2e}]" in text  # the table, as drawn
            assert f"{name}: x{r['fit']['factor']:.3f} per layer" in text


def made_up_study(medians, q25s, dead) -> dict:
    """A one-width study by hand: 4 seeds at depths 2..5, one variant."""
    fit = {"factor": 1.5, "low": 1.25, "high": 1.75, "dead": sum(dead)}
    run = {"median": medians, "q25": q25s, "q75": [2 * m + 1 for m in medians], "dead": dead, "fit": fit}
    return {
        "depths": [2, 3, 4, 5],
        "seeds": [0, 1, 2, 3],
        "gelu": "tanh",
        "dtype": "float32",
        "confidence": 0.95,
        "panels": [{"width": 3, "variants": {"shortcut": run}}],
    }


def test_dead_draws_break_the_line_run_the_band_off_the_axis_and_are_counted():
    study = made_up_study(medians=[0.5, 0.25, 0.0, 2.0], q25s=[0.25, 0.0, 0.0, 1.0], dead=[0, 2, 3, 1])
    figure = plots.depth_study_figure(study)
    ax = figure.axes[0]
    (line,) = ax.get_lines()
    assert line.get_label() == "shortcut: x1.500 per layer [1.250, 1.750]; 6 of 16 draws dead"
    np.testing.assert_array_equal(line.get_ydata(), [0.5, 0.25, np.nan, 2.0])  # a median of 0 breaks the line
    edge = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert edge.min() < ax.get_ylim()[0]  # a 25th percentile of 0 is drawn below the axis
    np.testing.assert_array_equal(figure.axes[1].get_lines()[0].get_ydata(), [0, 50, 75, 25])


BAD = {
    "not-png": (["--plot", "{tmp}/x.jpg"], "--plot writes a .png file"),
    "no-folder": (["--plot", "{tmp}/missing/x.png"], "does not exist"),
    "a-folder": (["--sweep-plot", "{tmp}/d.png"], "names a folder"),
    "same-file": (["--plot", "{tmp}/x.png", "--sweep-plot", "{tmp}/x.png"], "--plot and --sweep-plot both name"),
    "empty-range": (["--sweep-depth", "9:3", "--sweep-plot", "{tmp}/x.png"], "--sweep-depth needs 2 <= FIRST <= LAST"),
    "depth-1": (["--sweep-depth", "1:3", "--sweep-plot", "{tmp}/x.png"], "(depth 1 has no shortcut)"),
    "empty-name": (["--sweep-plot", ""], "--sweep-plot was given an empty file name"),
    "long-study": (["--sweep-depth", "2:256", "--sweep-seeds", "4096", "--sweep-widths", "3"], "--allow-long"),
    "bad-syntax": (["--sweep-depth", "2-9", "--plot", "{tmp}/x.png"], "--sweep-depth takes FIRST:LAST"),
    "float-depth": (["--sweep-depth", "2:8.5", "--sweep-plot", "{tmp}/x.png"], "--sweep-depth takes FIRST:LAST"),
    "too-deep": (["--sweep-depth", "2:1000"], "--sweep-depth needs 2 <= FIRST <= LAST <= 256"),
    "zero-seeds": (["--sweep-seeds", "0", "--sweep-plot", "{tmp}/x.png"], "--sweep-seeds takes a number"),
    "float-seeds": (["--sweep-seeds", "2.5", "--sweep-plot", "{tmp}/x.png"], "invalid int value: '2.5'"),
    "bad-widths": (["--sweep-widths", "3,x", "--sweep-plot", "{tmp}/x.png"], "--sweep-widths takes distinct"),
    "empty-widths": (["--sweep-widths", "", "--sweep-plot", "{tmp}/x.png"], "--sweep-widths takes distinct"),
    "twice-a-width": (["--sweep-widths", "3,3"], "--sweep-widths takes distinct"),
    "too-big": (["--sweep-widths", "1024", "--sweep-depth", "2:256"], "would hold 8,589,934,592 weights"),
    "with-weights": (
        ["--sweep-depth", "2:3", "--weights", "shortcut_gradients/fixtures/book_seed123.safetensors"],
        "leave out --weights",
    ),
}


@pytest.mark.parametrize("argv, message", BAD.values(), ids=BAD.keys())
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "d.png").mkdir()
    before = set(tmp_path.rglob("*"))
    code, out, err = run([a.format(tmp=tmp_path) for a in argv] + ["--frameworks", "numpy"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("flag", ["--plot", "--sweep-plot"])
def test_without_matplotlib_the_flag_names_the_extra(tmp_path, capsys, monkeypatch, flag):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, out, err = run([flag, str(tmp_path / "x.png"), "--frameworks", "numpy"], capsys)
    assert code == 2 and out == ""
    assert err == f'compare.py: error: {flag} draws with matplotlib, which is not installed: pip install -e ".[plot]"\n'
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def fail(self, *args, **kwargs):
        open(args[0], "wb").write(b"\x89PNG half")  # a partial file, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError):
        plots.save_png(Figure(), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())

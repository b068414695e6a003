"""The pictures: real PNGs of the promised size, carrying exactly the computed numbers; every bad flag exits 2."""

import importlib.util
import json
import struct

import numpy as np
import pytest
from conftest import needs

import compare
from teaching import explain, outputs, plots

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


def test_sweep_plot_carries_the_sweep_and_its_fitted_line(tmp_path, capsys):
    path = tmp_path / "depth.png"
    code, out, err = run(["--sweep-depth", "2:4", "--sweep-plot", str(path), "--frameworks", "numpy"], capsys)
    assert code == 0, err
    assert png_size(path) == plots.PIXELS
    assert "sweep: depth 4 (3/3" in err  # progress goes to stderr
    assert "numpy without shortcut: layer 0's mean |dL/dW| changes by a factor" in out

    sweep = explain.sweep_depth(
        {"numpy": needs("numpy")}, [2, 3, 4], width=3, d_out=1, seed=123, gelu_form="tanh", dtype="float32"
    )
    sweep["fits"] = explain.fit_sweep(sweep)
    lines = lines_by_label(plots.sweep_figure(sweep, gelu_form="tanh", dtype="float32"))
    np.testing.assert_array_equal(lines["numpy without shortcut"].get_ydata(), sweep["values"]["numpy"]["off"])
    np.testing.assert_array_equal(lines["numpy with shortcut"].get_xdata(), [2, 3, 4])
    fit = sweep["fits"]["numpy"]["off"]
    fitted = lines[f"numpy fit without shortcut: x{fit['factor']:.3g} per layer"].get_ydata()
    np.testing.assert_allclose(fitted, 10 ** (fit["intercept"] + fit["slope"] * np.array([2, 3, 4])), rtol=1e-15)
    for value in sweep["values"]["numpy"]["off"]:
        assert f"{value:.4g}" in out  # the table prints what the picture shows


def test_zero_and_overflowed_values_break_the_line_and_are_counted_in_the_label():
    sweep = {"depths": [2, 3, 4, 5], "values": {"numpy": {"off": [1e-3, 1e-4, 1e-5, 0.0], "on": [0.5, 0.0, 0.7, None]}}}
    sweep["fits"] = explain.fit_sweep(sweep)
    lines = lines_by_label(plots.sweep_figure(sweep, gelu_form="tanh", dtype="float32"))
    shown = lines["numpy with shortcut (2 at 0 or overflowed, not shown)"].get_ydata()
    np.testing.assert_array_equal(shown, [0.5, np.nan, 0.7, np.nan])
    row5 = [line for line in explain.format_sweep(sweep, sweep["fits"]).splitlines() if line.startswith("    5 ")]
    assert row5 == [f"    5{0:>14}{'overflow':>14}"]


BAD = {
    "not-png": (["--plot", "{tmp}/x.jpg"], "--plot writes a .png file"),
    "no-folder": (["--plot", "{tmp}/missing/x.png"], "does not exist"),
    "a-folder": (["--sweep-plot", "{tmp}/d.png"], "is a directory"),
    "same-file": (["--plot", "{tmp}/x.png", "--sweep-plot", "{tmp}/x.png"], "must name different files"),
    "bad-range": (["--sweep-depth", "9:3"], "--sweep-depth needs 1 <= FIRST <= LAST"),
    "bad-syntax": (["--sweep-depth", "2-9", "--plot", "{tmp}/x.png"], "--sweep-depth takes FIRST:LAST"),
    "with-weights": (["--sweep-depth", "2:3", "--weights", "fixtures/book_seed123.safetensors"], "leave out --weights"),
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

"""The probe (shortcut_gradients/verdict/probes.py): seeded, small, and shaped so that each classic slip shows."""

import json

import numpy as np
import pytest
from conftest import ROOT, needs

from shortcut_gradients import compare
from shortcut_gradients.verdict import probes

SLIPS = ROOT / "tests" / "slips"


@pytest.mark.parametrize("norm", ["none", "pre"])
def test_the_probe_is_seeded_and_reproducible(norm):
    a, b, other = probes.draw(123, norm), probes.draw(123, norm), probes.draw(124, norm)
    for left, right in zip(a.params, b.params):
        assert all(np.array_equal(p, q) for p, q in zip(left, right))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.target, b.target)
    assert not np.array_equal(a.x, other.x)
    assert all(len(layer) == (4 if norm == "pre" else 2) for layer in a.params)


def test_the_probe_has_what_each_slip_needs():
    probe = probes.draw(123)
    B, T, d_in = probe.x.shape  # a 3-D batch
    rows = probe.x.reshape(B * T, d_in)
    assert B > 1 and T > 1 and len(np.unique(rows, axis=0)) == B * T  # distinct rows: a bias from one row shows
    assert probe.target.shape == (B, T, probes.LAYER_SIZES[-1]) and probe.target.shape[-1] > 1  # several outputs
    shapes = [W.shape for W, _ in probe.params]
    assert any(d_out != d_in for d_out, d_in in shapes) and any(d_out == d_in for d_out, d_in in shapes)
    # GELU's tail: past |z| = 3 the two forms, and a float32-accurate erf, part the most (relative to the slope).
    assert probe.largest_preactivation > 3
    assert probe.dtype == "float64" and probe.x.dtype == np.float64
    assert "(2, 3, 3) batch" in probe.describe()


def run(argv, capsys):
    code = compare.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_outside_code_is_also_checked_on_the_probe_and_says_so(capsys):
    needs("torch")
    code, out, _ = run(["--frameworks", f"numpy,torch,{SLIPS / 'right.py'}", "--shortcut", "on"], capsys)
    assert code == 0
    probe_line = next(line for line in out.splitlines() if line.startswith("Also checked on the batch probe"))
    assert "every implementation compared agrees" in probe_line
    code, out, _ = run(["--frameworks", f"numpy,torch,{SLIPS / 'right.py'}", "--shortcut", "on", "--json"], capsys)
    report = json.loads(out)
    assert report["probes"]["agree"] and report["probes"]["input_shape"] == [2, 3, 3]
    assert [r["use_shortcut"] for r in report["probes"]["runs"]] == [False, True]  # both, whatever the run's


def test_no_probes_without_outside_code_or_when_asked(capsys):
    needs("torch")
    code, out, _ = run(["--frameworks", "numpy,torch", "--shortcut", "on", "--json"], capsys)
    assert code == 0 and "probes" not in json.loads(out)
    argv = ["--frameworks", f"numpy,{SLIPS / 'bias_one_row.py'}", "--shortcut", "on", "--no-probes"]
    code, out, _ = run(argv, capsys)
    # The book's one row cannot see a bias taken from one row: it agrees, and says what it cannot see.
    assert code == 0
    assert "a bias gradient taken from one row" in out.splitlines()[-1]

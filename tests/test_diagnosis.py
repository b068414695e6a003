"""Naming the cause of a disagreement (shortcut_gradients/diagnosis.py, on the grader's diagnoses).

Each outside implementation in tests/slips/ carries one classic slip; on the probe every one of
them must be caught and named. In-process here (the slips are plain functions), so each case
takes a fraction of a second; tests/test_byo.py runs the same through compare.py's command.
"""

import functools
import sys

import numpy as np
import pytest
from conftest import ROOT

import impl_numpy
import impl_numpy.fast
from shortcut_gradients import diagnosis
from shortcut_gradients.verdict import decide, probes
from shortcut_gradients.verdict.run import gather

sys.path.insert(0, str(ROOT / "tests" / "slips"))
import mlp  # noqa: E402  (tests/slips/mlp.py: an outside implementation, one slip switched on by name)

# slip in tests/slips/mlp.py -> the diagnosis it must get.
NAMED = {
    "bias-one-row": "bias-one-row",
    "loss-summed": "factor",
    "transposed": "transposed",
    "gelu-form": "gelu-form",
    "float32-constant": "float32-constants",
    "identity-missing": "identity-missing",
    "sign": "sign",
    "mean-var-constant": "mean-var-constant",
}


def probe_runs(slip, norm="none", gelu="tanh") -> list[dict]:
    drawn = probes.draw(123, norm)
    fns = {
        "numpy": impl_numpy.loss_and_grads,
        "numpy-fast" if norm == "none" else "again": impl_numpy.loss_and_grads
        if norm == "pre"
        else impl_numpy.fast.loss_and_grads,
        "mine": functools.partial(mlp.loss_and_grads, slip=slip),
    }
    return gather(drawn.dtype, gelu, norm, "both", (drawn.params, drawn.x, drawn.target), fns, False)


def test_the_outside_implementation_is_right_without_its_slip():
    for norm in ("none", "pre"):
        assert all(r["agree"] for r in probe_runs(None, norm)), norm


@pytest.mark.parametrize("slip", list(NAMED), ids=list(NAMED))
def test_each_slip_is_caught_and_named(slip):
    norm = "pre" if slip == "mean-var-constant" else "none"
    decided, entry = decide.overall(probe_runs(slip, norm))
    assert decided.status == decide.DISAGREE
    assert decided.first_mismatch["odd_one_out"] == "mine"
    assert entry["diagnosis"]["framework"] == "mine"
    assert entry["diagnosis"]["slip"] == NAMED[slip], entry["diagnosis"]["text"]


def test_the_summed_loss_names_its_factor():
    _, entry = decide.overall(probe_runs("loss-summed"))
    assert "N = 12" in entry["diagnosis"]["text"]  # (2, 3) rows x 2 outputs, averaged over in the loss


def test_unknown_is_an_honest_answer():
    """A gradient off by noise no slip explains is "unknown", not the nearest name."""
    drawn = probes.draw(123)
    data = (drawn.params, drawn.x, drawn.target)
    kw = {"use_shortcut": True, "gelu_form": "tanh"}
    right = impl_numpy.loss_and_grads(*data, **kw, dtype="float64")
    wrong = dict(right, dW=list(right["dW"]))
    wrong["dW"][2] = right["dW"][2] + np.random.default_rng(0).normal(size=right["dW"][2].shape)
    first = {"tensor": "layers.2.0.weight", "frameworks": ["numpy", "mine"], "odd_one_out": "mine"}
    found = diagnosis.of_mismatch(first, {"numpy": right, "mine": wrong}, data, kw, "float64")
    assert found["slip"] == "unknown"

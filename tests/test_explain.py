"""The gradient-path breakdown (shortcut_gradients/teaching/explain.py): its figures against NumPy's backward and torch's autograd."""

import math

import numpy as np
import pytest
from conftest import needs

from shortcut_gradients import compare
from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, BOOK_WEIGHT_GRAD_MEANS
from shortcut_gradients.teaching import explain

# float64 throughout the cross-checks: the breakdown repeats NumPy's backward step for
# step, and torch computes the same sums in a different order, so they agree to about
# 1e-16 relative; 1e-12 (the project's float64 promise) passes that and catches any wrong
# factor, sign or missing path, which moves a gradient by far more.
RTOL64 = 1e-12
BOOK_PARAMS = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
BOOK_X, BOOK_TARGET = weights.default_input(3), weights.default_target(1)
CASES = [(s, g) for s in (False, True) for g in ("tanh", "exact")]
CASE_IDS = [f"{'shortcut' if s else 'plain'}-{g}" for s, g in CASES]


def book_paths(use_shortcut, gelu_form, dtype="float64", x=BOOK_X, params=BOOK_PARAMS):
    return explain.gradient_paths(params, x, BOOK_TARGET, use_shortcut=use_shortcut, gelu_form=gelu_form, dtype=dtype)


@pytest.mark.parametrize("use_shortcut, gelu_form", CASES, ids=CASE_IDS)
def test_paths_give_numpys_gradients(use_shortcut, gelu_form):
    """The breakdown is NumPy's backward pass: same dW, db and input gradient."""
    expected = needs("numpy")(
        BOOK_PARAMS, BOOK_X, BOOK_TARGET, use_shortcut=use_shortcut, gelu_form=gelu_form, dtype="float64"
    )
    layers = book_paths(use_shortcut, gelu_form)["layers"][::-1]  # back to forward order
    for i, p in enumerate(layers):
        np.testing.assert_allclose(p.dW, expected["dW"][i], rtol=RTOL64, atol=0)
        np.testing.assert_allclose(p.db, expected["db"][i], rtol=RTOL64, atol=0)
    np.testing.assert_allclose(layers[0].dx, expected["dx"], rtol=RTOL64, atol=0)


@pytest.mark.parametrize("use_shortcut, gelu_form", CASES, ids=CASE_IDS)
def test_every_layer_input_gradient_matches_autograd(use_shortcut, gelu_form):
    """dL/dx at each layer's input is what torch's autograd gives for the network from that layer on."""
    torch_grads = needs("torch")
    paths = book_paths(use_shortcut, gelu_form)
    for p in paths["layers"]:
        sub = BOOK_PARAMS[p.layer :]
        auto = torch_grads(sub, p.x, BOOK_TARGET, use_shortcut=use_shortcut, gelu_form=gelu_form, dtype="float64")
        np.testing.assert_allclose(p.dx, auto["dx"], rtol=RTOL64, atol=0, err_msg=f"layer {p.layer} dx")
        np.testing.assert_allclose(p.dW, auto["dW"][0], rtol=RTOL64, atol=0, err_msg=f"layer {p.layer} dW")


@pytest.mark.parametrize("use_shortcut, gelu_form", CASES, ids=CASE_IDS)
def test_through_path_is_the_layers_own_vector_jacobian_product(use_shortcut, gelu_form):
    """'through' is autograd's dL/dx of gelu(x W^T + b) alone, given dy; 'identity' is dy or nothing."""
    needs("torch")
    import torch

    from impl_torch.model import gelu

    for p in book_paths(use_shortcut, gelu_form)["layers"]:
        W, b = (torch.from_numpy(np.asarray(a, np.float64)) for a in BOOK_PARAMS[p.layer])
        x = torch.from_numpy(p.x).requires_grad_(True)
        (through,) = torch.autograd.grad(gelu(x @ W.T + b, gelu_form), x, grad_outputs=torch.from_numpy(p.dy))
        np.testing.assert_allclose(p.through, through.numpy(), rtol=RTOL64, atol=0, err_msg=f"layer {p.layer}")
        # The book's `if`: the shortcut is taken exactly where the layer keeps the width (not the 3 -> 1 layer).
        assert p.shortcut == (use_shortcut and p.layer < len(BOOK_PARAMS) - 1)
        np.testing.assert_array_equal(p.identity, p.dy if p.shortcut else np.zeros_like(p.through))
        np.testing.assert_array_equal(p.dx, p.through + p.identity)


def test_running_product_and_layer0_factorisation_on_the_book_network():
    """The breakdown's ratios multiply out: running is the product of the gains above, and with
    one input row, mean|dW_0| = mean|dout| * running * gelu' * mean|x| exactly."""
    report = explain.explain(
        BOOK_PARAMS, BOOK_X, BOOK_TARGET, settings=(False, True), gelu_form="tanh", dtype="float64"
    )
    for run in report["runs"]:
        rows = run["layers"]
        assert [r["layer"] for r in rows] == [4, 3, 2, 1, 0] and run["rows"] == 1
        for k, r in enumerate(rows):
            # Products of up to five float64 ratios: a few ulps apart, hence 1e-12.
            assert math.isclose(r["running"], math.prod(a["gain"] for a in rows[:k]), rel_tol=RTOL64)
        first = rows[-1]
        product = run["dout"] * first["running"] * first["gelu"] * first["x"]
        assert math.isclose(first["dW"], product, rel_tol=RTOL64)
        # And layer 0's figure is the book's printed one (float32 print: BOOK_RTOL-sized differences).
        book = BOOK_WEIGHT_GRAD_MEANS[("tanh", run["use_shortcut"])][0]
        assert math.isclose(first["dW"], book, rel_tol=1e-6)


def test_layer0_without_shortcut_vanishes_through_the_running_product():
    """The issue's claim, in numbers: about 0.0002 against about 0.22, and the running product
    (not the GELU slope or the input, which barely differ) carries most of the ratio."""
    report = explain.explain(
        BOOK_PARAMS, BOOK_X, BOOK_TARGET, settings=(False, True), gelu_form="tanh", dtype="float32"
    )
    off, on = (run["layers"][-1] for run in report["runs"])
    assert 1.5e-4 < off["dW"] < 2.5e-4 and 0.2 < on["dW"] < 0.25
    assert on["running"] / off["running"] > 50  # 89.67 measured
    assert 0.9 < on["gelu"] / off["gelu"] < 1.1 and on["x"] == off["x"]
    text = explain.format_explain(report)
    assert f"{on['dW'] / off['dW']:.4g} times larger" in text
    assert f"{off['running']:.4g}" in text and f"{on['running']:.4g}" in text


def test_batch_dimensions_give_numpys_gradients_and_no_single_row_factorisation():
    x = np.random.default_rng(0).normal(size=(2, 4, 3))  # (2, 4, 3): two leading dimensions
    expected = needs("numpy")(BOOK_PARAMS, x, BOOK_TARGET, use_shortcut=True, gelu_form="tanh", dtype="float64")
    layers = book_paths(True, "tanh", x=x)["layers"][::-1]
    for i, p in enumerate(layers):
        np.testing.assert_allclose(p.dW, expected["dW"][i], rtol=RTOL64, atol=0)
    report = explain.explain(BOOK_PARAMS, x, BOOK_TARGET, settings=(True,), gelu_form="tanh", dtype="float64")
    assert report["runs"][0]["rows"] == 8
    assert not any(line.startswith("Layer 0") for line in explain.why_layer0(report))


def test_cli_explain_prints_the_breakdown_and_json_carries_it(capsys):
    code = compare.main(["--explain", "--frameworks", "numpy"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Without shortcut: loss" in out and "With shortcut: loss" in out and "times larger" in out
    code = compare.main(["--explain", "--frameworks", "numpy", "--json", "--shortcut", "on"])
    import json

    report = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["use_shortcut"] for r in report["explain"]["runs"]] == [True]
    layer0 = report["explain"]["runs"][0]["layers"][-1]
    assert math.isclose(layer0["dW"], report["runs"][0]["frameworks"]["numpy"]["weight_grad_mean_abs"][0], rel_tol=0)

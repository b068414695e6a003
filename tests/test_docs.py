"""docs/backprop.md: every number in it is computed here, and every identity it states is checked.

Numbers: the page quotes figures to 4 significant digits (`f"{v:.4g}"`). CLAIMS computes
each quoted figure from the code, and two checks tie them together: every claim appears in
the page, and every decimal number in the page is a claim (or the one named constant).
The `--explain` excerpt must be, character for character, what the code prints now.
"""

import importlib
import math
import re
from pathlib import Path

import numpy as np
import pytest

from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED
from shortcut_gradients.teaching import explain

DOC = (Path(__file__).resolve().parent.parent / "docs" / "backprop.md").read_text(encoding="utf-8")
PARAMS = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
X, TARGET = weights.default_input(3), weights.default_target(1)
DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e[-+]?\d+)?")
CONSTANTS = {"0.044715": "GELU_CUBIC"}  # quoted in the formula, checked against impl_numpy.model below
NOT_FIGURES = {"4.4"}  # the book's section number


def fmt(v: float) -> str:
    return f"{v:.4g}"


def explain_block() -> str:
    """The fenced excerpt that starts with 'Gradient paths,'."""
    match = re.search(r"```text\n(Gradient paths,.*?)\n```", DOC, re.S)
    assert match, "docs/backprop.md lost its --explain excerpt"
    return match[1]


def claims(dtype: str) -> dict[str, str]:
    """Every figure the page quotes outside the excerpt, by what it is, computed in `dtype`."""
    from impl_numpy import model

    report = explain.explain(PARAMS, X, TARGET, settings=(False, True), gelu_form="tanh", dtype=dtype)
    off, on = report["runs"]
    c = {}
    for run, tag in ((off, "off"), (on, "on")):
        paths = explain.gradient_paths(
            PARAMS, X, TARGET, use_shortcut=run["use_shortcut"], gelu_form="tanh", dtype=dtype
        )
        last = paths["layers"][0]  # the 3 -> 1 layer, one element each
        c |= {
            f"output {tag}": paths["output"].item(),
            f"loss {tag}": run["loss"],
            f"dout {tag}": run["dout"],
            f"z4 {tag}": last_layer_input_and_z(PARAMS, run["use_shortcut"], dtype)[1].item(),
            f"gelu'(z4) {tag}": run["layers"][0]["gelu"],
            f"dz4 {tag}": last.dz.item(),
        }
        first = run["layers"][-1]
        c |= {f"layer0 {k} {tag}": first[k] for k in ("dW", "running", "gelu", "x")}
    c["gain min off"] = min(r["gain"] for r in off["layers"])
    c["gain max off"] = max(r["gain"] for r in off["layers"])
    c["gain min on, layers 3-0"] = min(r["gain"] for r in on["layers"][1:])
    c["gain max on, layers 3-0"] = max(r["gain"] for r in on["layers"][1:])
    layer3 = on["layers"][1]
    c |= {
        "layer3 identity on": layer3["identity"],
        "layer3 through on": layer3["through"],
        "layer3 dx on": layer3["dx"],
    }
    for part in ("dout", "running", "gelu"):
        numerator = on["dout"] if part == "dout" else on["layers"][-1][part]
        denominator = off["dout"] if part == "dout" else off["layers"][-1][part]
        c[f"ratio {part}"] = numerator / denominator
    c["ratio dW"] = on["layers"][-1]["dW"] / off["layers"][-1]["dW"]
    for form in ("tanh", "exact"):
        for z in (0.0, 1.0, -1.0):
            zz = np.array([z], dtype)
            c[f"gelu'({z}) {form}"] = model.gelu_backward(np.ones_like(zz), zz, form).item()
        c[f"gelu(1.0) {form}"] = model.gelu(np.array([1.0], dtype), form).item()
    quoted = {k: fmt(v) for k, v in c.items()}
    # "about 0.0002 without the shortcut and about 0.22 with it": the same figures, rounded further.
    quoted |= {"layer0 dW off, about": f"{c['layer0 dW off']:.1g}", "layer0 dW on, about": f"{c['layer0 dW on']:.2g}"}
    return quoted


def last_layer_input_and_z(params, use_shortcut: bool, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The last layer's input x and pre-activation z, from impl_numpy's forward cache, on the book input."""
    from impl_numpy import model

    params = [(W.astype(dtype), b.astype(dtype)) for W, b in params]
    network = model.ExampleDeepNeuralNetwork(params, use_shortcut, "tanh")
    network.forward(X.astype(dtype))
    x, z, _ = network.cache[-1]
    return x, z


CLAIMS32 = claims("float32")


def test_the_explain_excerpt_is_what_the_code_prints():
    report = explain.explain(PARAMS, X, TARGET, settings=(False, True), gelu_form="tanh", dtype="float32")
    assert explain_block() == explain.format_explain(report)


def test_float32_and_float64_quote_the_same_figures():
    """The page says the two agree to 4 digits; it quotes one set of numbers for both."""
    assert claims("float64") == CLAIMS32


@pytest.mark.parametrize("name", list(CLAIMS32), ids=list(CLAIMS32))
def test_every_claim_is_in_the_page(name):
    assert re.search(rf"(?<![\w.]){re.escape(CLAIMS32[name])}(?![\d])", DOC), f"{name} = {CLAIMS32[name]} not quoted"


def deeper_networks_section() -> str:
    """The page's summary of the depth study, whose figures are docs/depth.md's."""
    return DOC.split("## Deeper networks", 1)[1].split("\n## ", 1)[0]


def test_the_depth_figures_are_the_depth_pages():
    """docs/depth.md holds the study's output (python compare.py --sweep-plot docs/img/depth.png):
    each figure the summary quotes is there too."""
    depth_page = (Path(__file__).resolve().parent.parent / "docs" / "depth.md").read_text()
    figures = DECIMAL.findall(deeper_networks_section())
    assert len(figures) >= 7 and all(f in depth_page for f in figures), figures


def test_every_decimal_in_the_page_is_computed():
    outside = DOC.replace(explain_block(), "").replace(deeper_networks_section(), "")
    quoted = set(CLAIMS32.values())
    stray = [n for n in DECIMAL.findall(outside) if n not in quoted | CONSTANTS.keys() | NOT_FIGURES]
    assert not stray, f"numbers in docs/backprop.md that no test computes: {stray}"


def test_named_constants_are_the_codes():
    from impl_numpy import model

    for text, name in CONSTANTS.items():
        assert float(text) == getattr(model, name)


# A backquoted dotted name in the project's packages: `impl_numpy.model.gelu`,
# `shortcut_gradients.verdict.bound.measure`, `shortcut_gradients.teaching.explain.gradient_paths`.
REFERENCE = re.compile(r"`((?:impl_\w+|shortcut_gradients|studies|benchmarks)(?:\.\w+)+)`")
PAGES_WITH_REFERENCES = ("backprop.md", "tolerances.md", "faults.md", "depth.md", "limits.md")


def resolves(ref: str) -> bool:
    """The longest importable module prefix of ref, then attributes for the rest."""
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_function_the_page_names_exists():
    refs = REFERENCE.findall(DOC)
    assert len(refs) >= 8
    assert [ref for ref in refs if not resolves(ref)] == []


@pytest.mark.parametrize("page", PAGES_WITH_REFERENCES)
def test_every_module_and_function_the_docs_name_exists(page):
    text = (Path(__file__).resolve().parent.parent / "docs" / page).read_text(encoding="utf-8")
    assert [ref for ref in REFERENCE.findall(text) if not resolves(ref)] == []


def test_references_that_do_not_exist_are_found():
    assert not resolves("shortcut_gradients.verdict.sensitivity.sensitivity")  # the module's old name
    assert not resolves("shortcut_gradients.verdict.bound.sensitivity")  # the function's old name
    assert resolves("shortcut_gradients.verdict.bound.measure")


# The identities the page states, each checked on its own.


@pytest.mark.parametrize("form", ["tanh", "exact"])
def test_gelu_derivative_is_the_slope_of_gelu(form):
    """Step 2's derivatives against central differences of gelu itself, in float64."""
    from impl_numpy import model

    z = np.linspace(-4, 4, 81)
    h = 1e-5
    slope = (model.gelu(z + h, form) - model.gelu(z - h, form)) / (2 * h)
    derivative = model.gelu_backward(np.ones_like(z), z, form)
    # Central differences are off by ~h^2 |g'''| / 6 ~ 1e-11 plus rounding ~1e-16 / h = 1e-11:
    # 1e-9 passes that and fails a wrong term (dropping the z^2 term moves g' by ~1e-1 at z = 1).
    np.testing.assert_allclose(derivative, slope, rtol=0, atol=1e-9)


def test_mse_gradient_is_the_slope_of_the_loss():
    from impl_numpy import model

    out, target = np.array([[0.3, -1.2], [2.0, 0.1]]), np.array([[0.0, 1.0], [0.5, 0.1]])
    h, grad = 1e-6, np.zeros_like(out)
    for idx in np.ndindex(out.shape):
        step = np.zeros_like(out)
        step[idx] = h
        grad[idx] = (model.mse_loss(out + step, target) - model.mse_loss(out - step, target)) / (2 * h)
    # The loss is quadratic, so central differences are exact up to rounding (~1e-10 here).
    np.testing.assert_allclose(model.mse_loss_backward(out, target), grad, rtol=0, atol=1e-9)


def test_batch_rows_add_their_outer_products_and_one_row_factorises():
    """Step 3: dW over leading dimensions is the sum of each row's dz^T x; with one row,
    mean|dW| = mean|dz| mean|x| exactly."""
    x = np.random.default_rng(1).normal(size=(2, 3, 3))  # (2, 3, 3): six rows
    paths = explain.gradient_paths(PARAMS, x, TARGET, use_shortcut=True, gelu_form="tanh", dtype="float64")
    for p in paths["layers"]:
        rows = zip(p.dz.reshape(-1, p.dz.shape[-1]), p.x.reshape(-1, p.x.shape[-1]))
        # The same products summed in another order: a few ulps.
        np.testing.assert_allclose(p.dW, sum(np.outer(dz, xr) for dz, xr in rows), rtol=1e-12, atol=1e-15)
    book = explain.gradient_paths(PARAMS, X, TARGET, use_shortcut=True, gelu_form="tanh", dtype="float64")
    for p in book["layers"]:
        assert math.isclose(explain.mean_abs(p.dW), explain.mean_abs(p.dz) * explain.mean_abs(p.x), rel_tol=1e-14)


def test_the_prose_claims_about_the_table():
    report = explain.explain(PARAMS, X, TARGET, settings=(False, True), gelu_form="tanh", dtype="float32")
    off, on = report["runs"]
    assert off["layers"][-1]["running"] < 0.005  # "less than half a percent of dout is left"
    layer3 = explain.gradient_paths(PARAMS, X, TARGET, use_shortcut=True, gelu_form="tanh", dtype="float32")["layers"][
        1
    ]
    assert layer3.layer == 3 and explain.mean_abs(layer3.dx) < explain.mean_abs(layer3.identity)
    assert np.any(np.sign(layer3.through) != np.sign(layer3.identity))  # "partly opposite signs"
    assert not any(r["shortcut"] for r in (off["layers"][0], on["layers"][0]))  # the 3 -> 1 layer has no identity path
    assert float(CLAIMS32["gelu'(1.0) tanh"]) > 1  # "the slope exceeds 1 at z = 1"
    # "the running product ... is most of the difference": the largest of the factors.
    assert float(CLAIMS32["ratio running"]) > max(float(CLAIMS32["ratio dout"]), float(CLAIMS32["ratio gelu"]))


def test_with_the_shortcut_the_residual_stream_grows_with_depth():
    """'the residual stream grows with depth in this network': mean |x| entering the last layer."""
    sizes = [mean_abs_into_last(depth) for depth in (5, 16, 32)]
    assert sizes[0] < sizes[1] < sizes[2]


def mean_abs_into_last(depth: int) -> float:
    params = weights.seeded_params((3,) * depth + (1,), BOOK_SEED)
    return explain.mean_abs(last_layer_input_and_z(params, True, "float64")[0])


# Names the package no longer has: a page that still says one sends its reader to nothing.
OLD_NAMES = ("crosscheck", "sensitivity.", "book_check", "oracle.check", "exercises.grade", "magnitude=", "support.py")


@pytest.mark.parametrize("page", PAGES_WITH_REFERENCES)
def test_the_docs_use_no_old_names(page):
    text = (Path(__file__).resolve().parent.parent / "docs" / page).read_text(encoding="utf-8")
    assert [name for name in OLD_NAMES if name in text] == []

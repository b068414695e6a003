"""All three implementations agree on every element, on networks beyond the book's.

The agreement tests use compare.py's rule, the error model's bound (shortcut_gradients.verdict.bound);
the tests named "fixed" check the fixed per-dtype tolerance that compare applies when it is
given no measurement (the exercises use it), on the small networks it was sized for.
"""

import functools

import numpy as np
import pytest
from conftest import needs

from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES
from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params
from shortcut_gradients.verdict.bound import measure
from shortcut_gradients.verdict.check import TOLERANCE, compare

FRAMEWORKS = ("torch", "jax", "numpy")

# (layer sizes, input shape): the book's; widths that change so some shortcuts are skipped;
# a study notebook's 3-D input (2, 3, 25) through [25, 25, 43, 43, 54, 54].
NETWORKS = {
    "book": ((3, 3, 3, 3, 3, 1), (1, 3)),
    "non-square": ((4, 4, 6, 6, 2, 2), (5, 4)),
    "3d-input": ((25, 25, 43, 43, 54, 54), (2, 3, 25)),
    "1d-input": ((3, 3, 2), (3,)),
}

# Both GELU forms on every network and dtype, each with one shortcut setting (the book network
# also runs every combination in test_book.py): 16 cases, each compiled once by JAX.
CASES = [
    pytest.param(net, form, dtype, shortcut, id=f"{net}-{form}-{dtype}-{'shortcut' if shortcut else 'plain'}")
    for net in NETWORKS
    for dtype in ("float32", "float64")
    for form, shortcut in (("tanh", True), ("exact", False))
]


def network(name: str):
    sizes, input_shape = NETWORKS[name]
    params = seeded_params(sizes, 123)
    if name == "book":
        return params, default_input(BOOK_LAYER_SIZES[0]), default_target(BOOK_LAYER_SIZES[-1])
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 2.0, input_shape)
    target = rng.uniform(-1.0, 1.0, input_shape[:-1] + (sizes[-1],))
    return params, x, target


def run_all(name, form, dtype, use_shortcut, frameworks=FRAMEWORKS):
    params, x, target = network(name)
    params = [(W.astype(dtype), b.astype(dtype)) for W, b in params]
    x, target = x.astype(dtype), target.astype(dtype)
    return {
        fw: needs(fw)(params, x, target, use_shortcut=use_shortcut, gelu_form=form, dtype=dtype) for fw in frameworks
    }


@functools.cache  # in units of u: one measurement serves both dtypes (compare only reads it)
def bound(name, form, use_shortcut):
    """The error model's per-element bound for a network, measured with NumPy in float64."""
    params, x, target = network(name)
    return measure(params, x, target, use_shortcut=use_shortcut, gelu_form=form)


@pytest.mark.parametrize("net, form, dtype, use_shortcut", CASES)
def test_all_three_agree_elementwise(net, form, dtype, use_shortcut):
    results = run_all(net, form, dtype, use_shortcut)
    report = compare(results, dtype, bound(net, form, use_shortcut))
    assert report["first_mismatch"] is None, report["first_mismatch"]
    assert max(report["room"].values()) <= 1
    sizes, input_shape = NETWORKS[net]
    for result in results.values():
        assert result["output"].shape == tuple(input_shape[:-1]) + (sizes[-1],)
        assert result["dx"].shape == tuple(input_shape)
        assert [dW.shape for dW in result["dW"]] == [(o, i) for i, o in zip(sizes[:-1], sizes[1:])]
        assert [db.shape for db in result["db"]] == [(o,) for o in sizes[1:]]
        assert all(g.dtype == np.dtype(dtype) for g in result["dW"] + result["db"] + [result["dx"], result["output"]])


@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
def test_fixed_float32_tolerance_is_above_the_noise(use_shortcut):
    """The fixed float32 tolerance must pass float noise: here it has at least 4x headroom on the book network."""
    report = compare(run_all("book", "tanh", "float32", use_shortcut), "float32")
    assert max(report["max_rel_diff"].values()) * 4 < TOLERANCE["float32"]


@pytest.mark.parametrize("rule", ["fixed", "bound"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
def test_gelu_mixup_is_caught(rule, dtype, use_shortcut):
    """Exact GELU in one framework and tanh in another: either rule must flag it in both dtypes."""
    tanh = run_all("book", "tanh", dtype, use_shortcut, ("torch",))
    exact = run_all("book", "exact", dtype, use_shortcut, ("numpy",))
    report = compare({**tanh, **exact}, dtype, bound("book", "tanh", use_shortcut) if rule == "bound" else None)
    assert not report["agree"]
    # Named where backprop first meets it: the loss, the output or the last layer's weight; on the
    # plain network in float32 the last layer's dW moves by about its allowance (0.7 to 1.3 of it,
    # as the bound's perturbed runs fall) and the layer below's by twice it.
    near_the_top = ("loss", "output", "layers.4.0.weight", "layers.4.0.bias", "layers.3.0.weight")
    assert report["first_mismatch"]["tensor"] in near_the_top


@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
def test_float64_agreement_reaches_1e12(use_shortcut):
    """Both rules promise float64 agreement below 1e-12 on a study notebook's (2, 3, 25) network: the fixed
    one by its tolerance, the bound by what it allows at each tensor's largest element."""
    results = run_all("3d-input", "tanh", "float64", use_shortcut)
    report = compare(results, "float64")
    assert TOLERANCE["float64"] <= 1e-12
    assert max(report["max_rel_diff"].values()) < TOLERANCE["float64"]
    bounded = compare(results, "float64", bound("3d-input", "tanh", use_shortcut))
    assert bounded["agree"] and max(bounded["allowed_rel_diff"].values()) < 1e-12


def test_shortcut_changes_the_gradients():
    """use_shortcut is not ignored: the book's two settings give different gradients in each framework."""
    off, on = run_all("book", "tanh", "float64", False), run_all("book", "tanh", "float64", True)
    for fw in FRAMEWORKS:
        assert np.mean(np.abs(on[fw]["dW"][0])) > 100 * np.mean(np.abs(off[fw]["dW"][0]))


def test_gelu_form_is_not_ignored():
    tanh, exact = run_all("book", "tanh", "float64", True), run_all("book", "exact", "float64", True)
    for fw in FRAMEWORKS:
        assert not np.allclose(tanh[fw]["dW"][0], exact[fw]["dW"][0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_gradients_never_agree(bad):
    """NaN against a number (or against NaN) is a disagreement, not a relative error of 0."""
    results = run_all("book", "tanh", "float32", True, ("torch", "numpy"))
    broken = results["numpy"]["dW"][2].copy()
    broken[1, 1] = bad
    results["numpy"] = {**results["numpy"], "dW": results["numpy"]["dW"][:2] + [broken] + results["numpy"]["dW"][3:]}
    report = compare(results, "float32")
    assert report["first_mismatch"]["tensor"] == "layers.2.0.weight"
    assert report["first_mismatch"]["index"] == [1, 1]
    both = compare({"a": results["numpy"], "b": results["numpy"]}, "float32")
    assert not both["agree"]

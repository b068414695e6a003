"""The finite-difference oracle: independent of the implementations, and as accurate as it says.

Its agreement with float64 autograd is the figure the README quotes; its per-element error
bound must hold (else an oracle mismatch could be its own fault) and be small (else it
could not catch a real bug). It must also catch what the three implementations could all
get wrong the same way.
"""

import ast
import inspect
import json

import numpy as np
import pytest
from conftest import needs

import impl_numerical as numerical
import impl_numpy
import impl_torch
from shortcut_gradients import compare
from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED
from shortcut_gradients.verdict import oracle

SETTINGS = [
    pytest.param(form, shortcut, id=f"{form}-{'shortcut' if shortcut else 'plain'}")
    for form in ("tanh", "exact")
    for shortcut in (False, True)
]


def book():
    params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    return params, weights.default_input(BOOK_LAYER_SIZES[0]), weights.default_target(BOOK_LAYER_SIZES[-1])


def test_the_oracle_shares_no_code_with_the_implementations():
    """Only math, NumPy and the comparison plumbing: no framework, no backward, no impl_*."""
    tree = ast.parse(inspect.getsource(numerical.model))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"math", "numpy"}
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


@pytest.mark.parametrize("form, use_shortcut", SETTINGS)
def test_book_network_agreement(form, use_shortcut):
    """The README's figure: against float64 autograd, the differences agree to 5.9e-12 relative
    (measured) on every element they can resolve. 1e-10 passes that with room and is a
    hundred times below the smallest fault in studies/faults.py (a float32 constant in a
    float64 run: 1e-8)."""
    params, x, target = book()
    analytic = needs("torch")(params, x, target, use_shortcut=use_shortcut, gelu_form=form, dtype="float64")
    fd = numerical.loss_and_grads(params, x, target, use_shortcut=use_shortcut, gelu_form=form)
    report = oracle.compare({"torch": analytic}, fd, "float64")
    assert report["agree"], report["first_mismatch"]
    assert report["max_rel_diff"] < 1e-10
    assert report["max_bound"] < 1e-9  # what differences can claim on each resolved element: 2.6e-10 measured
    # x = [1, 0, -1]: the middle column of layer 0's dW is exactly 0, in both. Those three
    # are the only elements differences cannot resolve, and they are shown as such.
    assert (report["resolved"], report["unresolved"], report["unresolved_max_abs"]) == (52, 3, 0.0)
    assert np.all(fd["dW"][0][:, 1] == 0) and np.all(analytic["dW"][0][:, 1] == 0)


@pytest.mark.parametrize("form, use_shortcut", SETTINGS)
def test_error_bound_holds_with_room(form, use_shortcut):
    """On a deeper random network with a 3-D input, every |autograd - FD| is inside its bound,
    using at most a quarter of it (measured: 2%): the bound holds, and with room."""
    rng = np.random.default_rng(7)
    sizes = (8, 8, 8, 8, 8, 8, 8, 3)
    params = [
        (rng.uniform(-1, 1, (o, i)) / np.sqrt(i), rng.uniform(-1, 1, o) / np.sqrt(i)) for i, o in zip(sizes, sizes[1:])
    ]
    x, target = rng.uniform(-3, 3, (2, 3, 8)), rng.uniform(-1, 1, (2, 3, 3))
    analytic = needs("torch")(params, x, target, use_shortcut=use_shortcut, gelu_form=form, dtype="float64")
    fd = numerical.loss_and_grads(params, x, target, use_shortcut=use_shortcut, gelu_form=form)
    for name in ("dW", "db"):
        for a, d, e in zip(analytic[name], fd[name], fd["error"][name]):
            assert np.all(np.abs(a - d) <= 0.25 * e)
    assert np.all(np.abs(analytic["dx"] - fd["dx"]) <= 0.25 * fd["error"]["dx"])
    assert fd["output"].shape == (2, 3, 3) and fd["dx"].shape == x.shape


def test_oracle_catches_a_bug_all_implementations_share(monkeypatch):
    """Two implementations with the same typo agree with each other perfectly; the
    differences of the correct forward do not."""
    monkeypatch.setattr(impl_torch.model, "GELU_CUBIC", 0.004715)
    monkeypatch.setattr(impl_numpy.model, "GELU_CUBIC", 0.004715)
    params, x, target = book()
    kw = dict(use_shortcut=True, gelu_form="tanh", dtype="float64")
    results = {
        "torch": impl_torch.loss_and_grads(params, x, target, **kw),
        "numpy": impl_numpy.loss_and_grads(params, x, target, **kw),
    }
    from shortcut_gradients.verdict import check

    assert check.compare(results, "float64")["agree"]
    report = oracle.compare(
        results, numerical.loss_and_grads(params, x, target, use_shortcut=True, gelu_form="tanh"), "float64"
    )
    assert not report["agree"] and report["first_mismatch"]["tensor"] == "loss"


def test_compare_shows_the_numerical_column(capsys):
    """compare.py --frameworks torch,jax,numpy,numerical --dtype float64: the fourth column agrees."""
    for name in ("torch", "jax", "numpy"):
        needs(name)
    status = compare.main(["--frameworks", "torch,jax,numpy,numerical", "--dtype", "float64", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["agree"]
    for run in report["runs"]:
        assert "numerical" in run["frameworks"]
        assert run["numerical"]["agree"] and run["numerical"]["max_rel_diff"] < 1e-10


def test_numerical_alone_is_bad_input(capsys):
    assert compare.main(["--frameworks", "numerical"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "add torch, jax or numpy" in err


def test_numerical_refuses_a_network_too_big_for_it(capsys):
    """Eight forwards per element: the 33,152 elements of a 128,128,128 network would take ~25 s, so it is bad input, before any work."""
    assert compare.main(["--layer-sizes", "128,128,128", "--frameworks", "numpy,numerical"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "more than 20,000" in captured.err


def test_a_nan_gradient_never_agrees_with_the_oracle():
    params, x, target = book()
    fd = numerical.loss_and_grads(params, x, target, use_shortcut=True, gelu_form="tanh")
    result = needs("numpy")(params, x, target, use_shortcut=True, gelu_form="tanh", dtype="float64")
    result["dW"][2][0, 0] = np.nan
    report = oracle.compare({"numpy": result}, fd, "float64")
    assert not report["agree"] and report["first_mismatch"]["tensor"] == "layers.2.0.weight"

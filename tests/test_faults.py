"""Every fault in studies/faults.py is caught by compare.py, which names where it first shows.

A comparison that agrees proves something only if it disagrees when an implementation is
wrong. Each test patches one bug into one implementation, runs compare.py --json exactly
as a user would (default tolerances, with the finite-difference column), and asserts:
the verdict is DISAGREE; the first mismatch in backprop order is the tensor the fault's
entry predicts, in the layer that tensor belongs to; the odd one out is the patched
framework; the finite differences alone flag it too. The test id says whether the book's
per-layer mean |dL/dW| would have seen the bug; the test checks that claim as well.
"""

import json
import re

import pytest
from conftest import needs

from shortcut_gradients import compare
from shortcut_gradients.plumbing import weights
from shortcut_gradients.verdict import bound, check
from studies.faults import (
    FAULTS,
    batched_network,
    book_network,
    means_see_it,
    network_of,
    norm_kw,
    run_frameworks,
)

CASES = [
    pytest.param(
        fault,
        dtype,
        id=f"{fault.name}-{dtype}-means-{'miss' if fault.means_miss else 'see'}",
    )
    for fault in FAULTS
    for dtype in fault.dtypes
]


@pytest.fixture(scope="module")
def batched_file(tmp_path_factory):
    """The batched network as a weights file, for compare.py --weights."""
    path = tmp_path_factory.mktemp("faults") / "batched.safetensors"
    weights.save_weights(path, *batched_network())
    return path


def layer_of(tensor: str) -> int | None:
    match = re.fullmatch(r"layers\.(\d+)\.0\.(weight|bias)|norms\.(\d+)\.(scale|shift)", tensor)
    if match and match[3]:
        return int(match[3])
    return int(match[1]) if match else None


@pytest.mark.parametrize("fault, dtype", CASES)
def test_fault_is_caught_and_located(fault, dtype, batched_file, monkeypatch, capsys):
    for name in ("torch", "jax", "numpy"):
        needs(name)
    fault.patch(monkeypatch)
    # Batched faults need rows > 1: compare.py reads them from a weights file. JAX is left
    # out there (a new input shape costs a compilation); the oracle is the third voice.
    argv = ["--json", "--dtype", dtype, "--frameworks", "torch,jax,numpy,numerical"]
    if fault.batched:
        argv = ["--json", "--dtype", dtype, "--frameworks", "torch,numpy,numerical", "--weights", str(batched_file)]
    argv += ["--norm", fault.norm]
    status = compare.main(argv)
    report = json.loads(capsys.readouterr().out)

    assert status == 1 and not report["agree"]
    for run in report["runs"]:
        expected = fault.expected(dtype, run["use_shortcut"])
        if expected is None:  # the bug has nothing to act on in this setting
            assert run["agree"], run["first_mismatch"]
            continue
        first = run["first_mismatch"]
        assert (first["tensor"], first["layer"]) == (expected, layer_of(expected))
        assert fault.framework in first["frameworks"]
        if not fault.batched:  # three implementations: the one that differs is named
            assert first["odd_one_out"] == fault.framework
        assert not run["numerical"]["agree"]  # finite differences alone flag it too...
        assert run["numerical"]["first_mismatch"]["frameworks"][0] == fault.framework  # ...in the patched one
    seen_by_means = any(means_see_it(run, dtype) for run in report["runs"])
    assert seen_by_means == (not fault.means_miss)


@pytest.mark.parametrize("fault", [f for f in FAULTS if f.batched], ids=lambda f: f.name)
def test_bias_faults_are_invisible_on_one_row(fault):
    """On the book's single-row input, summing db over rows is a no-op, so these bugs cannot
    show there: why the property tests draw leading batch dimensions."""
    results = run_frameworks(("torch", "numpy"), fault, book_network, "float64", use_shortcut=True)
    assert check.compare(results, "float64")["agree"]


@pytest.mark.parametrize("fault", [pytest.param(f, id=f.name) for f in FAULTS if "float32" in f.dtypes])
def test_float32_faults_are_caught_with_the_measured_floor(fault):
    """The property tests floor each float32 element at its measured bound
    (shortcut_gradients.verdict.bound.measure); that leniency must not hide any fault."""
    network = network_of(fault)
    params, x, target = network()
    for use_shortcut in (False, True):
        if fault.expected("float32", use_shortcut) is None:
            continue
        # Measured on an unpatched implementation, before the fault goes in.
        measured = bound.measure(params, x, target, use_shortcut=use_shortcut, gelu_form="tanh", **norm_kw(params))
        names = ("torch", "numpy") + (
            ("jax",) if fault.framework == "jax" else ()
        )  # JAX only where it is the faulty one
        results = run_frameworks(names, fault, network, "float32", use_shortcut)
        report = check.compare(results, "float32", bound=measured)
        assert not report["agree"]
        assert report["first_mismatch"]["tensor"] == fault.expected("float32", use_shortcut)
        assert fault.framework in report["first_mismatch"]["frameworks"]


@pytest.mark.parametrize("fault", [f for f in FAULTS if f.norm != "none"], ids=lambda f: f.name)
def test_layernorm_faults_are_located_on_the_pre_ln_book_network(fault):
    """Without compare.py's measured bound: float64 on the book's one row, where shortcut_gradients.verdict.check's fixed rule
    is sized to hold (the cases above run the same fault through compare.py itself)."""
    for use_shortcut in (False, True):
        results = run_frameworks(("torch", "jax", "numpy"), fault, network_of(fault), "float64", use_shortcut)
        first = check.compare(results, "float64")["first_mismatch"]
        assert first["tensor"] == fault.expected("float64", use_shortcut)
        assert first["odd_one_out"] == fault.framework
        clean = run_frameworks(("torch", "numpy"), None, network_of(fault), "float64", use_shortcut)
        assert check.compare(clean, "float64")["agree"]  # the same network without the fault agrees

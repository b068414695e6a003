"""The error model's rule (shortcut_gradients.verdict.bound, shortcut_gradients.verdict.check.compare with a bound), checked both ways.

Each test that says the implementations agree has a partner that says a fault disagrees on the
same input. The big cases are the book's weights on identical rows (all-ones input, zero target),
where the batch sums of dW and db add the same term n times and round the same way at every
addition: the fixed per-dtype tolerance flags 1024 such rows as DISAGREE, the bound does not.
docs/tolerances.md has the derivation and the survey at size.
"""

import json

import numpy as np
import pytest
from conftest import needs

from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES
from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params
from shortcut_gradients.verdict import bound as bounds
from shortcut_gradients.verdict import check, contract

BOOK = (3, 3, 3, 3, 3, 1)


def book_rows(n: int):
    """The book's weights on n identical rows: input all ones, target zero."""
    return seeded_params(BOOK, 123), np.ones((n, 3)), np.zeros((n, 1))


def run(names, params, x, target, dtype, use_shortcut=True, gelu_form="tanh") -> dict:
    params = [(W.astype(dtype), b.astype(dtype)) for W, b in params]
    kw = {"use_shortcut": use_shortcut, "gelu_form": gelu_form, "dtype": dtype}
    return {name: needs(name)(params, x.astype(dtype), target.astype(dtype), **kw) for name in names}


def bound(params, x, target, use_shortcut=True, gelu_form="tanh") -> dict:
    return bounds.measure(params, x, target, use_shortcut=use_shortcut, gelu_form=gelu_form)


@pytest.fixture(scope="module")
def rows_4096():
    """(params, x, target, bound, float32 torch and numpy results) for 4096 identical rows, with shortcuts."""
    params, x, target = book_rows(4096)
    return params, x, target, bound(params, x, target), run(("torch", "numpy"), params, x, target, "float32")


def test_4096_identical_rows_agree_under_the_bound_and_not_the_fixed_rule(rows_4096):
    """Must pass: the rounding of 4096 identical rows (measured 5.7e-5 relative in float32, used here
    ~0.25 of the allowance: the bound is 2 u n/2 |S| for the mean, the error ~u n/4 |S|). The fixed
    4e-6 rule must fail on it: that is the false alarm the bound removes."""
    _, _, _, b, results = rows_4096
    report = check.compare(results, "float32", b)
    assert report["agree"], report["first_mismatch"]
    assert report["rule"] == "bound"
    assert 0.05 < max(report["room"].values()) <= 0.5  # rounding is really there, with room to spare
    assert not check.compare(results, "float32")["agree"]


def test_gelu_mixup_is_caught_at_4096_identical_rows(rows_4096):
    """Must catch: exact GELU in torch where tanh was meant. Per-row tensors (output, dx) are not
    batch sums, so their allowance stays at a few ulps however many rows there are."""
    params, x, target, b, results = rows_4096
    mixed = {**results, **run(("torch",), params, x, target, "float32", gelu_form="exact")}
    report = check.compare(mixed, "float32", b)
    assert not report["agree"]
    assert report["first_mismatch"]["rel_diff"] > report["first_mismatch"]["allowed"]


def test_sign_flip_is_caught_at_4096_identical_rows(rows_4096):
    """Must catch: dL/d(output) with the wrong sign negates every gradient; the loss is unchanged."""
    _, _, _, b, results = rows_4096
    r = results["numpy"]
    flipped = {**r, "dW": [-g for g in r["dW"]], "db": [-g for g in r["db"]], "dx": -r["dx"]}
    report = check.compare({**results, "numpy": flipped}, "float32", b)
    assert not report["agree"]
    assert report["first_mismatch"]["tensor"] == "layers.4.0.weight"  # the first gradient in backprop order


def test_batch_allowance_grows_with_the_rows_as_derived():
    """On identical rows every row's term is the same, so sigma_eta = 0 and a batch sum's batch term is
    exactly the mean's share plus the products', |S| ((n + 1)/2 - 1/n + 1): the allowed relative
    difference on dW is at least n u and grows with n, while the per-row output's stays put."""
    u = np.finfo(np.float32).eps / 2
    allowed = {}
    for n in (1024, 4096):
        params, x, target = book_rows(n)
        parts = bounds.error_terms(params, x, target, use_shortcut=True, gelu_form="tanh")
        for S, batch in zip(parts["own"]["dW"] + parts["own"]["db"], parts["batch"]["dW"] + parts["batch"]["db"]):
            np.testing.assert_allclose(batch, S * ((n + 1) / 2 - 1 / n + 1), rtol=1e-9)
        results = run(("torch", "numpy"), params, x, target, "float32")
        allowed[n] = check.compare(results, "float32", bound(params, x, target))["allowed_rel_diff"]
        assert min(v for k, v in allowed[n].items() if k.endswith("weight")) >= n * u
    assert allowed[4096]["layers.0.0.weight"] > 3 * allowed[1024]["layers.0.0.weight"]
    # the same up to the perturbed runs' sampling (6 draws: 1.56 times here, dW's 3.4 times): within
    # a factor 2, the geometric middle between staying put and growing with the rows (4 times)
    assert 0.5 < allowed[4096]["output"] / allowed[1024]["output"] < 2
    assert allowed[4096]["output"] < 0.1 * allowed[4096]["layers.0.0.weight"]


@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
def test_book_float64_promise_is_far_below_1e12(use_shortcut):
    """The book in float64: every tensor's allowance (at its largest element) is under 1e-13 relative,
    the frameworks agree, and the GELU mix-up is caught."""
    params, x, target = (
        seeded_params(BOOK, 123),
        default_input(BOOK_LAYER_SIZES[0]),
        default_target(BOOK_LAYER_SIZES[-1]),
    )
    b = bound(params, x, target, use_shortcut)
    results = run(("torch", "numpy"), params, x, target, "float64", use_shortcut)  # JAX: test_agreement.py
    report = check.compare(results, "float64", b)
    assert report["agree"], report["first_mismatch"]
    assert max(report["allowed_rel_diff"].values()) < 1e-13
    assert report["tolerance"] == check.TOLERANCE["float64"] == 1e-12  # the fixed rule's figure, still reported
    mixed = {**results, **run(("torch",), params, x, target, "float64", use_shortcut, gelu_form="exact")}
    assert check.compare(mixed, "float64", b)["first_mismatch"]["tensor"] == "loss"


def test_the_rule_is_2u_times_the_bound():
    """Synthetic results: a difference of 0.99 of 2 u bound agrees, 1.01 of it does not, and the
    report's room, allowed and rel_diff say so; NaN never agrees."""
    params, x, target = (
        seeded_params(BOOK, 123),
        default_input(BOOK_LAYER_SIZES[0]),
        default_target(BOOK_LAYER_SIZES[-1]),
    )
    b = bound(params, x, target)
    (base,) = run(("numpy",), params, x, target, "float64").values()
    u = np.finfo(np.float64).eps / 2
    for share, agree in ((0.99, True), (1.01, False)):
        moved = {**base, "dW": [g.copy() for g in base["dW"]]}
        moved["dW"][2][1, 0] += share * 2 * u * b["dW"][2][1, 0]
        report = check.compare({"a": base, "b": moved}, "float64", b)
        assert report["agree"] is agree
        assert report["room"]["layers.2.0.weight"] == pytest.approx(share, abs=0.015)  # share, to the ulps of dW
        if not agree:
            first = report["first_mismatch"]
            assert (first["tensor"], first["index"]) == ("layers.2.0.weight", [1, 0])
            assert first["rel_diff"] == pytest.approx(share * first["allowed"], abs=0.015 * first["allowed"])
    broken = {**base, "dx": np.full_like(base["dx"], np.nan)}
    assert not check.compare({"a": broken, "b": broken}, "float64", b)["agree"]


def test_float32_results_are_compared_in_float64_as_they_are_and_left_untouched():
    """The comparison takes float32 results without float64 copies: its report is the one their
    float64 copies get, to the bit, under the bound and the fixed rule, with a mismatch, a NaN and
    an inf among them; the results are not written into."""
    params, x, target = seeded_params((8, 16, 16, 4), 3), np.random.default_rng(1).standard_normal((64, 8)), None
    target = np.zeros((64, 4))
    results = run(("torch", "numpy"), params, x, target, "float32")
    moved = {**results["numpy"], "dx": results["numpy"]["dx"].copy(), "output": results["numpy"]["output"].copy()}
    moved["dx"][5, 3] *= np.float32(1.001)
    moved["output"][7, 1], moved["output"][9, 2] = np.nan, np.inf
    results["numpy"] = moved
    as_float64 = {name: {k: [np.float64(a) for a in v] if isinstance(v, list) else np.float64(v) for k, v in r.items()} for name, r in results.items()}
    kept = {name: [t.copy() for _, _, t in contract.tensors(r, False)] for name, r in results.items()}
    b = bound(params, x, target)
    for rule_bound in (b, None):
        as_they_are, copied = (check.compare(r, "float32", rule_bound) for r in (results, as_float64))
        assert json.dumps(as_they_are, sort_keys=True) == json.dumps(copied, sort_keys=True)  # NaN as NaN
    for name, r in results.items():
        for before, (_, _, after) in zip(kept[name], contract.tensors(r, False)):
            np.testing.assert_array_equal(before, after)


def test_bound_has_the_result_shapes_and_covers_the_element_itself():
    """bound.measure returns a result-like dict, each array of its tensor's shape, each element at least
    |e| (its own final rounding), nothing negative or NaN; on one row there is no batch term."""
    params, x, target = seeded_params((4, 4, 2), 0), np.linspace(-1, 1, 24).reshape(2, 3, 4), np.zeros((2, 3, 2))
    (base,) = run(("numpy",), params, x, target, "float64").values()
    b = bound(params, x, target)
    for (name, _, value), (_, _, limit) in zip(check.tensors(base), check.tensors(b)):
        assert np.shape(limit) == np.shape(value), name
        assert np.all(np.isfinite(limit)) and np.all(np.asarray(limit) >= np.abs(value)), name
    parts = bounds.error_terms(params, default_input(4), default_target(2), use_shortcut=True, gelu_form="tanh")
    assert all(not np.any(g) for g in parts["batch"]["dW"] + parts["batch"]["db"])


def test_a_vanished_gradient_still_gets_a_rounding_bound():
    """300 width-1 layers without shortcuts: layer 0's gradient is ~1e-283 in float64, and its
    moves under the nudges ~1e-292, whose squares underflow to 0. The spreads are taken in units
    of each tensor's size, so every nonzero element keeps a bound above its own rounding, and the
    three frameworks agree under it (with squares of raw moves, 180 layers had a bound of |e|)."""
    sizes = (1,) * 301
    params, x, target = seeded_params(sizes, 123), default_input(1), default_target(BOOK_LAYER_SIZES[-1])
    measured = bound(params, x, target, use_shortcut=False)
    results = run(("torch", "jax", "numpy"), params, x, target, "float64", use_shortcut=False)
    reference = results["numpy"]["dW"]
    for i in (0, 100, 119, 299):
        assert reference[i].item() != 0 and measured["dW"][i].item() > 10 * abs(reference[i].item())
    report = check.compare(results, "float64", measured)
    assert report["agree"], report["first_mismatch"]


def test_the_perturbed_runs_are_float32_only_where_every_tensor_is_in_its_reach():
    """The book's network is measured with float32 perturbed runs; the 300-layer chain whose
    gradient has vanished to 1e-283 (far out of float32's range, where its moves would be 0) with
    float64 ones, as are weights past 2^40."""
    book = seeded_params(BOOK, 123), default_input(BOOK[0]), default_target(BOOK[-1])
    chain = seeded_params((1,) * 301, 123), default_input(1), default_target(BOOK_LAYER_SIZES[-1])
    huge = [(W * 2.0**41, b) for W, b in book[0]], book[1], book[2]
    for (params, x, target), dtype in ((book, "float32"), (chain, "float64"), (huge, "float64")):
        batch = bounds.Batch(params, x, target, False, "tanh", "none", bounds.GROUPS, False)
        assert batch.dtype == dtype and batch.perturbation == bounds.PERTURBATION[dtype]


def test_a_vanishing_gradient_is_in_float32s_reach_down_to_2_to_the_minus_64():
    """20 layers of width 8 without shortcuts, weights times 0.5: the first layer's dW has vanished
    to 2^-59, in reach (float32 runs); times 0.35, to 2^-69, out of it (float64)."""
    rng = np.random.default_rng(0)
    for gain, (smallest, dtype) in ((0.5, (-59, "float32")), (0.35, (-69, "float64"))):
        params = [(gain * W, b) for W, b in seeded_params((8,) * 21, 5)]
        batch = bounds.Batch(params, rng.normal(size=(4, 8)), rng.normal(size=(4, 8)), False, "tanh", "none", 16, False)
        assert (np.log2(min(batch.scales)), batch.dtype) == (smallest, dtype)


def small_weights(tmp_path, scale=1e-2):
    """The book's weights times `scale`, as a weights file: at 1e-2 every pre-activation stays near
    0, where the two GELU forms differ by less than float32 can resolve (float64 can); at 1e-6
    float64 cannot either."""
    from safetensors.numpy import save_file

    params = [(W * scale, b * scale) for W, b in seeded_params(BOOK, 123)]
    path = tmp_path / f"small-{scale:g}.safetensors"
    save_file(
        {f"layers.{i}.0.{k}": a for i, (W, b) in enumerate(params) for k, a in (("weight", W), ("bias", b))}, path
    )
    return str(path)


def plug_in(tmp_path, name: str, body: str) -> str:
    """A user's implementation wrapping torch's, its loss_and_grads's body given."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        "import impl_torch\n\n\ndef loss_and_grads(params, x, target, *, use_shortcut, gelu_form, dtype):\n"
        + body
        + "    return impl_torch.loss_and_grads(params, x, target, use_shortcut=use_shortcut, gelu_form=gelu_form,"
        " dtype=dtype)\n"
    )
    return str(path)


def test_float32_that_cannot_see_the_gelu_form_reruns_in_float64(tmp_path, capsys):
    """On small weights float32's allowance is wider than the difference between the GELU forms, so
    a run agrees whichever form an implementation computes. It measures that, runs every
    implementation again in float64 under the same bound, and says so; the book's network, where
    float32 sees the difference, runs no rerun."""
    from shortcut_gradients import compare

    path = small_weights(tmp_path)
    assert compare.main(["--weights", path, "--frameworks", "torch,numpy"]) == 0
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.startswith("AGREE") and "apart here, without and with shortcut" in verdict
    assert "so every implementation ran again in float64, where they agree too" in verdict
    assert "would agree too" not in verdict
    assert compare.main(["--weights", path, "--frameworks", "torch,numpy", "--dtype", "float64"]) == 0
    assert "ran again" not in capsys.readouterr().out  # float64 itself sees the difference
    assert compare.main(["--frameworks", "torch,numpy"]) == 0
    assert "ran again" not in capsys.readouterr().out
    assert compare.main(["--weights", small_weights(tmp_path, 1e-6), "--frameworks", "torch,numpy"]) == 0
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert "the exact GELU form would agree too" in verdict and "not even float64 can tell them apart" in verdict


def test_the_gelu_mixup_that_float32_cannot_see_is_caught_by_the_rerun(tmp_path, capsys):
    """Must catch: a user's implementation computing the other GELU form, on the small weights where
    float32 alone agrees with it. The DISAGREE comes from the float64 rerun and says so."""
    from shortcut_gradients import compare

    mixup = plug_in(tmp_path, "mixup", '    gelu_form = {"tanh": "exact", "exact": "tanh"}[gelu_form]\n')
    assert compare.main(["--weights", small_weights(tmp_path), "--frameworks", f"numpy,{mixup}"]) == 1
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.startswith("DISAGREE in the float64 rerun (float32 could not tell the two GELU forms apart here)")
    assert ": loss without shortcut is the first to differ" in verdict
    assert ", float64)" in verdict  # the mismatch names the rerun's dtype; a likely cause may follow


def test_an_implementation_without_float64_keeps_the_caution(tmp_path, capsys):
    """A user's float32-only implementation: the rerun cannot run, so the run agrees with the
    caution that a mix-up would pass, and names their file and line."""
    from shortcut_gradients import compare

    f32 = plug_in(
        tmp_path, "f32only", '    if dtype != "float32":\n        raise NotImplementedError("float32 only")\n'
    )
    assert compare.main(["--weights", small_weights(tmp_path), "--frameworks", f"numpy,{f32}"]) == 0
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.startswith("AGREE") and "the exact GELU form would agree too" in verdict
    assert "the float64 rerun that would resolve it failed: " in verdict and "f32only.py:6" in verdict


def test_the_gelus_own_error_in_its_tail_is_in_the_bound(monkeypatch):
    """300 width-1 layers with shortcuts, float64: layer 20's pre-activation is -3.55, where
    1 + tanh(u) is 2.9e-4 and XLA's tanh, off by ~5.7 u, leaves ~2e4 u in the GELU's slope. The
    perturbed GELU (bound.activation_noise) puts that in the bound; without it, the same run
    is a false alarm there, JAX the odd one out."""
    sizes = (1,) * 301
    params, x, target = seeded_params(sizes, 123), default_input(1), default_target(1)
    results = run(("torch", "jax", "numpy"), params, x, target, "float64")
    report = check.compare(results, "float64", bound(params, x, target))
    assert report["agree"], report["first_mismatch"]
    monkeypatch.setattr(bounds, "SPECIAL_FUNCTION_ERROR", 0.0)
    without = check.compare(results, "float64", bound(params, x, target))
    assert not without["agree"] and without["first_mismatch"]["odd_one_out"] == "jax"


def test_the_fast_step_measures_the_bound_the_reference_would(monkeypatch):
    """Must pass: measured with impl_numpy.fast (the book's network) or with the reference
    impl_numpy.model, the bound is the same to the perturbed runs' rounding: the runs draw the same
    numbers in the same order and the two float32 steps differ by a few ulps, 2^-24 each against
    a 2^-12 move (measured: at most 1.3e-4 relative). 1e-3 passes that and catches a perturbed
    GELU left out of either step (the bound then moves by 1.5 to 36 relative here) or draws taken
    out of order."""
    import impl_numpy.fast
    import impl_numpy.model

    rng = np.random.default_rng(3)
    params = seeded_params((16,) * 7, 5)
    x, target = rng.normal(size=(4, 32, 16)), rng.normal(size=(4, 32, 16))
    for kw in ({"use_shortcut": True, "gelu_form": "tanh"}, {"use_shortcut": False, "gelu_form": "exact"}):
        assert bounds.measuring("none") is impl_numpy.fast
        fast_bound = bounds.measure(params, x, target, **kw)
        with monkeypatch.context() as patched:
            patched.setattr(bounds, "measuring", lambda norm: impl_numpy.model)
            reference_bound = bounds.measure(params, x, target, **kw)
        for (name, _, want), (_, _, have) in zip(contract.tensors(reference_bound), contract.tensors(fast_bound)):
            np.testing.assert_allclose(have, want, rtol=1e-3, err_msg=name)


@pytest.mark.parametrize("module_name", ["impl_numpy.model", "impl_numpy.fast"])
def test_the_perturbed_gelu_is_the_numpy_implementations_and_is_put_back(module_name):
    """activation_noise swaps the measuring NumPy step's GELU functions for the measurement only,
    on the module the measurement names, and on no other implementation."""
    import importlib

    module = importlib.import_module(module_name)
    forward = "gelu" if module_name == "impl_numpy.model" else "gelu_forward"
    before = (getattr(module, forward), module.gelu_backward)
    torch_gelu = needs("torch").__globals__["gelu"]
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError):
        with bounds.activation_noise(rng, shared=True, module=module):
            assert getattr(module, forward) is not before[0] and module.gelu_backward is not before[1]
            assert torch_gelu is needs("torch").__globals__["gelu"]
            raise RuntimeError
    assert (getattr(module, forward), module.gelu_backward) == before

    def value(z):  # the GELU's value at z, (4,)
        if module_name == "impl_numpy.model":
            return module.gelu(z, "tanh")
        return module.gelu_forward(z.copy(), np.zeros(1), None, "tanh")[1]

    z = np.array([-20.0, -3.55, 0.0, 20.0])
    clean = value(z)
    with bounds.activation_noise(rng, shared=False, module=module):
        moved = value(z) - clean
    assert moved[0] == moved[2] == moved[3] == 0 and moved[1] != 0  # saturated, t = 0, saturated


def test_measure_reports_its_stages_and_the_same_bound():
    """progress gets one short line per stage, each draw counted, and does not change the bound."""
    params, x, target = book_rows(4)
    said = []
    told = bounds.measure(params, x, target, use_shortcut=True, gelu_form="tanh", progress=said.append)
    assert said == ["bound: the unperturbed runs"] + [
        f"bound: draw {k} of {bounds.DRAWS}" for k in range(1, bounds.DRAWS + 1)
    ]
    silent = bound(params, x, target)
    for (name, _, a), (_, _, b) in zip(contract.tensors(told), contract.tensors(silent)):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_dy_and_dz_are_measured_only_where_a_pair_compares_them_and_the_rest_is_unchanged():
    """Without dy and dz (each as large as the output, per layer) the bound of every other tensor
    is the same to the bit, and the measurement's own unperturbed run (put together from its
    groups of rows) gives the GELU forms' resolution the same figures as running the batch again,
    to float64 rounding in the sums' order (measured: 4e-13 relative)."""
    rng = np.random.default_rng(5)
    params = seeded_params((8, 16, 16, 4), 2)
    x, target = rng.normal(size=(4, 6, 8)), rng.normal(size=(4, 6, 4))
    kw = {"use_shortcut": True, "gelu_form": "tanh"}
    everything = bounds.measure(params, x, target, **kw)
    without, unperturbed = bounds.measure_around(params, x, target, intermediates=False, **kw)
    assert "dy" in everything and "dy" not in without and "dy" not in unperturbed
    for (name, _, a), (other, _, b) in zip(contract.tensors(everything, False), contract.tensors(without)):
        assert name == other
        np.testing.assert_array_equal(a, b, err_msg=name)
    again = bounds.gelu_form_resolution(params, x, target, without, "float32", **kw)
    reused = bounds.gelu_form_resolution(params, x, target, without, "float32", own=unperturbed, **kw)
    assert reused.pop("share") == pytest.approx(again.pop("share"), rel=1e-9) and reused == again


def test_a_wrong_step_is_still_named_at_its_dz_when_two_implementations_return_them():
    """The run bounds dy and dz when two implementations return them, so the first mismatch is
    the step itself, before the dW it feeds."""
    import impl_numpy.model
    from shortcut_gradients.verdict import run

    def wrong_middle_step(*args, **kw):  # the reference, with layer 1's dz off by 1e-3 (and nothing after it)
        result = impl_numpy.model.loss_and_grads(*args, **kw)
        result["dz"][1] = result["dz"][1] * (1 + 1e-3)
        return result

    params = seeded_params((8, 16, 16, 4), 2)
    x, target = np.random.default_rng(6).normal(size=(2, 5, 8)), np.zeros((2, 5, 4))
    fns = {"numpy": impl_numpy.model.loss_and_grads, "mine": wrong_middle_step}
    (entry,) = run.gather("float64", "tanh", "none", "on", (params, x, target), fns, False)
    assert entry["first_mismatch"]["tensor"] == "layers.1.dz"


def test_the_perturbed_gelu_refuses_a_step_it_does_not_know():
    """Any other module: refused, rather than a bound measured without the GELU's own error."""
    import impl_numerical

    with pytest.raises(ValueError, match="not impl_numerical"):
        with bounds.activation_noise(np.random.default_rng(0), shared=True, module=impl_numerical):
            pass


def test_a_batch_measured_in_chunks_of_rows_has_the_same_bound(monkeypatch):
    """Must pass: the whole batch's runs made a few rows at a time (so that a big batch's step stays
    small) give the bound of the batch run at once, to the float32 runs' rounding of the chunks'
    sums (2^-24 against 2^-12 moves): the shared runs' GELU draws are the same rows of r for every
    chunk, drawn in the same order. Measured: at most 9e-5 relative; 1e-3 catches a chunk's share
    left unscaled (18 chunks) or its draws redrawn (moves the bound by tens of percent)."""
    rng = np.random.default_rng(7)
    params = seeded_params((8, 24, 24, 5), 4)
    x, target = rng.normal(size=(7, 40, 8)), rng.normal(size=(7, 40, 5))
    for kw in ({"use_shortcut": True, "gelu_form": "tanh"}, {"use_shortcut": False, "gelu_form": "exact"}):
        whole, whole_run = bounds.measure_around(params, x, target, **kw)
        with monkeypatch.context() as patched:
            patched.setattr(bounds, "CHUNK_ELEMENTS", 1000)  # 16 rows of 61 elements: 18 chunks
            chunked, chunked_run = bounds.measure_around(params, x, target, **kw)
        for (name, _, want), (_, _, have) in zip(contract.tensors(whole), contract.tensors(chunked)):
            np.testing.assert_allclose(have, want, rtol=1e-3, err_msg=name)
        for (name, _, want), (_, _, have) in zip(contract.tensors(whole_run), contract.tensors(chunked_run)):
            np.testing.assert_allclose(have, want, rtol=1e-12, err_msg=name)


def test_a_big_batch_resolves_the_gelu_forms_from_its_first_rows_as_the_whole_batch_would(monkeypatch):
    """Must pass: past RESOLUTION_ROWS rows the resolution first runs the other form on those rows
    alone; where they resolve, so does the whole batch (its shares are at least theirs), and where
    they do not (weights a hundred times smaller: every pre-activation near 0, where the forms
    differ by less than float32 resolves), the whole batch decides, as before."""
    monkeypatch.setattr(bounds, "RESOLUTION_ROWS", 16)
    rng = np.random.default_rng(11)
    kw = {"use_shortcut": True, "gelu_form": "tanh"}
    for weight_scale, resolved in ((1.0, True), (0.01, False)):
        params = [(W * weight_scale, b * weight_scale) for W, b in seeded_params((8, 16, 16, 4), 3)]
        x, target = rng.normal(size=(4, 20, 8)), rng.normal(size=(4, 20, 4))
        measured, unperturbed = bounds.measure_around(params, x, target, intermediates=False, **kw)
        whole = bounds.gelu_form_resolution(params, x, target, measured, "float32", **kw)
        sampled = bounds.gelu_form_resolution(params, x, target, measured, "float32", own=unperturbed, **kw)
        assert whole["resolved"] == sampled["resolved"] == resolved
        if resolved:  # from the first rows: at most the whole batch's share, and past 1
            assert 1 < sampled["share"] <= whole["share"] * (1 + 1e-9) and sampled["tensor"] in ("output", "input")
        else:  # the first rows could not tell: the whole batch's figures
            assert sampled["share"] == pytest.approx(whole["share"], rel=1e-9) and sampled["tensor"] == whole["tensor"]


def test_the_grouped_runs_move_the_input_gradient_as_the_batch_would():
    """Must pass: a group's gradients are of its own mean loss, n/m times the batch's, so its
    per-row input gradients are scaled to their share as its dW and db are. Unscaled, the grouped
    runs' moves of dx were 16 times the shared runs' (16 groups), and dx's bound about 11 times what
    one group of all the rows gives; scaled, the two agree to the draws' sampling (within 10% here)."""
    rng = np.random.default_rng(13)
    params = seeded_params((8, 16, 16, 4), 6)
    x, target = rng.normal(size=(512, 8)), rng.normal(size=(512, 4))
    kw = {"use_shortcut": True, "gelu_form": "tanh", "intermediates": False}
    one_group = bounds.root_mean_square(bounds.error_terms(params, x, target, groups=1, **kw)["propagated"]["dx"])
    sixteen = bounds.root_mean_square(bounds.error_terms(params, x, target, groups=16, **kw)["propagated"]["dx"])
    assert sixteen == pytest.approx(one_group, rel=0.1)


def test_float32_runs_measure_the_bound_only_where_their_nudge_moves_every_tensor_linearly():
    """Must pass: the first draw, run as nudged and mirrored, shows how much a 2^-12 nudge bends the
    moves. Three layers keep the float32 runs; 16 layers with shortcuts and weights of N(0, 1/w),
    whose residual stream grows, bend them (the even part is tens of percent of the odd one there,
    and one-sided float32 moves were as low as 0.19 of the linear ones at 30 x 256): float64 runs."""
    rng = np.random.default_rng(0)

    def network(layers, width, gain):
        params = [(gain * rng.standard_normal((width, width)) / width**0.5, 0.1 * rng.standard_normal(width)) for _ in range(layers)]
        return params, rng.standard_normal((16, width)), rng.standard_normal((16, width))

    for (layers, width, gain), dtype in (((3, 64, 0.577), "float32"), ((16, 64, 1.0), "float64")):
        batch = bounds.Batch(*network(layers, width, gain), True, "tanh", "none", bounds.GROUPS, False)
        assert batch.dtype == "float32"  # in reach: only the first draw can tell
        bounds.propagated_rounding(batch, bounds.DRAWS)
        assert batch.dtype == dtype and batch.perturbation == bounds.PERTURBATION[dtype]


@pytest.mark.parametrize("chunk_elements", [bounds.CHUNK_ELEMENTS, 1000])
def test_the_first_draw_and_its_mirror_run_side_by_side_and_put_the_gelu_back(monkeypatch, chunk_elements):
    """Must pass: the first draw and its mirror are run a chunk of each at a time, each chunk's
    GELU patched with its own draws (nudged, then negated). Each step's patch must be undone before
    the other's: left in place, the mirror's patch outlived both and every later run of the step
    carried a stale draw (the bound came out 10^5 times too wide). Both ways, with one chunk and
    with many, float32 kept and given up, the step's own GELU is back at the end."""
    import impl_numpy.fast as fast

    monkeypatch.setattr(bounds, "CHUNK_ELEMENTS", chunk_elements)
    originals = (fast.gelu_forward, fast.gelu_backward)
    rng = np.random.default_rng(0)
    for layers, gain, dtype in ((3, 0.577, "float32"), (16, 1.0, "float64")):
        params = [(gain * rng.standard_normal((64, 64)) / 8, 0.1 * rng.standard_normal(64)) for _ in range(layers)]
        batch = bounds.Batch(params, rng.standard_normal((40, 64)), rng.standard_normal((40, 64)), True, "tanh", "none", 4, False)
        propagated = bounds.propagated_rounding(batch, 4)
        assert batch.dtype == dtype and (fast.gelu_forward, fast.gelu_backward) == originals
        assert all(np.all(np.isfinite(t)) for t in propagated)


def test_a_first_chunk_of_rows_that_bends_ends_the_first_draw_there(monkeypatch):
    """Must pass: where a batch runs in chunks, the first draw's first chunk is held to the
    linearity rule on its own rows. 16 layers with shortcuts bend there, and the draw stops after
    that chunk's two runs (nudged and mirrored), not the 32 of all 16 chunks: float64 from there.
    3 layers do not bend: every chunk runs, and float32 stays."""
    import impl_numpy.fast as fast

    monkeypatch.setattr(bounds, "CHUNK_ELEMENTS", 1000)  # one row of 17 x 64 activations a chunk
    rng = np.random.default_rng(0)
    step = fast.loss_and_grads
    for layers, gain, (runs, dtype) in ((16, 1.0, (2, "float64")), (3, 0.577, (12, "float32"))):  # 16 and 6 chunks
        params = [(gain * rng.standard_normal((64, 64)) / 8, 0.1 * rng.standard_normal(64)) for _ in range(layers)]
        x, target = rng.standard_normal((16, 64)), rng.standard_normal((16, 64))
        batch = bounds.Batch(params, x, target, True, "tanh", "none", 4, False)

        def add_run(chunks, per_row=batch.per_row):  # propagated_rounding's, its sums only
            sums = {}
            for _, part in chunks:
                for k, t in enumerate(part):
                    if k not in per_row:
                        sums[k] = t if k not in sums else sums[k] + t
            return sums

        calls = []
        monkeypatch.setattr(fast, "loss_and_grads", lambda *a, calls=calls, **kw: calls.append(1) or step(*a, **kw))
        kept = bounds.linear_first_draw(batch, add_run)
        monkeypatch.setattr(fast, "loss_and_grads", step)
        assert (len(calls), batch.dtype, kept) == (runs, dtype, dtype == "float32")

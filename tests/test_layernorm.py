"""LayerNorm, the book's next step (`--norm pre`): the NumPy rule against autograd, the three
frameworks against each other and against finite differences on pre-LN networks, the weights
file and the command line's bad input, and --explain's path through the norm."""

import numpy as np
import pytest
from conftest import needs

import impl_numerical as numerical
from shortcut_gradients import compare
from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, InputError
from shortcut_gradients.teaching import explain
from shortcut_gradients.verdict import bound as bounds
from shortcut_gradients.verdict import check, contract

# float64's promise (shortcut_gradients.verdict.check.TOLERANCE): the NumPy rule and autograd compute the same
# sums in another order and agree to ~1e-15 here; a dropped term of the LayerNorm's backward
# moves dx by 1e-1 or more (test_the_dropped_terms_are_not_rounding).
TOL64 = check.TOLERANCE["float64"]
EPS64 = float(np.finfo(np.float64).eps)
FRAMEWORKS = ("torch", "jax", "numpy")


def pre_ln(sizes, seed: int = BOOK_SEED, x_shape=None):
    """(params, x, target): seeded weights, each layer's scale and shift drawn away from 1 and 0
    (at 1 and 0 a slip that drops the scale, or mixes scale and shift, would not show)."""
    rng = np.random.default_rng(seed)
    params = [
        (W, b, rng.uniform(0.5, 1.5, s.shape), rng.normal(0.0, 0.5, s.shape))
        for W, b, s, _ in weights.seeded_params(sizes, seed, "pre")
    ]
    if x_shape is None:
        return params, weights.default_input(sizes[0]), weights.default_target(sizes[-1])
    return params, rng.uniform(-1.0, 1.0, x_shape), rng.uniform(-1.0, 1.0, x_shape[:-1] + (sizes[-1],))


NETWORKS = {  # the book's, 16 layers of width 8 on a 3-D batch, and non-square layers on a 3-D batch
    "book": lambda: pre_ln(BOOK_LAYER_SIZES),
    "deep-16x8-3d": lambda: pre_ln((8,) * 17, 1, (2, 3, 8)),
    "non-square-3d": lambda: pre_ln((4, 4, 6, 6, 2), 2, (2, 3, 4)),
}


def run(framework: str, network: str, use_shortcut: bool, dtype: str = "float64") -> dict:
    params, x, target = NETWORKS[network]()
    params = [tuple(a.astype(dtype) for a in layer) for layer in params]
    fn = needs(framework)
    result = fn(
        params,
        x.astype(dtype),
        target.astype(dtype),
        use_shortcut=use_shortcut,
        gelu_form="tanh",
        dtype=dtype,
        norm="pre",
    )
    return contract.validate(framework, result, params, x, dtype)


# --- the rule: impl_numpy's layer_norm and layer_norm_backward against the book's class ----------


def autograd_layer_norm(x, scale, shift, dout):
    """impl_torch's LayerNorm (the book's class) in float64: its output and autograd's (dx, dscale, dshift)."""
    torch = pytest.importorskip("torch")
    from impl_torch.model import LayerNorm

    norm = LayerNorm(x.shape[-1]).double()
    with torch.no_grad():
        norm.scale.copy_(torch.from_numpy(scale))
        norm.shift.copy_(torch.from_numpy(shift))
    xt = torch.from_numpy(x).requires_grad_(True)
    out = norm(xt)
    grads = torch.autograd.grad(out, (xt, norm.scale, norm.shift), torch.from_numpy(dout))
    return out.detach().numpy(), [g.numpy() for g in grads]


def rows_with_offsets(shape, seed=0):
    """x, dout, scale, shift: rows with a mean of their own, so that the mean's term matters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=shape) + rng.normal(scale=3.0, size=shape[:-1] + (1,))
    return x, rng.normal(size=shape), rng.uniform(0.5, 1.5, shape[-1]), rng.normal(size=shape[-1])


def within(a, b, tol=TOL64) -> float:
    """The worst relative difference (shortcut_gradients.verdict.check's, with its noise floor), asserted to be within tol."""
    worst = float(check.relative_error(a, b, tol, EPS64).max())
    assert worst <= tol, worst
    return worst


@pytest.mark.parametrize("shape", [(1, 3), (5, 3), (2, 3, 4)], ids=str)
def test_layer_norm_and_its_backward_are_the_books_class_under_autograd(shape):
    from impl_numpy import model

    x, dout, scale, shift = rows_with_offsets(shape)
    out, (dx, dscale, dshift) = autograd_layer_norm(x, scale, shift, dout)
    within(model.layer_norm(x, scale, shift), out)
    mine = model.layer_norm_backward(dout, x, scale)
    assert [a.shape for a in mine] == [shape, (shape[-1],), (shape[-1],)]
    for a, b in zip(mine, (dx, dscale, dshift)):
        within(a, b)
    # docs/backprop.md: every row of dx sums to zero (a constant added to a row leaves LN's output as it was).
    row_sums = mine[0].sum(axis=-1)
    assert np.all(np.abs(row_sums) <= 16 * EPS64 * np.abs(mine[0]).sum(axis=-1)), row_sums


def test_the_dropped_terms_are_not_rounding():
    """dx = dxhat / sigma (the mean and variance treated as constants) is far from autograd: the check above can fail."""
    from impl_numpy import model

    x, dout, scale, shift = rows_with_offsets((5, 3))
    _, (dx, _, _) = autograd_layer_norm(x, scale, shift, dout)
    sigma = np.sqrt(x.var(axis=-1, keepdims=True) + model.LAYER_NORM_EPS)
    assert check.relative_error(dout * scale / sigma, dx, TOL64, EPS64).max() > 0.1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_rule_stays_in_the_inputs_dtype(dtype):
    from impl_numpy import model

    x, dout, scale, shift = (a.astype(dtype) for a in rows_with_offsets((2, 3, 4)))
    assert model.layer_norm(x, scale, shift).dtype == np.dtype(dtype)
    assert {a.dtype for a in model.layer_norm_backward(dout, x, scale)} == {np.dtype(dtype)}


# --- the three frameworks and the finite differences on pre-LN networks -------------------------


@pytest.fixture(scope="module")
def differences():
    """impl_numerical's float64 estimates and bounds, per (network, use_shortcut), computed once."""
    cache = {}

    def get(network, use_shortcut):
        if (network, use_shortcut) not in cache:
            params, x, target = NETWORKS[network]()
            cache[network, use_shortcut] = numerical.loss_and_grads(
                params, x, target, use_shortcut=use_shortcut, gelu_form="tanh", norm="pre"
            )
        return cache[network, use_shortcut]

    return get


# JAX compiles each structure (about half a second each here): it runs the book's and the deep one, its
# scanned path; the non-square layers are torch's and NumPy's, and JAX's in the measured-bound comparison below.
FD_CASES = [(fw, net) for fw in FRAMEWORKS for net in NETWORKS if (fw, net) != ("jax", "non-square-3d")]


@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
@pytest.mark.parametrize("framework, network", FD_CASES, ids=[f"{fw}-{net}" for fw, net in FD_CASES])
def test_each_framework_matches_the_finite_differences(framework, network, use_shortcut, differences):
    """Every element of every gradient, scale and shift included: |a - d| <= 1e-12 |d| + the estimate's
    own bound (docs/tolerances.md; measured, no element uses a fifth of it on these networks)."""
    ours, fd = run(framework, network, use_shortcut), differences(network, use_shortcut)
    listed = contract.tensors(ours, intermediates=False)
    estimates = contract.tensors(fd, intermediates=False)
    bounds = contract.tensors({"loss": 0.0, "output": 0.0, **fd["error"]}, intermediates=False)
    assert [n for n, _, _ in listed] == [n for n, _, _ in estimates] and "norms.0.shift" in [n for n, _, _ in listed]
    resolved = 0
    for (name, _, a), (_, _, d), (_, _, bound) in zip(listed, estimates, bounds):
        if name in ("loss", "output"):  # the oracle's own float64 forward: the same network, rounded its way
            within(a, d)
            continue
        used = np.abs(a - d) / (TOL64 * np.abs(d) + bound)
        assert used.max() <= 1, (name, float(used.max()))
        resolved += int((np.abs(d) > bound).sum())
    assert resolved > 0.9 * sum(np.size(a) for n, _, a in listed if n not in ("loss", "output"))


@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
def test_the_three_agree_on_the_pre_ln_book_network_in_float64(use_shortcut):
    """The fixed rule (shortcut_gradients.verdict.check, without a measurement) is sized for the book's one row: there it holds."""
    results = {fw: run(fw, "book", use_shortcut) for fw in FRAMEWORKS}
    report = check.compare(results, "float64")
    assert report["agree"], report["first_mismatch"]
    assert {"norms.0.scale", "norms.4.shift", "layers.0.0.weight"} <= set(report["max_rel_diff"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_the_three_agree_under_the_measured_bound(network, dtype):
    """compare.py's rule: each element within twice its measured rounding bound, in both dtypes and at depth."""
    params, x, target = NETWORKS[network]()
    for use_shortcut in (False, True):
        kw = {"use_shortcut": use_shortcut, "gelu_form": "tanh", "norm": "pre"}
        bound = bounds.measure(params, x, target, **kw)
        results = {fw: run(fw, network, use_shortcut, dtype) for fw in FRAMEWORKS}
        report = check.compare(results, dtype, bound)
        assert report["agree"], report["first_mismatch"]
        assert "norms.0.scale" in report["room"]


# --- the book's network does not move; the norm's params and keyword go together -----------------


@pytest.mark.parametrize("framework", [*FRAMEWORKS, "numerical"])
def test_norm_none_is_the_books_network_bit_for_bit(framework):
    fn = needs(framework)
    params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    x, target = weights.default_input(BOOK_LAYER_SIZES[0]), weights.default_target(BOOK_LAYER_SIZES[-1])
    kw = {"use_shortcut": True, "gelu_form": "tanh", "dtype": "float64"}
    plain, none = fn(params, x, target, **kw), fn(params, x, target, **kw, norm="none")
    assert set(plain) == set(none) and "dscale" not in none
    for (name, _, a), (_, _, b) in zip(contract.tensors(plain), contract.tensors(none)):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("framework", [*FRAMEWORKS, "numerical", "numpy-fast"])
def test_params_and_norm_must_match(framework):
    """Four arrays a layer without norm="pre", two with it, or another norm: refused, never run without the norm."""
    fn = needs(framework)
    book = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    pre = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED, "pre")
    x, target = weights.default_input(BOOK_LAYER_SIZES[0]), weights.default_target(BOOK_LAYER_SIZES[-1])
    kw = {"use_shortcut": True, "gelu_form": "tanh", "dtype": "float64"}
    for params, norm in ((pre, "none"), (book, "pre"), (pre, "post")):
        if framework == "numpy-fast" and norm == "none":
            continue  # fast.py refuses every pre-LN network, whatever norm says: the two below
        with pytest.raises(ValueError, match="norm"):
            fn(params, x, target, **kw, norm=norm)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_pre_ln_result_keeps_the_contract_in_backprop_order(dtype):
    result = run("numpy", "non-square-3d", True, dtype)  # validated: keys, shapes, dtype
    assert [a.shape for a in result["dscale"]] == [(4,), (4,), (6,), (6,)] == [a.shape for a in result["dshift"]]
    assert all(a.dtype == np.dtype(dtype) for a in result["dscale"] + result["dshift"])
    names = [n for n, _, _ in contract.tensors(result, intermediates=False)]
    assert names[2:6] == ["layers.3.0.weight", "layers.3.0.bias", "norms.3.scale", "norms.3.shift"]
    assert names[-3:] == ["norms.0.scale", "norms.0.shift", "input"]
    assert contract.label("norms.2.shift") == "dshift[2]"
    params, x, _ = NETWORKS["non-square-3d"]()
    without = {k: v for k, v in result.items() if k != "dshift"}
    with pytest.raises(InputError, match="no 'dshift'"):
        contract.validate("mine", without, params, x, dtype)


# --- seeded weights, the weights file, and compare.py's bad input ---------------------------------


def test_seeded_pre_ln_weights_are_the_books_draws_with_scale_1_and_shift_0():
    book = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    for (W, b), (W2, b2, scale, shift) in zip(book, weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED, "pre")):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
        np.testing.assert_array_equal(scale, np.ones(W.shape[1], np.float32))
        np.testing.assert_array_equal(shift, np.zeros(W.shape[1], np.float32))


def test_the_weights_file_carries_the_norms(tmp_path):
    params, x, target = NETWORKS["non-square-3d"]()
    path = tmp_path / "pre.safetensors"
    weights.save_weights(path, params, x, target)
    loaded, lx, lt = weights.load_weights(path, "pre")
    for layer, again in zip(params, loaded):
        assert len(again) == 4
        for a, b in zip(layer, again):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lx, x)
    with pytest.raises(InputError, match="holds norms.0.scale.*--norm pre"):
        weights.load_weights(path, "none")


def broken_file(tmp_path, change) -> str:
    """The pre-LN book network's weights file with its tensors changed by `change` (a dict -> dict)."""
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "pre.safetensors"
    weights.save_weights(path, *pre_ln(BOOK_LAYER_SIZES))
    tensors = change(load_file(path))
    out = tmp_path / "broken.safetensors"
    save_file(tensors, out)
    return str(out)


BAD_NORMS = {  # id: (argv after the file, its tensors changed, words the one line must hold)
    "missing-shift": (
        ["--norm", "pre"],
        lambda t: {k: v for k, v in t.items() if k != "norms.2.shift"},
        "missing norms.2.shift",
    ),
    "wrong-shape": (
        ["--norm", "pre"],
        lambda t: {**t, "norms.1.scale": np.ones(4, np.float32)},
        "norms.1.scale has shape (4,); expected (3,)",
    ),
    "extra-layer": (
        ["--norm", "pre"],
        lambda t: {**t, "norms.9.scale": np.ones(3, np.float32)},
        "norms.9.* but only 5 layers",
    ),
    "norms-without-pre": ([], lambda t: t, "a pre-LN network's LayerNorm: pass --norm pre"),
    "no-norms-with-pre": (
        ["--norm", "pre"],
        lambda t: {k: v for k, v in t.items() if not k.startswith("norms.")},
        "missing norms.0.scale",
    ),
}


@pytest.mark.parametrize("case", list(BAD_NORMS), ids=list(BAD_NORMS))
def test_bad_norms_in_a_weights_file_are_one_line_and_nothing_is_written(case, tmp_path, capsys):
    argv, change, words = BAD_NORMS[case]
    path, out = broken_file(tmp_path, change), tmp_path / "saved.safetensors"
    status = compare.main(["--weights", path, "--save-weights", str(out), "--frameworks", "numpy", *argv])
    captured = capsys.readouterr()
    assert (status, captured.out) == (2, "")
    assert captured.err.count("\n") == 1 and words in captured.err, captured.err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--norm", "post"], "argument --norm: invalid choice: 'post'"),
        (["--norm", "pre", "--frameworks", "numpy-fast"], "numpy-fast has no LayerNorm"),
    ],
    ids=["unknown-norm", "numpy-fast"],
)
def test_bad_norm_flags_are_one_line(argv, words, capsys):
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


# --- --explain: the path through the layer goes through the norm's backward ------------------------


@pytest.mark.parametrize("use_shortcut", [False, True], ids=["plain", "shortcut"])
def test_explain_follows_the_path_through_the_layer_norm(use_shortcut):
    """'through' is autograd's dL/dx of gelu(LN(x) W^T + b) alone given dy; the figures add up as for the book's."""
    torch = pytest.importorskip("torch")
    from impl_torch.model import LayerNorm, gelu

    params, x, target = NETWORKS["book"]()
    paths = explain.gradient_paths(params, x, target, use_shortcut=use_shortcut, gelu_form="tanh", dtype="float64")
    expected = needs("numpy")(
        params, x, target, use_shortcut=use_shortcut, gelu_form="tanh", dtype="float64", norm="pre"
    )
    assert paths["norm"] == "pre"
    for p in paths["layers"]:
        W, b, scale, shift = (torch.from_numpy(np.asarray(a, np.float64)) for a in params[p.layer])
        norm = LayerNorm(W.shape[1]).double()
        with torch.no_grad():
            norm.scale.copy_(scale)
            norm.shift.copy_(shift)
        xt = torch.from_numpy(p.x).requires_grad_(True)
        (through,) = torch.autograd.grad(gelu(norm(xt) @ W.T + b, "tanh"), xt, grad_outputs=torch.from_numpy(p.dy))
        within(p.through, through.numpy())
        np.testing.assert_array_equal(p.dx, p.through + p.identity)
        np.testing.assert_array_equal(p.dW, expected["dW"][p.layer])
    report = explain.explain(params, x, target, settings=(use_shortcut,), gelu_form="tanh", dtype="float64")
    layer0 = report["runs"][0]["layers"][-1]
    # One row: dW = dz^T h is an outer product, so mean|dW| = mean|dout| x running x gelu' x mean|h|.
    product = report["runs"][0]["dout"] * layer0["running"] * layer0["gelu"] * layer0["h"]
    assert abs(layer0["dW"] - product) <= 1e-12 * layer0["dW"]
    text = explain.format_explain(report)
    assert "pre-LN: each layer is x + GELU(Linear(LN(x)))" in text and f"{layer0['ln']:.4g}" in text
    assert f"x |h| {layer0['h']:.4g}" in text


@pytest.mark.parametrize(
    "sizes, message",
    [
        ("3,2,2,1", "layer 1's LayerNorm would normalise 2 elements"),
        ("1,3,1", "layer 0's LayerNorm would normalise 1 element,"),
    ],
)
def test_a_layernorm_over_fewer_than_three_elements_is_refused(sizes, message, capsys):
    """Over 2 elements (x - mean) / sigma is +-1 whatever x, over 1 it is 0: the gradient is rounding
    left over from cancelling terms (torch leaves 2.2e-5 of two terms of 247 on one element, NumPy
    exactly 0), which the implementations round differently. Refused before any work."""
    assert compare.main(["--norm", "pre", "--layer-sizes", sizes, "--frameworks", "numpy"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err
    assert compare.main(["--layer-sizes", "3,2,2,1", "--frameworks", "numpy"]) == 0  # without the norm: fine

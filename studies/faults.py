"""A catalogue of deliberately wrong implementations, to show the cross-check catches them.

Each fault is one bug that notebooks and layer libraries really ship, applied to one
implementation by a monkeypatch or a wrapper for the length of a test: the real code
carries no hooks for it. Each says where the comparison must first see it, in backprop
order (shortcut_gradients.verdict.contract.tensors), with and without shortcuts: a tensor name, or None where
the bug cannot show (there is no identity path without shortcuts). A fault in the LayerNorm
runs on the pre-LN network (norm "pre": the book's weights, a LayerNorm before every layer).

    python studies/faults.py              # the table in docs/faults.md, measured afresh
    python studies/faults.py properties   # does each property test fail with each fault in? (~1 min)
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import impl_jax  # noqa: E402
import impl_numerical as numerical  # noqa: E402
import impl_numpy  # noqa: E402
import impl_torch  # noqa: E402
from shortcut_gradients.plumbing import weights  # noqa: E402
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, ORACLE  # noqa: E402
from shortcut_gradients.verdict import check, oracle  # noqa: E402

BOTH_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Fault:
    name: str  # the test id
    framework: str  # the implementation made wrong
    bug: str  # what a reader would see in the code
    patch: Callable[[pytest.MonkeyPatch], None]  # applies it, undone when the MonkeyPatch is
    first: dict  # use_shortcut (or (dtype, use_shortcut)) -> first tensor to differ in backprop order; None: invisible
    means_miss: bool = False  # the book's per-layer mean |dL/dW| cannot see it (tests/test_faults.py checks)
    dtypes: tuple = BOTH_DTYPES  # where the bug exists at all
    batched: bool = False  # shows only when the input has more than one row
    norm: str = "none"  # "pre": a LayerNorm fault, run on the pre-LN network
    square: bool = False  # shows only on a network with a square layer

    def expected(self, dtype: str, use_shortcut: bool) -> str | None:
        return self.first.get((dtype, use_shortcut), self.first.get(use_shortcut))


# --- the wrong variants -------------------------------------------------------------------


def wrapped(module, fix_args=None, fix_result=None):
    """A patch replacing module.loss_and_grads with a wrapper that bends its arguments or result."""
    real = module.loss_and_grads

    def faulty(params, x, target, **kw):
        if fix_args:
            params, x, target, kw = fix_args(params, x, target, kw)
        result = real(params, x, target, **kw)
        return fix_result(params, result) if fix_result else result

    return lambda mp: mp.setattr(module, "loss_and_grads", faulty)


def square(W) -> bool:
    return W.shape[0] == W.shape[1]


def kernel_not_transposed(params, x, target, kw):
    """Flax keeps (d_in, d_out): loading torch's W without .T is silent on square layers."""
    return [(W.T if square(W) else W, b) for W, b in params], x, target, kw


def transpose_square_dW(params, result):
    result["dW"] = [dW.T if square(dW) else dW for dW in result["dW"]]
    return result


def torch_forward_identity_detached(self, x):
    """ExampleDeepNeuralNetwork.forward with the shortcut's identity path cut out of autograd."""
    for layer in self.layers:
        layer_output = layer(x)
        if self.use_shortcut and x.shape == layer_output.shape:
            x = x.detach() + layer_output  # FAULT: dy no longer reaches x through the "1"
        else:
            x = layer_output
    return x


def numpy_bias_grad(reduce):
    """impl_numpy.model.linear_backward with db = reduce(dz) in place of the sum over all rows."""
    real = impl_numpy.model.linear_backward

    def faulty(dz, x, W):
        dx, dW, _ = real(dz, x, W)
        return dx, dW, reduce(dz)

    return lambda mp: mp.setattr(impl_numpy.model, "linear_backward", faulty)


def numpy_constants_in_float32(mp):
    """Constants typed as float32 literals (np.float32(math.sqrt(2 / math.pi))) in a float64 run."""
    for name in ("SQRT_2_OVER_PI", "SQRT_1_OVER_2", "SQRT_1_OVER_2PI", "GELU_CUBIC"):
        mp.setattr(impl_numpy.model, name, float(np.float32(getattr(impl_numpy.model, name))))


def numpy_layer_norm_statistics_constant(mp):
    """impl_numpy.model.layer_norm_backward with the row's mean and variance taken as constants."""
    real = impl_numpy.model.layer_norm_backward

    def faulty(dout, x, scale):
        _, dscale, dshift = real(dout, x, scale)  # dscale and dshift do not involve the statistics
        sigma = np.sqrt(x.var(axis=-1, keepdims=True) + x.dtype.type(impl_numpy.model.LAYER_NORM_EPS))
        return dout * scale / sigma, dscale, dshift  # FAULT: dx = dxhat / sigma, no -mean(...) terms

    mp.setattr(impl_numpy.model, "layer_norm_backward", faulty)


def jax_in_float32(params, x, target, kw):
    """jax_enable_x64 never set: asked for float64, JAX silently computes in float32."""
    return params, x, target, {**kw, "dtype": "float32"}


def as_float64(params, result):
    return {
        k: [np.asarray(a, np.float64) for a in v] if isinstance(v, list) else np.asarray(v, np.float64)
        for k, v in result.items()
    }


def exact_for_tanh(params, x, target, kw):
    """torch.nn.GELU() (exact erf form) in one framework where the others use the book's tanh."""
    return params, x, target, {**kw, "gelu_form": "exact" if kw["gelu_form"] == "tanh" else "tanh"}


LOSS_BOTH = {False: "loss", True: "loss"}  # a wrong forward: the loss itself differs

FAULTS = [
    Fault(
        "gelu-cubic-0.004715",
        "numpy",
        "GELU_CUBIC = 0.004715, a study notebook's typo for 0.044715",
        lambda mp: mp.setattr(impl_numpy.model, "GELU_CUBIC", 0.004715),
        LOSS_BOTH,
    ),
    Fault(
        "exact-gelu-in-one",
        "torch",
        "exact GELU (erf) in torch, tanh in the others",
        wrapped(impl_torch, exact_for_tanh),
        # float32 without shortcut: the loss and the output move by a third of their allowance, the
        # last layer's dW by about its allowance (1.31 of it with the bound's draws; 0.92 with 8 of
        # them), the layer below's by 2.5x
        {**LOSS_BOTH, ("float32", False): "layers.4.0.weight"},
    ),
    Fault(
        "gelu-missing",
        "torch",
        "nn.Linear(a, b, GELU()): GELU passed as the bias flag, no activation at all",
        lambda mp: mp.setattr(impl_torch.model, "gelu", lambda x, form: x),
        LOSS_BOTH,
    ),
    Fault(
        "identity-path-dropped",
        "torch",
        "x = x.detach() + layer(x): the shortcut's gradient goes through the layer only",
        lambda mp: mp.setattr(impl_torch.model.ExampleDeepNeuralNetwork, "forward", torch_forward_identity_detached),
        {False: None, True: "layers.2.0.weight"},  # layer 3's dx loses dy; layer 2's dW is the first to use it
    ),
    Fault(
        "weight-transposed",
        "jax",
        "Flax kernel loaded as W, not W.T: x @ W on the square layers",
        wrapped(impl_jax, kernel_not_transposed, transpose_square_dW),
        LOSS_BOTH,
        square=True,
    ),
    Fault(
        "dW-transposed",
        "numpy",
        "dW = x^T dz instead of dz^T x: (d_in, d_out), silent on square layers",
        wrapped(impl_numpy, fix_result=transpose_square_dW),
        {False: "layers.3.0.weight", True: "layers.3.0.weight"},  # the last square layer, first in backprop
        means_miss=True,
        square=True,
    ),
    Fault(
        "sign-flipped",
        "numpy",
        "dL/d(output) = 2 (target - output) / N",
        lambda mp: mp.setattr(impl_numpy.model, "mse_loss_backward", lambda out, t: 2.0 * (t - out) / out.size),
        {False: "layers.4.0.weight", True: "layers.4.0.weight"},
        means_miss=True,
    ),
    Fault(
        "bias-first-row-only",
        "numpy",
        "db = dz[0]: not summed over the leading dimensions (code written for one example)",
        numpy_bias_grad(lambda dz: dz.reshape(-1, dz.shape[-1])[0]),
        {False: "layers.4.0.bias", True: "layers.4.0.bias"},
        means_miss=True,
        batched=True,
    ),
    Fault(
        "bias-wrong-axis",
        "numpy",
        "db = dz.reshape(d_out, -1).sum(1): summed over a wrongly reshaped axis",
        numpy_bias_grad(lambda dz: dz.reshape(dz.shape[-1], -1).sum(axis=1)),
        {False: "layers.3.0.bias", True: "layers.3.0.bias"},  # on the width-1 last layer it happens to be right
        means_miss=True,
        batched=True,
    ),
    Fault(
        "float32-constants-in-float64",
        "numpy",
        "GELU constants rounded to float32 inside a float64 run",
        numpy_constants_in_float32,
        LOSS_BOTH,
        dtypes=("float64",),
    ),
    Fault(
        "layernorm-statistics-constant",
        "numpy",
        "LayerNorm backward dx = dxhat / sigma: the row's mean and variance treated as constants",
        numpy_layer_norm_statistics_constant,
        # Layer 4's LayerNorm passes the wrong dx down: layer 3's dW is the first gradient to use it.
        {False: "layers.3.0.weight", True: "layers.3.0.weight"},
        norm="pre",
    ),
    Fault(
        "jax-float32-told-float64",
        "jax",
        "x64 not enabled: JAX computes in float32 while told float64",
        wrapped(impl_jax, jax_in_float32, as_float64),
        LOSS_BOTH,
        dtypes=("float64",),
    ),
]


# --- the networks they are run on -----------------------------------------------------------


def book_network():
    """The book's network, weights, input (1, 3) and target: one row."""
    params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    return params, weights.default_input(3), weights.default_target(1)


def batched_network():
    """The book's network and weights on a (2, 3, 3) input: six rows, for the bias faults."""
    rng = np.random.default_rng(0)
    params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    return params, rng.uniform(-1.0, 1.0, (2, 3, 3)), rng.uniform(-1.0, 1.0, (2, 3, 1))


def pre_ln_network():
    """The book's network, weights, input and target with a LayerNorm before every layer (scale 1,
    shift 0): what compare.py --norm pre runs, for the LayerNorm faults."""
    params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED, "pre")
    return params, weights.default_input(3), weights.default_target(1)


def network_of(fault: Fault):
    """The network a fault is run on: pre-LN for a LayerNorm fault, six rows for a bias fault, else the book's."""
    return pre_ln_network if fault.norm == "pre" else batched_network if fault.batched else book_network


# --- what the weaker checks would have said ---------------------------------------------------


def means_see_it(report_run: dict, dtype: str) -> bool:
    """The book's print_gradients check: do the per-layer mean |dL/dW| of any two frameworks
    differ by more than the dtype's tolerance? (compare.py's report holds the means; the
    finite differences' own means are left out: they are good to ~1e-10, not 1e-12.)"""
    means = [np.array(f["weight_grad_mean_abs"]) for n, f in report_run["frameworks"].items() if n != ORACLE]
    tol = check.TOLERANCE[dtype]
    return any(np.max(np.abs(a - b) / np.maximum(np.abs(a), np.abs(b))) > tol for a in means for b in means)


def loose_checks_see_it(results: dict) -> dict:
    """What the notebooks' tolerances say about every gradient element of every pair."""
    grads = {n: np.concatenate([np.ravel(g) for g in r["dW"] + r["db"] + [r["dx"]]]) for n, r in results.items()}
    names = list(grads)
    pairs = [(grads[a], grads[b]) for i, a in enumerate(names) for b in names[i + 1 :]]
    return {
        "rtol=1e-3": any(not np.allclose(a, b, rtol=1e-3) for a, b in pairs),  # and allclose's atol=1e-8
        "decimal=3": any(np.max(np.abs(a - b)) >= 1.5 * 10.0**-3 for a, b in pairs),  # assert_almost_equal's rule
    }


def run_frameworks(names, fault: Fault | None, network, dtype, use_shortcut, gelu_form="tanh") -> dict:
    """Every named implementation's result, with `fault` patched in for the length of the call.

    A network whose params are (W, b, scale, shift) per layer runs with norm "pre"."""
    params, x, target = network()
    params = [tuple(a.astype(dtype) for a in layer) for layer in params]
    x, target = x.astype(dtype), target.astype(dtype)
    modules = {"torch": impl_torch, "jax": impl_jax, "numpy": impl_numpy}
    with pytest.MonkeyPatch.context() as mp:
        if fault:
            fault.patch(mp)
        kw = dict(use_shortcut=use_shortcut, gelu_form=gelu_form, dtype=dtype) | norm_kw(params)
        return {n: modules[n].loss_and_grads(params, x, target, **kw) for n in names}


def norm_kw(params) -> dict:
    """{"norm": "pre"} for a pre-LN network's params, else nothing: the book's contract has no norm."""
    return {"norm": "pre"} if len(params[0]) == 4 else {}


def table() -> str:
    """docs/faults.md's table: each fault, each dtype it exists in, both shortcut settings."""
    rows = [
        "| fault | in | dtype | elementwise (compare.py) | first mismatch reported | FD oracle alone"
        " | per-layer mean \\|dL/dW\\| | rtol=1e-3 | decimal=3 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    mark = {True: "caught", False: "**missed**"}
    for fault in FAULTS:
        network = network_of(fault)
        for dtype in fault.dtypes:
            caught, means, loose, fd_sees, where = False, False, {"rtol=1e-3": False, "decimal=3": False}, False, []
            for use_shortcut in (False, True):
                names = ("torch", "numpy") if fault.batched else ("torch", "jax", "numpy")
                results = run_frameworks(names, fault, network, dtype, use_shortcut)
                report = check.compare(results, dtype)
                run = {
                    "frameworks": {n: {"weight_grad_mean_abs": check.layer_means(r["dW"])} for n, r in results.items()}
                }
                params, x, target = network()
                fd = numerical.loss_and_grads(
                    params, x, target, use_shortcut=use_shortcut, gelu_form="tanh", **norm_kw(params)
                )
                fd_sees |= not oracle.compare({fault.framework: results[fault.framework]}, fd, dtype)["agree"]
                caught |= not report["agree"]
                means |= means_see_it(run, dtype)
                loose = {k: loose[k] or v for k, v in loose_checks_see_it(results).items()}
                if report["first_mismatch"]:
                    m = report["first_mismatch"]
                    where.append(f"{'with' if use_shortcut else 'without'}: {m['tensor']}")
            rows.append(
                f"| `{fault.name}` | {fault.framework} | {dtype} | {mark[caught]} | {'; '.join(where)} "
                f"| {mark[fd_sees]} | {mark[means]} | {mark[loose['rtol=1e-3']]} | {mark[loose['decimal=3']]} |"
            )
    return "\n".join(rows)


def property_tests_catch_them() -> str:
    """Each property test of tests/test_properties.py run with each fault patched in: it must fail.

    JAX faults are left out: the property tests run JAX on three networks only; so are the
    LayerNorm faults: the property tests draw the book's kind of network, without a norm."""
    import test_properties as props

    tests = [
        props.test_torch_and_numpy_agree_in_float32,
        props.test_torch_and_numpy_agree_in_float64,
        props.test_float64_matches_finite_differences,
    ]
    lines = []
    for fault in FAULTS:
        if fault.framework == "jax" or fault.norm != "none":
            continue
        for test in tests:
            if "float32" in test.__name__ and "float32" not in fault.dtypes:
                continue
            with pytest.MonkeyPatch.context() as mp:
                fault.patch(mp)
                try:
                    test()
                    verdict = "MISSED"
                except AssertionError:
                    verdict = "caught"
            lines.append(f"{fault.name:30} {test.__name__:42} {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(property_tests_catch_them() if sys.argv[1:] == ["properties"] else table())

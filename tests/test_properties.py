"""Property-based tests: on random networks the implementations agree, and match the oracle.

Hypothesis draws the structure (1 to 8 layers, widths 1 to 16, with runs of equal widths so
shortcuts apply and changes of width so they are skipped; 0 to 2 extra leading batch
dimensions; both GELU forms, both shortcut settings) and a seed for the numbers (weights
drawn like nn.Linear's, times a scale; input and target uniform). Runs are derandomized
and bounded (fixed max_examples, no deadline), so they are the same on every machine and
a failure prints the example (sizes, shapes, seed) that reproduces it.

The rule is compare.py's: shortcut_gradients.verdict.check.compare under the error model's bound
(shortcut_gradients.verdict.bound.measure, measured with NumPy in float64), which allows each element
the rounding that how it was computed can produce: the sums behind it, their length and their
terms, carried through the layers (docs/tolerances.md). The fixed per-dtype tolerance, which
knows nothing of either, raises false alarms on these networks; `python tests/test_properties.py
N SEED` counts them for both rules (docs/tolerances.md quotes it). A second family draws large
batches of one repeated row, where every batch sum adds the same term n times and rounds the same
way at every addition: they must agree in float32, and the GELU mix-up must still be caught.
tests/test_faults.py checks that the bound still catches every catalogued fault.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # conftest, when run as a script
from conftest import needs  # noqa: E402
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import impl_numerical as numerical
from shortcut_gradients import compare
from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED
from shortcut_gradients.verdict import bound as bounds
from shortcut_gradients.verdict import check, oracle

FAST = ("torch", "numpy")  # JAX compiles once per new shape (~1 s): it gets its own, smaller run
DTYPES = ("float32", "float64")
# Weight scales (times nn.Linear's init range). At scale 2 with shortcuts, pre-activations reach
# the GELU's far negative tail, where the tanh formula's 1 + tanh(u) cancels and every
# implementation's GELU carries its tanh's error magnified (at z = -4.78, float64 GELU differs by
# 2.7e-10 relative between torch and NumPy): the bound's perturbed GELU covers it
# (docs/tolerances.md, "The special functions"), so every family draws scale 2 too.
SCALES = (0.5, 1.0, 2.0)


@dataclass
class Network:
    """One drawn example; its repr is what Hypothesis prints to reproduce a failure."""

    sizes: list
    input_shape: tuple
    seed: int
    weight_scale: float
    gelu_form: str
    use_shortcut: bool
    params: list = field(repr=False)
    x: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    norm: str = "none"  # "pre": a LayerNorm in front of every layer, params (W, b, scale, shift)

    def cast(self, dtype):
        params = [tuple(a.astype(dtype) for a in layer) for layer in self.params]
        return params, self.x.astype(dtype), self.target.astype(dtype)

    @property
    def kw(self) -> dict:
        """use_shortcut, gelu_form, and norm where it is "pre" (the book's contract never sees it)."""
        kw = {"use_shortcut": self.use_shortcut, "gelu_form": self.gelu_form}
        return kw | ({"norm": self.norm} if self.norm != "none" else {})


@st.composite
def networks(draw, max_layers=8, max_width=16, max_rows=4, scales=SCALES, norm="none"):
    # A LayerNorm normalises each layer's input: over 3 elements or more (compare.py refuses 2, where
    # (x - mean) / sigma is +-1 whatever x and its gradient is all cancellation; 1 is a constant).
    min_width = 3 if norm == "pre" else 1
    n_layers = draw(st.integers(1, max_layers))
    sizes = [draw(st.integers(min_width, max_width))]
    for _ in range(n_layers):  # keep the width (a shortcut applies) or change it (it is skipped)
        sizes.append(sizes[-1] if draw(st.booleans()) else draw(st.integers(min_width, max_width)))
    extra = draw(st.lists(st.integers(1, 3), max_size=2))  # 0 to 2 extra leading batch dimensions
    input_shape = (*extra, draw(st.integers(1, max_rows)), sizes[0])
    seed, scale = draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from(scales))
    rng = np.random.default_rng(seed)
    params = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        bound = scale / np.sqrt(d_in)  # nn.Linear's init range, times the scale
        params.append((rng.uniform(-bound, bound, (d_out, d_in)), rng.uniform(-bound, bound, d_out)))
    if norm == "pre":  # the norm's scale and shift away from 1 and 0, where a slip between them would hide
        params = [(W, b, rng.uniform(0.5, 1.5, W.shape[1]), rng.normal(0.0, 0.5, W.shape[1])) for W, b in params]
    x = rng.uniform(-2.0, 2.0, input_shape)
    target = rng.uniform(-1.0, 1.0, input_shape[:-1] + (sizes[-1],))
    form, shortcut = draw(st.sampled_from(["tanh", "exact"])), draw(st.booleans())
    return Network(sizes, input_shape, seed, scale, form, shortcut, params, x, target, norm)


def run(names, net: Network, dtype: str) -> dict:
    params, x, target = net.cast(dtype)
    return {name: needs(name)(params, x, target, **net.kw, dtype=dtype) for name in names}


def measured_bound(net: Network) -> dict:
    return bounds.measure(net.params, net.x, net.target, **net.kw)


def assert_agree(results: dict, dtype: str, net: Network, bound: dict) -> None:
    report = check.compare(results, dtype, bound=bound)
    assert report["agree"], report["first_mismatch"]
    # Not only the gradients: the forward output and the loss are within their allowance too.
    assert report["room"]["loss"] <= 1 and report["room"]["output"] <= 1
    for result in results.values():
        assert result["output"].shape == net.input_shape[:-1] + (net.sizes[-1],)
        assert result["dx"].shape == net.input_shape
        assert [dW.shape for dW in result["dW"]] == [(o, i) for i, o in zip(net.sizes[:-1], net.sizes[1:])]
        assert all(np.asarray(g).dtype == np.dtype(dtype) for g in result["dW"] + result["db"] + [result["dx"]])


# Budget: ~20 ms an example; 40 examples is about 1 s each.
@settings(
    max_examples=40, deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(net=networks())
def test_torch_and_numpy_agree_in_float32(net):
    assert_agree(run(FAST, net, "float32"), "float32", net, measured_bound(net))


@settings(
    max_examples=40, deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(net=networks())
def test_torch_and_numpy_agree_in_float64(net):
    assert_agree(run(FAST, net, "float64"), "float64", net, measured_bound(net))


# Finite differences cost one forward per element and step: small networks only.
@settings(
    max_examples=25, deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(net=networks(max_layers=4, max_width=6, max_rows=3))
def test_float64_matches_finite_differences(net):
    results = run(FAST, net, "float64")
    fd = numerical.loss_and_grads(net.params, net.x, net.target, **net.kw)
    report = oracle.compare(results, fd, "float64")
    assert report["agree"], report["first_mismatch"]


# Pre-LN (--norm pre): a LayerNorm in front of every layer, its scale and shift drawn too.
@settings(
    max_examples=25, deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(net=networks(norm="pre"), dtype=st.sampled_from(DTYPES))
def test_pre_ln_torch_and_numpy_agree(net, dtype):
    results = run(FAST, net, dtype)
    assert_agree(results, dtype, net, measured_bound(net))
    assert all(len(r["dscale"]) == len(r["dshift"]) == len(net.params) for r in results.values())


@settings(
    max_examples=15, deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(net=networks(max_layers=3, max_width=5, max_rows=3, norm="pre"))
def test_pre_ln_float64_matches_finite_differences(net):
    fd = numerical.loss_and_grads(net.params, net.x, net.target, **net.kw)
    report = oracle.compare(run(FAST, net, "float64"), fd, "float64")
    assert report["agree"], report["first_mismatch"]


# JAX compiles each new structure once (~0.5-1 s), so it gets a few small networks, in one dtype each.
@settings(
    max_examples=3, deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(net=networks(max_layers=3, max_width=6, max_rows=3), dtype=st.sampled_from(DTYPES))
def test_jax_agrees_with_the_others(net, dtype):
    assert_agree(run(("torch", "jax", "numpy"), net, dtype), dtype, net, measured_bound(net))


# --- other agreements worth having --------------------------------------------------------


def book_network():
    params = weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)
    return params, weights.default_input(3), weights.default_target(1)


def test_jax_with_and_without_jit_agree():
    """jit changes how XLA fuses and orders the arithmetic, never the answer beyond the
    tolerance. float64 only, the stricter: running op by op compiles every primitive once (~2 s)."""
    dtype = "float64"
    jax_grads = needs("jax")
    import jax

    params, x, target = book_network()
    kw = dict(use_shortcut=True, gelu_form="tanh", dtype=dtype)
    jitted = jax_grads(params, x, target, **kw)
    with jax.disable_jit():  # the same grad_fn, run op by op
        eager = jax_grads(params, x, target, **kw)
    report = check.compare({"jit": jitted, "eager": eager}, dtype)
    assert report["agree"], report["first_mismatch"]


@pytest.mark.parametrize(
    "argv",
    [[], ["--frameworks", "torch,jax,numpy,numerical", "--dtype", "float64"]],
    ids=["book-float32", "with-numerical-float64"],
)
def test_compare_json_is_byte_identical(argv, capsys):
    """Two runs of compare.py --json print the same bytes: nothing random, no timing, no ordering drift."""
    for name in ("torch", "jax", "numpy"):
        needs(name)
    outputs = []
    for _ in range(2):
        assert compare.main(["--json", *argv]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


# --- large batches of one repeated row ------------------------------------------------------


@st.composite
def repeated_rows(draw):
    """A network of 1 to 4 layers, widths 1 to 8, and n in [256, 4096] copies of one random row."""
    sizes = [draw(st.integers(1, 8))]
    for _ in range(draw(st.integers(1, 4))):
        sizes.append(sizes[-1] if draw(st.booleans()) else draw(st.integers(1, 8)))
    n, seed = draw(st.integers(256, 4096)), draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    params = []
    for d_in, d_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(d_in)
        params.append((rng.uniform(-bound, bound, (d_out, d_in)), rng.uniform(-bound, bound, d_out)))
    x = np.repeat(rng.uniform(-2.0, 2.0, (1, sizes[0])), n, axis=0)  # (n, d_in), every row the same
    target = np.repeat(rng.uniform(-1.0, 1.0, (1, sizes[-1])), n, axis=0)  # (n, d_out)
    return Network(sizes, x.shape, seed, 1.0, "tanh", draw(st.booleans()), params, x, target)


# Budget: ~0.15 s an example (the bound's float64 runs dominate); 8 examples is about 1 s.
@settings(
    max_examples=8, deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(net=repeated_rows())
def test_repeated_rows_agree_in_float32_and_the_gelu_mixup_is_caught(net):
    """Must pass: the batch sums' rounding of n identical rows grows like n, and so does the bound.
    Must catch: torch with exact GELU where tanh was meant, on the same rows: in float32, or, where
    float32's allowance is wider than the difference between the forms (the run measures that and
    says so), in the float64 rerun the verdict then makes."""
    bound = measured_bound(net)
    results = run(FAST, net, "float32")
    assert_agree(results, "float32", net, bound)
    params, x, target = net.cast("float32")
    mixed = needs("torch")(params, x, target, use_shortcut=net.use_shortcut, gelu_form="exact", dtype="float32")
    if check.compare({**results, "torch": mixed}, "float32", bound)["agree"]:
        assert not bounds.gelu_form_resolution(net.params, net.x, net.target, bound, "float32", **net.kw)["resolved"]
        params, x, target = net.cast("float64")
        mixed = needs("torch")(params, x, target, use_shortcut=net.use_shortcut, gelu_form="exact", dtype="float64")
        assert not check.compare({**run(FAST, net, "float64"), "torch": mixed}, "float64", bound)["agree"]


# --- the survey behind the rule: python tests/test_properties.py N SEED [SCALES] --------


def survey(n: int, seed: int, scales=SCALES) -> dict:
    """False alarms between torch and numpy over n drawn networks, under the fixed rule and under
    the bound (worst: max_rel_diff for the fixed rule, room for the bound); docs/tolerances.md
    quotes it. Not a test: it only counts."""
    from hypothesis import seed as hypothesis_seed

    counts = {f"{rule} {dtype}": [0, 0.0] for rule in ("fixed", "bound") for dtype in DTYPES}

    @hypothesis_seed(seed)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(net=networks(scales=scales))
    def count(net):
        floor = measured_bound(net)
        for dtype in DTYPES:
            results = run(FAST, net, dtype)
            for rule, m in (("fixed", None), ("bound", floor)):
                report = check.compare(results, dtype, bound=m)
                tally = counts[f"{rule} {dtype}"]
                tally[0] += not report["agree"]
                tally[1] = max(tally[1], max(report["max_rel_diff" if m is None else "room"].values()))

    count()
    return {k: f"{alarms}/{n} false alarms, worst {worst:.1e}" for k, (alarms, worst) in counts.items()}


if __name__ == "__main__":
    scales = tuple(float(s) for s in sys.argv[3].split(",")) if len(sys.argv) > 3 else SCALES
    for key, line in survey(int(sys.argv[1]), int(sys.argv[2]), scales).items():
        print(f"{key:16} {line}")

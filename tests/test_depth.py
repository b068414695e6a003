"""The depth study (shortcut_gradients/teaching/depth.py): its batched gradients against per-seed runs, and its statistics recomputed."""

import math
import statistics

import numpy as np
import pytest
import torch  # a core dependency: the study runs impl_torch's module
from conftest import needs

from shortcut_gradients.plumbing import weights
from shortcut_gradients.teaching import depth
from shortcut_gradients.verdict.check import mean_abs

VARIANT_CASES = list(depth.VARIANTS)
# float64: vmap runs the seeds' matmuls as one batched matmul and loss_and_grads one at a time;
# the sums are the same terms, so they agree to about 1e-16 relative. 1e-12 passes that and
# catches a wrong weight, a missing shortcut or a swapped seed, which move dW by far more.
RTOL64 = 1e-12
SEEDS = [123, 124, 125]


def per_seed(fn, sizes, seed, variant, dtype="float64"):
    """One seed's network through an implementation's own loss_and_grads."""
    settings = depth.VARIANTS[variant]
    x, target = weights.default_input(sizes[0]), weights.default_target(1)
    params = weights.seeded_params(sizes, seed, settings["norm"])
    return fn(
        params, x, target, use_shortcut=settings["use_shortcut"], gelu_form="tanh", dtype=dtype, norm=settings["norm"]
    )


@pytest.mark.parametrize("variant", VARIANT_CASES)
@pytest.mark.parametrize("framework", ["torch", "numpy"])
@pytest.mark.parametrize("width", [3, 5])
def test_batched_gradients_are_each_seeds_loss_and_grads(variant, framework, width):
    sizes = depth.network_sizes(width, 4)
    grads = depth.batched_grads(
        sizes, depth.stacked_params(sizes, SEEDS, "float64"), variant, gelu_form="tanh", dtype="float64"
    )
    layer0, dead = depth.layer0_and_dead(grads)
    assert grads["layers.0.0.weight"].shape == (len(SEEDS), width, width)
    assert grads["layers.3.0.weight"].dtype == torch.float64
    for k, seed in enumerate(SEEDS):
        expected = per_seed(needs(framework), sizes, seed, variant)
        for i, (dW, db) in enumerate(zip(expected["dW"], expected["db"])):
            np.testing.assert_allclose(grads[f"layers.{i}.0.weight"][k].numpy(), dW, rtol=RTOL64, atol=0)
            np.testing.assert_allclose(grads[f"layers.{i}.0.bias"][k].numpy(), db, rtol=RTOL64, atol=0)
        assert math.isclose(layer0[k], mean_abs(expected["dW"][0]), rel_tol=RTOL64)
    assert not dead.any()  # depth 4: every output is away from 0


def test_the_stream_is_the_last_layers_input():
    """'stream' is mean |x| entering the last layer: impl_numpy's forward cache, seed by seed."""
    from impl_numpy import model

    sizes = depth.network_sizes(3, 6)
    stream = depth.batched_stream(
        sizes, depth.stacked_params(sizes, SEEDS, "float64"), "shortcut", gelu_form="tanh", dtype="float64"
    )
    for k, seed in enumerate(SEEDS):
        network = model.ExampleDeepNeuralNetwork(weights.seeded_params(sizes, seed), True, "tanh")
        network.forward(weights.default_input(3))
        assert math.isclose(stream[k], mean_abs(network.cache[-1][0]), rel_tol=RTOL64)


@pytest.fixture(scope="module")
def small():
    """A study small enough to recompute by hand: 6 seeds (so the quartiles interpolate), depths 2 to 4, width 3."""
    return depth.study((2, 3, 4), (3,), n_seeds=6, first_seed=123, dtype="float64", resamples=40)


def test_values_are_layer0_means_and_the_quartiles_are_the_textbook_ones(small):
    assert small["seeds"] == [123, 124, 125, 126, 127, 128] and small["widths"] == [3]
    for name, run in small["panels"][0]["variants"].items():
        for j, d in enumerate(small["depths"]):
            row = run["values"][j]
            for seed, value in zip(small["seeds"], row):
                expected = mean_abs(per_seed(needs("numpy"), depth.network_sizes(3, d), seed, name)["dW"][0])
                assert math.isclose(value, expected, rel_tol=RTOL64)
            q1, q2, q3 = statistics.quantiles(row, n=4, method="inclusive")  # numpy's linear interpolation
            # Two routes to the same interpolation: equal up to a rounding or two, ~1e-16.
            assert math.isclose(run["median"][j], statistics.median(row), rel_tol=1e-14)
            assert math.isclose(run["q25"][j], q1, rel_tol=1e-14) and math.isclose(run["q75"][j], q3, rel_tol=1e-14)
            assert run["q25"][j] <= run["median"][j] <= run["q75"][j]


def test_the_fit_and_its_bootstrap_interval_recomputed_with_polyfit(small):
    depths = np.array(small["depths"], np.float64)
    for run in small["panels"][0]["variants"].values():
        values = np.array(run["values"])  # (D, S)
        fit = run["fit"]
        xs, ys = np.repeat(depths, values.shape[1]), np.log10(values).ravel()
        slope, intercept = np.polyfit(xs, ys, 1)
        # Normal equations against polyfit's QR: the same line to ~1e-14 in log10 units.
        assert math.isclose(fit["slope"], slope, rel_tol=1e-10) and math.isclose(
            fit["factor"], 10**slope, rel_tol=1e-10
        )
        assert math.isclose(fit["intercept"], intercept, rel_tol=1e-10)
        assert fit["points"] == values.size and fit["dead"] == 0

        n = len(small["seeds"])
        picks = np.random.default_rng(depth.BOOTSTRAP_SEED).integers(0, n, size=(small["resamples"], n))
        factors = [10 ** np.polyfit(xs, np.log10(values[:, pick]).ravel(), 1)[0] for pick in picks]
        low, high = np.percentile(factors, [2.5, 97.5])
        assert math.isclose(fit["low"], low, rel_tol=1e-10) and math.isclose(fit["high"], high, rel_tol=1e-10)
        assert fit["low"] <= fit["factor"] <= fit["high"]


def test_dead_draws_are_counted_and_left_out_of_the_fit_only():
    """Seeds 140..150 at width 3, depth 8, with the shortcut: one output lands exactly on 0 (seed 147)."""
    result = depth.study((6, 8), (3,), n_seeds=11, first_seed=140, variants=["shortcut"], resamples=10)
    run = result["panels"][0]["variants"]["shortcut"]
    for j, d in enumerate(result["depths"]):
        seeds_dead = []
        for seed in result["seeds"]:
            r = per_seed(needs("torch"), depth.network_sizes(3, d), seed, "shortcut", dtype="float32")
            if not any(np.any(g) for g in r["dW"] + r["db"]):
                seeds_dead.append(seed)
        assert run["dead"][j] == len(seeds_dead)
    assert run["dead"] == [0, 1]
    # The dead draw's 0 stays in the quartiles (11 values, so the median is the 6th) and out of the fit.
    assert sorted(run["values"][1])[0] == 0.0 and run["median"][1] == sorted(run["values"][1])[5]
    assert run["fit"]["dead"] == 1 and run["fit"]["points"] == 2 * 11 - 1


def test_fit_factor_recovers_a_geometric_rate_and_counts_what_it_leaves_out():
    depths = np.arange(2, 7)
    values = np.repeat(3e-3 * 0.25 ** (depths[:, None] - 2.0), 3, axis=1)  # (D, S): three seeds on one line
    dead = np.zeros_like(values, bool)
    values[1, 0], dead[1, 0] = 0.0, True  # a dead draw
    values[3, 2] = 0.0  # a live draw whose layer 0 underflowed
    fit = depth.fit_factor(depths, values, dead, resamples=20, seed=0)
    # Every point that is kept lies on the line: exact up to log10 rounding, ~1e-16.
    assert math.isclose(fit["factor"], 0.25, rel_tol=1e-12)
    assert math.isclose(fit["low"], 0.25, rel_tol=1e-12) and math.isclose(fit["high"], 0.25, rel_tol=1e-12)
    assert (fit["points"], fit["dead"], fit["zero"]) == (13, 1, 1)
    only_one_depth = depth.fit_factor(
        [2, 3], np.array([[1.0], [0.0]]), np.array([[False], [True]]), resamples=5, seed=0
    )
    assert only_one_depth["factor"] is None and only_one_depth["dead"] == 1


def test_the_text_prints_the_studys_numbers(small):
    text = depth.format_study(small)
    for name, run in small["panels"][0]["variants"].items():
        assert f"{run['median'][0]:.2e} [{run['q25'][0]:.2e}, {run['q75'][0]:.2e}]" in text
        assert (
            f"{name}: x{run['fit']['factor']:.3f} per layer [{run['fit']['low']:.3f}, {run['fit']['high']:.3f}]" in text
        )


def test_the_study_leaves_the_callers_torch_state_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(7)
    depth.study((2,), (3,), n_seeds=2, resamples=5)
    np.testing.assert_array_equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads

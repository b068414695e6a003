"""The depth study: layer 0's weight gradient against depth, over many random networks.

One network per depth says little: neighbouring depths draw different weights, and a single
draw can land anywhere in a spread that covers orders of magnitude. So for every depth,
width and variant this draws `n_seeds` networks and reports the median and interquartile
range of layer 0's mean |dL/dW| (the book's measure), with a per-layer factor fitted to all
draws and a bootstrap confidence interval for it.

The networks are the book's shape made deeper: sizes (width,) * depth + (1,), that is
depth - 1 layers width -> width, then width -> 1 (the book's network is width 3, depth 5).
Seed s draws the weights the way the book does, torch.manual_seed(s) then nn.Linear's
default init (shortcut_gradients.plumbing.weights.seeded_params), so every variant sees the same weights. The
input is the book's kind, linspace(1, -1, width) as one row, and the target is 0.

    plain     x = GELU(Linear(x))                                          no shortcut
    shortcut  x = x + GELU(Linear(x))       where the shapes match        the book's
    pre-ln    x = x + GELU(Linear(LN(x)))   where the shapes match        GPT-2's ordering

A draw is dead when every gradient is exactly 0: the output landed exactly on the target
(the last GELU saturated to 0), so nothing is learnt from it. Dead draws stay in the median
and quartiles (they are what such a network gives) and are counted; they have no logarithm,
so the fit leaves them out and says how many.

The gradients are impl_torch.model's own: its ExampleDeepNeuralNetwork and mse_loss, run
for all seeds at once by torch.func (functional_call over stacked per-seed parameters,
vmap of grad). tests/test_depth.py checks them against per-seed loss_and_grads of
impl_torch and impl_numpy.
"""

import time
from contextlib import contextmanager

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from impl_torch import model
from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_SEED

VARIANTS = {  # name: ExampleDeepNeuralNetwork's settings
    "plain": {"use_shortcut": False, "norm": "none"},
    "shortcut": {"use_shortcut": True, "norm": "none"},
    "pre-ln": {"use_shortcut": True, "norm": "pre"},
}
BOOTSTRAP_RESAMPLES = 1000  # resamples of the seeds for the fit's interval; enough for the 2.5th and 97.5th percentiles
BOOTSTRAP_SEED = 0  # numpy.random.default_rng(BOOTSTRAP_SEED) draws the resamples: the interval is reproducible
CONFIDENCE = 0.95
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_network(sizes, variant: str, gelu_form: str, dtype: str) -> torch.nn.Module:
    """impl_torch's ExampleDeepNeuralNetwork for the variant, in dtype, without touching the caller's torch RNG."""
    settings = VARIANTS[variant]
    with torch.random.fork_rng(devices=[]):  # its init is replaced by the seeds' weights
        network = model.ExampleDeepNeuralNetwork(list(sizes), gelu_form=gelu_form, **settings)
    return network.to(TORCH_DTYPES[dtype])


@contextmanager
def one_torch_thread():
    """torch on one thread for the block, then as before (the setting is process-wide).

    The matmuls here are at most (S, 1, 64) x (S, 64, 64): too small to split, and on a busy
    2-core machine waking a second thread cost 8 ms per matmul against 12 us on one (measured).
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def network_sizes(width: int, depth: int) -> tuple[int, ...]:
    """(width,) * depth + (1,): `depth` layers, the last one width -> 1."""
    return (width,) * depth + (1,)


def stacked_params(sizes, seeds, dtype: str) -> dict[str, torch.Tensor]:
    """Each seed's weights (shortcut_gradients.plumbing.weights.seeded_params), stacked along a new first axis.

    Returns {"layers.{i}.0.weight": (S, d_out, d_in), "layers.{i}.0.bias": (S, d_out)}, the
    state_dict names of impl_torch.model.ExampleDeepNeuralNetwork.
    """
    with torch.random.fork_rng(devices=[]):  # seeded_params reseeds torch: keep the caller's RNG as it was
        per_seed = [weights.seeded_params(sizes, seed) for seed in seeds]
    stacked = {}
    for i in range(len(sizes) - 1):
        W = np.stack([params[i][0] for params in per_seed])  # (S, d_out, d_in)
        b = np.stack([params[i][1] for params in per_seed])  # (S, d_out)
        stacked[f"layers.{i}.0.weight"] = torch.tensor(W, dtype=TORCH_DTYPES[dtype])
        stacked[f"layers.{i}.0.bias"] = torch.tensor(b, dtype=TORCH_DTYPES[dtype])
    return stacked


def batched_grads(sizes, stacked: dict, variant: str, *, gelu_form: str, dtype: str) -> dict[str, torch.Tensor]:
    """dL/d every layer's weight and bias, for every seed's network in one vmapped call.

    stacked: from stacked_params, (S, ...) per name; returns the same names and shapes. The
    network's other parameters (pre-LN's scale and shift) keep impl_torch's own init, shared
    by all seeds. Seeds are independent networks, so vmap(grad(loss)) is S separate backward
    passes done as one batched one.
    """
    network = build_network(sizes, variant, gelu_form, dtype)
    shared = {name: p.detach() for name, p in network.named_parameters() if name not in stacked}
    x = torch.tensor(weights.default_input(sizes[0]), dtype=TORCH_DTYPES[dtype])  # (1, width)
    target = torch.tensor(weights.default_target(sizes[-1]), dtype=TORCH_DTYPES[dtype])  # (1, 1)

    def loss(layer_params, shared, x, target):
        output = functional_call(network, {**layer_params, **shared}, (x,))  # (1, 1)
        return model.mse_loss(output, target)

    with model.full_float32_matmuls():
        return vmap(grad(loss), in_dims=(0, None, None, None))(stacked, shared, x, target)


def batched_stream(sizes, stacked: dict, variant: str, *, gelu_form: str, dtype: str) -> np.ndarray:
    """Mean |x| entering the last layer, per seed (S,): the residual stream the last layer reads.

    The same network without its last layer, run forward on the seeds' first depth - 1 layers.
    """
    network = build_network(sizes[:-1], variant, gelu_form, dtype)
    own = dict(network.named_parameters())
    first = {name: stacked[name] for name in own if name in stacked}  # layers 0 .. depth - 2
    shared = {name: p.detach() for name, p in own.items() if name not in stacked}
    x = torch.tensor(weights.default_input(sizes[0]), dtype=TORCH_DTYPES[dtype])  # (1, width)

    def stream(layer_params, shared, x):
        return functional_call(network, {**layer_params, **shared}, (x,)).abs().mean()

    with model.full_float32_matmuls():
        return vmap(stream, in_dims=(0, None, None))(first, shared, x).numpy().astype(np.float64)  # (S,)


def layer0_and_dead(grads: dict) -> tuple[np.ndarray, np.ndarray]:
    """(mean |dL/dW| of layer 0 per seed (S,) float64, dead per seed (S,) bool): every gradient exactly 0."""
    dW0 = grads["layers.0.0.weight"].numpy().astype(np.float64)  # (S, d_out, d_in)
    alive = torch.stack([(g.flatten(1) != 0).any(1) for g in grads.values()]).any(0)  # (S,)
    return np.abs(dW0).mean(axis=(1, 2)), ~alive.numpy()


def quartiles(values: np.ndarray) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile) of the values, numpy's linear interpolation."""
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return float(q25), float(median), float(q75)


def pooled_fit(depths, logs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line log10(value) = intercept + slope * depth through every draw at once.

    depths (D,); logs (..., D, S), NaN where a draw is left out. Returns (slope, intercept),
    each (...,); NaN where fewer than two depths have a draw. Vectorised over the leading
    axes so that the bootstrap fits all its resamples in one call.
    """
    d = np.asarray(depths, np.float64)[:, None]  # (D, 1)
    used = ~np.isnan(logs)  # (..., D, S)
    n = used.sum(axis=(-2, -1))  # (...,)
    with np.errstate(invalid="ignore", divide="ignore"):  # no usable draw: 0 / 0, reported as NaN
        d_mean = (used * d).sum(axis=(-2, -1)) / n
        y_mean = np.where(used, logs, 0.0).sum(axis=(-2, -1)) / n
        dd = np.where(used, d - d_mean[..., None, None], 0.0)  # (..., D, S)
        dy = np.where(used, logs - y_mean[..., None, None], 0.0)
        sxx = (dd * dd).sum(axis=(-2, -1))
        slope = (dd * dy).sum(axis=(-2, -1)) / np.where(sxx > 0, sxx, np.nan)
    return slope, y_mean - slope * d_mean


def fit_factor(depths, values: np.ndarray, dead: np.ndarray, *, resamples: int, seed: int) -> dict:
    """The per-layer factor 10**slope of pooled_fit over the live, nonzero draws, and its bootstrap interval.

    values, dead: (D, S). The interval resamples the S seeds with replacement (a seed keeps
    its draws at every depth, which share layer 0's weights):
    numpy.random.default_rng(seed).integers(0, S, size=(resamples, S)) picks them, and the
    interval is the central CONFIDENCE of the refitted factors.
    """
    usable = ~dead & (values > 0) & np.isfinite(values)
    with np.errstate(divide="ignore"):
        logs = np.where(usable, np.log10(np.where(usable, values, 1.0)), np.nan)  # (D, S)
    slope, intercept = pooled_fit(depths, logs)
    picks = np.random.default_rng(seed).integers(0, values.shape[1], size=(resamples, values.shape[1]))
    slopes, _ = pooled_fit(depths, logs[:, picks].transpose(1, 0, 2))  # (resamples,)
    tail = 100 * (1 - CONFIDENCE) / 2
    fitted = bool(np.isfinite(slope))
    low, high = np.nanpercentile(10**slopes, [tail, 100 - tail]) if fitted else (np.nan, np.nan)
    return {
        "factor": float(10**slope) if fitted else None,
        "low": float(low) if fitted else None,
        "high": float(high) if fitted else None,
        "slope": float(slope) if fitted else None,
        "intercept": float(intercept) if fitted else None,
        "points": int(usable.sum()),
        "dead": int(dead.sum()),
        "zero": int((~dead & (values == 0)).sum()),  # layer 0's dW underflowed to 0 in a live draw
    }


def summarize(depths, values: np.ndarray, dead: np.ndarray, stream: np.ndarray, *, resamples: int) -> dict:
    """One variant at one width, from its draws: values, dead and stream are (D, S), one row per depth."""
    q25, median, q75 = zip(*(quartiles(row) for row in values))
    return {
        "values": values.tolist(),
        "dead": dead.sum(axis=1).tolist(),
        "median": list(median),
        "q25": list(q25),
        "q75": list(q75),
        "stream": np.median(stream, axis=1).tolist(),
        "fit": fit_factor(depths, values, dead, resamples=resamples, seed=BOOTSTRAP_SEED),
    }


def study(
    depths,
    widths,
    *,
    n_seeds: int,
    first_seed: int = BOOK_SEED,
    variants=None,
    gelu_form: str = "tanh",
    dtype: str = "float32",
    resamples: int = BOOTSTRAP_RESAMPLES,
    progress=None,
) -> dict:
    """The study over depths x widths x variants (default: all of VARIANTS), n_seeds draws each.

    Seeds are first_seed, ..., first_seed + n_seeds - 1. Returns a JSON-able dict:
    {"depths", "widths", "variants", "seeds", "gelu", "dtype",
     "resamples", "confidence", "seconds",
     "panels": [{"width", "variants": {name: {
        "values": [[layer 0's mean |dL/dW| per seed] per depth],
        "dead": [dead draws per depth], "median", "q25", "q75": [per depth],
        "stream": [median over seeds of mean |x| entering the last layer, per depth],
        "fit": fit_factor's dict}}}]}.
    `progress(text)` is called before each width and depth.
    """
    variants = list(variants if variants is not None else VARIANTS)
    depths, seeds = [int(d) for d in depths], list(range(first_seed, first_seed + n_seeds))
    start = time.perf_counter()
    panels = []
    with one_torch_thread():
        for width in widths:
            draws = {name: {"values": [], "dead": [], "stream": []} for name in variants}  # per depth, (S,) each
            for depth in depths:
                if progress:
                    progress(f"depth study: width {width}, depth {depth} ({time.perf_counter() - start:.1f} s so far)")
                sizes = network_sizes(width, depth)
                stacked = stacked_params(sizes, seeds, dtype)  # the same weights for every variant
                for name in variants:
                    grads = batched_grads(sizes, stacked, name, gelu_form=gelu_form, dtype=dtype)
                    layer0, dead = layer0_and_dead(grads)
                    draws[name]["values"].append(layer0)
                    draws[name]["dead"].append(dead)
                    draws[name]["stream"].append(batched_stream(sizes, stacked, name, gelu_form=gelu_form, dtype=dtype))
            summaries = {
                name: summarize(depths, *(np.array(d[k]) for k in ("values", "dead", "stream")), resamples=resamples)
                for name, d in draws.items()
            }
            panels.append({"width": int(width), "variants": summaries})
    return {
        "depths": depths,
        "widths": [int(w) for w in widths],
        "variants": variants,
        "seeds": seeds,
        "gelu": gelu_form,
        "dtype": dtype,
        "resamples": resamples,
        "confidence": CONFIDENCE,
        "seconds": time.perf_counter() - start,
        "panels": panels,
    }


def _cell(median: float, q25: float, q75: float, dead: int) -> str:
    return f"{median:.2e} [{q25:.2e}, {q75:.2e}]" + (f" {dead:>2}" if dead else "   ")


def format_study(result: dict, timed: bool = True) -> str:
    """The study as text: per width, a table of median [quartiles] and dead draws per depth, then the fits.

    timed=False leaves out the seconds it took (a committed notebook must print the same on every run)."""
    n, depths = len(result["seeds"]), result["depths"]
    names = result["variants"]
    lines = [
        f"Depth study: layer 0's mean |dL/dW| over {n} random networks per cell (seeds"
        f" {result['seeds'][0]}..{result['seeds'][-1]}): median [25th, 75th percentile], then the number of dead"
        " draws (every gradient exactly 0) where there are any.",
        f"Networks: sizes (width,) * depth + (1,), input linspace(1, -1, width), target 0, {result['gelu']} GELU,"
        f" {result['dtype']}" + (f"; {result['seconds']:.1f} s." if timed else "."),
    ]
    for panel in result["panels"]:
        runs = panel["variants"]
        lines += ["", f"Width {panel['width']}", f"{'depth':>5}" + "".join(f"  {name:<34}" for name in names)]
        for j, depth in enumerate(depths):
            cells = (
                _cell(runs[k]["median"][j], runs[k]["q25"][j], runs[k]["q75"][j], runs[k]["dead"][j]) for k in names
            )
            lines.append(f"{depth:>5}" + "".join(f"  {cell:<34}" for cell in cells))
        lines.append(
            "Mean |x| entering the last layer (the residual stream), median over seeds: "
            + "; ".join(f"{k} {runs[k]['stream'][0]:.3g} -> {runs[k]['stream'][-1]:.3g}" for k in names)
            + f" (depth {depths[0]} -> {depths[-1]})"
        )
        for name in names:
            lines.append(f"  {name}: {describe_fit(runs[name]['fit'], depths, n, result['confidence'])}")
    return "\n".join(lines)


def describe_fit(fit: dict, depths, n_seeds: int, confidence: float) -> str:
    """'x0.242 per layer [0.231, 0.254] (...)': the factor, its interval and what it was fitted to."""
    left = f"; {fit['dead']} dead draws left out" if fit["dead"] else ""
    left += f"; {fit['zero']} live draws with layer 0's dW exactly 0 left out" if fit["zero"] else ""
    if fit["factor"] is None:
        return f"no factor fitted (live draws at fewer than two depths{left})"
    return (
        f"x{fit['factor']:.3f} per layer [{fit['low']:.3f}, {fit['high']:.3f}]"
        f" ({confidence:.0%} bootstrap interval over the {n_seeds} seeds; least squares of log10 through"
        f" {fit['points']} draws at depths {depths[0]}..{depths[-1]}{left})"
    )

"""Probe inputs: a small network and batch on which each classic slip of an outside implementation shows.

The book's input is one row with one output. On it a bias gradient taken from the first row, a
loss summed instead of averaged (a factor of one), a gradient not summed over a batch dimension
and a weight gradient with its axes swapped on a layer that is not square all give the right
numbers. When outside code is in a run, compare.py also checks every implementation on the probe:

    several distinct rows, as a 3-D (B, T, d) batch   a bias from one row, a batch sum, a mean over rows
    several outputs                                 a loss summed over outputs instead of averaged
    non-square layers beside a square one           transposed weights, the identity path where it applies
    inputs spread wide enough to reach GELU's tail  the other GELU form, a float32-accurate erf or tanh

in float64, where the other GELU form and a float32 constant both show (in float32 they hide under
rounding), on both shortcut settings. The probe is drawn from numpy's generator seeded with the
run's --seed, so the same command draws the same probe.
"""

from dataclasses import dataclass

import numpy as np

# Widths in, hidden, hidden, out: 3 -> 4 and 4 -> 2 are not square (a transposed dW has the wrong
# shape there), 4 -> 4 is (its dW transposed has the right shape, and its identity path applies);
# two outputs make a summed loss twice an averaged one per row. Every width is 3 or more, so a
# LayerNorm has something to normalise.
LAYER_SIZES = (3, 4, 4, 2)
BATCH = (2, 3)  # (B, T): six distinct rows in a 3-D input
INPUT_SPREAD = 3.0  # inputs uniform in [-3, 3]: with WEIGHT_SCALE, pre-activations reach GELU's tail
WEIGHT_SCALE = 1.5  # weights N(0, (WEIGHT_SCALE / sqrt(d_in))^2)
DTYPE = "float64"


@dataclass(frozen=True)
class Probe:
    name: str
    params: list  # [(W (d_out, d_in), b (d_out,)), ...], pre-LN with (scale (d_in,), shift (d_in,))
    x: np.ndarray  # (B, T, d_in)
    target: np.ndarray  # (B, T, d_out)
    dtype: str
    largest_preactivation: float  # max |x W^T + b| of the first layer: how far into GELU's tail it reaches

    def describe(self) -> str:
        """One line: what the probe is, so a reader knows what it could see."""
        sizes = ",".join(str(W.shape[1]) for W, *_ in self.params) + f",{self.params[-1][0].shape[0]}"
        return (
            f"{self.name}: a {tuple(self.x.shape)} batch of distinct rows through layers {sizes} (non-square, "
            f"{self.target.shape[-1]} outputs), first-layer |z| up to {self.largest_preactivation:.1f} "
            f"(GELU's tail), {self.dtype}"
        )


def draw(seed: int, norm: str = "none") -> Probe:
    """The probe for a run seeded with `seed`; with norm "pre", each layer's LayerNorm gets a
    drawn scale and shift (not 1 and 0, under which a slip in their gradients could hide)."""
    rng = np.random.default_rng(seed)
    params = []
    for d_in, d_out in zip(LAYER_SIZES[:-1], LAYER_SIZES[1:]):
        W = rng.normal(0.0, WEIGHT_SCALE / np.sqrt(d_in), (d_out, d_in))  # (d_out, d_in)
        b = rng.normal(0.0, 0.5, d_out)  # (d_out,)
        if norm == "pre":
            scale, shift = 1.0 + 0.3 * rng.normal(size=d_in), 0.3 * rng.normal(size=d_in)  # (d_in,) each
            params.append((W, b, scale, shift))
        else:
            params.append((W, b))
    x = rng.uniform(-INPUT_SPREAD, INPUT_SPREAD, BATCH + (LAYER_SIZES[0],))  # (B, T, d_in)
    target = rng.normal(size=BATCH + (LAYER_SIZES[-1],))  # (B, T, d_out)
    W, b = params[0][:2]
    first = x
    if norm == "pre":  # the first layer sees its LayerNorm's output (eps as the implementations' 1e-5)
        xhat = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)  # (B, T, d_in)
        first = xhat * params[0][2] + params[0][3]
    largest = float(np.abs(first @ W.T + b).max())
    return Probe("batch probe", params, x, target, DTYPE, largest)

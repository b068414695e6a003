"""Each element's measured magnitude: the size of the terms it is summed from, for the noise floor."""

import numpy as np

from crosscheck import check as checking

# `sensitivity`'s relative nudge to every input: small enough that the gradients move
# linearly (second-order terms ~1e-18), large enough that float64 rounding (~1e-16 of the
# terms) is 1e-7 of the move it measures.
SENSITIVITY_DELTA = 2.0**-30


def sensitivity(loss_and_grads, params, x, target, *, use_shortcut: bool, gelu_form: str, draws: int = 4) -> dict:
    """The size of the terms each element is summed from, measured in float64.

    Every input (each weight, bias, input and target element) is multiplied by
    (1 + SENSITIVITY_DELTA r), r uniform in [-1, 1], `draws` times with a fixed seed, and each
    element's largest move is divided by SENSITIVITY_DELTA. An element computed as a sum of terms of size m moves
    by about m DELTA, however much the terms cancel, so this is the size of the terms it is
    summed from: the scale its float rounding noise is a few ulps of. Returns a result-like
    dict, {"loss", "output", "dW", "db", "dx"}, of those magnitudes.
    """
    rng = np.random.default_rng(0)  # fixed: the same inputs always get the same floor

    def run(perturb):
        ps = [(perturb(W), perturb(b)) for W, b in params]
        return checking.tensors(
            loss_and_grads(
                ps, perturb(x), perturb(target), use_shortcut=use_shortcut, gelu_form=gelu_form, dtype="float64"
            )
        )

    as64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    base = run(as64)
    moved = [np.zeros(np.shape(t)) for _, _, t in base]
    for _ in range(draws):
        shifted = run(lambda a: as64(a) * (1 + SENSITIVITY_DELTA * rng.uniform(-1, 1, np.shape(a))))
        for m, (_, _, t0), (_, _, t1) in zip(moved, base, shifted):
            np.maximum(m, np.abs(as64(t1) - as64(t0)) / SENSITIVITY_DELTA, out=m)
    n = len(params)
    return {
        "loss": moved[0],
        "output": moved[1],
        "dW": [moved[2 + 2 * (n - 1 - i)] for i in range(n)],
        "db": [moved[3 + 2 * (n - 1 - i)] for i in range(n)],
        "dx": moved[-1],
    }

"""Naming the slip behind a wrong gradient. Each diagnosis is a test on the arrays.

`diagnose(yours, expected, candidates, factors)` tries, in order:

    shape      yours has another shape: a candidate of that shape (dz's shape for db: not
               summed), expected with leading dimensions that sum to it (a sum over the
               broadcast dimensions missing), the reverse of expected's (transposed), or
               just the shapes
    dtype      yours is not in the run's dtype: "float64 in a float32 run", something is cast
    not-finite NaN or inf where autograd has numbers
    zeros      yours is all zeros where expected is not
    sign       yours == -expected
    transposed yours == expected.T (square tensors: the shape cannot tell)
    candidates yours == what a named slip computes (the other GELU form, dx without the
               identity path, db from one row, a LayerNorm dx with the row's mean and
               variance treated as constants, ...): each step passes its own
    factor     yours == c expected for one constant c, named when it is a known one
               (2, 1/2, 3, 1/3, N, ...); never a c near 0 (that is a term missing, which
               each step names with a candidate)
    float32    yours == expected to float32's tolerance but not float64's: a float32
               constant or intermediate in a float64 run
    unknown    none of these

"==" is shortcut_gradients.verdict.check.relative_error within MATCH: loose enough that a slip is still
named when float noise or a second, smaller slip rides on it; tight enough that no two
classic slips on the grader's inputs are that close to each other (the exact and tanh GELU
forms are the closest pair; docs/grader.md measures the gap).
"""

from dataclasses import dataclass

import numpy as np

from shortcut_gradients.verdict.check import TOLERANCE, relative_error

EPS = float(np.finfo(np.float64).eps)
# Two arrays are "the same" for a diagnosis within float32's tolerance: see above.
MATCH = TOLERANCE["float32"]
# A fitted constant is named only when it is this far from the right one: closer than that,
# the difference is rounding (float32 constants move results by far less), not a slip.
FIT_MARGIN = 1e-4


@dataclass(frozen=True)
class Diagnosis:
    slip: str  # a short name: "sign", "transposed", "factor", "bias-not-summed", ... or "unknown"
    text: str  # the likely cause, in a sentence


@dataclass(frozen=True)
class Candidate:
    """What yours would be with one named slip."""

    slip: str
    text: str
    array: np.ndarray


@dataclass(frozen=True)
class Factor:
    """A known constant factor: yours == value * expected means `text`."""

    value: float
    label: str  # how to print the value: "1/2", "N = 12"
    text: str
    slip: str = "factor"


# The chain rule's constants: the 2 of d(u^2)/du = 2u, the 3 of d(u^3)/du = 3u^2.
CHAIN_RULE_FACTORS = (
    Factor(2.0, "2", "a factor 2 too many: was the 2 of d(u^2)/du = 2u applied twice?"),
    Factor(0.5, "1/2", "a factor 2 missing: d(u^2)/du = 2u"),
    Factor(3.0, "3", "a factor 3 too many: was the 3 of d(u^3)/du = 3u^2 applied twice?"),
    Factor(1 / 3, "1/3", "a factor 3 missing: d(u^3)/du = 3u^2"),
)


VARIANCE_N_1 = (
    "the variance divided by n - 1 (Bessel's correction: ddof=1, torch.var's default); "
    "LayerNorm's divides by n, the row's length (unbiased=False)"
)


def layer_norm_slips(dout, x, scale, eps: float) -> list[Candidate]:
    """What layer_norm_backward's dx is with one of its classic slips, from the step's arrays.

    With sigma = sqrt(var + eps), xhat = (x - mu) / sigma and dxhat = dout scale, the right dx is
    (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sigma, means over the row: the first mean is
    the share that flows through the row's mean mu, the second through its variance. Dropping
    both (dx = dxhat / sigma: mu and sigma treated as constants) is the slip people make; one
    of them alone, or the scale left out of dxhat, are its neighbours; and the variance divided
    by n - 1 rather than n (torch.var's default) in the right formula.
    """
    dout, x, scale = (np.asarray(a, np.float64) for a in (dout, x, scale))
    sigma = np.sqrt(x.var(axis=-1, keepdims=True) + eps)  # (..., 1)
    sigma_n_1 = np.sqrt(x.var(axis=-1, ddof=1, keepdims=True) + eps)  # (..., 1)

    def dx(dxhat, mean_term=True, var_term=True, sigma=sigma):
        xhat = (x - x.mean(axis=-1, keepdims=True)) / sigma  # (..., d)
        mean_share = dxhat.mean(axis=-1, keepdims=True) if mean_term else 0.0
        var_share = xhat * (dxhat * xhat).mean(axis=-1, keepdims=True) if var_term else 0.0
        return (dxhat - mean_share - var_share) / sigma

    dxhat = dout * scale
    why = "xhat = (x - mu) / sigma, and every x_k of a row moves that row's mu and sigma"
    return [
        Candidate(
            "mean-var-constant",
            f"the mean and variance treated as constants: yours is dxhat / sigma; {why}, so dx has "
            "two more terms, - mean(dxhat) - xhat mean(dxhat xhat), over the row, all divided by sigma",
            dx(dxhat, False, False),
        ),
        Candidate(
            "var-constant",
            f"the variance treated as a constant: the - xhat mean(dxhat xhat) term is missing; {why}",
            dx(dxhat, True, False),
        ),
        Candidate(
            "mean-constant",
            f"the mean treated as a constant: the - mean(dxhat) term is missing; {why}",
            dx(dxhat, False, True),
        ),
        Candidate(
            "scale-missing",
            "the scale is missing: out = scale xhat + shift, so dxhat = dout * scale, not dout",
            dx(dout),
        ),
        Candidate("variance-n-1", VARIANCE_N_1, dx(dxhat, sigma=sigma_n_1)),
    ]


def same(a, b, tol: float = MATCH) -> bool:
    """a and b have one shape and agree elementwise within `tol` (shortcut_gradients.verdict.check's relative error)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    return a.size == 0 or float(relative_error(a, b, tol, EPS).max()) <= tol


def fit(yours, base, direction) -> float | None:
    """The f for which yours == base + f * direction (least squares), or None when that does not fit."""
    yours, base, direction = (np.asarray(a, np.float64) for a in (yours, base, direction))
    if yours.shape != base.shape or not np.all(np.isfinite(yours)):
        return None
    norm = float(np.sum(direction * direction))
    if norm == 0.0:
        return None
    f = float(np.sum((yours - base) * direction)) / norm
    return f if same(yours, base + f * direction) else None


def diagnose(yours, expected, candidates=(), factors=(), dtype: str = "float64") -> Diagnosis:
    """The likely slip that makes `yours` differ from `expected` (autograd's), in a run of `dtype`."""
    yours, expected = np.asarray(yours), np.asarray(expected, np.float64)
    for candidate in candidates:
        if np.shape(candidate.array) == yours.shape and yours.shape != expected.shape and same(yours, candidate.array):
            return Diagnosis(candidate.slip, candidate.text)
    if yours.shape != expected.shape:
        lead = yours.ndim - expected.ndim
        if lead > 0 and yours.shape[lead:] == expected.shape and same(yours.sum(axis=tuple(range(lead))), expected):
            return Diagnosis(
                "broadcast-not-summed",
                f"not summed over the broadcast dimensions: yours has shape {yours.shape}, one {expected.shape} per "
                f"leading index; what is used by every row gets every row's share, so sum over the first {lead}",
            )
        if yours.ndim == 2 and yours.shape == expected.shape[::-1]:
            return Diagnosis("transposed", f"transposed: shape {yours.shape} where {expected.shape} belongs")
        return Diagnosis("shape", f"shape {yours.shape} where {expected.shape} belongs")
    if yours.dtype != np.dtype(dtype):
        return Diagnosis(
            "dtype",
            f"{yours.dtype} in a {dtype} run: something is cast to {yours.dtype} (a constant, or a helper that "
            f"computes in double: add .astype(x.dtype)); make constants in the input's dtype (x.dtype.type(2.0)), "
            "not np.float64 or np.float32; docs/contract.md wants every result in the requested dtype",
        )
    if not np.all(np.isfinite(yours)):
        return Diagnosis("not-finite", "NaN or inf where autograd has finite numbers")
    if not np.any(yours) and np.any(expected):
        return Diagnosis("zeros", "all zeros: nothing reaches this gradient")
    if same(yours, -expected):
        return Diagnosis("sign", "sign flipped: yours is minus the right answer")
    if yours.ndim == 2 and yours.shape[0] == yours.shape[1] and same(yours, expected.T):
        return Diagnosis("transposed", "transposed: yours is the right answer's transpose")
    for candidate in candidates:
        if np.shape(candidate.array) == yours.shape and same(yours, candidate.array):
            return Diagnosis(candidate.slip, candidate.text)
    factor = constant_factor(yours, expected, factors)
    if factor is not None:
        return factor
    if dtype == "float64" and same(yours, expected, TOLERANCE["float32"]):
        worst = float(relative_error(yours.astype(np.float64), expected, MATCH, EPS).max())
        return Diagnosis(
            "float32-constants",
            f"right to float32 precision only (rel diff {worst:.1e}): a float32 constant or intermediate in a "
            "float64 run; cast constants to x's dtype (x.dtype.type(SQRT_2_OVER_PI)), never a rounded number",
        )
    return Diagnosis("unknown", "unknown: none of the classic slips matches")


def constant_factor(yours, expected, factors=()) -> Diagnosis | None:
    """yours == c * expected for one constant c (not 1 or -1): named when c is in `factors` or the chain rule's.

    An unnamed c is reported only when at least two elements are far from zero: on one
    element any wrong value is "a constant factor".
    """
    yours, expected = np.asarray(yours, np.float64), np.asarray(expected, np.float64)
    c = fit(yours, np.zeros_like(expected), expected)
    if c is None or abs(c - 1) < FIT_MARGIN or abs(c + 1) < FIT_MARGIN or abs(c) < FIT_MARGIN:
        return None
    for known in tuple(factors) + CHAIN_RULE_FACTORS:
        if abs(c - known.value) <= FIT_MARGIN * abs(known.value):
            return Diagnosis(known.slip, f"off by a constant factor {known.label}: {known.text}")
    if np.count_nonzero(np.abs(expected) > 1e-3 * np.abs(expected).max()) >= 2:
        return Diagnosis("factor", f"off by a constant factor {c:.6g}")
    return None

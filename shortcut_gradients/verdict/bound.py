"""Each element's rounding-error bound, measured in float64 through the NumPy reference's entry point.

Two implementations of the same network differ only by rounding, and rounding has a size that
floating-point error analysis predicts from how an element was computed: the precision, the
length of the sums behind it and the size of their terms, carried through the layers.
`sensitivity` measures that size for every element of every tensor, in units of the unit
roundoff u (2^-24 in float32, 2^-53 in float64); shortcut_gradients.verdict.check.compare allows two
implementations to differ by 2 u times it (each may be off by the bound, in opposite
directions). docs/tolerances.md derives each term and shows, measured, that it holds at size.

Nothing here computes the network: every figure comes from calls to the NumPy reference's
loss_and_grads in float64, on the run's inputs, on perturbed copies of them and on groups of
the batch's rows. Per element e, in units of u:

    bound(e) = |e|              the element's own final rounding
             + propagated(e)    every rounding behind it, through the layers: perturbed runs
             + batch(e)         dW, db and the loss: their own sum over the rows

propagated: by backward error analysis, a dot product of length d computed in floating point
is the exact one of operands perturbed by at most u per rounding along the sum, and an
elementwise step is one more rounding. So each run multiplies every weight and bias of layer i
by (1 + PERTURBATION a_i r), r standard normal, with a_i^2 = (d_in + d_out + 5) / 2 + ELEMENTWISE:
a sum of d terms rounds d - 1 times into partial sums whose squared size adds up to about
(d + 2) / 2 times its terms' (forward: d_in + 1 terms with the bias; backward dx = dz W: d_out),
and ELEMENTWISE more roundings come from the GELU, its derivative and the shortcut. The target
is moved so that output - target moves by ELEMENTWISE roundings too: the last layer's backward
steps have no layer above whose weights stand in for them. An element's move per unit PERTURBATION is a draw of
its rounding error as that model makes it, however deep the network: a rounding in layer i
reaches the element through the same derivatives as a nudge to layer i's weights. Half the
runs nudge the whole batch alike, as identical rows round alike; the other half run GROUPS
random groups of rows, each with its own nudge, as distinct rows round independently: a dW
element that cancels over the rows moves by far less under one shared nudge than its rows'
independent roundings add up to. propagated = TAIL times the root-mean-square move: of all the
runs for a per-row element, and for a batch sum the larger of the shared runs' and the grouped
runs' (the groups' squared moves added).

batch: dW = dz^T x, db = sum(dz) and the loss add n rows' terms t_k = mu + eta_k (mu their mean,
S = n mu the element). In any order of summation the error is a sum over the n - 1 additions of
delta_j s_j, |delta_j| <= u, s_j a partial sum, and over any summation tree the partial sums hold
n(n + 1)/2 - 1 terms in all, most for one row after another. The mean's share is bounded outright,
|S| ((n + 1)/2 - 1/n), since identical rows round the same way at every addition: the error grows
with n and is not random (5.7e-5 relative in float32 for the book's weights on 4096 identical rows).
The fluctuations eta are bounded as Higham and Mary's probabilistic analysis does,
TAIL sigma_eta sqrt(n(n + 1)/2 - 1), sigma_eta measured from the groups. Rounding the products
adds |S| + n sigma_eta. The loss's terms are squares, never negative: its bound is deterministic,
n_out |loss| for n_out output elements.

The special functions: backward error analysis needs steps that are backward stable, and the
GELU is not one in its negative tail. There 1 + tanh(u) (or 1 + erf) cancels, so the value
carries an error of about u |z| times the tanh's own error in ulps, and the slope one of about u
|z| u'(z) (from 1 - tanh^2), however small the exact values: 2e4 u relative in the slope at
z = -3.55 in float64. No nudge to the weights reproduces that: it moves z, and the exact function
is flat there. So the perturbed runs perturb the GELU itself too (activation_noise): each value
and each slope the measuring implementation computes moves by PERTURBATION times a draw of the
error its special function may leave there, SPECIAL_FUNCTION_ERROR u (XLA's tanh, the least
accurate of the three, is off by up to 6.9 u) carried through the formula's terms. This is a
Monte Carlo arithmetic rerun, confined to the one step whose error analysis the nudges miss.

Last, every element's bound is at least its tensor's root-mean-square bound: the 8 runs are a
sample, and an element the sample underestimates is made of terms of its tensor's typical size
and carries rounding of that size.
"""

import contextlib
import math

import numpy as np

from shortcut_gradients.verdict import check, contract

# The relative nudge that measures derivatives: small enough that every element moves
# linearly (second-order terms ~ 2^-60 relative), large enough that float64 rounding
# (~2^-53 of the terms) is 2^-23 of the move it measures.
PERTURBATION = 2.0**-30
# Roundings per activation outside the two dot products, each up to u: the tanh GELU's forward
# is 8 operations (tanh counted as one: it is good to about an ulp), its derivative 9, the
# product with the incoming gradient 1, and the shortcut's addition 1 each way. (The exact
# form's erf and exp count about the same.)
ELEMENTWISE = 20
# Standard deviations allowed. Hoeffding-Azuma for a sum of independent roundings bounded by u:
# P(|error| > TAIL u sqrt(sum s_j^2)) <= 2 exp(-TAIL^2 / 2) = 5e-11 per element for TAIL = 7, so
# 1e7 elements (16384 rows x 1024 wide, twice) still miss less than once in a thousand runs.
TAIL = 7.0
# The largest error of the three implementations' tanh and erf, in u, rounded up: XLA's tanh, 4.5 u
# in float32 and 6.9 u in float64 (where |tanh| nears 1), and its erf, 4.7 u in float32; NumPy's
# and torch's are within 2 u (docs/tolerances.md measures them).
SPECIAL_FUNCTION_ERROR = 7.0
# Past |z| = 9, tanh(u(z)) and erf(z / sqrt(2)) are exactly +-1 in float32 and float64 in all three
# (measured: the last |z| that is not is 7.35 for a tanh, 8.37 for an erf), so the GELU is exactly
# 0 or z there and its slope exactly 0 or 1: no special-function error is left to carry.
SATURATED = 9.0
# The tanh form's u(z) = k (z + c z^3), for its slope u'(z) in the error of 1 - tanh^2.
TANH_K, TANH_C = math.sqrt(2.0 / math.pi), 0.044715
# Perturbed float64 runs, half shared and half grouped. A per-row element (output, dx) sees all
# of them: the root-mean-square of 8 moves is within a factor 2 of their standard deviation 98%
# of the time, and where it falls short the tensor's floor (module docstring) takes over. A batch
# sum's grouped estimate averages DRAWS / 2 * GROUPS squared moves.
DRAWS = 8
# Random groups of rows: GROUPS - 1 = 15 degrees of freedom for sigma_eta (within 20% typically),
# and all the groups together cost one float64 run of the batch.
GROUPS = 16


def sensitivity(loss_and_grads, params, x, target, **kw) -> dict:
    """Each element's rounding-error bound in units of u, measured with float64 runs of `loss_and_grads`.

    params: [(W (d_out, d_in), b (d_out,)), ...], with norm "pre" [(W, b, scale (d_in,), shift (d_in,)), ...];
    x (..., sizes[0]); target broadcastable to the output (..., sizes[-1]). Returns a result-like
    dict of the bounds, {"loss": (), "output": (..., d_out), "dW": [(d_out, d_in)], "db": [(d_out,)],
    "dx": (..., d_in)} (and "dscale", "dshift" [(d_in,)] with norm "pre"), the
    sum of `error_terms`'s three parts; kw are its keywords: use_shortcut and gelu_form, and
    optionally norm, draws and groups. shortcut_gradients.verdict.check.compare(results, dtype, this) allows
    two implementations to differ by 2 u times it.
    """
    parts = error_terms(loss_and_grads, params, x, target, **kw)
    return tensor_floor(combine(*parts.values()))


def scale_of(a: np.ndarray) -> float:
    """A power of two near the tensor's largest finite |element| (1 when it has none): dividing by
    it before squaring keeps the squares in range. A gradient that has vanished to 1e-166 (300
    layers without shortcuts) squares to 0 in float64, one of 1e200 to inf."""
    finite = np.abs(a[np.isfinite(a)])
    largest = float(finite.max()) if finite.size else 0.0
    return float(2.0 ** np.frexp(largest)[1]) if largest > 0 else 1.0


def root_mean_square(b: np.ndarray) -> float:
    """sqrt(mean(b^2)), without squaring b's own size into underflow or overflow."""
    s = scale_of(b)
    return s * float(np.sqrt(np.mean((b / s) ** 2)))


def tensor_floor(bound: dict) -> dict:
    """Each element's bound, at least its tensor's root-mean-square bound (module docstring)."""

    def floor(b):
        b = np.asarray(b, np.float64)
        return np.maximum(b, root_mean_square(b)) if b.size else b

    return {key: [floor(b) for b in value] if isinstance(value, list) else floor(value) for key, value in bound.items()}


def error_terms(
    loss_and_grads,
    params,
    x,
    target,
    *,
    use_shortcut: bool,
    gelu_form: str,
    norm: str = "none",
    draws: int = DRAWS,
    groups: int = GROUPS,
) -> dict[str, dict]:
    """The bound's three parts, each a result-like dict in units of u (module docstring):
    "own" |e|, "propagated" (perturbed runs) and "batch" (the sum over rows: dW, db, loss).
    Where the implementation returns the optional dy and dz (docs/contract.md), they get bounds too."""
    params = [tuple(np.asarray(a, np.float64) for a in layer) for layer in params]
    x, target = np.asarray(x, np.float64), np.asarray(target, np.float64)
    batch = Batch(loss_and_grads, params, x, target, use_shortcut, gelu_form, norm, groups)
    propagated = propagated_rounding(batch, draws)
    own = [np.abs(t) for t in batch.base]
    parts = {"own": own, "propagated": propagated, "batch": batch_rounding(batch)}
    return {name: as_result(batch.names, terms) for name, terms in parts.items()}


class Batch:
    """The run's inputs as rows, float64 runs of the whole batch or of one group of its rows,
    and the unperturbed results (tensors in shortcut_gradients.verdict.contract.tensors order: dy and dz where given)."""

    def __init__(self, loss_and_grads, params, x, target, use_shortcut: bool, gelu_form: str, norm: str, groups: int):
        self.fn, self.params, self.x, self.target = loss_and_grads, params, x, target
        self.kw = {"use_shortcut": use_shortcut, "gelu_form": gelu_form, "dtype": "float64"}
        self.kw |= {"norm": norm} if norm != "none" else {}  # the book's contract never sees norm
        d_in, d_out = x.shape[-1], params[-1][0].shape[0]
        self.n = int(np.prod(x.shape[:-1], dtype=np.int64))
        self.n_out = self.n * d_out
        self.rows_x = x.reshape(self.n, d_in)  # (n, d_in)
        self.rows_t = np.broadcast_to(target, x.shape[:-1] + (d_out,)).reshape(self.n, d_out)  # (n, d_out)
        self.rng = np.random.default_rng(0)  # fixed: the same inputs always get the same bound
        listed = contract.tensors(loss_and_grads(params, x, target, **self.kw))
        self.names = [name for name, _, _ in listed]
        self.base = [np.asarray(t, np.float64) for _, _, t in listed]
        self.scales = [scale_of(t) for t in self.base]
        # Per-row tensors have a row per input row; the others (loss, dW, db) sum over the rows.
        per_row = ("output", "input")
        self.per_row = [k for k, name in enumerate(self.names) if name in per_row or name.endswith((".dy", ".dz"))]
        self.residual = self.base[1].reshape(self.n, d_out) - self.rows_t  # (n, d_out): output - target
        self.split = np.array_split(self.rng.permutation(self.n), min(groups, self.n)) if self.n > 1 else []
        self.shares = [self.group(params, rows) for rows in self.split]

    def run(self, params, x, target) -> list[np.ndarray]:
        return [np.asarray(t, np.float64) for _, _, t in contract.tensors(self.fn(params, x, target, **self.kw))]

    def group(self, params, rows, target=None) -> list[np.ndarray]:
        """One group's tensors. Its gradients are of its own mean loss; len(rows)/n makes the
        loss, dW and db its share of the batch's (per-row tensors are left as they are)."""
        t = self.rows_t[rows] if target is None else target
        result = self.run(params, self.rows_x[rows], t)
        share = len(rows) / self.n
        return [a if k in self.per_row else a * share for k, a in enumerate(result)]


def nudged(batch: Batch, rows=None):
    """(params, target) nudged as the module docstring says; the target of `rows` only.

    The target is moved so that output - target, which the loss's gradient is proportional
    to, moves by ELEMENTWISE roundings: the last layer's backward steps have no layer above
    whose weights stand in for them, as every other layer's have."""

    def nudge(a, scale):
        return a * (1 + PERTURBATION * scale * batch.rng.standard_normal(a.shape))

    params = []
    for W, b, *norm_params in batch.params:  # norm_params: pre-LN's (scale, shift), (d_in,) each
        d_out, d_in = W.shape
        a = np.sqrt((d_in + d_out + 5) / 2 + ELEMENTWISE)
        params.append((nudge(W, a), nudge(b, a), *(nudge(p, layer_norm_amplitude(d_in)) for p in norm_params)))
    picked = slice(None) if rows is None else rows
    residual = batch.residual[picked]  # (rows, d_out): output - target
    target = batch.rows_t[picked] - (nudge(residual, np.sqrt(ELEMENTWISE)) - residual)  # (rows, d_out)
    return params, target if rows is not None else target.reshape(batch.base[1].shape)


def layer_norm_amplitude(d: int) -> float:
    """a for a LayerNorm over d elements, as for a Linear's: its forward sums d terms twice (the
    mean, then the variance), its backward twice more (the means of dL/dx_hat and of dL/dx_hat
    x_hat), (d + 2) / 2 each, and ELEMENTWISE covers the subtraction, square root, division,
    scale and shift either way."""
    return float(np.sqrt(2 * (d + 2) + ELEMENTWISE))


@contextlib.contextmanager
def activation_noise(loss_and_grads, rng: np.random.Generator, shared: bool):
    """Within it, the GELU and its backward that `loss_and_grads`'s module calls (the NumPy
    reference's gelu(z, form) and gelu_backward(dout, z, form)) each add PERTURBATION times a draw
    of the error their special function leaves, t = tanh(u(z)) or erf(z / sqrt(2)) off by up to
    e u |t| (e = SPECIAL_FUNCTION_ERROR), carried through the formula, in u:

        value  0.5 |z| e |t| r                              g = 0.5 z (1 + t)
        slope  |dout| e (0.5 |t| + |z| t^2 u'(z)) r         g' = Phi + z Phi', Phi = 0.5 (1 + t),
                                                            Phi' = 0.5 (1 - t^2) u'(z) (tanh form)
        slope  |dout| e 0.5 |t| r  (exact form)             Phi' = exp(-z^2 / 2) / sqrt(2 pi): no t in it

    t is read off the implementation's own value, t = 2 g / z - 1; r is standard normal, one per
    unit for all rows alike when `shared` (identical rows round alike), else one per element, and
    0 past |z| = SATURATED. Raises ValueError for an implementation without those two functions:
    a bound missing the term would cry wolf, so none is measured."""
    space = getattr(loss_and_grads, "__globals__", {})
    if not callable(space.get("gelu")) or not callable(space.get("gelu_backward")):
        raise ValueError("the rounding bound is measured with the NumPy reference (impl_numpy.loss_and_grads)")
    gelu, gelu_backward = space["gelu"], space["gelu_backward"]

    def draw(z, g):  # (|t|, e r), each (...,) like z, from g = gelu(z); e r is 0 where t saturates
        t = np.abs(np.divide(2 * g - z, z, out=np.zeros_like(z), where=z != 0))
        r = rng.standard_normal(z.shape[-1:] if shared else z.shape)
        return t, np.where(np.abs(z) < SATURATED, SPECIAL_FUNCTION_ERROR * r, 0.0)

    def noisy_gelu(z, form):
        g = gelu(z, form)
        t, er = draw(z, g)
        return g + PERTURBATION * 0.5 * np.abs(z) * t * er

    def noisy_gelu_backward(dout, z, form):
        t, er = draw(z, gelu(z, form))
        near = np.minimum(np.abs(z), SATURATED)  # (...,): past it er is 0, and near^3 stays in range
        slope = 0.5 * t + (near * t**2 * TANH_K * (1 + 3 * TANH_C * near**2) if form == "tanh" else 0.0)
        return gelu_backward(dout, z, form) + PERTURBATION * np.abs(dout) * slope * er

    space["gelu"], space["gelu_backward"] = noisy_gelu, noisy_gelu_backward
    try:
        yield
    finally:
        space["gelu"], space["gelu_backward"] = gelu, gelu_backward


def propagated_rounding(batch: Batch, draws: int) -> list[np.ndarray]:
    """TAIL times each element's measured rounding spread (module docstring), per unit PERTURBATION.

    Shared runs: the whole batch under one nudge. Grouped runs (more than one row): each group
    under its own nudge. A per-row element (output, dx) takes the root-mean-square of its moves
    over all the runs; a batch sum (loss, dW, db) the larger of its shared runs' root-mean-square
    move and the grouped runs' mean of the groups' summed squared moves, square-rooted."""
    base, per_row = batch.base, batch.per_row
    grouped = draws // 2 if batch.split else 0
    shared = [np.zeros(t.shape) for t in base]  # sums of squared moves, in units of the tensor's scale
    independent = [np.zeros(t.shape) for t in base]
    for _ in range(draws - grouped):
        params, target = nudged(batch)
        with activation_noise(batch.fn, batch.rng, shared=True):
            moved = batch.run(params, batch.x, target)
        for m, t0, t1, s in zip(shared, base, moved, batch.scales):
            m += ((t1 - t0) / s / PERTURBATION) ** 2  # s first: PERTURBATION * s may underflow
    for _ in range(grouped):
        for rows, share in zip(batch.split, batch.shares):
            params, target = nudged(batch, rows)
            with activation_noise(batch.fn, batch.rng, shared=False):
                moved = batch.group(params, rows, target)
            for k, (t0, t1) in enumerate(zip(share, moved)):
                move = (t1 - t0) / batch.scales[k] / PERTURBATION
                if k in per_row:  # the group's rows, in their places among all the rows
                    shared[k].reshape(batch.n, -1)[rows] += move**2
                else:
                    independent[k] += move**2
    spread = [np.sqrt(m / draws) for m in shared]
    for k in range(len(base)):
        if k not in per_row:
            spread[k] = np.maximum(np.sqrt(shared[k] / (draws - grouped)), np.sqrt(independent[k] / max(grouped, 1)))
    return [TAIL * m * s for m, s in zip(spread, batch.scales)]


def batch_rounding(batch: Batch) -> list[np.ndarray]:
    """The sum over rows behind dW, db and the loss (module docstring); zeros for the per-row
    output and dx, and for dW and db when there is one row."""
    terms = [np.zeros(t.shape) for t in batch.base]
    terms[0] = batch.n_out * np.abs(batch.base[0])  # the loss: n_out squares, none negative
    if not batch.split:
        return terms
    n = batch.n
    sizes = np.array([len(rows) for rows in batch.split], np.float64)
    for k in (k for k in range(1, len(terms)) if k not in batch.per_row):  # dW and db of every layer
        s = batch.scales[k]  # the statistics in units of it, their squares in range
        parts = np.stack([share[k] / s for share in batch.shares])  # (groups, *dW or db's shape)
        # The shares add up to the batch's element (to float64 rounding) when the loss is a mean
        # over rows; from the shares, the statistics are those of one decomposition even when
        # the measuring implementation is itself wrong.
        S = parts.sum(axis=0)
        m = sizes.reshape((-1,) + (1,) * S.ndim)
        # A group of m rows is m mu plus m draws of eta: variance m sigma_eta^2.
        sigma = np.sqrt(np.sum((parts - m * (S / n)) ** 2 / m, axis=0) / max(len(sizes) - 1, 1))
        additions = n * (n + 1) / 2 - 1  # terms in all the partial sums of the worst summation tree
        mean_share = np.abs(S) * ((n + 1) / 2 - 1 / n)
        fluctuations = TAIL * sigma * np.sqrt(additions)
        products = np.abs(S) + n * sigma
        terms[k] = (mean_share + fluctuations + products) * s
    return terms


def as_result(names: list[str], terms: list[np.ndarray]) -> dict:
    """A list in shortcut_gradients.verdict.contract.tensors order, named by `names`, back to a result-like dict:
    {"loss", "output", "dW", "db", "dx"}, and "dy", "dz" when the names hold them."""
    by_name = dict(zip(names, terms))
    n_layers = sum(name.endswith(".0.weight") for name in names)
    result = {
        "loss": by_name["loss"],
        "output": by_name["output"],
        "dW": [by_name[f"layers.{i}.0.weight"] for i in range(n_layers)],
        "db": [by_name[f"layers.{i}.0.bias"] for i in range(n_layers)],
        "dx": by_name["input"],
    }
    for key in contract.INTERMEDIATES:
        if f"layers.0.{key}" in by_name:
            result[key] = [by_name[f"layers.{i}.{key}"] for i in range(n_layers)]
    if "norms.0.scale" in by_name:
        result["dscale"] = [by_name[f"norms.{i}.scale"] for i in range(n_layers)]
        result["dshift"] = [by_name[f"norms.{i}.shift"] for i in range(n_layers)]
    return result


def combine(*parts: dict) -> dict:
    """The element-by-element sum of result-like dicts with the same keys."""
    first = parts[0]
    return {
        key: [sum(p[key][i] for p in parts) for i in range(len(value))]
        if isinstance(value, list)
        else sum(p[key] for p in parts)
        for key, value in first.items()
    }


def gelu_form_resolution(loss_and_grads, params, x, target, bound: dict, dtype: str, **kw) -> dict:
    """Could this run see the GELU form mix-up? The other form against the run's own, in float64
    runs of `loss_and_grads`, each element's move as a share of the allowance `bound` gives it in
    `dtype` (shortcut_gradients.verdict.check.compare's rule); kw: use_shortcut, gelu_form and norm if "pre".

    Returns {"other_form", "share" (the largest share any element moved), "tensor" (where),
    "resolved" (share > 1: a mix-up of the two forms shows)}. Where the allowance has grown past
    the difference between the forms (deep float32 networks whose gradient has vanished, big
    batches), a run agrees whichever form an implementation computes, and the report says so.
    Only the tensors every implementation returns count: not the optional dy and dz."""
    other = {"tanh": "exact", "exact": "tanh"}[kw["gelu_form"]]
    params = [tuple(np.asarray(a, np.float64) for a in layer) for layer in params]
    x, target = np.asarray(x, np.float64), np.asarray(target, np.float64)
    runs = {}
    for form in (kw["gelu_form"], other):
        result = loss_and_grads(params, x, target, **{**kw, "gelu_form": form}, dtype="float64")
        runs[form] = {key: value for key, value in result.items() if key not in contract.INTERMEDIATES}
    report = check.compare(runs, dtype, bound)
    tensor, share = max(report["room"].items(), key=lambda item: item[1])
    return {"other_form": other, "share": float(share), "tensor": tensor, "resolved": bool(share > 1)}

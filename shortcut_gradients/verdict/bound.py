"""Each element's rounding-error bound, measured in float64 with the NumPy reference, impl_numpy.model.

Two implementations of the same network differ only by rounding, and rounding has a size that
floating-point error analysis predicts from how an element was computed: the precision, the
length of the sums behind it and the size of their terms, carried through the layers. `measure`
gives that size for every element of every tensor, in units of the unit roundoff u;
shortcut_gradients.verdict.check allows two implementations to differ by 2 u times it (each may be
off by the bound, in opposite directions). docs/tolerances.md derives each term, gives the figures
behind each constant and shows, measured, that the bound holds at size.

Nothing here computes the network: every figure comes from float64 calls of the NumPy reference,
impl_numpy.model.loss_and_grads, on the run's inputs, on perturbed copies of them and on groups of
the batch's rows. It is always that implementation, whatever is compared: its GELU is the one the
measurement patches (activation_noise). Per element e, in units of u:

    bound(e) = |e|              the element's own final rounding
             + propagated(e)    every rounding behind it, through the layers: perturbed runs
             + batch(e)         dW, db and the loss: their own sum over the rows

at least its tensor's root-mean-square bound (the perturbed runs are a sample; an element they
underestimate is made of terms of its tensor's typical size and carries rounding of that size).

propagated: by backward error analysis a dot product computed in floating point is the exact one
of operands perturbed by at most u per rounding along the sum, so runs that nudge each layer's
weights by as many roundings as its sums make (and the target by the last layer's) move each
element as its roundings would, however deep the network. Half the runs nudge the whole batch
alike, as identical rows round alike; the others give random groups of rows each their own nudge,
as distinct rows round independently. The GELU is not backward stable in its negative tail (1 +
tanh or 1 + erf cancels), so the runs also perturb the GELU itself by the error its special
function may leave (activation_noise): no nudge to the weights reproduces that.

batch: dW = dz^T x, db = sum(dz) and the loss add n rows' terms. The rows' mean rounds the same
way at every addition (identical rows), so its share is bounded outright and grows with n; the
rows' fluctuations are bounded as Higham and Mary's probabilistic analysis does, their spread
measured from the groups. The loss's terms are squares, never negative: its bound is
deterministic, n_out |loss| for n_out output elements.
"""

import contextlib
import math

import numpy as np

import impl_numpy.model
from shortcut_gradients.verdict import check, contract

# The relative nudge that measures derivatives: small enough that every element moves
# linearly, large enough that float64 rounding of the terms is far below the move it measures.
PERTURBATION = 2.0**-30
# Roundings per activation outside the two dot products, each up to u: the tanh GELU's forward,
# its derivative, the product with the incoming gradient and the shortcut's addition each way.
ELEMENTWISE = 20
# Standard deviations allowed: by Hoeffding-Azuma for a sum of independent roundings bounded by u,
# small enough a miss probability per element for the largest runs surveyed.
TAIL = 7.0
# The largest error of the three implementations' tanh and erf, in u, rounded up (XLA's tanh is
# the least accurate).
SPECIAL_FUNCTION_ERROR = 7.0
# Past |z| = SATURATED, tanh(u(z)) and erf(z / sqrt(2)) are exactly +-1 in float32 and float64 in
# all three, so the GELU is exactly 0 or z there and its slope exactly 0 or 1: no error to carry.
SATURATED = 9.0
# The tanh form's u(z) = k (z + c z^3), for its slope u'(z) in the error of 1 - tanh^2.
TANH_K, TANH_C = math.sqrt(2.0 / math.pi), 0.044715
# Perturbed float64 runs, half shared and half grouped: enough that a root-mean-square move is
# near its standard deviation; where it falls short the tensor's floor takes over.
DRAWS = 8
# Random groups of rows: GROUPS - 1 degrees of freedom for the rows' spread, and all the groups
# together cost one float64 run of the batch.
GROUPS = 16


def measure(params, x, target, **kw) -> dict:
    """Each element's rounding-error bound in units of u, from float64 runs of the NumPy reference.

    params: [(W (d_out, d_in), b (d_out,)), ...], with norm "pre" [(W, b, scale (d_in,), shift (d_in,)), ...];
    x (..., sizes[0]); target broadcastable to the output (..., sizes[-1]). Returns a result-like
    dict of the bounds, {"loss": (), "output": (..., d_out), "dW": [(d_out, d_in)], "db": [(d_out,)],
    "dx": (..., d_in)} (and "dscale", "dshift" [(d_in,)] with norm "pre"; "dy", "dz" as the
    reference returns them), the sum of `error_terms`'s three parts; kw are its keywords:
    use_shortcut and gelu_form, and optionally norm, draws and groups.
    """
    parts = error_terms(params, x, target, **kw)
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
    batch = Batch(params, x, target, use_shortcut, gelu_form, norm, groups)
    propagated = propagated_rounding(batch, draws)
    own = [np.abs(t) for t in batch.base]
    parts = {"own": own, "propagated": propagated, "batch": batch_rounding(batch)}
    return {name: as_result(batch.names, terms) for name, terms in parts.items()}


class Batch:
    """The run's inputs as rows, float64 runs of the whole batch or of one group of its rows,
    and the unperturbed results (tensors in shortcut_gradients.verdict.contract.tensors order: dy and dz where given)."""

    def __init__(self, params, x, target, use_shortcut: bool, gelu_form: str, norm: str, groups: int):
        self.params, self.x, self.target = params, x, target
        self.kw = {"use_shortcut": use_shortcut, "gelu_form": gelu_form, "dtype": "float64"}
        self.kw |= {"norm": norm} if norm != "none" else {}  # the book's contract never sees norm
        d_in, d_out = x.shape[-1], params[-1][0].shape[0]
        self.n = int(np.prod(x.shape[:-1], dtype=np.int64))
        self.n_out = self.n * d_out
        self.rows_x = x.reshape(self.n, d_in)  # (n, d_in)
        self.rows_t = np.broadcast_to(target, x.shape[:-1] + (d_out,)).reshape(self.n, d_out)  # (n, d_out)
        self.rng = np.random.default_rng(0)  # fixed: the same inputs always get the same bound
        listed = contract.tensors(impl_numpy.model.loss_and_grads(params, x, target, **self.kw))
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
        return [
            np.asarray(t, np.float64)
            for _, _, t in contract.tensors(impl_numpy.model.loss_and_grads(params, x, target, **self.kw))
        ]

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
def activation_noise(rng: np.random.Generator, shared: bool):
    """Within it, the NumPy reference's gelu(z, form) and gelu_backward(dout, z, form), which
    impl_numpy.model.loss_and_grads calls by name, are replaced on impl_numpy.model by versions that
    each add PERTURBATION times a draw of the error their special function leaves, t = tanh(u(z)) or erf(z / sqrt(2)) off by up to
    e u |t| (e = SPECIAL_FUNCTION_ERROR), carried through the formula, in u:

        value  0.5 |z| e |t| r                              g = 0.5 z (1 + t)
        slope  |dout| e (0.5 |t| + |z| t^2 u'(z)) r         g' = Phi + z Phi', Phi = 0.5 (1 + t),
                                                            Phi' = 0.5 (1 - t^2) u'(z) (tanh form)
        slope  |dout| e 0.5 |t| r  (exact form)             Phi' = exp(-z^2 / 2) / sqrt(2 pi): no t in it

    t is read off the reference's own value, t = 2 g / z - 1; r is standard normal, one per
    unit for all rows alike when `shared` (identical rows round alike), else one per element, and
    0 past |z| = SATURATED. On leaving, the module's own functions are back."""
    module = impl_numpy.model
    gelu, gelu_backward = module.gelu, module.gelu_backward

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

    module.gelu, module.gelu_backward = noisy_gelu, noisy_gelu_backward
    try:
        yield
    finally:
        module.gelu, module.gelu_backward = gelu, gelu_backward


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
        with activation_noise(batch.rng, shared=True):
            moved = batch.run(params, batch.x, target)
        for m, t0, t1, s in zip(shared, base, moved, batch.scales):
            m += ((t1 - t0) / s / PERTURBATION) ** 2  # s first: PERTURBATION * s may underflow
    for _ in range(grouped):
        for rows, share in zip(batch.split, batch.shares):
            params, target = nudged(batch, rows)
            with activation_noise(batch.rng, shared=False):
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


def gelu_form_resolution(params, x, target, bound: dict, dtype: str, **kw) -> dict:
    """Could this run see the GELU form mix-up? The other form against the run's own, in float64
    runs of the NumPy reference, each element's move as a share of the allowance `bound` gives it in
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
        result = impl_numpy.model.loss_and_grads(params, x, target, **{**kw, "gelu_form": form}, dtype="float64")
        runs[form] = {key: value for key, value in result.items() if key not in contract.INTERMEDIATES}
    report = check.compare(runs, dtype, bound)
    tensor, share = max(report["room"].items(), key=lambda item: item[1])
    return {"other_form": other, "share": float(share), "tensor": tensor, "resolved": bool(share > 1)}

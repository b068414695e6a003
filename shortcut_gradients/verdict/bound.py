"""Each element's rounding-error bound, measured with the NumPy implementation.

Two implementations of the same network differ only by rounding, and rounding has a size that
floating-point error analysis predicts from how an element was computed: the precision, the
length of the sums behind it and the size of their terms, carried through the layers. `measure`
gives that size for every element of every tensor, in units of the unit roundoff u;
shortcut_gradients.verdict.check allows two implementations to differ by 2 u times it (each may be
off by the bound, in opposite directions). docs/tolerances.md derives each term, gives the figures
behind each constant and shows, measured, that the bound holds at size.

Nothing here computes the network: every figure comes from calls of the NumPy implementation's
loss_and_grads, on the run's inputs (float64), on perturbed copies of them and on groups of the
batch's rows. It is always that implementation, whatever is compared: impl_numpy.fast, its step
written for speed, for the book's network, and the reference impl_numpy.model for pre-LN, which
fast.py does not run (`measuring`). Its GELU is the one the measurement patches
(activation_noise). The perturbed runs are float32 with a 2^-12 nudge where the inputs, weights
and tensors are in float32's reach (FLOAT32_REACH) and the first draw shows the moves linear at
that size (linear_first_draw), else float64 with a 2^-30 one: either way the run's own rounding
is 2^-12 of the move or less. On the book's network, with the same draws, the float32 runs' bound
is the float64 runs' to 0.6%; fast.py's and the reference's agree to 1.3e-4 (tests/test_tolerance.py).
Per element e, in units of u:

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
as distinct rows round independently (each group's gradients scaled to its share of the
batch's, input gradients included). The random numbers r behind the nudges are random signs, of
mean square 1: a root-mean-square move depends on nothing else of their distribution. The GELU is not backward stable in its negative tail (1 +
tanh or 1 + erf cancels), so the runs also perturb the GELU itself by the error its special
function may leave (activation_noise): no nudge to the weights reproduces that.

batch: dW = dz^T x, db = sum(dz) and the loss add n rows' terms. The rows' mean rounds the same
way at every addition (identical rows), so its share is bounded outright and grows with n; the
rows' fluctuations are bounded as Higham and Mary's probabilistic analysis does, their spread
measured from the groups. The loss's terms are squares, never negative: its bound is
deterministic, n_out |loss| for n_out output elements.
"""

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from types import ModuleType

import numpy as np

import impl_numpy.fast
import impl_numpy.model
from shortcut_gradients.verdict import check, contract

# The relative nudge that measures derivatives, per dtype of the perturbed runs: large enough that
# the run's own rounding, u times the very bound being measured, is 2^-12 of the move (float32's
# u = 2^-24) or less (float64's: 2^-23 of a 2^-30 move); small enough that the elements move
# linearly, which at 2^-12 the first draw checks (linear_first_draw) and at 2^-30 holds.
PERTURBATION = {"float32": 2.0**-12, "float64": 2.0**-30}
# Past these, down or up, a tensor is out of reach of float32 runs, and they run in float64 (a
# network of 300 layers whose gradient has vanished to 1e-283). Down: a tensor whose largest
# element is 2^-64 moves by about 2^-12 of that, 2^50 above float32's smallest normal number
# (2^-126), room for elements far below their tensor's largest (below its root-mean-square, the
# tensor's floor bounds them anyway); 24 layers without shortcuts reach 2^-58. Up: the loss adds
# the output's squares, 2^80 each at 2^40, inside float32's 2^128 for any batch that fits in
# memory. A value inside that overflows within the step (the GELU squares its input) shows as a
# non-finite result of the first draw, and float64 again.
FLOAT32_REACH = (2.0**-64, 2.0**40)
# The largest even part of a float32 draw's move against its odd part (root-mean-square, per
# tensor) for float32 runs to measure the bound (`linear_first_draw`): the moves' error is about
# that share, far inside what TAIL allows; on networks of 3 layers 512 wide it is under 1%.
LINEARITY = 0.02
# The GELU forms' resolution tries this many of a batch's rows first: wherever float32 can tell
# the forms apart at all, their output already does, and the other form need not run the batch.
RESOLUTION_ROWS = 256
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
# Perturbed runs, half shared and half grouped: enough that a root-mean-square move is near its
# standard deviation (within a factor 2 for 96% of per-row elements; 8 runs: 98%); where it falls
# short the tensor's floor takes over. The survey reads the same with 6 as with 8 (docs/tolerances.md).
DRAWS = 6
# Random groups of rows: GROUPS - 1 degrees of freedom for the rows' spread, and all the groups
# together cost one float64 run of the batch.
GROUPS = 16
# A run of the whole batch goes through the step this many elements of activations at a time
# (rows times the sum of the layer widths): a float64 step keeps about three arrays of that size
# per layer, so a chunk's step holds about 50 MB however big the batch (`in_chunks`).
CHUNK_ELEMENTS = 2**21


def measure(params, x, target, *, progress: Callable[[str], None] | None = None, **kw) -> dict:
    """Each element's rounding-error bound in units of u, from float64 runs of the NumPy implementation.

    params: [(W (d_out, d_in), b (d_out,)), ...], with norm "pre" [(W, b, scale (d_in,), shift (d_in,)), ...];
    x (..., sizes[0]); target broadcastable to the output (..., sizes[-1]). Returns a result-like
    dict of the bounds, {"loss": (), "output": (..., d_out), "dW": [(d_out, d_in)], "db": [(d_out,)],
    "dx": (..., d_in)} (and "dscale", "dshift" [(d_in,)] with norm "pre"; "dy", "dz" as the
    reference returns them, unless intermediates=False), the sum of `error_terms`'s three parts;
    kw are its keywords: use_shortcut and gelu_form, and optionally norm, draws, groups and
    intermediates. progress, if given, is called with a short text at each stage ("bound: draw 3
    of 6"), for a long run's progress line.
    """
    return measure_around(params, x, target, progress=progress, **kw)[0]


def measure_around(params, x, target, **kw) -> tuple[dict, dict]:
    """(measure's bound, the unperturbed float64 result it was measured around): the loss,
    output, dW, db and dx (dscale and dshift with norm "pre") of the NumPy implementation that
    measures, in the run's own GELU form, the run gelu_form_resolution's `own` takes in place of
    running it again. kw: measure's."""
    batch, unperturbed, propagated, summed = measured_parts(params, x, target, per_row_sums=False, **kw)
    totals = []  # |e| + propagated + batch, error_terms's three parts added, in propagated's arrays
    for t, p, b in zip(batch.base, propagated, summed):
        if not p.ndim:  # the loss
            totals.append(np.abs(t) + (p + b))
            continue
        p += np.abs(t)  # one tensor's |e| at a time, never all of them at once
        if b is not None:  # None: a per-row tensor, whose sum over rows is 0
            p += b
        totals.append(p)
    return tensor_floor(as_result(batch.names, totals)), unperturbed


def scale_of(a: np.ndarray) -> float:
    """A power of two near the tensor's largest finite |element| (1 when it has none): dividing by
    it before squaring keeps the squares in range. A gradient that has vanished to 1e-166 (300
    layers without shortcuts) squares to 0 in float64, one of 1e200 to inf."""
    a = np.asarray(a)
    largest = max(float(a.max()), -float(a.min())) if a.size else 0.0  # max |a|, without an |a| array
    if not np.isfinite(largest):  # an inf or NaN among them: the largest of the finite ones
        finite = np.abs(a[np.isfinite(a)])
        largest = float(finite.max()) if finite.size else 0.0
    return float(2.0 ** np.frexp(largest)[1]) if largest > 0 else 1.0


def root_mean_square(b: np.ndarray) -> float:
    """sqrt(mean(b^2)), without squaring b's own size into underflow or overflow: b over its
    scale (a power of two, so the division is exact), in one new array, then its dot product
    with itself."""
    s = scale_of(b)
    scaled = np.divide(np.ravel(b), s, dtype=np.float64)  # (b.size,)
    return s * float(np.sqrt(np.dot(scaled, scaled) / scaled.size))


def tensor_floor(bound: dict) -> dict:
    """Each element's bound, at least its tensor's root-mean-square bound (module docstring);
    float64 arrays of `bound` are raised in place (measure's are its own)."""

    def floor(b):
        b = np.asarray(b, np.float64)
        return np.maximum(b, root_mean_square(b), out=b) if b.ndim else np.maximum(b, root_mean_square(b))

    return {key: [floor(b) for b in value] if isinstance(value, list) else floor(value) for key, value in bound.items()}


def error_terms(params, x, target, **kw) -> dict[str, dict]:
    """The bound's three parts, each a result-like dict in units of u (module docstring):
    "own" |e|, "propagated" (perturbed runs) and "batch" (the sum over rows: dW, db, loss).
    Where the implementation returns the optional dy and dz (docs/contract.md), they get bounds
    too, unless intermediates=False. kw: use_shortcut and gelu_form, and optionally norm, draws,
    groups, intermediates and progress (called with a short text at each stage, or None)."""
    return terms_around(params, x, target, **kw)[0]


def terms_around(params, x, target, **kw) -> tuple[dict[str, dict], dict]:
    """(error_terms's parts, the unperturbed result they were measured around, as measure_around's)."""
    batch, unperturbed, propagated, summed = measured_parts(params, x, target, **kw)
    own = [np.abs(t) for t in batch.base]  # new arrays, made now that the draws' are freed: base is the unperturbed run
    parts = {"own": own, "propagated": propagated, "batch": summed}
    return {name: as_result(batch.names, terms) for name, terms in parts.items()}, unperturbed


def measured_parts(
    params,
    x,
    target,
    *,
    use_shortcut: bool,
    gelu_form: str,
    norm: str = "none",
    draws: int = DRAWS,
    groups: int = GROUPS,
    intermediates: bool = True,
    progress: Callable[[str], None] | None = None,
    per_row_sums: bool = True,
) -> tuple:
    """(the Batch, the unperturbed result, the propagated part and the batch part, both listed in
    batch.names order): what terms_around and measure_around put together. per_row_sums=False:
    None in the batch part for each per-row tensor, in place of its zeros."""
    say = progress or (lambda text: None)
    params = [tuple(np.asarray(a, np.float64) for a in layer) for layer in params]
    x, target = np.asarray(x, np.float64), np.asarray(target, np.float64)
    say("bound: the unperturbed runs")
    batch = Batch(params, x, target, use_shortcut, gelu_form, norm, groups, intermediates)
    kept = [(name, t) for name, t in zip(batch.names, batch.base) if name in batch.compared]
    unperturbed = as_result([name for name, _ in kept], [t for _, t in kept])  # base's own arrays, left as they are
    propagated = propagated_rounding(batch, draws, say)
    return batch, unperturbed, propagated, batch_rounding(batch, per_row_sums)


def measuring(norm: str) -> ModuleType:
    """The NumPy implementation that measures: impl_numpy.fast, the reference's step written for
    speed, for the book's network; the reference impl_numpy.model for pre-LN, which fast.py refuses."""
    return impl_numpy.fast if norm == "none" else impl_numpy.model


class Batch:
    """The run's inputs as rows, runs of the whole batch or of one group of its rows (float64
    unperturbed, perturbed in self.dtype), and the unperturbed results (tensors in shortcut_gradients.verdict.contract.tensors order: dy and dz where given)."""

    def __init__(
        self, params, x, target, use_shortcut: bool, gelu_form: str, norm: str, groups: int, intermediates: bool
    ):
        self.params, self.x, self.target = params, x, target
        self.module = measuring(norm)
        self.kw = {"use_shortcut": use_shortcut, "gelu_form": gelu_form, "dtype": "float64"}
        self.kw |= {"norm": norm} if norm != "none" else {}  # the book's contract never sees norm
        # dy and dz, which the reference always returns and fast.py keeps when asked: only where
        # they will be compared, for each is as large as the output, per layer.
        self.intermediates = intermediates
        self.kw |= {"intermediates": intermediates} if self.module is impl_numpy.fast else {}
        d_out = params[-1][0].shape[0]
        self.n, self.rows_x, self.rows_t = as_rows(x, target, d_out)  # n; (n, d_in); (n, d_out)
        self.n_out = self.n * d_out
        self.rng = np.random.default_rng(0)  # fixed: the same inputs always get the same bound
        self.split = np.array_split(self.rng.permutation(self.n), min(groups, self.n)) if self.n > 1 else []
        # The unperturbed float64 run, once: each group of rows on its own, the batch's tensors put
        # together from their shares (`whole`); with one row, the batch itself.
        self.shares = []
        for rows in self.split:  # a group at a time: its own result is freed once its share is made
            result = in_chunks(self.module, params, self.rows_x[rows], self.rows_t[rows], self.kw)
            self.shares.append(self.share(result, len(rows)))
        if not self.split:
            result = in_chunks(self.module, params, x, target, self.kw)
        self.names = [name for name, _, _ in contract.tensors(result, intermediates)]  # every group's alike
        one_row = None if self.split else self.listed(result)
        del result
        # What every implementation returns: the tensors the GELU forms' resolution compares.
        self.compared = [name for name in self.names if not name.endswith((".dy", ".dz"))]
        # Per-row tensors have a row per input row; the others (loss, dW, db) sum over the rows.
        per_row = ("output", "input")
        self.per_row = [k for k, name in enumerate(self.names) if name in per_row or name.endswith((".dy", ".dz"))]
        self.base = self.whole(self.shares) if self.split else one_row
        self.scales = [scale_of(t) for t in self.base]
        self.residual = self.base[1].reshape(self.n, d_out) - self.rows_t  # (n, d_out): output - target
        # The perturbed runs: float32, at under half a float64 step's cost, where the weights, the
        # inputs and every compared tensor are in its reach (and, checked by the first draw,
        # `linear_first_draw`, the moves are linear there); else float64. dy and dz, measured or
        # not, do not decide it: the other tensors' bounds are the same either way.
        reach = [s for name, s in zip(self.names, self.scales) if name in self.compared]
        reach += [scale_of(a) for a in [x, target, *(a for layer in params for a in layer)]]
        low, high = FLOAT32_REACH
        self.measure_in("float32" if all(low <= s <= high for s in reach) else "float64")

    def measure_in(self, dtype: str) -> None:
        """The perturbed runs from here on in dtype, with its PERTURBATION."""
        self.dtype, self.perturbation = dtype, PERTURBATION[dtype]

    def run(self, params, target, noise=contextlib.nullcontext) -> Iterator[tuple[slice, list[np.ndarray]]]:
        """A perturbed run of the whole batch in self.dtype, a chunk of rows at a time (`chunked`):
        yields (rows, the chunk's tensors listed), each per-row tensor its rows (r, d) of the
        batch's, each other one its share of the batch's sum, as in_chunks puts them together (dx,
        dy, dz and the sums times the share in float64, the output as it is; with one chunk, the
        tensors as they are). noise: entered around each chunk's step. No run of the batch is
        ever held whole: the caller takes each chunk's moves and lets it go."""
        kw = self.kw | {"dtype": self.dtype}
        for rows, part, share in chunked(self.module, params, self.x, target, kw, noise):
            r = rows.stop - rows.start
            listed = [t for _, _, t in contract.tensors(part, self.intermediates)]
            if share == 1:  # the plain call: the batch's own tensors
                yield rows, [t.reshape(r, -1) if k in self.per_row else t for k, t in enumerate(listed)]
                continue
            tensors = []
            for k, (name, t) in enumerate(zip(self.names, listed)):
                t = t if name == "output" else scaled(t, share)  # in_chunks's rule: a gradient is its share
                tensors.append(t.reshape(r, -1) if k in self.per_row else t)
            yield rows, tensors

    def listed(self, result: dict) -> list[np.ndarray]:
        """A result's tensors in contract.tensors order (self.names), in the run's dtype (dy and dz where measured)."""
        return [np.asarray(t) for _, _, t in contract.tensors(result, self.intermediates)]

    def share(self, result: dict, rows: int) -> list[np.ndarray]:
        """A group's result, listed, as its share of the batch's: its gradients are of its own mean
        loss, rows/n of the batch's, so every tensor but the output is scaled by rows/n."""
        share = rows / self.n
        listed = contract.tensors(result, self.intermediates)
        return [np.asarray(t) if name == "output" else np.asarray(t) * share for name, _, t in listed]

    def whole(self, shares: list[list[np.ndarray]]) -> list[np.ndarray]:
        """The batch's tensors from its groups' shares: per-row tensors' rows in their places, the sums
        added. The shares keep only their sums (dW, db, the loss): batch_rounding's statistics."""
        tensors = []
        for k in range(len(self.names)):
            if k in self.per_row:
                d = shares[0][k].shape[-1]
                t = np.empty((self.n, d))
                for rows, share in zip(self.split, shares):
                    t[rows] = share[k].reshape(len(rows), d)
                    share[k] = None  # its rows are in t: the grouped runs read them there
                tensors.append(t.reshape(self.x.shape[:-1] + (d,)))
            else:
                tensors.append(np.asarray(sum(share[k] for share in shares)))
        return tensors

    def group(self, params, rows, target) -> list[np.ndarray]:
        """One group's tensors from a perturbed run in self.dtype, as its share of the batch's
        (`share`). In one call, not in_chunks: its GELU draws one number per element, in order."""
        kw = self.kw | {"dtype": self.dtype}
        return self.share(self.module.loss_and_grads(params, self.rows_x[rows], target, **kw), len(rows))


def chunked(module: ModuleType, params, x, target, kw: dict, noise=contextlib.nullcontext) -> Iterator[tuple]:
    """module.loss_and_grads(params, x, target, **kw) on the batch a chunk of rows at a time
    (CHUNK_ELEMENTS), so that the step's arrays stay small however big the batch: yields (rows, the
    chunk's result, its share of the batch's rows, rows / n). Each chunk's gradients are of its own
    mean loss: its share of the batch's. With one chunk (every batch of up to CHUNK_ELEMENTS) it
    is the plain call on x and target as they are, share 1. noise: a context manager factory
    entered around each chunk's call (activation_noise's)."""
    n, rows_x, rows_t = as_rows(x, target, params[-1][0].shape[0])
    step = max(1, CHUNK_ELEMENTS // (x.shape[-1] + sum(layer[0].shape[0] for layer in params)))
    if n <= step:
        with noise():
            whole = module.loss_and_grads(params, x, target, **kw)
        yield slice(0, n), whole, 1  # outside noise: the caller may run another step before the next
        return
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        with noise():
            part = module.loss_and_grads(params, rows_x[rows], rows_t[rows], **kw)
        yield rows, part, (rows.stop - rows.start) / n


def in_chunks(module: ModuleType, params, x, target, kw: dict, noise=contextlib.nullcontext) -> dict:
    """module.loss_and_grads(params, x, target, **kw) for the whole batch, run `chunked`: the loss,
    dW, db (dscale, dshift) the chunks' sums of their shares, the per-row gradients (dx, dy, dz)
    their rows of theirs, in float64, and the output the chunks' rows as they are: the batch's
    result, up to rounding in the sums' order (a few u of the run's dtype, 2^-12 or less of the
    moves the bound measures). With one chunk it is the plain call's result."""
    n = int(np.prod(x.shape[:-1], dtype=np.int64))
    whole = {}  # the batch's: per-row tensors (n, d), filled a chunk at a time; the sums so far
    for rows, part, share in chunked(module, params, x, target, kw, noise):
        if share == 1:
            return part
        for key, value in part.items():
            if key == "output":  # as it is, in the run's dtype
                whole.setdefault(key, np.empty((n, value.shape[-1]), value.dtype))[rows] = value
            elif key == "dx" or key in contract.INTERMEDIATES:  # per row: its rows of the share, in float64
                for i, a in enumerate(value if isinstance(value, list) else [value]):
                    rows_of = whole.setdefault((key, i), np.empty((n, a.shape[-1])))[rows]
                    np.multiply(a, share, out=rows_of, dtype=np.float64)
            else:  # a sum over rows: the chunks' shares added up, in float64
                whole[key] = scaled(value, share) if key not in whole else add_to(whole[key], scaled(value, share))
    result = {}
    for key in part:
        if key == "output" or key == "dx":
            result[key] = whole.pop(key if key == "output" else (key, 0)).reshape(x.shape[:-1] + (-1,))
        elif key in contract.INTERMEDIATES:
            result[key] = [whole.pop((key, i)).reshape(x.shape[:-1] + (-1,)) for i in range(len(part[key]))]
        else:
            result[key] = whole[key]
    return result


def add_to(total, value):
    """total + value, for an array or a list of arrays (a per-layer entry): the chunks' shares
    added from the first one on (an element that is -0.0 in every chunk stays -0.0, as one call's)."""
    if isinstance(value, list):
        return [t + v for t, v in zip(total, value)]
    return total + value


def as_rows(x, target, d_out: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(n, x as n rows (n, d_in), target broadcast to the output and as rows (n, d_out)): the
    batch's leading dimensions flattened."""
    n = int(np.prod(x.shape[:-1], dtype=np.int64))
    return n, x.reshape(n, x.shape[-1]), np.broadcast_to(target, x.shape[:-1] + (d_out,)).reshape(n, d_out)


def scaled(value, share: float):
    """value * share in float64, for an array or a list of arrays (a per-layer entry): one new
    array each, the cast made as the product is (no float64 copy first)."""
    if isinstance(value, list):
        return [np.multiply(a, share, dtype=np.float64) for a in value]
    return np.multiply(value, share, dtype=np.float64)


def nudged(batch: Batch, rows=None):
    """(params, target) nudged as the module docstring says; the target of `rows` only.

    The target is moved so that output - target, which the loss's gradient is proportional
    to, moves by ELEMENTWISE roundings: the last layer's backward steps have no layer above
    whose weights stand in for them, as every other layer's have."""

    def draw(shape, scale):  # P scale r, in the runs' dtype (P: batch.perturbation)
        return unit_draws(batch.rng, shape, batch.dtype, batch.perturbation * scale)

    def nudge(a, scale):  # a (1 + P scale r), built in the draw's own array
        moved = draw(a.shape, scale)
        moved += 1
        moved *= a
        return moved

    params = []
    for W, b, *norm_params in batch.params:  # norm_params: pre-LN's (scale, shift), (d_in,) each
        d_out, d_in = W.shape
        a = np.sqrt((d_in + d_out + 5) / 2 + ELEMENTWISE)
        params.append((nudge(W, a), nudge(b, a), *(nudge(p, layer_norm_amplitude(d_in)) for p in norm_params)))
    picked = slice(None) if rows is None else rows
    residual = batch.residual[picked]  # (rows, d_out): output - target
    # target - P sqrt(ELEMENTWISE) r (output - target), made in the run's dtype, as the run would round it
    moved = draw(residual.shape, np.sqrt(ELEMENTWISE))  # (rows, d_out)
    moved *= residual
    target = np.subtract(batch.rows_t[picked], moved, out=moved)
    return params, target if rows is not None else target.reshape(batch.base[1].shape)


def unit_draws(rng: np.random.Generator, shape, dtype, scale: float = 1.0, where=None) -> np.ndarray:
    """scale times the perturbed runs' r, in `dtype`: random signs, +1 or -1 at even odds (mean 0,
    mean square 1), and 0 where `where` (a bool array of `shape`) is False. The root-mean-square
    moves the bound takes depend on r only through its mean square; a sign takes one random bit,
    and where an element's move is one r's (a GELU's own error), its square is 1 in every draw,
    not scattered around 1 as a uniform or normal number's would be."""
    n = math.prod(shape)
    signs = np.unpackbits(np.frombuffer(rng.bytes(-(-n // 8)), np.uint8), count=n).view(np.int8)  # (n,) 0 or 1
    signs *= 2
    signs -= 1  # -1 or +1: bytes, a quarter of a float32 pass each
    if where is not None:
        signs *= where.reshape(-1)
    return np.multiply(signs, scale, dtype=np.dtype(dtype)).reshape(shape)  # exactly +-scale in dtype, or 0


def layer_norm_amplitude(d: int) -> float:
    """a for a LayerNorm over d elements, as for a Linear's: its forward sums d terms twice (the
    mean, then the variance), its backward twice more (the means of dL/dx_hat and of dL/dx_hat
    x_hat), (d + 2) / 2 each, and ELEMENTWISE covers the subtraction, square root, division,
    scale and shift either way."""
    return float(np.sqrt(2 * (d + 2) + ELEMENTWISE))


@contextlib.contextmanager
def activation_noise(
    rng: np.random.Generator,
    shared: bool,
    module: ModuleType = impl_numpy.model,
    memo: dict | None = None,
    perturbation: float = PERTURBATION["float64"],
):
    """Within it, the GELU of `module`, the NumPy implementation that measures (impl_numpy.model or
    impl_numpy.fast, whose loss_and_grads call their GELU functions by name), is replaced on the
    module by one whose value and slope each get `perturbation` times a draw of the error their
    special function leaves, t = tanh(u(z)) or erf(z / sqrt(2)) off by up to e u |t|
    (e = SPECIAL_FUNCTION_ERROR), carried through the formula, in u:

        value  0.5 |z| e |t| r                              g = 0.5 z (1 + t)
        slope  |dout| e (0.5 |t| + |z| t^2 u'(z)) r         g' = Phi + z Phi', Phi = 0.5 (1 + t),
                                                            Phi' = 0.5 (1 - t^2) u'(z) (tanh form)
        slope  |dout| e 0.5 |t| r  (exact form)             Phi' = exp(-z^2 / 2) / sqrt(2 pi): no t in it

    worked out in h = |t| / 2 = |Phi - 1/2|, read off the implementation's own values: h = |g / z - 1/2|
    from the reference's g, h = |Phi - 1/2| from fast.py's Phi. r (unit_draws, e and the
    perturbation in it) is one per unit for all rows alike when `shared` (identical rows round
    alike), else one per element, and 0 past |z| = SATURATED. On leaving, the module's own
    functions are back. memo: for a shared run made in chunks of rows (in_chunks), one dict for
    all its chunks, each entering anew: the first chunk draws each GELU call's row of r, in the
    order the whole batch would, and the others take the same rows. perturbation: the runs'
    PERTURBATION, by their dtype; r is drawn in z's dtype."""
    memo = {} if memo is None else memo
    calls = {"value": 0, "slope": 0}  # this entry's calls so far: which of memo's draws is next
    amplitude = perturbation * SPECIAL_FUNCTION_ERROR  # e and the perturbation, in every r

    # Each line below writes into an array it made (out=, *=): the runs are as large as the
    # batch, and every fresh array of that size costs its page faults again.
    def draw(z, near, kind):  # amplitude r, (...,) like z; 0 where t saturates, near = min(|z|, SATURATED)
        in_reach = np.less(near, SATURATED)  # NaN counts as saturated
        if shared:
            key = (kind, calls[kind])
            calls[kind] += 1
            if key not in memo:
                memo[key] = unit_draws(rng, z.shape[-1:], z.dtype, amplitude)
            return np.multiply(in_reach, memo[key])  # the one row of draws, on every row
        return unit_draws(rng, z.shape, z.dtype, amplitude, where=in_reach)

    def value_noise(z, h):  # the value's, |z| h (amplitude r), (...,) like z
        noise = np.abs(z)
        r = draw(z, noise, "value")
        noise *= h
        return np.multiply(noise, r, out=noise)

    def slope_noise(dout, z, h, form):  # the slope's times |dout|, (...,) like z
        near = np.abs(z)
        near = np.minimum(near, SATURATED, out=near)  # (...,): past it r is 0, and near^3 stays in range
        r = draw(z, near, "slope")
        if form == "tanh":  # 0.5 |t| + near t^2 u'(near) = h (1 + near h 4 k (1 + 3 c near^2))
            slope = np.multiply(near, near)
            slope *= 12 * TANH_K * TANH_C
            slope += 4 * TANH_K
            slope *= near
            slope *= h
            slope += 1
            slope *= h
            slope *= np.abs(dout, out=near)  # near is not needed again
        else:  # 0.5 |t| = h
            slope = np.multiply(np.abs(dout, out=near), h)
        return np.multiply(slope, r, out=slope)

    if module is impl_numpy.model:  # gelu(z, form) -> g; gelu_backward(dout, z, form) -> dz
        names = ("gelu", "gelu_backward")
        gelu, gelu_backward = module.gelu, module.gelu_backward

        def h_of(z, g):  # h = |g / z - 1/2|, 0 at z = 0
            h = np.divide(g, z, out=np.full_like(z, 0.5), where=z != 0)
            h -= 0.5
            return np.abs(h, out=h)

        def noisy_gelu(z, form):
            g = gelu(z, form)
            return g + value_noise(z, h_of(z, g))

        def noisy_gelu_backward(dout, z, form):
            h = h_of(z, gelu(z, form))
            return gelu_backward(dout, z, form) + slope_noise(dout, z, h, form)

    elif module is impl_numpy.fast:  # gelu_forward(z, b, x, form) -> (Phi, y); gelu_backward(dy, z, phi, scratch, form) -> dz in z
        names = ("gelu_forward", "gelu_backward")
        gelu, gelu_backward = module.gelu_forward, module.gelu_backward

        def h_of(phi):  # h = |Phi - 1/2|
            h = np.subtract(phi, 0.5)
            return np.abs(h, out=h)

        def noisy_gelu(z, b, x, form):
            phi, y = gelu(z, b, x, form)  # z is now z + b
            y += value_noise(z, h_of(phi))  # y = (x +) g: the noise joins g
            return phi, y

        def noisy_gelu_backward(dy, z, phi, scratch, form):
            noise = slope_noise(dy, z, h_of(phi), form)  # before z's buffer takes dz
            dz = gelu_backward(dy, z, phi, scratch, form)
            dz += noise
            return dz

    else:  # no other step's GELU is known here: a bound without the term would be too tight in the tail
        raise ValueError(f"activation_noise perturbs impl_numpy.model's or impl_numpy.fast's GELU, not {module.__name__}'s")
    originals = (gelu, gelu_backward)
    for name, function in zip(names, (noisy_gelu, noisy_gelu_backward)):
        setattr(module, name, function)
    try:
        yield
    finally:
        for name, function in zip(names, originals):
            setattr(module, name, function)


def propagated_rounding(batch: Batch, draws: int, say: Callable[[str], None] = lambda text: None) -> list[np.ndarray]:
    """TAIL times each element's measured rounding spread (module docstring), per unit perturbation.

    Shared runs: the whole batch under one nudge. Grouped runs (more than one row): each group
    under its own nudge. A per-row element (output, dx) takes the root-mean-square of its moves
    over all the runs; a batch sum (loss, dW, db) the larger of its shared runs' root-mean-square
    move and the grouped runs' mean of the groups' summed squared moves, square-rooted. say: told
    each draw as it starts."""
    base, per_row = batch.base, batch.per_row
    grouped = draws // 2 if batch.split else 0
    shared = [np.zeros(t.shape) for t in base]  # sums of squared moves, in units of the tensor's scale
    independent = {k: np.zeros(t.shape) for k, t in enumerate(base) if k not in per_row}

    def squared_move(t1, t0, s):  # ((t1 - t0) / s / perturbation)^2, in the one new array
        move = np.asarray(t1 - t0, np.float64)  # an array even for the loss: the lines below work in it
        per_unit = 1 / s / batch.perturbation  # s first: perturbation * s may underflow
        if math.isfinite(per_unit):
            move *= per_unit
        else:  # s below 2^-994 (a gradient vanished to 1e-300): 1 / s overflows, one division at a time
            move /= s
            move /= batch.perturbation
        return np.multiply(move, move, out=move)

    def rows_of(t):  # a per-row tensor as rows (n, d), a view
        return t.reshape(batch.n, -1)

    def add_rows(k, rows, t1):  # a run's rows of per-row tensor k, (r, d): their squared moves into `shared`
        rows_of(shared[k])[rows] += squared_move(t1, rows_of(base[k])[rows], batch.scales[k])

    def add_run(chunks) -> dict[int, np.ndarray]:  # a shared run's squared moves into `shared`, a chunk at a time
        sums = {}  # the batch's sums (loss, dW, db), added up over the chunks; returned for linear_first_draw
        for rows, part in chunks:
            for k, t1 in enumerate(part):
                if k in per_row:
                    add_rows(k, rows, t1)
                else:
                    sums[k] = t1 if k not in sums else sums[k] + t1
        for k, t1 in sums.items():
            shared[k] += squared_move(t1, base[k], batch.scales[k])
        return sums

    say(f"bound: draw 1 of {draws}")
    tried = batch.dtype == "float32"
    first = tried and linear_first_draw(batch, add_run)  # False: float64 runs from here
    if tried and not first:  # the checked draw's moves were float32's: the float64 draws start again
        for m in shared:
            m[...] = 0
    for draw in range(1 if first else 0, draws - grouped):
        if draw:
            say(f"bound: draw {draw + 1} of {draws}")
        params, target = nudged(batch)
        # {}: every chunk's draws
        noise = functools.partial(activation_noise, batch.rng, True, batch.module, {}, batch.perturbation)
        add_run(batch.run(params, target, noise))
    for draw in range(draws - grouped, draws):
        say(f"bound: draw {draw + 1} of {draws}")
        for rows, share in zip(batch.split, batch.shares):
            params, target = nudged(batch, rows)
            with activation_noise(batch.rng, False, batch.module, perturbation=batch.perturbation):
                moved = batch.group(params, rows, target)
            for k, t1 in enumerate(moved):
                if k in per_row:  # the group's rows, in their places among all the rows
                    add_rows(k, rows, t1)
                else:
                    independent[k] += squared_move(t1, share[k], batch.scales[k])
            del moved
    for k, m in enumerate(shared):  # into the bound, in the sums' own arrays
        if k in per_row:
            np.sqrt(np.divide(m, draws, out=m), out=m)
        else:
            shared[k] = np.maximum(np.sqrt(m / (draws - grouped)), np.sqrt(independent[k] / max(grouped, 1)))
        shared[k] *= TAIL
        shared[k] *= batch.scales[k]
    return shared


def linear_first_draw(batch: Batch, add_run: Callable) -> bool:
    """Whether float32 runs measure the bound: the first shared draw, run in float32 and checked.
    Its squared moves go into the caller's sums as it runs (add_run, propagated_rounding's, which
    returns the run's summed tensors); where it fails, the batch's perturbed runs are float64 from
    here on (batch.measure_in) and the caller starts its sums again.

    The draw is run twice, a chunk of each at a time: as nudged, and mirrored (every nudge and
    every GELU draw negated). Of the two moves, the odd part (t+ - t-) / 2 is the linear response
    and the even part (t+ + t-) / 2 - t0 what the nudge's size adds to it: where the even part
    passes LINEARITY of the odd part in any tensor (root-mean-square, the loss aside: a mean of
    squares moves by the squares of its moves), or a value is not finite where the float64 run's
    is, a 2^-12 nudge is too big for this network (deep ones with shortcuts, whose residual stream
    grows), and the 2^-30 nudge of float64 runs is kept. Where a batch runs in chunks, its first
    chunk's rows are held to the same rule first, and where they fail, so does the draw: float64
    runs are sound wherever float32 ones are, and the rest of the draw is not run for nothing."""
    params, target = nudged(batch)
    memo, negated = {}, {}  # the GELU's draws, made in the nudged run's first chunk; the mirror's, theirs negated

    def mirrored_noise():
        negated.update({key: -r for key, r in memo.items() if key not in negated})
        return activation_noise(batch.rng, True, batch.module, negated, batch.perturbation)

    mirrored = [tuple(2 * a0 - a for a0, a in zip(layer0, layer)) for layer0, layer in zip(batch.params, params)]
    mirrored_target = np.multiply(batch.rows_t.reshape(target.shape), 2, dtype=target.dtype)  # 2 t0 - target
    mirrored_target -= target
    noise = functools.partial(activation_noise, batch.rng, True, batch.module, memo, batch.perturbation)
    plus, minus = batch.run(params, target, noise), batch.run(mirrored, mirrored_target, mirrored_noise)
    base = batch.base
    checked = [name != "loss" and all_finite(t0) for name, t0 in zip(batch.names, base)]
    squares = {k: np.zeros(2) for k in batch.per_row}  # per-row tensors' sum((even / s)^2), sum((odd / s)^2)
    minus_sums, finite, bent_early = {}, True, False

    def bent(k, even_odd, t0) -> bool:  # the rule, for tensor k's part t0 (the whole, or a chunk's rows)
        # A float32 result's own rounding is in the even part too: 2^-16 of the tensor covers it.
        even, odd = np.sqrt(even_odd / t0.size) * batch.scales[k]
        return bool(even > LINEARITY * odd + 2.0**-16 * root_mean_square(t0))

    def each_chunk():  # the nudged run's chunks, on to add_run, each looked at with the mirror's
        nonlocal finite, bent_early
        for (rows, t1s), (_, t2s) in zip(plus, minus):
            this_chunk = {}  # per checked per-row tensor: the chunk's rows of t0, and its moves' squares
            for k, (t1, t2) in enumerate(zip(t1s, t2s)):
                if k in batch.per_row:
                    t0 = base[k].reshape(batch.n, -1)[rows]
                    finite &= finite_where(t0, t1, t2)
                    if checked[k]:
                        this_chunk[k] = t0, even_odd_squares(t0, t1, t2, batch.scales[k])
                        squares[k] += this_chunk[k][1]
                else:
                    minus_sums[k] = t2 if k not in minus_sums else minus_sums[k] + t2
            # Where the first chunk of rows already bends (or broke), the rest need not run: float64
            # it is. (A network that bends, bends in every row: at 128 x 24 with shortcuts on 8192
            # rows, the first chunk's even part is 0.179 of its odd part, the batch's 0.183.)
            if rows.start == 0 and rows.stop < batch.n:
                bent_early = not finite or any(bent(k, squared, t0) for k, (t0, squared) in this_chunk.items())
                if bent_early:
                    return
            yield rows, t1s

    plus_sums = add_run(each_chunk())
    if bent_early:
        batch.measure_in("float64")
        return False
    for k, t1 in plus_sums.items():
        finite &= finite_where(base[k], t1, minus_sums[k])
        squares[k] = even_odd_squares(base[k], t1, minus_sums[k], batch.scales[k]) if checked[k] else np.zeros(2)
    linear = finite and not any(bent(k, squares[k], base[k]) for k in range(len(base)) if checked[k])
    if not linear:
        batch.measure_in("float64")
    return linear


def finite_where(t0, t1, t2) -> bool:
    """Whether a draw's and its mirror's results t1, t2 are finite wherever the unperturbed t0 is."""
    if all_finite(t1) and all_finite(t2):  # the usual case: no masks to make
        return True
    return bool(np.all(np.isfinite(t1) & np.isfinite(t2) | ~np.isfinite(t0)))


def all_finite(t) -> bool:
    """Whether every element of t is finite, from its extremes (a NaN or an inf is one of them)."""
    t = np.asarray(t)
    return not t.size or bool(np.isfinite(t.max()) and np.isfinite(t.min()))


def even_odd_squares(t0, t1, t2, s: float) -> np.ndarray:
    """[sum((even / s)^2), sum((odd / s)^2)] of a draw's move t1 - t0 and its mirror's t2 - t0
    (linear_first_draw): even (t1 + t2) / 2 - t0, odd (t1 - t2) / 2, in float64."""
    t1, t2 = np.ravel(t1), np.ravel(t2)  # left as they are, in their own dtype: each ufunc casts
    part = np.add(t1, t2, dtype=np.float64)  # the one new array: twice the even part, then the odd
    part -= np.ravel(t0)
    part -= np.ravel(t0)
    part /= 2 * s  # s a power of two: (2 even / 2 s)^2 is (even / s)^2 as rounded
    even = np.dot(part, part)
    odd = np.subtract(t1, t2, out=part, dtype=np.float64)
    odd /= 2 * s
    return np.array([even, np.dot(odd, odd)])


def batch_rounding(batch: Batch, per_row_sums: bool = True) -> list[np.ndarray | None]:
    """The sum over rows behind dW, db and the loss (module docstring); zeros for the per-row
    output and dx (None with per_row_sums=False), and for dW and db when there is one row."""
    terms = [None if k in batch.per_row and not per_row_sums else np.zeros(t.shape) for k, t in enumerate(batch.base)]
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


def gelu_form_resolution(params, x, target, bound: dict, dtype: str, own: dict | None = None, **kw) -> dict:
    """Could this run see the GELU form mix-up? The other form against the run's own, in float64
    runs of the NumPy implementation (`measuring`), each element's move as a share of the allowance `bound` gives it in
    `dtype` (shortcut_gradients.verdict.check.compare's rule); kw: use_shortcut, gelu_form and norm if "pre".

    Returns {"other_form", "share" (the largest share any element moved), "tensor" (where),
    "resolved" (share > 1: a mix-up of the two forms shows)}. Where the allowance has grown past
    the difference between the forms (deep float32 networks whose gradient has vanished, big
    batches), a run agrees whichever form an implementation computes, and the report says so.
    Only the tensors every implementation returns count: not the optional dy and dz. own: the
    float64 result in the run's own form, where the measurement has it (measure_around), else run
    here; with it, a batch of more than RESOLUTION_ROWS rows is first tried on those rows
    (`sampled_resolution`), and where they resolve, share and tensor are theirs."""
    other = {"tanh": "exact", "exact": "tanh"}[kw["gelu_form"]]
    params = [tuple(np.asarray(a, np.float64) for a in layer) for layer in params]
    x, target = np.asarray(x, np.float64), np.asarray(target, np.float64)
    module, runs = measuring(kw.get("norm", "none")), {}
    sampled = sampled_resolution(module, params, x, target, bound, dtype, own, other, kw) if own is not None else None
    if sampled is not None and sampled["resolved"]:
        return sampled
    for form in (kw["gelu_form"], other):
        if form == kw["gelu_form"] and own is not None:
            result = own
        else:
            result = in_chunks(module, params, x, target, {**kw, "gelu_form": form, "dtype": "float64"})
        runs[form] = {key: value for key, value in result.items() if key not in contract.INTERMEDIATES}
    report = check.compare(runs, dtype, bound)
    tensor, share = max(report["room"].items(), key=lambda item: item[1])
    return {"other_form": other, "share": float(share), "tensor": tensor, "resolved": bool(share > 1)}


def sampled_resolution(module, params, x, target, bound: dict, dtype: str, own: dict, other: str, kw: dict) -> dict | None:
    """gelu_form_resolution's answer from the batch's first RESOLUTION_ROWS rows alone, or None
    for a batch no bigger. The other form's run of those rows gives their output and input
    gradient exactly as the whole batch's run would (the rows' input gradients are of their own
    mean loss: times rows/n), each element's move a share of the allowance `bound` gives it
    there. Shares of a sample are at most the batch's: where one passes 1, the batch resolves."""
    n, rows_x, rows_t = as_rows(x, target, params[-1][0].shape[0])
    m = RESOLUTION_ROWS
    if n <= m:
        return None
    theirs = module.loss_and_grads(params, rows_x[:m], rows_t[:m], **{**kw, "gelu_form": other, "dtype": "float64"})

    def first_rows(t):  # a per-row tensor's first m rows, (m, d)
        return np.asarray(t).reshape(n, -1)[:m]

    sample = {**bound, "output": first_rows(bound["output"]), "dx": first_rows(bound["dx"])}
    allowance = check.measured(sample, dtype, check.underflow_floor(own, dtype))
    shares = {
        "output": allowance("output", first_rows(own["output"]), theirs["output"].reshape(m, -1)),
        "input": allowance("input", first_rows(own["dx"]), theirs["dx"].reshape(m, -1) * (m / n)),
    }
    tensor, share = max(((t, float(used.max())) for t, (used, _, _) in shares.items()), key=lambda item: item[1])
    return {"other_form": other, "share": share, "tensor": tensor, "resolved": bool(share > 1)}

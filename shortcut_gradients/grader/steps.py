"""The grader's steps: each backward rule of a submission on its own, against torch's autograd in float64.

    loss      mse_loss_backward(output, target)               outputs (1, 1), (4, 5), (2, 3, 5)
    gelu      gelu_backward(dout, x, form), tanh then exact   x (1, 3), (5, 3), (2, 3, 4)
    linear    linear_backward(dz, x, W) -> (dx, dW, db)       x (1, 3) (5, 3) with W (3, 3); (5, 4) (2, 3, 4) with W (3, 4)
    shortcut  ExampleDeepNeuralNetwork([(W, b)], True, form): one square residual layer's dx
    network   loss_and_grads on the book network and a deeper batched one, through
              shortcut_gradients.verdict.check.compare against the NumPy reference and torch, dy and dz included;
              last, the book network in float32: the result must come back in the requested dtype
    layernorm layer_norm_backward(dout, x, scale) -> (dx, dscale, dshift)   x (1, 3), (5, 3), (2, 3, 4);
              then loss_and_grads(..., norm="pre") on the pre-LN book network and a deeper batched
              one, as in step network, dscale and dshift included (the book's next step)

Inputs run from one row to 3-D batches, because the classic bias slips are invisible on one
row. Each step stops at its first wrong tensor and names the likely slip (shortcut_gradients/grader/diagnose.py).
A step calls only its own rule (and the rules before it that it is built from), so a step
that is ok is ok whatever the later blanks hold.
"""

import functools
import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from shortcut_gradients.grader.diagnose import (
    CHAIN_RULE_FACTORS,
    FIT_MARGIN,
    Candidate,
    Diagnosis,
    Factor,
    diagnose,
    fit,
    layer_norm_slips,
)
from shortcut_gradients.plumbing import user_code
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, InputError
from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params
from shortcut_gradients.verdict import check, contract

STEPS = ("loss", "gelu", "linear", "shortcut", "network", "layernorm")
REQUIRED = ("mse_loss_backward", "gelu_backward", "linear_backward", "ExampleDeepNeuralNetwork", "loss_and_grads")
# Step layernorm's rule: not REQUIRED, so that a copy of the skeleton made before it was added is still graded.
LAYER_NORM_RULE = "layer_norm_backward"
# float64's tolerance from shortcut_gradients.verdict.check: 1e-12 relative, elementwise, with its noise floor.
# Autograd and a correct NumPy rule agree to ~1e-16 here (docs/grader.md measures it); a
# float32 constant in a float64 run is off by ~1e-8, every other slip by far more.
TOLERANCE = check.TOLERANCE["float64"]
EPS = float(np.finfo(np.float64).eps)
DEEP_LAYER_SIZES = (4, 4, 4, 4, 4, 4, 4, 2)  # seven layers, six of them with a shortcut
DEEP_INPUT_SHAPE = (2, 3, 4)


@dataclass
class StepResult:
    step: str
    status: str  # "ok", "todo" or "wrong"
    tensor: str | None = None  # the first wrong tensor, as the submission names it: "db", "dy[2]"
    max_rel_diff: float | None = None  # ok: the worst over the step; wrong: that tensor's (None: shapes differ)
    diagnosis: str | None = None  # wrong: the likely slip; todo: where the NotImplementedError was raised
    slip: str | None = None  # the diagnosis's short name ("sign", "transposed", ...)
    case: str | None = None  # the inputs it went wrong on
    worst: dict | None = None  # the worst element: index, yours, expected

    def to_json(self) -> dict:
        """The fields, with NaN and inf as the strings "nan", "inf", "-inf": JSON has no numbers for them."""
        return _finite_json(asdict(self))


def _finite_json(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


class Stop(Exception):
    """A step's verdict reached before its last case: todo or wrong."""

    def __init__(self, result: StepResult):
        self.result = result


# --- inputs and autograd's answers, built once per process ------------------------------------


def _torch():
    import torch

    return torch


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)  # shared between gradings: a submission gets copies
    return arrays


@dataclass(frozen=True)
class Case:
    label: str
    inputs: tuple  # the submission's arguments (read-only; copied before each call)
    expected: dict  # tensor name -> autograd's answer, in the order they are checked
    extra: dict  # what the candidates need


@functools.cache
def loss_cases() -> tuple[Case, ...]:
    torch, rng = _torch(), np.random.default_rng(1)
    cases = []
    for out_shape, target_shape in (((1, 1), (1, 1)), ((4, 5), (4, 5)), ((2, 3, 5), (5,))):
        output, target = _frozen(rng.normal(size=out_shape), rng.normal(size=target_shape))
        o = torch.tensor(output, requires_grad=True)
        loss = torch.mean((o - torch.tensor(target)) ** 2)
        (dout,) = torch.autograd.grad(loss, o)
        label = f"output {out_shape}, target {target_shape}"
        cases.append(Case(label, (output, target), {"dout": dout.numpy()}, {"N": output.size, "rows": len(output)}))
    return tuple(cases)


def _gelu_torch(x, form: str):
    """gelu(x) = x Phi(x) in torch, with Phi, so that autograd gives Phi' too."""
    from impl_torch.model import GELU_CUBIC, SQRT_1_OVER_2, SQRT_2_OVER_PI

    torch = _torch()
    if form == "tanh":
        phi = 0.5 * (1.0 + torch.tanh(SQRT_2_OVER_PI * (x + GELU_CUBIC * x**3)))
    else:
        phi = 0.5 * (1.0 + torch.erf(x * SQRT_1_OVER_2))
    return torch.nn.functional.gelu(x, approximate="tanh" if form == "tanh" else "none"), phi


@functools.cache
def gelu_cases() -> tuple[Case, ...]:
    torch, rng = _torch(), np.random.default_rng(2)
    cases = []
    for form in ("tanh", "exact"):
        for shape in ((1, 3), (5, 3), (2, 3, 4)):
            x, dout = _frozen(rng.normal(scale=2.0, size=shape), rng.normal(size=shape))
            grads = {}
            for f in ("tanh", "exact"):
                xt = torch.tensor(x, requires_grad=True)
                g, phi = _gelu_torch(xt, f)
                (slope,) = torch.autograd.grad(g.sum(), xt, retain_graph=True)  # gelu'(x)
                (dphi,) = torch.autograd.grad(phi.sum(), xt)  # Phi'(x)
                grads[f] = (slope.numpy(), phi.detach().numpy(), dphi.numpy())
            slope, phi, dphi = grads[form]
            other = "exact" if form == "tanh" else "tanh"
            extra = {
                "form": form,
                "other": other,
                "slope": slope,
                "phi": phi,
                "dphi": dphi,
                "other_slope": grads[other][0],
            }
            cases.append(Case(f"x {shape}, form {form}", (dout, x, form), {"dx": dout * slope}, extra))
    return tuple(cases)


@functools.cache
def linear_cases() -> tuple[Case, ...]:
    torch, rng = _torch(), np.random.default_rng(3)
    cases = []
    for x_shape, w_shape in (((1, 3), (3, 3)), ((5, 3), (3, 3)), ((5, 4), (3, 4)), ((2, 3, 4), (3, 4))):
        x, W, b = rng.normal(size=x_shape), rng.normal(size=w_shape), rng.normal(size=w_shape[:1])
        dz = rng.normal(size=x_shape[:-1] + w_shape[:1])
        _frozen(x, W, b, dz)
        xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
        z = xt @ Wt.T + bt
        dx, dW, db = torch.autograd.grad(z, (xt, Wt, bt), torch.tensor(dz))
        expected = {"dW": dW.numpy(), "db": db.numpy(), "dx": dx.numpy()}
        cases.append(Case(f"x {x_shape}, W {w_shape}", (dz, x, W), expected, {}))
    return tuple(cases)


@functools.cache
def shortcut_cases() -> tuple[Case, ...]:
    torch, rng = _torch(), np.random.default_rng(4)
    cases = []
    for form in ("tanh", "exact"):
        for x_shape in ((1, 4), (5, 4), (2, 3, 4)):
            x, W, b = rng.normal(size=x_shape), rng.normal(scale=0.5, size=(4, 4)), rng.normal(size=4)
            dout = rng.normal(size=x_shape)
            _frozen(x, W, b, dout)
            xt = torch.tensor(x, requires_grad=True)
            g, _ = _gelu_torch(xt @ torch.tensor(W).T + torch.tensor(b), form)
            (dx,) = torch.autograd.grad(xt + g, xt, torch.tensor(dout))  # y = x + gelu(x W^T + b)
            label = f"x {x_shape}, W (4, 4), form {form}"
            cases.append(Case(label, (W, b, x, dout, form), {"dx": dx.numpy()}, {}))
    return tuple(cases)


@functools.cache
def layernorm_cases() -> tuple[Case, ...]:
    """layer_norm_backward's cases: rows with a mean of their own (so that mu matters) and a scale that is not 1."""
    from impl_torch.model import LayerNorm

    torch, rng = _torch(), np.random.default_rng(6)
    cases = []
    for shape in ((1, 3), (5, 3), (2, 3, 4)):
        d = shape[-1]
        x = rng.normal(scale=2.0, size=shape) + rng.normal(size=shape[:-1] + (1,))
        dout, scale, shift = rng.normal(size=shape), rng.uniform(0.5, 1.5, d), rng.normal(size=d)
        _frozen(x, dout, scale, shift)
        norm = LayerNorm(d).double()
        with torch.no_grad():
            norm.scale.copy_(torch.tensor(scale))
            norm.shift.copy_(torch.tensor(shift))
        xt = torch.tensor(x, requires_grad=True)
        dx, dscale, dshift = torch.autograd.grad(norm(xt), (xt, norm.scale, norm.shift), torch.tensor(dout))
        expected = {"dscale": dscale.numpy(), "dshift": dshift.numpy(), "dx": dx.numpy()}
        cases.append(Case(f"x {shape}, scale ({d},)", (dout, x, scale), expected, {}))
    return tuple(cases)


def _answers(label: str, params, x, target, kw: dict) -> Case:
    """A network case: loss_and_grads of the NumPy reference and of torch, which must agree."""
    import impl_numpy.model as reference
    import impl_torch

    _frozen(x, target, *(a for layer in params for a in layer))
    dtype = kw["dtype"]
    expected = {
        "reference": contract.validate(
            "impl_numpy", reference.loss_and_grads(params, x, target, **kw), params, x, dtype
        ),
        "torch": contract.validate("impl_torch", impl_torch.loss_and_grads(params, x, target, **kw), params, x, dtype),
    }
    agreement = check.compare(expected, dtype)
    if not agreement["agree"]:  # the grader's own answers disagree: a bug in the project, not the submission
        raise RuntimeError(f"impl_numpy and impl_torch disagree on {label}: {agreement['first_mismatch']}")
    return Case(label, (params, x, target), expected, kw)


@functools.cache
def pre_ln_network_cases() -> tuple[Case, ...]:
    """Step layernorm's networks: the book's and a deeper batched one with a LayerNorm before every layer,
    its scale and shift drawn away from 1 and 0 so that a slip in either shows."""
    rng = np.random.default_rng(7)

    def pre_ln(sizes):
        return [
            (
                W.astype(np.float64),
                b.astype(np.float64),
                rng.uniform(0.5, 1.5, W.shape[1]),
                rng.normal(0, 0.5, W.shape[1]),
            )
            for W, b in seeded_params(sizes, BOOK_SEED)
        ]

    book_x, book_target = default_input(BOOK_LAYER_SIZES[0]), default_target(BOOK_LAYER_SIZES[-1])
    deep_x = rng.uniform(-2.0, 2.0, DEEP_INPUT_SHAPE)
    deep_target = rng.uniform(-1.0, 1.0, DEEP_INPUT_SHAPE[:-1] + DEEP_LAYER_SIZES[-1:])
    sizes = ",".join(map(str, DEEP_LAYER_SIZES))
    kw = {"gelu_form": "tanh", "dtype": "float64", "norm": "pre"}
    return (
        _answers(
            "pre-LN book network, tanh, no shortcut",
            pre_ln(BOOK_LAYER_SIZES),
            book_x,
            book_target,
            {**kw, "use_shortcut": False},
        ),
        _answers(
            f"pre-LN layers {sizes}, x {DEEP_INPUT_SHAPE}, tanh, shortcut",
            pre_ln(DEEP_LAYER_SIZES),
            deep_x,
            deep_target,
            {**kw, "use_shortcut": True},
        ),
    )


@functools.cache
def network_cases() -> tuple[Case, ...]:
    book = [(W.astype(np.float64), b.astype(np.float64)) for W, b in seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)]
    deep = [(W.astype(np.float64), b.astype(np.float64)) for W, b in seeded_params(DEEP_LAYER_SIZES, BOOK_SEED)]
    book32 = [(W.astype(np.float32), b.astype(np.float32)) for W, b in book]
    rng = np.random.default_rng(5)
    deep_x = rng.uniform(-2.0, 2.0, DEEP_INPUT_SHAPE)
    deep_target = rng.uniform(-1.0, 1.0, DEEP_INPUT_SHAPE[:-1] + DEEP_LAYER_SIZES[-1:])
    book_x, book_target = default_input(BOOK_LAYER_SIZES[0]), default_target(BOOK_LAYER_SIZES[-1])
    sizes = ",".join(map(str, DEEP_LAYER_SIZES))
    book32_x, book32_target = book_x.astype(np.float32), book_target.astype(np.float32)
    cases = []
    for label, params, x, target, form, use_shortcut, dtype in (
        ("book network, tanh, no shortcut", book, book_x, book_target, "tanh", False, "float64"),
        ("book network, tanh, shortcut", book, book_x, book_target, "tanh", True, "float64"),
        ("book network, exact, shortcut", book, book_x, book_target, "exact", True, "float64"),
        (f"layers {sizes}, x {DEEP_INPUT_SHAPE}, tanh, shortcut", deep, deep_x, deep_target, "tanh", True, "float64"),
        (
            f"layers {sizes}, x {DEEP_INPUT_SHAPE}, exact, no shortcut",
            deep,
            deep_x,
            deep_target,
            "exact",
            False,
            "float64",
        ),
        # The book's own dtype: is the result float32 (contract), and right to float32's tolerance?
        ("book network, tanh, shortcut, float32", book32, book32_x, book32_target, "tanh", True, "float32"),
    ):
        cases.append(
            _answers(label, params, x, target, {"use_shortcut": use_shortcut, "gelu_form": form, "dtype": dtype})
        )
    return tuple(cases)


# --- running their code -------------------------------------------------------------------------


def _run(step: str, module, case: Case, fn, *args, **kwargs):
    """fn(*args) through shortcut_gradients.plumbing.user_code: NotImplementedError is todo, anything else one InputError line."""
    try:
        return user_code.call(module, fn, *args, passthrough=(NotImplementedError,), **kwargs)
    except NotImplementedError as err:
        raise Stop(StepResult(step, "todo", diagnosis=user_code.describe(err, module), case=case.label)) from None
    except InputError as err:
        raise InputError(f"{err} (step {step}, {case.label})") from None


def _copy(a):
    return np.array(a) if isinstance(a, np.ndarray) else a


def _as_array(step: str, case: Case, name: str, value) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception:
        array = None
    if array is None or array.dtype.kind not in "fiu":
        hint = ": does the function end with a return?" if value is None else ""
        raise Stop(
            StepResult(
                step,
                "wrong",
                name,
                None,
                f"{name} is {type(value).__name__}, not an array{hint}",
                "not-an-array",
                case.label,
            )
        )
    return array


def _check(
    step: str,
    case: Case,
    name: str,
    yours: np.ndarray,
    expected: np.ndarray,
    candidates=(),
    factors=(),
    dtype: str = "float64",
) -> float:
    """The worst relative difference of yours against expected, or Stop with the diagnosis.

    Right means: expected's shape, the run's dtype, and every element within shortcut_gradients.verdict.check's
    tolerance for that dtype."""
    expected = np.asarray(expected, np.float64)
    tol, eps = check.TOLERANCE[dtype], float(np.finfo(dtype).eps)
    rel = None
    if yours.shape == expected.shape:
        rel = check.relative_error(yours, expected, tol, eps)
        if yours.dtype == np.dtype(dtype) and (rel.size == 0 or rel.max() <= tol):
            return float(rel.max()) if rel.size else 0.0
    if callable(candidates):  # built only when needed: some are costly or assume a failure
        candidates = candidates()
    found = diagnose(yours, expected, candidates, factors, dtype)
    worst = None
    if rel is not None and rel.size:
        idx = np.unravel_index(int(np.argmax(rel)), rel.shape)
        worst = {"index": [int(i) for i in idx], "yours": float(yours[idx]), "expected": float(expected[idx])}
    max_rel = float(rel.max()) if rel is not None and rel.size else None
    raise Stop(StepResult(step, "wrong", name, max_rel, found.text, found.slip, case.label, worst))


def _grade(step: str, module, cases, grade_case) -> StepResult:
    worst = 0.0
    try:
        for case in cases:
            worst = max(worst, grade_case(module, case))
    except Stop as stop:
        return stop.result
    return StepResult(step, "ok", max_rel_diff=worst)


# --- the steps ----------------------------------------------------------------------------------


def grade_loss(module) -> StepResult:
    return _grade("loss", module, loss_cases(), _loss_case)


def _loss_case(module, case: Case) -> float:
    output, target = case.inputs
    dout = _as_array(
        "loss", case, "dout", _run("loss", module, case, module.mse_loss_backward, _copy(output), _copy(target))
    )
    n, rows = case.extra["N"], case.extra["rows"]
    factors = [
        Factor(n, f"N = {n}", "not divided by N, the number of elements: the loss is a mean"),
        Factor(1 / n, f"1/N = 1/{n}", "divided by N twice"),
        Factor(n / 2, f"N/2 = {n / 2:g}", "neither the 2 of d(u^2)/du = 2u nor the 1/N of the mean"),
        Factor(n / rows, f"N/rows = {n / rows:g}", f"divided by the number of rows ({rows}), not of elements ({n})"),
    ]
    # A case-specific factor that equals 1 or a chain-rule constant (N = 2, say) would only shadow the plainer name.
    plain = [1.0] + [k.value for k in CHAIN_RULE_FACTORS]
    factors = [f for f in factors if all(abs(f.value - v) > 1e-9 for v in plain)]
    return _check("loss", case, "dout", dout, case.expected["dout"], factors=factors)


def grade_gelu(module) -> StepResult:
    return _grade("gelu", module, gelu_cases(), _gelu_case)


def _gelu_case(module, case: Case) -> float:
    dout, x, form = case.inputs
    dx = _as_array("gelu", case, "dx", _run("gelu", module, case, module.gelu_backward, _copy(dout), _copy(x), form))
    return _check("gelu", case, "dx", dx, case.expected["dx"], functools.partial(_gelu_candidates, case, dx))


def _gelu_candidates(case: Case, dx: np.ndarray) -> list:
    dout, x, form = case.inputs
    e = case.extra
    phi, dphi, other = e["phi"], e["dphi"], e["other"]
    candidates = [
        Candidate(
            "other-gelu-form",
            f"the other GELU form: yours is the {other} form's derivative, where {form} was asked",
            dout * e["other_slope"],
        ),
        Candidate(
            "product-rule",
            "the product rule: gelu = x Phi(x) => gelu' = Phi + x Phi'; yours has only Phi (the x Phi' term is missing)",
            dout * phi,
        ),
        Candidate(
            "product-rule",
            "the product rule: gelu = x Phi(x) => gelu' = Phi + x Phi'; yours has only x Phi' (the Phi term is missing)",
            dout * x * dphi,
        ),
        Candidate("chain-rule", "yours is gelu'(x) itself: multiply it by dout (the chain rule)", e["slope"]),
    ]
    found = _gelu_fits(dx, dout, x, form, phi, dphi)
    if found is not None:  # a fitted constant: yours itself is what that slip computes
        candidates.append(Candidate(found.slip, found.text, dx))
    return candidates


def _gelu_fits(dx, dout, x, form: str, phi, dphi) -> Diagnosis | None:
    """yours == dout (Phi + f x Phi') for a constant f != 1, or (tanh) Phi' with 3 c x^2 as m c x^2."""
    if dx.shape != np.shape(x):
        return None
    f = fit(dx, dout * phi, dout * x * dphi)
    if f is not None and abs(f - 1) > FIT_MARGIN and abs(f) > FIT_MARGIN:
        if abs(f + 1) < FIT_MARGIN:
            return Diagnosis("sign", "sign flipped on the x Phi'(x) term: gelu' = Phi + x Phi'")
        label = _factor_label(f)
        if form == "exact" and abs(f - math.sqrt(2 * math.pi)) < FIT_MARGIN:
            return Diagnosis(
                "factor",
                "the x Phi'(x) term is off by a constant factor sqrt(2 pi): "
                "the normal density's 1/sqrt(2 pi) is missing from Phi'",
            )
        return Diagnosis("factor", f"the x Phi'(x) term is off by a constant factor {label}")
    if form == "tanh":
        # tanh: Phi' = A (1 + 3 c x^2), the 3 c x^2 being d(c x^3)/dx; fit m in A (1 + m c x^2).
        from impl_torch.model import GELU_CUBIC as c

        a = dphi / (1 + 3 * c * x**2)
        m = fit(dx, dout * (phi + x * a), dout * x * a * c * x**2)
        if m is not None and abs(m - 3) > FIT_MARGIN:
            return Diagnosis(
                "factor",
                f"the cubic's derivative is off by a constant factor {_factor_label(m / 3)}: "
                f"d(c x^3)/dx = 3 c x^2, yours has {m:.4g} c x^2",
            )
    return None


def _factor_label(f: float) -> str:
    """'1/3' for a chain-rule constant (2, 1/2, 3, 1/3), else the number."""
    named = [k.label for k in CHAIN_RULE_FACTORS if abs(f - k.value) < FIT_MARGIN * k.value]
    return named[0] if named else f"{f:.4g}"


def grade_linear(module) -> StepResult:
    return _grade("linear", module, linear_cases(), _linear_case)


LINEAR_RETURNS = ("dx", "dW", "db")


def _tuple_of(step: str, case: Case, returned, names: tuple[str, ...]) -> dict:
    """A rule's returned tuple as {name: array}, or Stop with what came back instead."""
    if not isinstance(returned, tuple | list) or len(returned) != len(names):
        what = (
            f"a {type(returned).__name__} of {len(returned)}"
            if isinstance(returned, tuple | list)
            else type(returned).__name__
        )
        message = f"returns {what}; expected a tuple ({', '.join(names)})"
        raise Stop(StepResult(step, "wrong", None, None, message, "not-an-array", case.label))
    return {name: _as_array(step, case, name, value) for name, value in zip(names, returned)}


def _linear_case(module, case: Case) -> float:
    dz, x, W = case.inputs
    returned = _run("linear", module, case, module.linear_backward, _copy(dz), _copy(x), _copy(W))
    yours = _tuple_of("linear", case, returned, LINEAR_RETURNS)
    _check_return_order(case, yours)
    rows = int(np.prod(x.shape[:-1]))
    dz2 = dz.reshape(-1, dz.shape[-1])
    bias = "b is added to every row, so db sums dz over every leading dimension"
    db_candidates = [
        Candidate("bias-not-summed", f"bias not summed over rows: db has dz's shape; {bias}", dz),
        Candidate("bias-not-summed", f"bias not summed over rows: only the first row's dz; {bias}", dz2[0]),
        Candidate("bias-not-summed", f"bias summed over the wrong axis (over d_out); {bias}", dz2.sum(axis=1)),
        Candidate("bias-not-summed", f"bias summed over everything: db keeps one entry per output; {bias}", dz2.sum()),
    ]
    if dz.ndim > 2:
        db_candidates.insert(
            0, Candidate("bias-not-summed", f"bias summed over the first dimension only; {bias}", dz.sum(axis=0))
        )
    averaged = Factor(1 / rows, f"1/rows = 1/{rows}", f"bias averaged over rows, not summed; {bias}", "bias-not-summed")
    dw_averaged = Factor(1 / rows, f"1/rows = 1/{rows}", "averaged over rows, not summed: every row adds its dz^T x")
    dx_candidates = []
    if W.shape[0] == W.shape[1]:
        dx_candidates.append(
            Candidate("transposed", "transposed: dz @ W.T where z = x W^T + b gives dx = dz W", dz @ W.T)
        )
    worst = _check("linear", case, "dW", yours["dW"], case.expected["dW"], factors=[dw_averaged] if rows > 1 else [])
    worst = max(
        worst,
        _check("linear", case, "db", yours["db"], case.expected["db"], db_candidates, [averaged] if rows > 1 else []),
    )
    return max(worst, _check("linear", case, "dx", yours["dx"], case.expected["dx"], dx_candidates))


def _check_return_order(case: Case, yours: dict) -> None:
    """(dW, db, dx) or any other order of the right arrays: say so rather than diagnose each."""
    expected = case.expected
    if all(yours[n].shape == expected[n].shape for n in LINEAR_RETURNS):
        return
    for order in itertools.permutations(LINEAR_RETURNS):
        if order != LINEAR_RETURNS and all(
            yours[got].shape == expected[want].shape and np.allclose(yours[got], expected[want], rtol=1e-9, atol=0)
            for got, want in zip(LINEAR_RETURNS, order)
        ):
            raise Stop(
                StepResult(
                    "linear",
                    "wrong",
                    "dx",
                    None,
                    f"returned in the order ({', '.join(order)}); return (dx, dW, db)",
                    "return-order",
                    case.label,
                )
            )


def grade_shortcut(module) -> StepResult:
    return _grade("shortcut", module, shortcut_cases(), _shortcut_case)


def _shortcut_case(module, case: Case) -> float:
    W, b, x, dout, form = case.inputs
    net = _run("shortcut", module, case, module.ExampleDeepNeuralNetwork, [(_copy(W), _copy(b))], True, form)
    _run("shortcut", module, case, net.forward, _copy(x))
    dx = _as_array("shortcut", case, "dx", _run("shortcut", module, case, net.backward, _copy(dout)))
    expected = case.expected["dx"]
    candidates = [
        Candidate(
            "identity-missing",
            "identity path missing: yours is dx through the layer only; y = x + a, so dx gets dy as well",
            expected - dout,
        ),
        Candidate(
            "layer-path-missing",
            "the layer's path is missing: yours is dy alone, the identity path; add the dx through the layer",
            dout,
        ),
        Candidate("identity-twice", "the identity path is added twice: y = x + a gives dx one dy", expected + dout),
    ]
    return _check("shortcut", case, "dx", dx, expected, candidates)


def grade_network(module) -> StepResult:
    return _grade("network", module, network_cases(), _network_case)


def _network_case(module, case: Case, step: str = "network") -> float:
    params, x, target = case.inputs
    copies = [tuple(_copy(a) for a in layer) for layer in params]
    raw = _run(step, module, case, module.loss_and_grads, copies, _copy(x), _copy(target), **case.extra)
    try:
        yours = contract.normalise("yours", raw, len(params), norm=case.extra.get("norm") == "pre")
    except InputError as err:
        message = str(err).removeprefix("yours: ")
        raise Stop(StepResult(step, "wrong", None, None, message, "contract", case.label)) from None
    reference, autograd = case.expected["reference"], case.expected["torch"]
    listed = {name: array for name, _, array in contract.tensors(yours)}
    shapes_match = all(listed[name].shape == np.shape(a) for name, _, a in check.tensors(reference))
    # The parameters' verdict is shortcut_gradients.verdict.check.compare's, three ways; dy and dz (the
    # reference's alone: torch does not return them) are compared with the same relative error.
    dtype = case.extra["dtype"]
    verdict = (
        check.compare({"yours": yours, "reference": reference, "torch": autograd}, dtype) if shapes_match else None
    )
    worst = 0.0
    for name, layer, expected in contract.tensors(reference):
        if name not in listed:
            continue
        mine = listed[name]
        label = contract.label(name)
        if verdict is not None and name in verdict["max_rel_diff"] and mine.dtype == np.dtype(dtype):
            if verdict["max_rel_diff"][name] <= verdict["tolerance"]:
                worst = max(worst, verdict["max_rel_diff"][name])
                continue
        candidates = functools.partial(_network_candidates, name, layer, reference, case.extra["use_shortcut"])
        worst = max(worst, _check(step, case, label, mine, expected, candidates, dtype=dtype))
    # An ok step reports its float64 agreement: float32's rounding (~1e-7) would only hide it.
    return worst if dtype == "float64" else 0.0


def _network_candidates(name: str, layer: int | None, reference: dict, use_shortcut: bool) -> list:
    """What a network-level slip makes of the tensor `name`: a chain that is broken between layers."""
    n, candidates = len(reference["dW"]), []
    dout = reference["dy"][-1]
    if name.endswith(".dy") and layer < n - 1:
        dy, dy_next = reference["dy"][layer], reference["dy"][layer + 1]
        for wrong in _passed_back(dout, dy.shape):
            candidates.append(
                Candidate(
                    "not-propagated",
                    f"the gradient is not passed back: dy[{layer}] is dout, not dx of layer {layer + 1}",
                    wrong,
                )
            )
        if use_shortcut and dy.shape == dy_next.shape:
            candidates.append(
                Candidate(
                    "identity-missing",
                    f"identity path missing: dy[{layer}] lacks layer {layer + 1}'s dy (y = x + a)",
                    dy - dy_next,
                )
            )
    if name.endswith(".dz") and layer < n - 1:
        dy, dz = reference["dy"][layer], reference["dz"][layer]
        slope = np.divide(dz, dy, out=np.zeros_like(dz), where=dy != 0)  # gelu'(z), elementwise
        for wrong in _passed_back(dout, dy.shape):
            candidates.append(
                Candidate(
                    "not-propagated",
                    f"the gradient is not passed back: dz[{layer}] is gelu'(z) times dout, not times dy[{layer}]",
                    slope * wrong,
                )
            )
    if name.endswith((".weight", ".bias")) and n > 1:
        key = "dW" if name.endswith(".weight") else "db"
        mirrored = reference[key][n - 1 - layer]
        candidates.append(
            Candidate(
                "layer-order", f"{key} listed last layer first: {key}[i] must be layer i's (reverse the list)", mirrored
            )
        )
    return candidates


def _passed_back(dout: np.ndarray, shape: tuple) -> list:
    """dout as a layer of `shape` would get it if nothing were passed back: as is, or broadcast."""
    wrong = [dout]
    if dout.shape != shape and _broadcasts(dout.shape, shape):
        wrong.append(np.broadcast_to(dout, shape))
    return wrong


def _broadcasts(shape: tuple, to: tuple) -> bool:
    try:
        return np.broadcast_shapes(shape, to) == to
    except ValueError:
        return False


def grade_layernorm(module) -> StepResult:
    """layer_norm_backward on its own, then the pre-LN networks through loss_and_grads(norm="pre")."""
    if not callable(getattr(module, LAYER_NORM_RULE, None)):
        return StepResult(
            "layernorm", "todo", diagnosis=f"{LAYER_NORM_RULE} is not defined: copy blank 6 from exercises/backprop.py"
        )

    def grade_case(module, case: Case) -> float:
        if "norm" in case.extra:
            return _network_case(module, case, "layernorm")
        return _layernorm_case(module, case)

    return _grade("layernorm", module, layernorm_cases() + pre_ln_network_cases(), grade_case)


LAYER_NORM_RETURNS = ("dx", "dscale", "dshift")


def _layernorm_case(module, case: Case) -> float:
    from impl_torch.model import LAYER_NORM_EPS  # the answer key's eps

    dout, x, scale = case.inputs
    returned = _run("layernorm", module, case, module.layer_norm_backward, _copy(dout), _copy(x), _copy(scale))
    yours = _tuple_of("layernorm", case, returned, LAYER_NORM_RETURNS)
    rows = int(np.prod(x.shape[:-1]))
    xhat = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + LAYER_NORM_EPS)
    summed = (
        "every row is normalised with the same scale and shift, so their gradients sum over every leading dimension"
    )
    per_row = {"dscale": dout * xhat, "dshift": dout}  # each row's share, (..., d)
    worst = 0.0
    for name in ("dscale", "dshift"):
        candidates = [
            Candidate("not-summed", f"{name} not summed over rows: it has dout's shape; {summed}", per_row[name]),
            Candidate(
                "not-summed", f"{name} from the first row only; {summed}", per_row[name].reshape(-1, x.shape[-1])[0]
            ),
        ]
        averaged = Factor(1 / rows, f"1/rows = 1/{rows}", f"averaged over rows, not summed; {summed}", "not-summed")
        found = _check(
            "layernorm", case, name, yours[name], case.expected[name], candidates, [averaged] if rows > 1 else []
        )
        worst = max(worst, found)
    slips = functools.partial(layer_norm_slips, dout, x, scale, LAYER_NORM_EPS)
    return max(worst, _check("layernorm", case, "dx", yours["dx"], case.expected["dx"], slips))


GRADERS = {
    "loss": grade_loss,
    "gelu": grade_gelu,
    "linear": grade_linear,
    "shortcut": grade_shortcut,
    "network": grade_network,
    "layernorm": grade_layernorm,
}


def grade(module, every_step: bool = False) -> list[StepResult]:
    """Each step in order; stops after the first wrong one unless every_step. Raises InputError
    (one line: their file and line) when their code raises anything but NotImplementedError."""
    user_code.require(module, REQUIRED)
    results = []
    for step in STEPS:
        result = GRADERS[step](module)
        results.append(result)
        if result.status == "wrong" and not every_step:
            break
    return results

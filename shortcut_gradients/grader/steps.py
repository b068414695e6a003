"""The grader's steps: each backward rule of a submission on its own, against the answer key.

    loss      mse_loss_backward(output, target)
    gelu      gelu_backward(dout, x, form), tanh then exact
    linear    linear_backward(dz, x, W) -> (dx, dW, db)
    shortcut  ExampleDeepNeuralNetwork([(W, b)], True, form): one square residual layer's dx
    network   loss_and_grads, through shortcut_gradients.verdict.check.compare against the NumPy reference and
              torch, dy and dz included; last, in float32: the result must come back in the requested dtype
    layernorm layer_norm_backward(dout, x, scale) -> (dx, dscale, dshift); then loss_and_grads(..., norm="pre")
              as in step network, dscale and dshift included (the book's next step)

The inputs and torch autograd's answers are shortcut_gradients/grader/answers.py's. Each step
stops at its first wrong tensor and names the likely slip (shortcut_gradients/grader/diagnose.py).
A step calls only its own rule (and the rules before it that it is built from), so a step
that is ok is ok whatever the later blanks hold. Every call into the submission goes through
`_run`, with copies of the answer key's arrays, and through a Submission
(shortcut_gradients/grader/harness.py): a module in this process, or a worker process of its own
(shortcut_gradients/grader/isolation.py), which only runs their rules and sends back arrays: every
answer and every verdict is computed here.

`grade` grades every step, whatever the earlier ones gave: where an earlier step's function is
wrong or not written, the reference's stands in for it (harness.STAND_INS), so each step is
graded on its own and says so; a step whose rule raises is wrong at that case, with the one
line; the network step needs the shortcut step (both are their ExampleDeepNeuralNetwork's
backward), and is "not graded: needs step shortcut" where that is not ok; after their process
stops (it exited, or ran out of time) the rest is "not graded" too.
"""

import functools
import itertools
import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from shortcut_gradients.cli import finite
from shortcut_gradients.grader.answers import (
    Case,
    gelu_cases,
    layernorm_cases,
    linear_cases,
    loss_cases,
    network_cases,
    pre_ln_network_cases,
    shortcut_cases,
)
from shortcut_gradients.grader.diagnose import (
    CHAIN_RULE_FACTORS,
    FIT_MARGIN,
    VARIANCE_N_1,
    Candidate,
    Diagnosis,
    Factor,
    diagnose,
    fit,
    layer_norm_slips,
)
from shortcut_gradients.grader.harness import Todo, as_submission
from shortcut_gradients.plumbing.config import InputError
from shortcut_gradients.plumbing.worker import WorkerError
from shortcut_gradients.verdict import check, contract

STEPS = ("loss", "gelu", "linear", "shortcut", "network", "layernorm")
REQUIRED = ("mse_loss_backward", "gelu_backward", "linear_backward", "ExampleDeepNeuralNetwork", "loss_and_grads")
# Step layernorm's rule: not REQUIRED, so that a copy of the skeleton made before it was added is still graded.
LAYER_NORM_RULE = "layer_norm_backward"
# float64's tolerance from shortcut_gradients.verdict.check: relative, elementwise, with its noise floor. It sits
# far below the smallest slip (a float32 constant in a float64 run) and far above how closely autograd and a
# correct rule agree: docs/grader.md measures both.
TOLERANCE = check.TOLERANCE["float64"]


@dataclass
class StepResult:
    step: str
    status: str  # "ok", "todo", "wrong", "error" (their process stopped here) or "not graded"
    tensor: str | None = None  # the first wrong tensor, as the submission names it: "db", "dy[2]"
    max_rel_diff: float | None = None  # ok: the worst over the step; wrong: that tensor's (None: shapes differ)
    diagnosis: str | None = None  # wrong: the likely slip; todo: where the NotImplementedError was raised;
    # error: why their process stopped; not graded: what it needs
    slip: str | None = None  # the diagnosis's short name ("sign", "transposed", ...)
    case: str | None = None  # the inputs it went wrong on
    worst: dict | None = None  # the worst element: index, yours, expected
    stand_ins: list | None = None  # their functions graded with the reference's in their place (an earlier step's)

    def to_json(self) -> dict:
        """The fields, with NaN and inf as null (shortcut_gradients.cli.finite): JSON has no numbers for them."""
        return finite(asdict(self))


class Stop(Exception):
    """A step's verdict reached before its last case: todo or wrong."""

    def __init__(self, result: StepResult):
        self.result = result


# --- running their code -------------------------------------------------------------------------


class Raised(InputError):
    """Their rule raised: `line` (their file and line), at `step` on `case`; str() adds the step and case."""

    def __init__(self, line: str, step: str, case: str):
        super().__init__(f"{line} (step {step}, {case})")
        self.line, self.step, self.case = line, step, case


def _run(step: str, module, case: Case, rule: str, *args, **kwargs):
    """Their `rule` (a function's name, or a harness helper's) on copies of args (the answer key's are shared
    and read-only): NotImplementedError is todo (Stop), anything else Raised, one line naming the step and
    the case. The one place the grader calls a submission; `module` is a module or a harness Submission."""
    try:
        return as_submission(module).run(rule, *args, **kwargs)
    except Todo as todo:
        raise Stop(StepResult(step, "todo", diagnosis=todo.description, case=case.label)) from None
    except InputError as err:
        raise Raised(str(err), step, case.label) from None


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
    dout = _as_array("loss", case, "dout", _run("loss", module, case, "mse_loss_backward", output, target))
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
    return _reported(
        case, _check("loss", case, "dout", dout, case.expected["dout"], factors=factors, dtype=_dtype(case))
    )


def _dtype(case: Case) -> str:
    return case.extra.get("dtype", "float64")


def _reported(case: Case, worst: float) -> float:
    """An ok step reports its float64 agreement: a float32 case's rounding would only hide it."""
    return worst if _dtype(case) == "float64" else 0.0


def grade_gelu(module) -> StepResult:
    return _grade("gelu", module, gelu_cases(), _gelu_case)


def _gelu_case(module, case: Case) -> float:
    dout, x, form = case.inputs
    dx = _as_array("gelu", case, "dx", _run("gelu", module, case, "gelu_backward", dout, x, form))
    candidates = functools.partial(_gelu_candidates, case, dx)
    return _reported(case, _check("gelu", case, "dx", dx, case.expected["dx"], candidates, dtype=_dtype(case)))


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
    if form == "tanh":
        from impl_torch.model import GELU_CUBIC as c
        from impl_torch.model import SQRT_2_OVER_PI as k

        x64 = np.asarray(x, np.float64)
        t = np.tanh(k * (x64 + c * x64**3))  # Phi = (1 + t) / 2, Phi' = (1 - t^2) / 2 * u'
        inner = k * (1 + 3 * c * x64**2)  # u' for u = k (x + c x^3)
        candidates += [
            Candidate(
                "term-missing",
                "the cubic's inner derivative is missing: u = k (x + c x^3) => u' = k (1 + 3 c x^2); yours has u' = k",
                dout * (phi + x64 * 0.5 * (1 - t**2) * k),
            ),
            Candidate(
                "tanh-derivative",
                "tanh' = 1 - tanh^2: yours has 1 - tanh (the square is missing)",
                dout * (phi + x64 * 0.5 * (1 - t) * inner),
            ),
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
        if m is not None and abs(m) < FIT_MARGIN:  # no cubic term at all: a term missing, not a factor
            return Diagnosis(
                "term-missing",
                "the cubic's inner derivative is missing: u = k (x + c x^3) => u' = k (1 + 3 c x^2); yours has u' = k",
            )
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
    returned = _run("linear", module, case, "linear_backward", dz, x, W)
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
    x2 = x.reshape(-1, x.shape[-1])
    reused = "`=` where `+=` belongs: every row uses the same {0}, so every row's share adds into d{0}"
    dw_candidates = []
    if rows > 1:  # a loop over rows that assigns where it should add keeps the last row's share
        db_candidates.append(Candidate("overwritten", f"only the last row's dz: {reused.format('b')}", dz2[-1]))
        dw_candidates.append(
            Candidate("overwritten", f"only the last row's dz^T x: {reused.format('W')}", np.outer(dz2[-1], x2[-1]))
        )
    averaged = Factor(1 / rows, f"1/rows = 1/{rows}", f"bias averaged over rows, not summed; {bias}", "bias-not-summed")
    dw_averaged = Factor(1 / rows, f"1/rows = 1/{rows}", "averaged over rows, not summed: every row adds its dz^T x")
    dx_candidates = []
    if W.shape[0] == W.shape[1]:
        dx_candidates.append(
            Candidate("transposed", "transposed: dz @ W.T where z = x W^T + b gives dx = dz W", dz @ W.T)
        )
    dtype = _dtype(case)
    worst = _check(
        "linear", case, "dW", yours["dW"], case.expected["dW"], dw_candidates, [dw_averaged] if rows > 1 else [], dtype
    )
    worst = max(
        worst,
        _check(
            "linear", case, "db", yours["db"], case.expected["db"], db_candidates, [averaged] if rows > 1 else [], dtype
        ),
    )
    worst = max(worst, _check("linear", case, "dx", yours["dx"], case.expected["dx"], dx_candidates, dtype=dtype))
    return _reported(case, worst)


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
    dx = _as_array("shortcut", case, "dx", _run("shortcut", module, case, "residual_dx", W, b, x, dout, form))
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
    return _reported(case, _check("shortcut", case, "dx", dx, expected, candidates, dtype=_dtype(case)))


def grade_network(module) -> StepResult:
    return _grade("network", module, network_cases(), _network_case)


def _network_case(module, case: Case, step: str = "network") -> float:
    params, x, target = case.inputs
    raw = _run(step, module, case, "loss_and_grads", params, x, target, **case.extra)
    try:
        yours = contract.normalise("yours", raw, len(params), norm=case.extra.get("norm") == "pre")
    except InputError as err:
        message = str(err).removeprefix("yours: ")
        raise Stop(StepResult(step, "wrong", None, None, message, "contract", case.label)) from None
    dtype = case.extra["dtype"]
    for key, value in raw.items():
        if key in yours and type(value) in (float, int):  # a Python number has no dtype: taken as the run's
            yours[key] = yours[key].astype(dtype)
    reference, autograd = case.expected["reference"], case.expected["torch"]
    listed = {name: array for name, _, array in contract.tensors(yours)}
    shapes_match = all(listed[name].shape == np.shape(a) for name, _, a in check.tensors(reference))
    # The parameters' verdict is shortcut_gradients.verdict.check.compare's, three ways; dy and dz (the
    # reference's alone: torch does not return them) are compared with the same relative error.
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
    # Every value is right; a PASS also means compare.py accepts the result: its own check, the contract's.
    try:
        contract.validate("yours", raw, params, x, dtype)
    except InputError as err:
        message = f"{str(err).removeprefix('yours: ')} (docs/contract.md: compare.py refuses it)"
        raise Stop(StepResult(step, "wrong", None, None, message, "contract", case.label)) from None
    # An ok step reports its float64 agreement: float32's rounding would only hide it.
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
    if not as_submission(module).defines(LAYER_NORM_RULE):
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
    dtype = _dtype(case)
    returned = _run("layernorm", module, case, "layer_norm_backward", dout, x, scale)
    yours = _tuple_of("layernorm", case, returned, LAYER_NORM_RETURNS)
    rows = int(np.prod(x.shape[:-1]))
    x64, dout64 = np.asarray(x, np.float64), np.asarray(dout, np.float64)
    centred = x64 - x64.mean(axis=-1, keepdims=True)
    xhat = centred / np.sqrt(x64.var(axis=-1, keepdims=True) + LAYER_NORM_EPS)
    xhat_n_1 = centred / np.sqrt(x64.var(axis=-1, ddof=1, keepdims=True) + LAYER_NORM_EPS)
    summed = (
        "every row is normalised with the same scale and shift, so their gradients sum over every leading dimension"
    )
    per_row = {"dscale": dout64 * xhat, "dshift": dout64}  # each row's share, (..., d)
    worst = 0.0
    for name in ("dscale", "dshift"):
        shares = per_row[name].reshape(-1, x.shape[-1])  # (rows, d)
        candidates = [
            Candidate("not-summed", f"{name} not summed over rows: it has dout's shape; {summed}", per_row[name]),
            Candidate("not-summed", f"{name} from the first row only; {summed}", shares[0]),
        ]
        if rows > 1:
            reused = (
                f"`=` where `+=` belongs: every row uses the same {name[1:]}, so every row's share adds into {name}"
            )
            candidates.append(Candidate("overwritten", f"{name} from the last row only: {reused}", shares[-1]))
        if name == "dscale":
            candidates.append(
                Candidate("variance-n-1", VARIANCE_N_1, (dout64 * xhat_n_1).reshape(-1, x.shape[-1]).sum(0))
            )
        averaged = Factor(1 / rows, f"1/rows = 1/{rows}", f"averaged over rows, not summed; {summed}", "not-summed")
        found = _check(
            "layernorm", case, name, yours[name], case.expected[name], candidates, [averaged] if rows > 1 else [], dtype
        )
        worst = max(worst, found)
    slips = functools.partial(layer_norm_slips, dout, x, scale, LAYER_NORM_EPS)
    worst = max(worst, _check("layernorm", case, "dx", yours["dx"], case.expected["dx"], slips, dtype=dtype))
    return _reported(case, worst)


GRADERS = {
    "loss": grade_loss,
    "gelu": grade_gelu,
    "linear": grade_linear,
    "shortcut": grade_shortcut,
    "network": grade_network,
    "layernorm": grade_layernorm,
}


# The step whose rule each of their functions is (a frame's name, as user_code.describe prints it):
# a later step stopped inside one of them needs that step first.
OWNER = {
    "mse_loss_backward": "loss",
    "gelu_backward": "gelu",
    "linear_backward": "linear",
    "ExampleDeepNeuralNetwork": "shortcut",
    "__init__": "shortcut",
    "forward": "shortcut",
    "backward": "shortcut",
    "loss_and_grads": "network",
    "layer_norm_backward": "layernorm",
}


# The step each stand-in's rule belongs to (harness.STAND_INS).
STAND_IN_FOR = {"loss": "mse_loss_backward", "gelu": "gelu_backward", "linear": "linear_backward",
                "layernorm": "layer_norm_backward"}  # fmt: skip
# The earlier steps' functions each step's cases call.
BUILT_FROM = {"loss": (), "gelu": (), "linear": (), "shortcut": ("gelu_backward", "linear_backward"),
              "network": ("mse_loss_backward", "gelu_backward", "linear_backward"),
              "layernorm": ("mse_loss_backward", "gelu_backward", "linear_backward")}  # fmt: skip


def grade(module) -> list[StepResult]:
    """Every step, in order, each graded whatever the others gave (see the module's docstring).

    module: a module, or a harness Submission (a worker process). Raises InputError (one line)
    only when the submission lacks a required function: then nothing can be graded.
    """
    submission = as_submission(module)
    submission.require(REQUIRED)
    results: list[StepResult] = []
    for step in STEPS:
        stopped = next((r for r in results if r.status == "error"), None)
        if stopped is not None:
            results.append(StepResult(step, "not graded", diagnosis=f"the submission stopped at step {stopped.step}"))
            continue
        shortcut = next((r for r in results if r.step == "shortcut"), None)
        if step == "network" and shortcut is not None and shortcut.status != "ok":
            results.append(StepResult(step, "not graded", diagnosis=f"needs step shortcut ({shortcut.status})"))
            continue
        try:
            result = GRADERS[step](submission)
        except Raised as err:
            result = StepResult(step, "wrong", diagnosis=err.line, slip="raised", case=err.case)
        except WorkerError as err:  # their process exited or ran out of time: nothing more can run in it
            result = StepResult(step, "error", diagnosis=str(err), slip="stopped")
        standing = [name for name in submission.stand_ins if name in BUILT_FROM[step]]
        if standing and result.status in ("ok", "wrong"):
            result.stand_ins = standing
        results.append(_needs(result, results))
        rule = STAND_IN_FOR.get(step)
        if rule is not None and results[-1].status != "ok":
            submission.stand_ins = (*submission.stand_ins, rule)
    return results


def _needs(result: StepResult, earlier: list[StepResult]) -> StepResult:
    """A todo or a raise inside an earlier step's rule that is not ok: "not graded: needs step X"."""
    if result.status not in ("todo", "wrong") or (result.status == "wrong" and result.slip != "raised"):
        return result
    where = re.search(r":\d+ in ([\w<>]+): ", result.diagnosis or "")
    owner = OWNER.get(where[1]) if where else None
    before = {r.step: r for r in earlier}
    if owner is None or owner == result.step or owner not in before or before[owner].status == "ok":
        return result
    return StepResult(result.step, "not graded", diagnosis=f"needs step {owner} ({before[owner].status})",
                      case=result.case)  # fmt: skip

"""The grader's answer key: each step's inputs and torch autograd's answers on them, in float64.

    loss      mse_loss_backward(output, target)               outputs (1, 1), (4, 5), (2, 3, 5)
    gelu      gelu_backward(dout, x, form), tanh then exact   x (1, 3), (5, 3), (2, 3, 4)
    linear    linear_backward(dz, x, W) -> (dx, dW, db)       x (1, 3) (5, 3) with W (3, 3); (5, 4) (2, 3, 4) with W (3, 4)
    shortcut  ExampleDeepNeuralNetwork([(W, b)], True, form): one square residual layer's dx
    network   loss_and_grads on the book network and a deeper batched one: the NumPy reference's and
              torch's answers, which must agree; last, the book network in float32, tanh and exact
    layernorm layer_norm_backward(dout, x, scale) -> (dx, dscale, dshift)   x (1, 3), (5, 3), (2, 3, 4);
              then loss_and_grads(..., norm="pre") on the pre-LN book network and a deeper batched one

Inputs run from one row to 3-D batches, because the classic bias slips are invisible on one
row. Each step ends with float32 cases (", float32" in the label, extra["dtype"]): their inputs are
float32, autograd's answer is computed in float64 from those very values, and a result must come
back float32 (docs/contract.md), so that a float64 leak is named at the rule where it starts. Every case comes from a fixed seed, is built once per process, and never touches the
submission: grading it (shortcut_gradients/grader/steps.py) only reads it.
"""

import functools
from dataclasses import dataclass

import numpy as np

from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED
from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params
from shortcut_gradients.verdict import check, contract

DEEP_LAYER_SIZES = (4, 4, 4, 4, 4, 4, 4, 2)  # seven layers, six of them with a shortcut
DEEP_INPUT_SHAPE = (2, 3, 4)


@dataclass(frozen=True)
class Case:
    label: str
    inputs: tuple  # the submission's arguments (read-only; copied before each call)
    expected: dict  # tensor name -> autograd's answer, in the order they are checked
    extra: dict  # what the candidates need


def _torch():
    import torch

    return torch


def _float32(*arrays):
    """arrays rounded to float32: the inputs of a float32 case, whose answers autograd computes in float64."""
    return tuple(np.asarray(a, np.float32) for a in arrays)


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)  # shared between gradings: a submission gets copies
    return arrays


@functools.cache
def loss_cases() -> tuple[Case, ...]:
    torch, rng = _torch(), np.random.default_rng(1)
    cases = []
    for out_shape, target_shape, dtype in (
        ((1, 1), (1, 1), "float64"),
        ((4, 5), (4, 5), "float64"),
        ((2, 3, 5), (5,), "float64"),
        ((2, 3, 5), (5,), "float32"),
    ):
        output, target = rng.normal(size=out_shape), rng.normal(size=target_shape)
        if dtype == "float32":
            output, target = _float32(output, target)
        _frozen(output, target)
        o = torch.tensor(output, dtype=torch.float64, requires_grad=True)
        loss = torch.mean((o - torch.tensor(target, dtype=torch.float64)) ** 2)
        (dout,) = torch.autograd.grad(loss, o)
        label = f"output {out_shape}, target {target_shape}" + (", float32" if dtype == "float32" else "")
        extra = {"N": output.size, "rows": len(output), "dtype": dtype}
        cases.append(Case(label, (output, target), {"dout": dout.numpy()}, extra))
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
    """Each form's cases; extra holds gelu'(x), Phi and Phi' of the asked form and gelu' of the other."""
    torch, rng = _torch(), np.random.default_rng(2)
    cases = []
    shapes = [(form, shape, "float64") for form in ("tanh", "exact") for shape in ((1, 3), (5, 3), (2, 3, 4))]
    for form, shape, dtype in shapes + [("tanh", (5, 3), "float32"), ("exact", (5, 3), "float32")]:
        x, dout = rng.normal(scale=2.0, size=shape), rng.normal(size=shape)
        if dtype == "float32":
            x, dout = _float32(x, dout)
        _frozen(x, dout)
        grads = {}
        for f in ("tanh", "exact"):
            xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
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
            "dtype": dtype,
        }
        label = f"x {shape}, form {form}" + (", float32" if dtype == "float32" else "")
        cases.append(Case(label, (dout, x, form), {"dx": dout.astype(np.float64) * slope}, extra))
    return tuple(cases)


@functools.cache
def linear_cases() -> tuple[Case, ...]:
    """Square weights first: a transposed square matrix has the right shape, and only its values give it away."""
    torch, rng = _torch(), np.random.default_rng(3)
    cases = []
    for x_shape, w_shape, dtype in (
        ((1, 3), (3, 3), "float64"),
        ((5, 3), (3, 3), "float64"),
        ((5, 4), (3, 4), "float64"),
        ((2, 3, 4), (3, 4), "float64"),
        ((2, 3, 4), (3, 4), "float32"),
    ):
        x, W, b = rng.normal(size=x_shape), rng.normal(size=w_shape), rng.normal(size=w_shape[:1])
        dz = rng.normal(size=x_shape[:-1] + w_shape[:1])
        if dtype == "float32":
            x, W, b, dz = _float32(x, W, b, dz)
        _frozen(x, W, b, dz)
        xt, Wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, W, b))
        z = xt @ Wt.T + bt
        dx, dW, db = torch.autograd.grad(z, (xt, Wt, bt), torch.tensor(dz, dtype=torch.float64))
        expected = {"dW": dW.numpy(), "db": db.numpy(), "dx": dx.numpy()}
        label = f"x {x_shape}, W {w_shape}" + (", float32" if dtype == "float32" else "")
        cases.append(Case(label, (dz, x, W), expected, {"dtype": dtype}))
    return tuple(cases)


@functools.cache
def shortcut_cases() -> tuple[Case, ...]:
    torch, rng = _torch(), np.random.default_rng(4)
    cases = []
    shapes = [(form, x_shape, "float64") for form in ("tanh", "exact") for x_shape in ((1, 4), (5, 4), (2, 3, 4))]
    for form, x_shape, dtype in shapes + [("exact", (5, 4), "float32")]:
        x, W, b = rng.normal(size=x_shape), rng.normal(scale=0.5, size=(4, 4)), rng.normal(size=4)
        dout = rng.normal(size=x_shape)
        if dtype == "float32":
            x, W, b, dout = _float32(x, W, b, dout)
        _frozen(x, W, b, dout)
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        t64 = functools.partial(torch.tensor, dtype=torch.float64)
        g, _ = _gelu_torch(xt @ t64(W).T + t64(b), form)
        (dx,) = torch.autograd.grad(xt + g, xt, t64(dout))  # y = x + gelu(x W^T + b)
        label = f"x {x_shape}, W (4, 4), form {form}" + (", float32" if dtype == "float32" else "")
        cases.append(Case(label, (W, b, x, dout, form), {"dx": dx.numpy()}, {"dtype": dtype}))
    return tuple(cases)


@functools.cache
def layernorm_cases() -> tuple[Case, ...]:
    """layer_norm_backward's cases: rows with a mean of their own (so that mu matters) and a scale that is not 1."""
    from impl_torch.model import LayerNorm

    torch, rng = _torch(), np.random.default_rng(6)
    cases = []
    for shape, dtype in (((1, 3), "float64"), ((5, 3), "float64"), ((2, 3, 4), "float64"), ((2, 3, 4), "float32")):
        d = shape[-1]
        x = rng.normal(scale=2.0, size=shape) + rng.normal(size=shape[:-1] + (1,))
        dout, scale, shift = rng.normal(size=shape), rng.uniform(0.5, 1.5, d), rng.normal(size=d)
        if dtype == "float32":
            x, dout, scale, shift = _float32(x, dout, scale, shift)
        _frozen(x, dout, scale, shift)
        norm = LayerNorm(d).double()
        with torch.no_grad():
            norm.scale.copy_(torch.tensor(scale))
            norm.shift.copy_(torch.tensor(shift))
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        dx, dscale, dshift = torch.autograd.grad(
            norm(xt), (xt, norm.scale, norm.shift), torch.tensor(dout, dtype=torch.float64)
        )
        expected = {"dscale": dscale.numpy(), "dshift": dshift.numpy(), "dx": dx.numpy()}
        label = f"x {shape}, scale ({d},)" + (", float32" if dtype == "float32" else "")
        cases.append(Case(label, (dout, x, scale), expected, {"dtype": dtype}))
    return tuple(cases)


def _network_answers(label: str, params, x, target, kw: dict) -> Case:
    """A network case: loss_and_grads of the NumPy reference and of torch, which must agree.

    extra is loss_and_grads's keyword arguments (use_shortcut, gelu_form, dtype, and norm for pre-LN)."""
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
    deep_label = f"layers {sizes}, x {DEEP_INPUT_SHAPE}"
    cases = []
    for label, params, x, target, form, use_shortcut, dtype in (
        ("book network, tanh, no shortcut", book, book_x, book_target, "tanh", False, "float64"),
        ("book network, tanh, shortcut", book, book_x, book_target, "tanh", True, "float64"),
        ("book network, exact, shortcut", book, book_x, book_target, "exact", True, "float64"),
        (f"{deep_label}, tanh, shortcut", deep, deep_x, deep_target, "tanh", True, "float64"),
        (f"{deep_label}, exact, no shortcut", deep, deep_x, deep_target, "exact", False, "float64"),
        # The book's own dtype: is the result float32 (contract), and right to float32's tolerance?
        ("book network, tanh, shortcut, float32", book32, book32_x, book32_target, "tanh", True, "float32"),
        ("book network, exact, shortcut, float32", book32, book32_x, book32_target, "exact", True, "float32"),
    ):
        kw = {"use_shortcut": use_shortcut, "gelu_form": form, "dtype": dtype}
        cases.append(_network_answers(label, params, x, target, kw))
    return tuple(cases)


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
    # The order of the draws from rng fixes every value: the deep input and target, then the book
    # network's scales and shifts, then the deep one's.
    book = pre_ln(BOOK_LAYER_SIZES)
    book_case = _network_answers(
        "pre-LN book network, tanh, no shortcut", book, book_x, book_target, {**kw, "use_shortcut": False}
    )
    deep = pre_ln(DEEP_LAYER_SIZES)
    label = f"pre-LN layers {sizes}, x {DEEP_INPUT_SHAPE}, tanh, shortcut"
    return book_case, _network_answers(label, deep, deep_x, deep_target, {**kw, "use_shortcut": True})

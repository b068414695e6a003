"""What a disagreement in compare.py looks like: the grader's diagnoses, applied to a whole network's tensors.

The tests on the arrays are the grader's (shortcut_gradients/grader/diagnose.py: sign, transposed,
a constant factor, float32 accuracy in a float64 run, a named candidate), so the grader and
compare.py name a slip alike. Here they get the odd implementation's tensor at the first element
to differ, the majority's (or the NumPy reference's) tensor there, and what that tensor would be
with each classic slip, computed cheaply from the NumPy reference (impl_numpy):

    the other GELU form           the reference run with the other form
    the identity path missing     the reference run without shortcut, where the run has it
    a bias gradient from one row  the reference's dz of that layer at its first row
    a LayerNorm term missing      the reference run with impl_numpy.model.layer_norm_backward's dx
                                  replaced by each of the grader's LayerNorm slips
    a factor N, rows or outputs   the loss summed over N elements where it is averaged, or one axis of it

"unknown" is an honest answer: none of them matches.
"""

from contextlib import contextmanager

import numpy as np

import impl_numpy
import impl_numpy.model
from shortcut_gradients.grader import diagnose
from shortcut_gradients.plumbing import frameworks
from shortcut_gradients.verdict import contract


def of_mismatch(first: dict | None, results: dict, data: tuple, kw: dict, dtype: str) -> dict | None:
    """{"slip", "text", "framework" (the one diagnosed), "against" (whose tensor it is held to)}
    for the first mismatch `first` (check.compare's) among `results` ({name: result}, computed on
    data = (params, x, target) with kw), or None where there is nothing to diagnose."""
    if first is None or len(results) < 2:
        return None
    tname, pair = first["tensor"], first["frameworks"]
    # The odd one out when three or more tell; else an outside implementation of the pair; else the second.
    odd = first.get("odd_one_out") or next((n for n in pair if n not in frameworks.MODULES), pair[1])
    others = [name for name in results if name != odd]
    against = "numpy" if "numpy" in others else others[0]
    yours, expected = tensor(results[odd], tname), tensor(results[against], tname)
    if yours is None or expected is None:
        return None
    found = diagnose.diagnose(
        yours, expected, candidates(tname, results[against], data, kw, dtype), factors(results[against]), dtype
    )
    return {"slip": found.slip, "text": found.text, "framework": odd, "against": against}


def tensor(result: dict, tname: str) -> np.ndarray | None:
    """The tensor named `tname` (contract.tensors' names) in `result`, or None where it has none."""
    return next((np.asarray(a) for name, _, a in contract.tensors(result) if name == tname), None)


def factors(reference: dict) -> tuple[diagnose.Factor, ...]:
    """The loss's constant factors: summed over its N = rows x outputs elements where it is averaged,
    or over one of those axes only; and the reverse."""
    output = np.shape(reference["output"])
    outputs, rows = output[-1], int(np.prod(output[:-1], dtype=np.int64))
    found = []
    for n, label, what in (
        (rows * outputs, f"N = {rows * outputs}", "every element of the output"),
        (rows, f"rows = {rows}", "the rows"),
        (outputs, f"outputs = {outputs}", "the outputs"),
    ):
        if n > 1 and all(abs(f.value - n) > 1e-9 for f in found):
            found.append(diagnose.Factor(float(n), label, f"the loss summed over {what} where it is averaged"))
            found.append(diagnose.Factor(1.0 / n, f"1/{label}", f"divided by the {what} once too often"))
    return tuple(found)


def candidates(tname: str, reference: dict, data: tuple, kw: dict, dtype: str) -> list[diagnose.Candidate]:
    """What the reference's tensor `tname` is with each classic slip, for the grader's diagnose."""
    params, x, target = data
    run_kw = kw | {"dtype": dtype}
    other = "exact" if kw["gelu_form"] == "tanh" else "tanh"
    found = [
        diagnose.Candidate(
            "gelu-form",
            f"the other GELU form: yours matches the {other} form where the run asks for {kw['gelu_form']}",
            tensor(impl_numpy.loss_and_grads(params, x, target, **run_kw | {"gelu_form": other}), tname),
        )
    ]
    if kw["use_shortcut"]:
        found.append(
            diagnose.Candidate(
                "identity-missing",
                "the identity path missing in the backward: x = x + layer(x) sends dL/d(output) straight to x"
                " as well as through the layer, and that share is not added",
                tensor(backward_without_identity(params, x, target, kw, dtype), tname),
            )
        )
        without = impl_numpy.loss_and_grads(params, x, target, **run_kw | {"use_shortcut": False})
        found.append(
            diagnose.Candidate(
                "shortcut-missing",
                "the shortcut missing: yours matches the network without shortcut, forward and backward",
                tensor(without, tname),
            )
        )
    if tname.endswith(".0.bias") and "dz" in reference:
        layer = int(tname.split(".")[1])
        dz = np.asarray(reference["dz"][layer])
        found.append(
            diagnose.Candidate(
                "bias-one-row",
                "the bias gradient taken from one row: db is dz summed over every row, not dz of the first",
                dz.reshape(-1, dz.shape[-1])[0],
            )
        )
    if kw.get("norm") == "pre":
        for slip in ("mean-var-constant", "var-constant", "mean-constant", "scale-missing", "variance-n-1"):
            with layer_norm_slip(slip) as told:
                slipped = impl_numpy.loss_and_grads(params, x, target, **run_kw)
            found.append(diagnose.Candidate(slip, told["text"], tensor(slipped, tname)))
    return [c for c in found if c.array is not None]


def backward_without_identity(params, x, target, kw: dict, dtype: str) -> dict:
    """The reference's gradients with the shortcut taken in the forward and forgotten in the backward:
    impl_numpy.model's network, its cache's "shortcut taken?" flags cleared between the two passes."""
    model = impl_numpy.model
    params = [tuple(np.asarray(a, dtype) for a in layer) for layer in params]
    x, target = np.asarray(x, dtype), np.asarray(target, dtype)
    net = model.ExampleDeepNeuralNetwork(params, kw["use_shortcut"], kw["gelu_form"])
    output = net.forward(x)  # (..., d_out)
    net.cache = [(h, z, False) for h, z, _ in net.cache]
    dx = net.backward(model.mse_loss_backward(output, target))  # (..., d_in)
    result = {"loss": model.mse_loss(output, target), "output": output, "dW": net.dW, "db": net.db, "dx": dx}
    if kw.get("norm") == "pre":
        result |= {"dscale": net.dscale, "dshift": net.dshift}
    return result


@contextmanager
def layer_norm_slip(slip: str):
    """impl_numpy.model.layer_norm_backward with its dx replaced by the grader's LayerNorm slip `slip`,
    for the block: the one place the reference is patched, so that a whole network's tensors carry it.
    Yields a dict that gets the slip's "text" (the grader's) once the patched backward has run."""
    right, told = impl_numpy.model.layer_norm_backward, {}

    def slipped(dout, x, scale):
        dx, dscale, dshift = right(dout, x, scale)
        eps = impl_numpy.model.LAYER_NORM_EPS
        wrong = next(c for c in diagnose.layer_norm_slips(dout, x, scale, eps) if c.slip == slip)
        told["text"] = wrong.text
        return wrong.array.astype(dx.dtype), dscale, dshift

    impl_numpy.model.layer_norm_backward = slipped
    try:
        yield told
    finally:
        impl_numpy.model.layer_norm_backward = right

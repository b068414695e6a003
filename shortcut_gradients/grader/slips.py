"""The classic slips of hand-written backprop, each one line changed in a copy of the reference.

    python -m shortcut_gradients.grader.slips                          # grade every slip and print the table
    python -m shortcut_gradients.grader.slips --write docs/grader.md   # ... and put it between the page's markers

Each slip is a text substitution inside one function of impl_numpy/model.py (the reference,
which the grader passes in full), with the step that must catch it and the diagnosis it
must get. tests/test_exercises.py grades each one and checks both, so a slip that the
grader stops catching, or names wrongly, fails the suite; and a reference that changes
under a slip (its line is gone) fails it too, rather than passing unchecked.
"""

import ast
import importlib.util
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shortcut_gradients.cli import OneLineParser
from shortcut_gradients.plumbing import files
from shortcut_gradients.plumbing.config import InputError

# The file each slip is written into: the NumPy reference, found without importing it.
REFERENCE = Path(importlib.util.find_spec("impl_numpy.model").origin)


@dataclass(frozen=True)
class Slip:
    name: str  # also the faulty copy's file name
    function: str  # where the line is: a function or Class.method of the reference
    old: str  # the text replaced, exactly once in that function
    new: str
    step: str  # the step that must catch it
    slip: str  # the diagnosis it must get (shortcut_gradients.grader.diagnose's short names)
    note: str  # what a learner would have been thinking


SLIPS = (
    Slip("loss_sign", "mse_loss_backward", "(output - target)", "(target - output)", "loss", "sign",
         "d(u^2)/du with u = target - output"),
    Slip("loss_missing_2", "mse_loss_backward", "2.0 / output.size", "1.0 / output.size", "loss", "factor",
         "the mean's 1/N, but not the square's 2"),
    Slip("loss_not_a_mean", "mse_loss_backward", "output.dtype.type(2.0 / output.size)", "output.dtype.type(2.0)", "loss",
         "factor", "the square's 2, but not the mean's 1/N: invisible on one element"),
    Slip("loss_mean_over_rows", "mse_loss_backward", "output.size", "len(output)", "loss", "factor",
         "N is the number of rows: true only for one output column"),
    Slip("loss_float64_constant", "mse_loss_backward", "output.dtype.type(2.0 / output.size)",
         "np.float64(2.0 / output.size)", "loss", "dtype",
         "a float64 scalar: right in float64, it turns a float32 run's gradient float64"),
    Slip("gelu_other_form", "gelu_backward", 'if form == "tanh":', 'if form in ("tanh", "exact"):', "gelu",
         "other-gelu-form", "one derivative for both forms"),
    Slip("gelu_cubic_3", "gelu_backward", "3.0 * c * x**2", "c * x**2", "gelu", "factor",
         "d(c x^3)/dx written c x^2"),
    Slip("gelu_product_rule", "gelu_backward", "dout * (phi + x * dphi)", "dout * phi", "gelu", "product-rule",
         "gelu = x Phi(x) differentiated as if x were a constant"),
    Slip("gelu_chain_rule", "gelu_backward", "return dout * (phi + x * dphi)", "return phi + x * dphi", "gelu",
         "chain-rule", "gelu'(x), not multiplied by the upstream gradient"),
    Slip("gelu_phi_prime_sign", "gelu_backward", "2.0 * phi * (1.0 - phi)", "2.0 * phi * (phi - 1.0)", "gelu", "sign",
         "tanh' = 1 - tanh^2 with its sign slipped"),
    Slip("gelu_float32_constants", "gelu_backward", "map(x.dtype.type, ", "map(np.float32, ", "gelu",
         "float32-constants", "the constants as float32 in a float64 run"),
    Slip("gelu_density_scale", "gelu_backward", "dphi = p * np.exp(", "dphi = np.exp(", "gelu", "factor",
         "the normal density without its 1/sqrt(2 pi)"),
    Slip("gelu_cubic_inner", "gelu_backward", "k * (1.0 + 3.0 * c * x**2)", "k", "gelu", "term-missing",
         "u = k (x + c x^3) differentiated as u' = k: the chain rule through the cubic forgotten"),
    Slip("gelu_tanh_square", "gelu_backward", "2.0 * phi * (1.0 - phi)", "(1.0 - phi)", "gelu", "tanh-derivative",
         "tanh' = 1 - t^2 written 1 - t (with Phi = (1 + t) / 2, (1 - t^2) / 2 = 2 Phi (1 - Phi) and (1 - t) / 2 = 1 - Phi)"),
    Slip("gelu_exact_float64_leak", "gelu_backward", "_erf(x * s).astype(x.dtype)", "_erf(x * s)", "gelu", "dtype",
         "erf computed in double and not cast back: a float32 run's gradient turns float64"),
    Slip("gelu_density_exponent", "gelu_backward", "np.exp(-0.5 * x**2)", "np.exp(-(x**2))", "gelu", "unknown",
         "exp(-x^2) for exp(-x^2 / 2): no classic slip, so no name"),
    Slip("linear_dW_transposed", "linear_backward", "dW = dz2.T @ x2", "dW = x2.T @ dz2", "linear", "transposed",
         "x^T dz, the layout of a (d_in, d_out) kernel"),
    Slip("linear_dx_transposed", "linear_backward", "dx = dz @ W", "dx = dz @ W.T", "linear", "transposed",
         "W.T because the forward had W.T"),
    Slip("linear_bias_not_summed", "linear_backward", "db = dz2.sum(axis=0)", "db = dz", "linear", "bias-not-summed",
         "db = dz, as for one row"),
    Slip("linear_bias_first_axis", "linear_backward", "db = dz2.sum(axis=0)", "db = dz.sum(axis=0)", "linear",
         "bias-not-summed", "summed over axis 0: right for (rows, d_out), wrong for 3-D batches"),
    Slip("linear_bias_mean", "linear_backward", "db = dz2.sum(axis=0)", "db = dz2.mean(axis=0)", "linear",
         "bias-not-summed", "averaged over rows, as the loss averages"),
    Slip("linear_dW_last_row", "linear_backward", "dW = dz2.T @ x2", "dW = dz2[-1:].T @ x2[-1:]", "linear",
         "overwritten", "a loop over rows with dW = where dW += belongs: the last row's share is all that is left"),
    Slip("linear_dW_not_summed", "linear_backward", "dW = dz2.T @ x2", "dW = np.swapaxes(dz, -1, -2) @ x", "linear",
         "broadcast-not-summed", "a dW per batch element: right for (rows, d), not summed over a (B, T, d) batch"),
    Slip("linear_2d_only", "linear_backward", "dW = dz2.T @ x2", "dW = dz.T @ x", "linear", "raised",
         "dz.T @ x: right for (rows, d), raises on a (B, T, d) batch"),
    Slip("shortcut_identity_missing", "ExampleDeepNeuralNetwork.backward", "dx + dy if shortcut", "dx if shortcut", "shortcut",
         "identity-missing", "the shortcut forgotten on the way back"),
    Slip("shortcut_layer_missing", "ExampleDeepNeuralNetwork.backward", "dx + dy if shortcut", "dy if shortcut", "shortcut",
         "layer-path-missing", "only the identity path"),
    Slip("network_not_propagated", "ExampleDeepNeuralNetwork.backward", "gelu_backward(dy, z", "gelu_backward(dout, z",
         "network", "not-propagated", "every layer's GELU fed the loss's gradient, not its own dy"),
    Slip("layernorm_statistics_constant", "layer_norm_backward", "dx = (dxhat - mean_share - var_share) / sigma",
         "dx = dxhat / sigma", "layernorm", "mean-var-constant",
         "the row's mean and variance taken as constants: the two terms people drop"),
    Slip("layernorm_variance_constant", "layer_norm_backward", "(dxhat - mean_share - var_share)",
         "(dxhat - mean_share)", "layernorm", "var-constant", "the mean's term kept, the variance's dropped"),
    Slip("layernorm_scale_missing", "layer_norm_backward", "dxhat = dout * scale", "dxhat = dout", "layernorm",
         "scale-missing", "out = scale xhat + shift differentiated as if the scale were 1"),
    Slip("layernorm_variance_n_1", "layer_norm_backward", "np.sqrt(x.var(axis=-1, keepdims=True)",
         "np.sqrt(x.var(axis=-1, ddof=1, keepdims=True)", "layernorm", "variance-n-1",
         "the sample variance, divided by n - 1, as torch.var computes it by default"),
    Slip("layernorm_dscale_not_summed", "layer_norm_backward", "dscale = (dout * xhat).reshape(-1, x.shape[-1]).sum(axis=0)",
         "dscale = dout * xhat", "layernorm", "not-summed", "dscale for one row, as for one example"),
)  # fmt: skip


def apply(slip: Slip, source: str) -> str:
    """`source` with slip.old replaced by slip.new inside slip.function; ValueError unless it is there exactly once."""
    lines = source.splitlines(keepends=True)
    start, end = _function_lines(source, slip.function)
    body = "".join(lines[start:end])
    if body.count(slip.old) != 1:
        raise ValueError(
            f"slip {slip.name}: {slip.old!r} occurs {body.count(slip.old)} times in {slip.function}, not once; "
            "update shortcut_gradients/grader/slips.py to the reference"
        )
    return "".join(lines[:start]) + body.replace(slip.old, slip.new) + "".join(lines[end:])


def _function_lines(source: str, qualname: str) -> tuple[int, int]:
    """(first, last + 1) line index of a function's or Class.method's code after its docstring, 0-based."""
    scope = ast.parse(source).body
    *classes, name = qualname.split(".")
    for cls in classes:
        scope = next(node.body for node in scope if isinstance(node, ast.ClassDef) and node.name == cls)
    for node in scope:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
            return body[0].lineno - 1, node.end_lineno
    raise ValueError(f"the reference has no function {qualname}; update shortcut_gradients/grader/slips.py")


def write(slip: Slip, folder: Path) -> Path:
    """The faulty copy of the reference, as folder/{slip.name}.py."""
    path = Path(folder) / f"{slip.name}.py"
    path.write_text(apply(slip, REFERENCE.read_text()))
    return path


def catalogue(jobs: int = 2) -> list[dict]:
    """Grade every slip as the command line grades a class (each in a worker process of its own); per slip,
    every step's result and the first that is not ok: where it was caught, and what it was called."""
    from shortcut_gradients.grader import isolation

    with tempfile.TemporaryDirectory() as folder:
        paths = [write(slip, Path(folder)) for slip in SLIPS]
        graded = isolation.grade_all(isolation.read_all(paths), isolation.DEFAULT_TIMEOUT, jobs)
    rows = []
    for slip, g in zip(SLIPS, graded):
        if g.error is not None:
            raise ValueError(f"slip {slip.name} could not be graded: {g.error}")
        for r in g.results:  # a line located in the faulty copy names it as a reader would: {slip.name}.py
            r.diagnosis = r.diagnosis and r.diagnosis.replace(f"{Path(folder).resolve()}/", "")
        rows.append(
            {"slip": slip, "results": g.results, "result": next((r for r in g.results if r.status != "ok"), None)}
        )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        "| slip | the line, changed | caught at | tensor, inputs | diagnosis |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        slip, r = row["slip"], row["result"]
        change = f"`{slip.old}` → `{slip.new}`"
        if r is None:
            lines.append(f"| {slip.name} | {change} | NOT CAUGHT | | |")
            continue
        flag = "" if (r.step, r.slip) == (slip.step, slip.slip) else f" (expected {slip.step}, {slip.slip})"
        lines.append(
            f"| {slip.name}: {slip.note} | {change} | {r.step}{flag} | {r.tensor or 'the rule raised'}, {r.case} | **{r.slip}**: "
            f"{r.diagnosis.replace('|', '/')} |"
        )
    return "\n".join(lines)


BEGIN, END = (
    "<!-- slips table: python -m shortcut_gradients.grader.slips --write docs/grader.md -->",
    "<!-- end of slips table -->",
)


def replace_table(page: str, table: str) -> str:
    """`page` with the text between BEGIN and END replaced by `table`; ValueError without the markers."""
    if page.count(BEGIN) != 1 or page.count(END) != 1 or page.index(BEGIN) > page.index(END):
        raise ValueError(f"the page needs one {BEGIN} line and, after it, one {END} line")
    head, rest = page.split(BEGIN)
    return f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}"


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m shortcut_gradients.grader.slips", description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="PAGE.md", help="replace the table between the page's markers")
    start = time.perf_counter()
    try:
        args = parser.parse_args(argv)
        rows = catalogue()
        table = format_table(rows)
        if args.write:
            page = replace_table(Path(args.write).read_text(), table)
            files.write_atomically(args.write, lambda tmp: Path(tmp).write_text(page))
    except (ValueError, InputError, OSError) as err:  # a bad flag, a slip off the reference, no page
        print(f"shortcut_gradients.grader.slips: error: {err}", file=sys.stderr)
        return 2
    print(table)
    print(f"\n{len(rows)} slips graded in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    right = all(
        r["result"] is not None and (r["result"].step, r["result"].slip) == (r["slip"].step, r["slip"].slip)
        for r in rows
    )
    return 0 if right else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

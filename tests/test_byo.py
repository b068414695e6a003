"""Bring your own implementation: compare.py checks a user's loss_and_grads beside the built-in ones.

Their file is loaded by path (or module name), its column named after it, every result held to
docs/contract.md, and whatever goes wrong in their code is one line naming their file and line.
"""

import json
import textwrap

import numpy as np
import pytest
from conftest import ROOT, needs
from safetensors.numpy import save_file

from shortcut_gradients import compare
from shortcut_gradients.plumbing import weights

BYO = ROOT / "tests" / "byo"


@pytest.fixture(autouse=True)
def frameworks_present():
    needs("torch"), needs("numpy")


def run(argv, capsys):
    code = compare.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def batched_book(path) -> str:
    """The book's weights with a (2, 3, 3) input: a bias gradient that is not summed over rows shows."""
    params = weights.seeded_params((3, 3, 3, 3, 3, 1), 123)
    tensors = {f"layers.{i}.0.{k}": a for i, (W, b) in enumerate(params) for k, a in (("weight", W), ("bias", b))}
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 3)).astype(np.float32)
    save_file(tensors | {"input": x, "target": np.zeros((2, 3, 1), np.float32)}, path)
    return str(path)


@pytest.mark.parametrize("impl", ["einsum_backprop.py", "torch_func.py"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_implementation_written_differently_agrees(impl, dtype, capsys, tmp_path):
    argv = ["--frameworks", f"torch,numpy,{BYO / impl}", "--dtype", dtype, "--weights", batched_book(tmp_path / "w")]
    code, out, err = run(argv + ["--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    name = impl.removesuffix(".py")
    assert report["config"]["frameworks"] == ["torch", "numpy", name]
    assert all(name in r["frameworks"] for r in report["runs"])


def test_a_wrong_one_is_the_odd_one_out(capsys, tmp_path):
    code, out, _ = run(
        ["--frameworks", f"torch,numpy,{BYO / 'wrong_bias_first_row.py'}", "--weights", batched_book(tmp_path / "w")],
        capsys,
    )
    assert code == 1
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("DISAGREE: layers.4.0.bias")
    assert verdict.endswith(
        "wrong_bias_first_row is the odd one out; likely cause: the bias gradient taken from one row:"
        " db is dz summed over every row, not dz of the first"
    )


def test_the_other_gelu_form_is_named_the_odd_one_out(capsys):
    code, out, _ = run(["--frameworks", f"torch,numpy,{BYO / 'wrong_gelu_form.py'}", "--shortcut", "on"], capsys)
    assert code == 1
    assert (
        out.strip()
        .splitlines()[-1]
        .endswith(
            "wrong_gelu_form is the odd one out; likely cause: the other GELU form: yours matches the exact form"
            " where the run asks for tanh"
        )
    )


def test_intermediates_locate_the_step(capsys, tmp_path):
    """A user's dz that is wrong in one layer is named at that layer's dz, before its dW."""
    source = (BYO / "einsum_backprop.py").read_text()
    broken = source.replace('return {"loss": loss', 'dz[2] = dz[2] * 1.01\n    return {"loss": loss')
    assert broken != source
    (tmp_path / "mine.py").write_text(broken)
    code, out, _ = run(["--frameworks", f"numpy,torch,{tmp_path / 'mine.py'}", "--shortcut", "on"], capsys)
    assert code == 1
    assert out.strip().splitlines()[-1].startswith("DISAGREE: layers.2.dz[")


@pytest.mark.parametrize(
    "slip, named",
    [
        ("bias_one_row.py", "likely cause: the bias gradient taken from one row"),
        ("float32_constant.py", "likely cause: right to float32 precision only"),
    ],
    ids=["bias-one-row", "float32-constant"],
)
def test_the_readme_command_catches_what_one_row_in_float32_cannot_see(slip, named, capsys):
    """On the book's one row in float32 both agree; the probe (a batch, in float64) shows and names them."""
    code, out, _ = run(["--frameworks", f"torch,numpy,{ROOT / 'tests' / 'slips' / slip}", "--shortcut", "on"], capsys)
    verdict = out.strip().splitlines()[-1]
    assert code == 1 and verdict.startswith("DISAGREE on the batch probe: ") and named in verdict


def test_not_implemented_leaves_one_out_with_its_reason(capsys, tmp_path):
    mine = user_file(
        tmp_path,
        GOOD + "def loss_and_grads(*a, **kw):\n"
        "    if kw.get('gelu_form') == 'exact':\n"
        "        raise NotImplementedError('no exact GELU here')\n"
        "    return _reference(*a, **kw)\n",
    )
    code, out, err = run(["--frameworks", f"torch,numpy,{mine}", "--gelu", "exact", "--shortcut", "on"], capsys)
    assert code == 0, err
    assert "mine left out (with shortcut, the batch probe without shortcut, the batch probe with shortcut): " in out
    assert out.count("left out") == 1 and "NotImplementedError: no exact GELU here" in out
    code, out, err = run(["--frameworks", f"numpy,{mine}", "--gelu", "exact", "--shortcut", "on"], capsys)
    assert code == 0 and "mine left out" in out and "ONLY numpy" in out.splitlines()[-1]


def user_file(tmp_path, body: str) -> str:
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


GOOD = "from impl_numpy import loss_and_grads as _reference\n"
BAD = {
    "missing-file": (None, "no such file"),
    "syntax-error": ("def loss_and_grads(:\n", "mine.py:1: SyntaxError"),
    "no-function": ("x = 1\n", "loss_and_grads"),
    "raises": (
        "def loss_and_grads(params, x, target, **kw):\n    return helper(x)\n\ndef helper(x):\n    raise ValueError('no')\n",
        "mine.py:5 in helper: ValueError: no",
    ),
    "missing-key": (
        GOOD + "def loss_and_grads(*a, **kw):\n    r = _reference(*a, **kw)\n    del r['db']\n    return r\n",
        "db",
    ),
    "wrong-length": (
        GOOD
        + "def loss_and_grads(*a, **kw):\n    r = _reference(*a, **kw)\n    r['dW'] = r['dW'][:-1]\n    return r\n",
        "dW",
    ),
    "transposed": (
        GOOD
        + "def loss_and_grads(*a, **kw):\n    r = _reference(*a, **kw)\n    r['dW'][4] = r['dW'][4].T\n    return r\n",
        "transposed",
    ),
    "wrong-dtype": (
        GOOD
        + "def loss_and_grads(*a, **kw):\n    r = _reference(*a, **kw)\n    r['dx'] = r['dx'].astype('float64')\n    return r\n",
        "float32",
    ),
    "nan": (
        GOOD
        + "def loss_and_grads(*a, **kw):\n    r = _reference(*a, **kw)\n    r['dW'][0][0, 0] = float('nan')\n    return r\n",
        "expected a finite value",
    ),
}


@pytest.mark.parametrize("body, message", BAD.values(), ids=BAD.keys())
def test_bad_implementations_get_one_line_and_exit_2(body, message, tmp_path, capsys):
    spec = user_file(tmp_path, body) if body is not None else str(tmp_path / "mine.py")
    code, out, err = run(["--frameworks", f"torch,{spec}"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    if body is not None and "mine" not in message:
        assert "mine" in err  # the line names their implementation


def test_a_column_may_not_take_a_built_in_name(tmp_path, capsys):
    (tmp_path / "numpy.py").write_text("from impl_numpy import loss_and_grads\n")
    code, _, err = run(["--frameworks", f"torch,{tmp_path / 'numpy.py'}"], capsys)
    assert code == 2 and "a built-in name" in err

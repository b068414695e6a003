"""shortcut_gradients/verdict/contract.py (what loss_and_grads returns), shortcut_gradients/plumbing/user_code.py (loading
someone's file, as their worker process does) and tests/byo/ (run the way compare.py runs them, each in a worker)."""

import sys

import numpy as np
import pytest
from conftest import ROOT, needs

from shortcut_gradients.plumbing import frameworks, user_code
from shortcut_gradients.plumbing.config import InputError
from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params
from shortcut_gradients.verdict import check, contract

BYO = ROOT / "tests" / "byo"
BOOK = (3, 3, 3, 3, 3, 1)


def book(dtype="float64"):
    params = [(W.astype(dtype), b.astype(dtype)) for W, b in seeded_params(BOOK, 123)]
    return params, default_input(3).astype(dtype), default_target(1).astype(dtype)


def batched(dtype="float64"):
    """Non-square layers and a 3-D input: shapes that a one-row square network cannot tell apart."""
    sizes = (4, 4, 6, 6, 2)
    params = [(W.astype(dtype), b.astype(dtype)) for W, b in seeded_params(sizes, 123)]
    rng = np.random.default_rng(0)
    return params, rng.uniform(-2, 2, (2, 3, 4)).astype(dtype), rng.uniform(-1, 1, (2, 3, 2)).astype(dtype)


def reference(params, x, target, dtype="float64", **kw):
    kw = {"use_shortcut": True, "gelu_form": "tanh", **kw}
    return needs("numpy")(params, x, target, dtype=dtype, **kw)


# --- validate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_validate_accepts_the_reference_and_keeps_its_arrays(dtype):
    params, x, target = batched(dtype)
    result = reference(params, x, target, dtype)
    out = contract.validate("numpy", result, params, x, dtype)
    assert set(out) == {"loss", "output", "dW", "db", "dx", "dy", "dz"}
    assert out["output"].shape == (2, 3, 2) and out["dx"].shape == (2, 3, 4)
    assert [dW.shape for dW in out["dW"]] == [(4, 4), (6, 4), (6, 6), (2, 6)]
    assert [dz.shape for dz in out["dz"]] == [(2, 3, 4), (2, 3, 6), (2, 3, 6), (2, 3, 2)]
    assert all(a.dtype == np.dtype(dtype) for _, _, a in contract.tensors(out))
    assert out["dW"][1] is result["dW"][1]  # NumPy arrays pass through, not copied


def test_validate_takes_a_python_float_loss_and_torch_tensors_as_the_requested_dtype():
    torch = pytest.importorskip("torch")
    params, x, target = book("float32")
    result = dict(reference(params, x, target, "float32"))
    result["loss"] = float(result["loss"])
    result["dx"] = torch.from_numpy(result["dx"])
    out = contract.validate("mine", result, params, x, "float32")
    assert out["loss"].dtype == np.float32 and out["loss"].shape == ()
    assert isinstance(out["dx"], np.ndarray) and out["dx"].dtype == np.float32


def broken(change):
    """The reference's book result in float64, with one thing changed."""
    params, x, target = batched()
    result = {k: (list(v) if isinstance(v, list) else v) for k, v in reference(params, x, target).items()}
    change(result)
    return params, x, result


def set_key(key, value):
    return lambda r: r.__setitem__(key, value)


def set_entry(key, i, fn):
    return lambda r: r[key].__setitem__(i, fn(r[key][i]))


def with_nan(a):
    a = a.copy()
    a.flat[1] = np.nan
    return a


VIOLATIONS = {
    # id: (change, words the one line must hold)
    "missing-db": (lambda r: r.pop("db"), ["mine:", "'db'", "expected keys loss, output, dW, db, dx"]),
    "short-list": (lambda r: r["dW"].pop(), ["mine:", "'dW' has 3 entries", "expected 4"]),
    "not-a-list": (set_key("db", np.zeros(3)), ["mine:", "'db' is ndarray", "list of 4 arrays"]),
    "transposed": (set_entry("dW", 1, lambda a: a.T), ["'dW[1]' has shape (4, 6)", "expected (6, 4)", "transposed"]),
    "bias-not-summed": (
        set_entry("db", 0, lambda a: np.zeros((2, 3, 4))),
        ["'db[0]' has shape (2, 3, 4)", "expected (4,)", "sum over every leading dimension"],
    ),
    "dtype": (set_key("dx", np.zeros((2, 3, 4), np.float32)), ["'dx' has dtype float32", "expected float64"]),
    "loss-not-scalar": (set_key("loss", np.zeros(1)), ["'loss' has shape (1,)", "expected ()"]),
    "non-finite": (set_entry("dz", 2, with_nan), ["dz[2][0, 0, 1] is nan", "the reference's is", "finite"]),
    "dy-without-dz": (lambda r: r.pop("dz"), ["has 'dy' but no 'dz'"]),
    "none": (set_entry("db", 3, lambda a: None), ["'db[3]' is None", "expected an array"]),
    "strings": (set_key("output", np.array(["a"])), ["'output' has dtype <U1", "floats"]),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS), ids=list(VIOLATIONS))
def test_each_violation_is_one_line_naming_the_implementation_key_and_expectation(violation):
    change, words = VIOLATIONS[violation]
    params, x, result = broken(change)
    ref = contract.validate("numpy", reference(params, x, batched()[2]), params, x, "float64")
    with pytest.raises(InputError) as err:
        contract.validate("mine", result, params, x, "float64", reference=ref)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_a_result_that_is_not_a_dict():
    params, x, target = book()
    with pytest.raises(
        InputError, match=r"^mine: loss_and_grads returned tuple; expected a dict with keys loss, output"
    ):
        contract.validate("mine", (1.0, 2.0), params, x, "float64")


def test_non_finite_is_allowed_where_the_reference_is_not_finite_too():
    params, x, result = broken(set_entry("dz", 2, with_nan))
    ref = {k: (list(v) if isinstance(v, list) else v) for k, v in result.items()}
    contract.validate("mine", result, params, x, "float64", reference=ref)  # both NaN: not this check's business
    with pytest.raises(InputError):
        contract.validate("mine", result, params, x, "float64", reference=reference(params, x, batched()[2]))


# --- tensors: dy and dz folded into backprop order ----------------------------------------------


def test_tensors_without_intermediates_is_check_tensors():
    params, x, target = book()
    result = needs("torch")(params, x, target, use_shortcut=True, gelu_form="tanh", dtype="float64")
    ours, theirs = contract.tensors(result), check.tensors(result)
    assert [(n, layer) for n, layer, _ in ours] == [(n, layer) for n, layer, _ in theirs]
    assert all(a is b for (_, _, a), (_, _, b) in zip(ours, theirs))
    assert contract.intermediates(result) == []


def test_tensors_fold_dy_and_dz_in_before_each_layers_parameters():
    params, x, target = book()
    result = reference(params, x, target)
    names = [n for n, _, _ in contract.tensors(result)]
    assert names[:8] == [
        "loss", "output",
        "layers.4.dy", "layers.4.dz", "layers.4.0.weight", "layers.4.0.bias",
        "layers.3.dy", "layers.3.dz",
    ]  # fmt: skip
    assert names[-3:] == ["layers.0.0.weight", "layers.0.0.bias", "input"]
    assert len(names) == 3 + 4 * len(params)
    steps = contract.intermediates(result)
    assert [n for n, _, _ in steps] == [n for n in names if n.endswith((".dy", ".dz"))]
    assert steps[0][2] is result["dy"][4] and steps[-1][2] is result["dz"][0]
    # Without intermediates the standard listing comes back, whatever the result holds.
    assert [n for n, _, _ in contract.tensors(result, intermediates=False)] == [n for n, _, _ in check.tensors(result)]


def test_label_names_tensors_as_the_result_does():
    assert [contract.label(n) for n in ("layers.2.0.weight", "layers.0.0.bias", "layers.3.dz", "input", "loss")] == [
        "dW[2]",
        "db[0]",
        "dz[3]",
        "dx",
        "loss",
    ]


# --- shortcut_gradients/plumbing/user_code.py ----------------------------------------------------------------------


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_a_file_gives_its_stem_and_a_fresh_module_each_time(tmp_path):
    path = write(tmp_path, "numpy.py", "VALUE = [1]\n")  # a file named like a library must not shadow it
    name, first = user_code.load(str(path))
    _, second = user_code.load(str(path))
    assert name == "numpy" and first.VALUE == [1] and first is not second
    assert sys.modules["numpy"] is np
    assert not (tmp_path / "__pycache__").exists()  # nothing written into the submitter's folder


def test_load_a_module_name_and_a_file_beside_its_neighbours(tmp_path):
    name, module = user_code.load("impl_numpy.model")
    assert name == "impl_numpy.model" and callable(module.loss_and_grads)
    write(tmp_path, "helpers.py", "def twice(v):\n    return 2 * v\n")
    path = write(tmp_path, "mine.py", "from helpers import twice\n\nFOUR = twice(2)\n")
    assert user_code.load(str(path))[1].FOUR == 4
    assert str(tmp_path) not in sys.path  # the folder was on sys.path only while it imported


def line_of(tmp_path, name, text, *, call=None):
    """The one InputError line for loading (and, given `call`, calling) a file."""
    path = write(tmp_path, name, text)
    with pytest.raises(InputError) as err:
        _, module = user_code.load(str(path))
        if call:
            call(module)
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message, str(path)


def test_a_missing_file_a_folder_and_a_non_python_file(tmp_path):
    for spec, words in (
        (str(tmp_path / "gone.py"), "no such file"),
        (str(tmp_path), "is a folder"),
        (str(write(tmp_path, "notes.txt", "hi")), "not a Python file"),
        ("no_such_module_anywhere", "no module named 'no_such_module_anywhere'"),
    ):
        with pytest.raises(InputError, match=words):
            user_code.load(spec)


def test_a_syntax_error_names_its_file_and_line(tmp_path):
    message, path = line_of(tmp_path, "broken.py", "import numpy\n\ndef f(:\n    pass\n")
    assert message.startswith(f"{path}:3: SyntaxError: ")


def test_an_import_error_names_the_line_in_their_file(tmp_path):
    message, path = line_of(tmp_path, "needs.py", "import math\nimport not_installed_anywhere\n")
    assert message == f"{path}:2 in <module>: ModuleNotFoundError: No module named 'not_installed_anywhere'"


def test_sys_exit_at_import_is_one_line_too(tmp_path):
    message, path = line_of(tmp_path, "quits.py", "import sys\nsys.exit(3)\n")
    assert message == f"{path}:2 in <module>: SystemExit: 3"


def test_an_exception_is_located_at_the_innermost_frame_in_their_file(tmp_path):
    """NumPy raises, deep in its own code; the line is theirs: the call into NumPy, inside their helper."""
    text = "import numpy as np\n\ndef helper(a, b):\n    return a @ b\n\ndef backward(a, b):\n    return helper(a, b)\n"
    message, path = line_of(
        tmp_path, "mine.py", text, call=lambda m: user_code.call(m, m.backward, np.ones((2, 3)), np.ones((2, 3)))
    )
    assert message.startswith(f"{path}:4 in helper: ValueError: matmul: ")


def test_a_call_that_fails_before_their_code_runs_names_the_function(tmp_path):
    message, path = line_of(
        tmp_path, "mine.py", "def loss_and_grads(params, x):\n    return {}\n",
        call=lambda m: user_code.call(m, m.loss_and_grads, 1, 2, dtype="float64"),
    )  # fmt: skip
    assert message.startswith(f"{path} in loss_and_grads: TypeError: ")
    assert "unexpected keyword argument 'dtype'" in message


def test_passthrough_exceptions_are_raised_unchanged(tmp_path):
    path = write(tmp_path, "todo.py", "def f():\n    raise NotImplementedError('later')\n")
    _, module = user_code.load(str(path))
    with pytest.raises(NotImplementedError, match="later"):
        user_code.call(module, module.f, passthrough=(NotImplementedError,))
    with pytest.raises(InputError, match=r"todo.py:2 in f: NotImplementedError: later"):
        user_code.call(module, module.f)


def test_require_names_every_missing_function(tmp_path):
    path = write(tmp_path, "half.py", "def gelu_backward(dout, x, form):\n    pass\n\nlinear_backward = 3\n")
    _, module = user_code.load(str(path))
    user_code.require(module, ["gelu_backward"])
    with pytest.raises(InputError, match=r"half.py has no linear_backward, loss_and_grads: it must define them"):
        user_code.require(module, ["gelu_backward", "linear_backward", "loss_and_grads"])


def test_display_name_is_the_name_load_gives_without_loading(tmp_path):
    path = write(tmp_path, "mine.py", "raise SystemExit('never imported')\n")
    assert user_code.display_name(str(path)) == "mine" and user_code.display_name("pkg.mine") == "pkg.mine"


def test_a_resolved_implementation_raises_one_line_from_its_worker(tmp_path):
    path = write(tmp_path, "boom.py", "def loss_and_grads(*args, **kw):\n    raise KeyError('dW')\n")
    fns = frameworks.resolve(str(path))
    assert list(fns) == ["boom"]
    with pytest.raises(InputError, match=r"boom.py:2 in loss_and_grads: KeyError: 'dW'"):
        fns["boom"]()
    frameworks.close(fns)
    with pytest.raises(InputError, match="has no loss_and_grads"):
        frameworks.resolve(str(write(tmp_path, "empty.py", "")))


# --- tests/byo: implementations written unlike the three ------------------------------------------


@pytest.fixture(scope="module")
def byo():
    """{stem: loss_and_grads} for the files in tests/byo, each in its worker (one per file, for every test here)."""
    stems = ("einsum_backprop", "torch_func", "wrong_gelu_form", "wrong_bias_first_row")
    fns = frameworks.resolve(",".join(str(BYO / f"{stem}.py") for stem in stems))
    yield fns
    frameworks.close(fns)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("network", [book, batched], ids=["book", "batched"])
def test_byo_implementations_agree_and_the_wrong_ones_are_caught(network, dtype, byo):
    params, x, target = network(dtype)
    kw = {"use_shortcut": True, "gelu_form": "exact", "dtype": dtype}
    ref = contract.validate("numpy", reference(params, x, target, **kw), params, x, dtype)
    verdicts = {}
    for name, fn in byo.items():
        result = contract.validate(name, fn(params, x, target, **kw), params, x, dtype, reference=ref)
        report = check.compare({"numpy": ref, name: result}, dtype)
        verdicts[name] = report["first_mismatch"]["tensor"] if report["first_mismatch"] else None
    assert verdicts["einsum_backprop"] is None and verdicts["torch_func"] is None
    assert verdicts["wrong_gelu_form"] in ("loss", "output")
    # The bias slip hides on the book's one row and shows on a batch, at the last layer's bias.
    assert verdicts["wrong_bias_first_row"] == (None if network is book else f"layers.{len(params) - 1}.0.bias")


def test_byo_einsum_returns_the_same_steps_as_the_reference(byo):
    params, x, target = batched()
    fn = byo["einsum_backprop"]
    ours = contract.validate(
        "einsum", fn(params, x, target, use_shortcut=True, gelu_form="tanh", dtype="float64"), params, x, "float64"
    )
    ref = reference(params, x, target)
    for (name, _, a), (_, _, b) in zip(contract.intermediates(ours), contract.intermediates(ref)):
        # float64: the two agree to rounding (shortcut_gradients.verdict.check's 1e-12), a slip would be 1e-3 off or worse.
        assert check.relative_error(a, b, 1e-12, float(np.finfo(np.float64).eps)).max() <= 1e-12, name

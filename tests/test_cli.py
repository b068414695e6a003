"""compare.py: the table, the JSON, the exit codes and every bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, needs
from safetensors.numpy import save_file

from shortcut_gradients import compare
from shortcut_gradients.plumbing import frameworks, weights
from shortcut_gradients.plumbing.config import BOOK_WEIGHT_GRAD_MEANS


def run(argv, capsys):
    code = compare.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def all_frameworks():
    for name in ("torch", "jax", "numpy"):
        needs(name)


def test_default_run_prints_the_book_table(capsys):
    code, out, err = run([], capsys)
    assert code == 0, err
    assert "Without shortcut" in out and "With shortcut" in out
    assert out.count("layers.0.0.weight") == 2
    assert out.strip().splitlines()[-1].startswith("AGREE: torch, jax, numpy")
    assert "matches the book" in out
    assert f"{BOOK_WEIGHT_GRAD_MEANS[('tanh', True)][0]:.7e}" in out  # the book column


def test_json_has_the_documented_keys(capsys):
    code, out, _ = run(["--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["agree"] is True
    assert [r["use_shortcut"] for r in report["runs"]] == [False, True]
    for r in report["runs"]:
        assert set(r["frameworks"]) == {"torch", "jax", "numpy"}
        for fw in r["frameworks"].values():
            assert isinstance(fw["loss"], float)
            assert len(fw["weight_grad_mean_abs"]) == len(fw["bias_grad_mean_abs"]) == 5
        assert r["first_mismatch"] is None and r["agree"] is True
        assert len(r["layer_max_rel_diff"]) == 5
        assert set(r["max_rel_diff"]) >= {"loss", "output", "input", "layers.0.0.weight", "layers.4.0.bias"}
        book = BOOK_WEIGHT_GRAD_MEANS[("tanh", r["use_shortcut"])]
        # Full precision: the JSON numbers are the computed float64 means, not rounded ones.
        np.testing.assert_allclose(r["frameworks"]["numpy"]["weight_grad_mean_abs"], book, rtol=5e-6, atol=0)


def test_json_is_byte_identical_across_runs(capsys):
    first = run(["--json", "--dtype", "float64"], capsys)[1]
    second = run(["--json", "--dtype", "float64"], capsys)[1]
    assert first == second


def test_float64_agrees_to_1e12(capsys):
    code, out, _ = run(["--json", "--dtype", "float64", "--gelu", "exact"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["config"]["book_configuration"] is False  # the book's numbers are float32
    for r in report["runs"]:
        assert r["tolerance"] == 1e-12
        assert max(r["max_rel_diff"].values()) < 1e-12


def test_single_shortcut_setting_and_subset_of_frameworks(capsys):
    code, out, _ = run(["--json", "--shortcut", "on", "--frameworks", "numpy,jax"], capsys)
    assert code == 0
    report = json.loads(out)
    assert [r["use_shortcut"] for r in report["runs"]] == [True]
    assert list(report["runs"][0]["frameworks"]) == ["numpy", "jax"]


def test_disagreement_exits_1_and_names_the_tensor(capsys, monkeypatch):
    real_load = frameworks.load

    def load_with_sign_flip(name):
        fn = real_load(name)
        if name != "numpy":
            return fn

        def flipped(*args, **kwargs):
            result = fn(*args, **kwargs)
            return {**result, "dW": [-g for g in result["dW"]], "db": [-g for g in result["db"]], "dx": -result["dx"]}

        return flipped

    monkeypatch.setattr(frameworks, "load", load_with_sign_flip)
    code, out, _ = run([], capsys)
    assert code == 1
    last = out.strip().splitlines()[-1]
    assert last.startswith("DISAGREE: layers.4.0.weight[")  # the first gradient backprop computes
    # The mean |dL/dW| columns cannot see a sign flip: they still match the book.
    code, out, _ = run(["--json"], capsys)
    report = json.loads(out)
    assert code == 1 and report["agree"] is False
    assert report["runs"][0]["first_mismatch"]["tensor"] == "layers.4.0.weight"
    means = [r["frameworks"][fw]["weight_grad_mean_abs"] for r in report["runs"] for fw in r["frameworks"]]
    assert all(np.allclose(m, means[0], rtol=1e-6) for m in means[:3])


def test_weights_file_round_trip_with_3d_input(tmp_path, capsys):
    saved = tmp_path / "net.safetensors"
    code, out, err = run(["--layer-sizes", "4,4,2", "--seed", "5", "--save-weights", str(saved), "--json"], capsys)
    assert code == 0, err
    params, x, target = weights.load_weights(saved)
    assert [W.shape for W, _ in params] == [(4, 4), (2, 4)]
    # Replace the input by a 3-D one and run from the file.
    tensors = {f"layers.{i}.0.{k}": v for i, (W, b) in enumerate(params) for k, v in (("weight", W), ("bias", b))}
    tensors["input"] = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    save_file(tensors, tmp_path / "3d.safetensors")
    code, out, err = run(["--weights", str(tmp_path / "3d.safetensors"), "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["config"]["input_shape"] == [2, 3, 4]
    assert report["config"]["layer_sizes"] == [4, 4, 2]


def test_saved_book_weights_reproduce_the_book(tmp_path, capsys):
    saved = tmp_path / "book.safetensors"
    assert run(["--save-weights", str(saved)], capsys)[0] == 0
    code, out, _ = run(["--weights", str(saved), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["config"]["book_configuration"] is True


# ---- bad input: one line on stderr, exit 2, nothing written -----------------------------------


def write(path, tensors):
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path)
    return str(path)


def book_tensors():
    params, x, target = weights.load_weights(weights.FIXTURE)
    tensors = {f"layers.{i}.0.{k}": v for i, (W, b) in enumerate(params) for k, v in (("weight", W), ("bias", b))}
    return {**tensors, "input": x, "target": target}


def bad_file(tmp_path, change):
    tensors = book_tensors()
    change(tensors)
    return write(tmp_path / "bad.safetensors", tensors)


def not_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    return str(path)


BAD_INPUTS = {
    "sizes-empty": (["--layer-sizes", ""], "at least two sizes"),
    "sizes-single": (["--layer-sizes", "3"], "at least two sizes"),
    "sizes-zero": (["--layer-sizes", "3,0,1"], "positive"),
    "sizes-negative": (["--layer-sizes", "3,-2,1"], "positive"),
    "sizes-not-integers": (["--layer-sizes", "3,2.5,1"], "integers"),
    "sizes-words": (["--layer-sizes", "three,one"], "integers"),
    "gelu-unknown": (["--gelu", "relu"], "--gelu"),
    "dtype-unknown": (["--dtype", "float16"], "--dtype"),
    "shortcut-unknown": (["--shortcut", "maybe"], "--shortcut"),
    "framework-unknown": (["--frameworks", "torch,mxnet"], "mxnet"),
    "framework-empty": (["--frameworks", ","], "--frameworks"),
    "framework-twice": (["--frameworks", "jax,jax"], "twice"),
    "seed-not-integer": (["--seed", "abc"], "--seed"),
    "unknown-flag": (["--learning-rate", "1"], "unrecognized"),
    "weights-missing": (lambda p: ["--weights", str(p / "nope.safetensors")], "not found"),
    "weights-not-safetensors": (lambda p: ["--weights", not_safetensors(p)], "not a readable safetensors"),
    "weights-missing-layer": (
        lambda p: ["--weights", bad_file(p, lambda t: [t.pop("layers.2.0.weight"), t.pop("layers.2.0.bias")])],
        "missing layers.2.0.weight",
    ),
    "weights-missing-bias": (
        lambda p: ["--weights", bad_file(p, lambda t: t.pop("layers.4.0.bias"))],
        "missing layers.4.0.bias",
    ),
    "weights-wrong-shape": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"layers.1.0.weight": np.ones((3, 4), np.float32)}))],
        "layers.1.0.weight has shape (3, 4)",
    ),
    "weights-bias-wrong-shape": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"layers.0.0.bias": np.ones(2, np.float32)}))],
        "layers.0.0.bias has shape (2,)",
    ),
    "weights-wrong-dtype": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"layers.0.0.weight": np.ones((3, 3), np.int32)}))],
        "dtype int32",
    ),
    "weights-float16": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"layers.3.0.bias": np.ones(3, np.float16)}))],
        "dtype float16",
    ),
    "weights-nan": (
        lambda p: ["--weights", bad_file(p, lambda t: t["layers.2.0.weight"].__setitem__((0, 1), np.nan))],
        "NaN or inf",
    ),
    "weights-inf": (
        lambda p: ["--weights", bad_file(p, lambda t: t["layers.0.0.bias"].__setitem__(0, np.inf))],
        "NaN or inf",
    ),
    "weights-unexpected-tensor": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"layers.0.1.weight": np.ones(3, np.float32)}))],
        "unexpected tensor",
    ),
    "input-wrong-width": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"input": np.ones((1, 4), np.float32)}))],
        "last dimension must be the first layer size 3",
    ),
    "input-nan": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"input": np.array([[1.0, np.nan, 0.0]])}))],
        "NaN or inf",
    ),
    "target-does-not-broadcast": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"target": np.zeros((2, 2), np.float32)}))],
        "does not broadcast to the output shape (1, 1)",
    ),
    "target-would-grow-output": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"target": np.zeros((4, 1), np.float32)}))],
        "does not broadcast",
    ),
    "sizes-disagree-with-file": (
        lambda p: ["--weights", bad_file(p, lambda t: None), "--layer-sizes", "3,3,1"],
        "disagrees with",
    ),
    "save-into-missing-folder": (lambda p: ["--save-weights", str(p / "no" / "w.safetensors")], "does not exist"),
    "save-onto-a-folder": (lambda p: ["--save-weights", str(p)], "names a folder"),
    "save-to-a-folder-path": (lambda p: ["--save-weights", str(p / "new") + "/"], "names a folder"),
    "save-to-an-empty-path": (["--save-weights", ""], "--save-weights was given an empty file name"),
    "weights-empty-path": (["--weights", ""], "--weights was given an empty file name"),
    "save-onto-a-device": (["--save-weights", "/dev/null"], "is not a regular file"),
    "weights-aliased-index": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"layers.00.0.weight": 0 * t["layers.0.0.weight"]}))],
        "'layers.00.0.weight' and 'layers.0.0.weight' both name layer 0",
    ),
    "weights-index-in-another-script": (
        lambda p: ["--weights", bad_file(p, lambda t: t.update({"layers.\u0664.0.bias": t.pop("layers.4.0.bias")}))],
        "writes layer 4 as '\u0664'; name it 'layers.4.0.bias'",
    ),
    "weights-float8": (
        lambda p: ["--weights", float8_file(p)],
        "dtype 8-bit float (E4M3); expected float32 or float64",
    ),
    "timeout-zero": (["--timeout", "0"], "--timeout: takes a positive number of seconds"),
    "timeout-not-a-number": (["--timeout", "soon"], "--timeout: takes a positive number of seconds"),
}


def float8_file(tmp_path):
    """A weights file whose layers.0.0.weight is float8 (E4M3), written through the header safetensors reads."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in book_tensors().items()}
    tensors["layers.0.0.weight"] = tensors["layers.0.0.weight"].to(torch.float8_e4m3fn)
    save_torch(tensors, tmp_path / "fp8.safetensors")
    return str(tmp_path / "fp8.safetensors")


@pytest.mark.parametrize("argv, expected", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_line_and_exit_2(argv, expected, tmp_path, capsys):
    argv = argv(tmp_path) if callable(argv) else argv
    out_file = tmp_path / "out.safetensors"
    if "--save-weights" not in argv:
        argv = argv + ["--save-weights", str(out_file)]
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("compare.py: error: ")
    assert expected in lines[0]
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a temporary file


@pytest.mark.parametrize("missing, package", [("flax", "jax flax"), ("torch", "torch==2.13.0")], ids=["jax", "torch"])
def test_missing_framework_names_the_package(missing, package, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else real_find_spec(name, *a)
    )
    code, out, err = run([], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"pip install {package}" in err


def test_bad_input_from_the_command_line_has_no_traceback():
    """The real process: one line, exit 2, before any framework is imported."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "compare.py"), "--layer-sizes", "3,x"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_timeout_reaches_the_frameworks(capsys, monkeypatch):
    """--timeout is passed to frameworks.resolve (a user's import and each call); without it, the default."""
    from shortcut_gradients.plumbing import inputs

    seen, real_resolve = [], frameworks.resolve

    def spy(text, timeout=inputs.DEFAULT_TIMEOUT):
        seen.append(timeout)
        return real_resolve(text, timeout=timeout)

    monkeypatch.setattr(frameworks, "resolve", spy)
    assert run(["--frameworks", "numpy", "--timeout", "7.5", "--json"], capsys)[0] == 0
    assert run(["--frameworks", "numpy", "--json"], capsys)[0] == 0
    assert seen == [7.5, inputs.DEFAULT_TIMEOUT]


def test_saving_over_a_users_implementation_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine.py"
    mine.write_text("from impl_numpy.model import loss_and_grads  # noqa: F401\n")
    code, out, err = run(["--frameworks", f"numpy,{mine}", "--save-weights", str(mine)], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "is the --frameworks file" in err
    assert mine.read_text() == "from impl_numpy.model import loss_and_grads  # noqa: F401\n"


# ---- drawn inputs, progress, and --diagnose-numbers ------------------------------------------------


@pytest.mark.parametrize(
    "flags, shape", [(["--batch", "4"], [4, 3]), (["--input-shape", "2,3"], [2, 3, 3])], ids=["batch", "input-shape"]
)
def test_a_drawn_batch_is_seeded_and_reproducible(flags, shape, capsys):
    argv = ["--frameworks", "numpy,numpy-fast", "--shortcut", "on", "--json", *flags]
    code, out, _ = run(argv, capsys)
    report = json.loads(out)
    assert code == 0 and report["config"]["input_shape"] == shape and not report["config"]["book_configuration"]
    assert run(argv, capsys)[1] == out  # the same seed draws the same rows
    assert run([*argv, "--seed", "7"], capsys)[1] != out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch", "0"], "--batch"),
        (["--batch", "2,3"], "--batch takes one positive integer"),
        (["--input-shape", "2,x"], "--input-shape"),
        (["--batch", "2", "--input-shape", "2,3"], "use one of them"),
    ],
    ids=["zero", "two-numbers", "not-a-number", "both"],
)
def test_a_bad_drawn_batch_is_one_line_and_exit_2(flags, message, capsys):
    code, out, err = run(["--frameworks", "numpy", *flags], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and message in err


def test_a_weights_file_with_its_own_input_refuses_a_drawn_one(tmp_path, capsys):
    path = tmp_path / "w.safetensors"
    assert run(["--frameworks", "numpy", "--save-weights", str(path)], capsys)[0] == 0
    code, out, err = run(["--frameworks", "numpy", "--weights", str(path), "--batch", "3"], capsys)
    assert (code, out) == (2, "") and "holds an input of its own" in err


def test_stages_go_to_stderr_for_long_work_and_quiet_silences_them(capsys, monkeypatch):
    monkeypatch.setattr(compare, "PROGRESS_SECONDS", 0.0)  # any work counts as long here
    argv = ["--frameworks", "numpy,numpy-fast", "--shortcut", "on"]
    _, _, err = run(argv, capsys)
    assert "compare.py: with shortcut (1 of 1): running numpy, numpy-fast" in err
    assert "compare.py: with shortcut (1 of 1): measuring the rounding bound" in err
    assert run([*argv, "--quiet"], capsys)[2] == ""
    monkeypatch.undo()
    assert run(argv, capsys)[2] == ""  # the book's size: silent


BOOK_PASTE = " ".join(map(repr, BOOK_WEIGHT_GRAD_MEANS[("tanh", False)]))


def test_diagnose_numbers_explained_is_exit_0(capsys):
    code, out, _ = run(["--diagnose-numbers", BOOK_PASTE], capsys)
    assert code == 0 and out.startswith("Explained") and "without shortcut, seed 123" in out
    code, out, _ = run(["--diagnose-numbers", BOOK_PASTE, "--json"], capsys)
    assert code == 0 and json.loads(out)["explained"] is True


def test_diagnose_numbers_not_explained_is_exit_1(capsys):
    code, out, _ = run(["--diagnose-numbers", "0.0003 0.0001 0.0007 0.0014 0.0052"], capsys)
    assert code == 1 and out.startswith("Not explained")


def test_diagnose_numbers_without_numbers_is_one_line_and_exit_2(capsys):
    code, out, err = run(["--diagnose-numbers", "no numbers here"], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "no numbers" in err

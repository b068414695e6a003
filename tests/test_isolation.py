"""Code a user brings runs in a worker process of its own (shortcut_gradients/plumbing/worker.py).

The hostile plug-ins in tests/hostile/ each try one way of reaching the checker from inside it:
its arrays, NumPy, torch's defaults, the verdict's functions, stdout, the current folder, the exit
status, time. Each test runs compare.py in this process, as a user's run would, and asserts that
the built-ins' numbers are those of a run without the plug-in and that the verdict is right: the
plug-in is the odd one out, or the run stops with one line naming its file and exit status 2.
"""

import contextlib
import functools
import io
import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, needs
from safetensors.numpy import load_file, save_file

from shortcut_gradients import compare
from shortcut_gradients.plumbing import frameworks, weights, worker
from shortcut_gradients.plumbing.config import InputError

HOSTILE = ROOT / "tests" / "hostile"


@pytest.fixture(autouse=True)
def frameworks_present():
    needs("torch"), needs("numpy")


def hostile(name: str) -> str:
    """A hostile plug-in's path as a user would type it, relative to the repository."""
    return os.path.relpath(HOSTILE / f"{name}.py")


def run(argv, capsys):
    code = compare.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@functools.cache
def plain(*argv) -> dict:
    """The --json report of torch and numpy alone, with `argv`: what the built-ins compute untouched."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert compare.main(["--frameworks", "torch,numpy", "--json", *argv]) == 0
    return json.loads(out.getvalue())


def built_ins(report: dict) -> list:
    """Per run, the built-ins' loss and per-layer mean |dL/dW| and |dL/db|."""
    return [{name: r["frameworks"][name] for name in ("torch", "numpy")} for r in report["runs"]]


def one_line(code, out, err) -> str:
    """The single error line of a run that stopped on bad input."""
    assert code == 2 and out == "", (code, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("compare.py: error: ").rstrip("\n")


def workers_alive(path: str) -> list[int]:
    """Process ids of this process's workers still running `path` (Linux's /proc)."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state, parent = f.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if path.encode() in argv and state != "Z" and int(parent) == os.getpid():
            alive.append(int(pid))
    return alive


# --- its inputs, NumPy, torch, the verdict: nothing it changes reaches the checker ----------------------------


@pytest.mark.parametrize("first", [True, False], ids=["listed-first", "listed-last"])
def test_inputs_are_read_only_in_the_worker(first, capsys):
    """`target += 1` fails in the worker, at their line, instead of changing what the built-ins see."""
    names = [hostile("mutates_inputs"), "torch", "numpy"] if first else ["torch", "numpy", hostile("mutates_inputs")]
    line = one_line(*run(["--frameworks", ",".join(names)], capsys))
    assert line == f"{hostile('mutates_inputs')}:11 in loss_and_grads: ValueError: output array is read-only"


@pytest.mark.parametrize("first", [True, False], ids=["listed-first", "listed-last"])
def test_overwriting_its_inputs_changes_only_its_own_copy(first, capsys):
    """Past the read-only flag (ctypes), it doubles the weights and shifts x and target: in its own
    process only. The built-ins compute what they compute alone, and it is the odd one out."""
    expected = built_ins(plain())  # before it runs, whatever it would do to this process
    names = (
        [hostile("overwrites_inputs"), "torch", "numpy"] if first else ["torch", "numpy", hostile("overwrites_inputs")]
    )
    code, out, _ = run(["--frameworks", ",".join(names), "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and not report["agree"]
    assert built_ins(report) == expected
    assert all(r["first_mismatch"]["odd_one_out"] == "overwrites_inputs" for r in report["runs"])


def test_patching_numpy_and_the_verdict_at_import_patches_only_its_own(capsys):
    """Must catch: dW off by 2 from a plug-in that, at import, makes np.abs zero, np.allclose always
    True and the verdict's compare always agree. In the checker that turned DISAGREE into AGREE."""
    abs_before, compare_before = np.abs, sys.modules["shortcut_gradients.verdict.check"].compare
    expected = built_ins(plain())
    code, out, _ = run(["--frameworks", f"torch,numpy,{hostile('patches_numpy')}", "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and not report["agree"]
    assert all(r["first_mismatch"]["odd_one_out"] == "patches_numpy" for r in report["runs"])
    assert all(r["first_mismatch"]["tensor"].endswith(".weight") for r in report["runs"])
    assert built_ins(report) == expected
    assert np.abs is abs_before and sys.modules["shortcut_gradients.verdict.check"].compare is compare_before


def test_torch_defaults_set_at_import_stay_in_the_worker(capsys, tmp_path):
    """float64 as torch's default dtype and a reseeded generator, at its import: the weights that
    --seed 7 draws here are the same bits, and the built-ins' numbers too. Its float32 torch
    tensors arrive as float32 arrays: the run agrees."""
    saved = tmp_path / "seed7.safetensors"
    argv = ["--seed", "7", "--layer-sizes", "3,4,4,2", "--json"]
    expected, drawn = built_ins(plain(*argv)), weights.seeded_params((3, 4, 4, 2), 7)
    code, out, _ = run(
        ["--frameworks", f"{hostile('float64_default')},torch,numpy", "--save-weights", str(saved), *argv], capsys
    )
    assert code == 0, out
    assert torch.get_default_dtype() == torch.float32
    assert all(np.array_equal(load_file(saved)[f"layers.{i}.0.weight"], W) for i, (W, _) in enumerate(drawn))
    assert load_file(saved)["layers.0.0.weight"].dtype == np.float32
    assert built_ins(json.loads(out)) == expected


# --- its output, its folder -------------------------------------------------------------------------------------


def test_its_prints_go_to_stderr_with_its_name_and_json_still_parses(capsys):
    expected = built_ins(plain())
    code, out, err = run(["--frameworks", f"torch,numpy,{hostile('prints')}", "--json"], capsys)
    assert code == 0, err
    assert built_ins(json.loads(out)) == expected  # stdout is the report, whole
    lines = err.splitlines()
    assert lines[:2] == ["[prints] hello from import", "[prints] a warning from import"]
    # Each call's prints, in order: the run's two shortcut settings in float32, then the probe's in float64.
    assert lines[2:6] == ["[prints] computing in float32", "[prints] no newline at the end"] * 2
    assert lines[6:] == ["[prints] computing in float64", "[prints] no newline at the end"] * 2


def test_changing_folder_does_not_move_the_files_the_checker_writes(capsys, tmp_path, monkeypatch):
    """os.chdir at import and in every call: the checker's folder stays the one the run started in,
    so --save-weights (and --plot, --side-by-side: every output path is relative to it) writes
    where the command line said."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("HOSTILE_ELSEWHERE", str(elsewhere))
    plug_in = str(HOSTILE / "changes_folder.py")
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["--frameworks", f"torch,numpy,{plug_in}", "--save-weights", "w.safetensors"], capsys)
    assert code == 0, err
    assert os.getcwd() == str(tmp_path)
    assert (tmp_path / "w.safetensors").is_file() and list(elsewhere.iterdir()) == []


# --- its exit, its time: bad input, one line, exit 2 ---------------------------------------------------------

EXITS = {
    "os_exit_at_import": "{}: exited with status 0 before returning a result",
    "os_exit_in_call": "{}: exited with status 0 before returning a result",
    "sys_exit_at_import": "{}:5 in <module>: SystemExit: 0",
    "sys_exit_in_call": "{}:7 in loss_and_grads: SystemExit: 0",
}


@pytest.mark.parametrize("name, message", EXITS.items(), ids=EXITS.keys())
def test_exiting_is_bad_input_not_a_verdict(name, message, capsys):
    """Before, os._exit(0) in a plug-in ended the run with exit status 0 and no output at all."""
    line = one_line(*run(["--frameworks", f"torch,numpy,{hostile(name)}"], capsys))
    assert line == message.format(hostile(name))


def test_exiting_in_the_float64_rerun_is_bad_input_too(capsys, tmp_path):
    """Must catch: an exception in the float64 rerun leaves float32's AGREE with a caution; a worker
    that dies there must not (it would be AGREE, exit 0, from an implementation that never answered)."""
    small = [(W * 1e-2, b * 1e-2) for W, b in weights.seeded_params((3, 3, 3, 3, 3, 1), 123)]
    path = tmp_path / "small.safetensors"  # float32 cannot tell the GELU forms apart here: a rerun follows
    save_file({f"layers.{i}.0.{k}": a for i, (W, b) in enumerate(small) for k, a in (("weight", W), ("bias", b))}, path)
    assert compare.main(["--weights", str(path), "--frameworks", "torch,numpy"]) == 0
    assert "ran again in float64" in capsys.readouterr().out
    line = one_line(
        *run(["--weights", str(path), "--frameworks", f"torch,numpy,{hostile('os_exit_in_float64')}"], capsys)
    )
    assert line == f"{hostile('os_exit_in_float64')}: exited with status 0 before returning a result"


def test_a_call_that_never_returns_is_killed_after_the_timeout(capsys):
    """An infinite loop in the call, under a 1 s limit (its import takes a fraction of that): one line, exit 2, and no process left behind."""
    start = time.monotonic()
    line = one_line(*run(["--frameworks", f"torch,numpy,{hostile('loops')}", "--timeout", "1"], capsys))
    assert line == f"{hostile('loops')}: did not return within 1 s (--timeout 1)"
    assert time.monotonic() - start < 10
    assert workers_alive(hostile("loops")) == []


def test_an_import_that_never_ends_is_killed_too(tmp_path):
    path = tmp_path / "hangs.py"
    path.write_text("import time\n\nwhile True:\n    time.sleep(1)\n")
    with pytest.raises(worker.WorkerError, match=r"hangs.py: did not finish importing within 0.3 s \(--timeout 0.3\)"):
        frameworks.resolve(f"numpy,{path}", timeout=0.3)
    assert workers_alive(str(path)) == []


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "raising_array",
            ":8 in __array__: RuntimeError: no array for you (converting the result['loss'] to a NumPy array)",
        ),
        ("raising_mapping", ":11 in __iter__: RuntimeError: no keys here (reading the result)"),
    ],
    ids=["array", "mapping"],
)
def test_a_result_whose_methods_raise_is_one_line(name, message, capsys):
    """Before, an object whose __array__ raised ended the run in a traceback."""
    line = one_line(*run(["--frameworks", f"torch,numpy,{hostile(name)}"], capsys))
    assert line == hostile(name) + message


def test_a_forged_reply_is_never_unpickled(capsys, tmp_path, monkeypatch):
    """Must catch: a reply written by their code whose array is a pickle (dtype object). Unpickled
    here it would run their code in the checker; read with allow_pickle=False it is refused."""
    bomb = tmp_path / "bomb"
    monkeypatch.setenv("HOSTILE_BOMB", str(bomb))
    line = one_line(*run(["--frameworks", f"torch,numpy,{hostile('forges_reply')}"], capsys))
    assert line == f"{hostile('forges_reply')}: sent something that is not a reply"
    assert not bomb.exists() and workers_alive(hostile("forges_reply")) == []


def test_ctrl_c_here_kills_the_worker():
    """Ctrl-C reaches the checker (the worker is in a process group of its own); the worker goes too."""
    timer = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    with worker.Worker(hostile("loops")) as looping:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            looping.call("loss_and_grads", [], np.zeros(1), np.zeros(1))
        assert looping._child.process.returncode is not None
    timer.join()


# --- the worker itself ---------------------------------------------------------------------------------------------


def test_the_checker_never_imports_their_file_and_closes_their_worker():
    fns = frameworks.resolve(f"numpy,{hostile('prints')}")
    assert not any(str(HOSTILE) in str(getattr(m, "__file__", "") or "") for m in list(sys.modules.values()))
    assert len(workers_alive(hostile("prints"))) == 1
    frameworks.close(fns)
    assert workers_alive(hostile("prints")) == []


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


ECHO = """\
import numpy as np


class Tensor:
    \"\"\"Converts itself, as a torch tensor or a JAX array does.\"\"\"

    def __array__(self, dtype=None, copy=None):
        return np.ones(2, np.float64)


def echo(*args, **kwargs):
    return args, kwargs


def writeable(a):
    return a.flags.writeable


def scalars():
    return {"f32": np.float32(1.5), "f64": np.float64(2.5), "py": 0.1, "tensor": Tensor()}


def objects():
    return {"loss": np.array([object()])}


def instance():
    return {"dW": [object()]}

"""


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """One worker for the codec's tests."""
    path = tmp_path_factory.mktemp("codec") / "echo.py"
    path.write_text(ECHO)
    with worker.Worker(str(path)) as running:
        yield running


def test_values_come_back_with_their_types_and_dtypes(echo):
    """Plain data keeps its type (a tuple stays a tuple, a Python float stays a float: the contract
    reads it as the requested dtype); arrays and NumPy scalars keep their dtype exactly; anything
    with __array__ (a torch tensor, a JAX array) arrives as the NumPy array it converts to. Its
    inputs are read-only there."""
    arrays = [np.arange(3).astype(dtype) for dtype in ("float32", "float64", "float16", "int64", "bool")]
    plain_data = {"none": None, "flag": True, "count": 3, "big": 2**70, "text": "é", "pair": (1, [2])}
    args, kwargs = echo.call("echo", *arrays, **plain_data, nan=float("nan"))
    assert type(args) is tuple and type(kwargs) is dict
    assert [a.dtype for a in args] == [a.dtype for a in arrays] and all(map(np.array_equal, args, arrays))
    assert np.isnan(kwargs.pop("nan")) and kwargs == plain_data and type(kwargs["pair"]) is tuple
    assert echo.call("writeable", np.ones(2)) is False
    got = echo.call("scalars")
    assert got["f32"].dtype == np.float32 and got["f32"].shape == () and got["f64"].dtype == np.float64
    assert type(got["py"]) is float and got["py"] == 0.1
    assert got["tensor"].dtype == np.float64 and np.array_equal(got["tensor"], [1.0, 1.0])
    assert echo.callables() == ["Tensor", "echo", "instance", "objects", "scalars", "writeable"]


def test_what_cannot_come_back_is_one_line_naming_the_place(echo):
    with pytest.raises(InputError, match=r"echo.py: the result\['loss'\] is an array of Python objects"):
        echo.call("objects")
    with pytest.raises(InputError, match=r"echo.py: the result\['dW'\]\[0\] is of type object, not an array"):
        echo.call("instance")
    assert echo.call("writeable", np.ones(1)) is False  # still serving


def test_errors_are_their_line_and_passthrough_types_come_back_as_themselves(tmp_path):
    path = write(
        tmp_path,
        "todo.py",
        "def later():\n    raise NotImplementedError('later')\n\ndef broken():\n    return {}['dW']\n\n"
        "class Model:\n    @staticmethod\n    def double(v):\n        return 2 * v\n",
    )
    with worker.Worker(path) as todo:
        with pytest.raises(NotImplementedError, match="^later$") as err:
            todo.call("later")
        assert err.value.description == f"{path}:2 in later: NotImplementedError: later"
        with pytest.raises(InputError, match=r"todo.py:2 in later: NotImplementedError: later"):
            todo.call("later", passthrough=())
        with pytest.raises(InputError, match=r"todo.py:5 in broken: KeyError: 'dW'"):
            todo.call("broken")
        assert todo.call("Model.double", 21) == 42
        with pytest.raises(InputError, match="todo.py has no gelu_backward: it must define it at module level"):
            todo.require(["later", "gelu_backward"])
        todo.require(["later", "broken"])


def test_import_errors_are_reported_when_it_starts_with_their_line(tmp_path):
    path = write(tmp_path, "needs.py", "import math\nimport not_installed_anywhere\n")
    with pytest.raises(InputError) as err:
        frameworks.resolve(f"numpy,{path}")
    assert str(err.value) == f"{path}:2 in <module>: ModuleNotFoundError: No module named 'not_installed_anywhere'"
    with pytest.raises(InputError, match="has no loss_and_grads"):
        frameworks.resolve(f"numpy,{write(tmp_path, 'empty.py', '')}")
    with pytest.raises(InputError, match="--timeout takes a positive number of seconds; got 0"):
        frameworks.resolve(f"numpy,{path}", timeout=0)

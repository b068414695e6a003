"""Ctrl-C and SIGTERM end a run with one line and exit 130 / 143: no traceback, no temporary file, nothing half-written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.numpy
from conftest import ROOT, needs

from shortcut_gradients import compare

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as a shell reports a killed command


@pytest.mark.parametrize("signum", EXIT, ids=["SIGINT", "SIGTERM"])
def test_a_signal_in_the_middle_of_saving_leaves_no_file(tmp_path, capsys, monkeypatch, signum):
    """The signal lands while the weights are half written: the temporary file goes, the target never appears."""
    needs("numpy")
    real_save = safetensors.numpy.save_file

    def save_then_signal(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        os.kill(os.getpid(), signum)
        time.sleep(1)  # the handler raises during this sleep; reaching the line below would be the bug
        real_save(tensors, filename, metadata)

    monkeypatch.setattr(safetensors.numpy, "save_file", save_then_signal)
    code = compare.main(["--frameworks", "numpy", "--save-weights", str(tmp_path / "w.safetensors")])
    out, err = capsys.readouterr()
    assert code == EXIT[signum]
    assert (out, err) == ("", "compare.py: interrupted\n")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is not compare.terminate  # main put the previous handler back


@pytest.mark.parametrize("signum", EXIT, ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_running_process_is_one_line(tmp_path, signum):
    """The real process, signalled a second in (while it imports the frameworks or works)."""
    needs("numpy"), needs("torch")
    argv = [
        "--layer-sizes",
        "1500,1500",
        "--frameworks",
        "numpy,torch",
        "--quiet",  # no progress lines: stderr is the interruption's one line (and the file's, if saved)
        "--save-weights",
        str(tmp_path / "w.safetensors"),
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "compare.py"), *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # Once it maps torch's library it is inside main, past the interpreter's start-up and under main's handling
    # (a signal before that meets Python's default handler, which no program can turn into one line).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text():
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT[signum], err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["w.safetensors"])  # never a temporary file
    saved = tmp_path / "w.safetensors"
    if saved.exists():  # the signal came after the save: the file is whole, and was confirmed
        assert safetensors.numpy.load_file(saved)["layers.0.0.weight"].shape == (1500, 1500)
        assert (out, err) == (b"", f"wrote {saved}\ncompare.py: interrupted\n".encode())
    else:
        assert (out, err) == (b"", b"compare.py: interrupted\n")

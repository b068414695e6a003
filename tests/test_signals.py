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


HALF_WRITTEN = """
import os, signal, sys, time
from shortcut_gradients.plumbing import files
files.exit_on_signals("prog")

def half_then_signal(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half a file")
    os.kill(os.getpid(), signal.{name})
    time.sleep(5)  # the handler ends the process during this sleep; reaching the line below would be the bug
    print("not interrupted")

print("before", flush=False)  # buffered: the handler flushes what was printed
files.write_atomically(sys.argv[1], half_then_signal)
"""


@pytest.mark.parametrize("signum", EXIT, ids=["SIGINT", "SIGTERM"])
def test_a_command_ends_from_its_handler_and_removes_the_file_being_written(tmp_path, signum):
    """As a command, the handler itself ends the process (an exception raised where the program happens to
    be can land in a framework's C++ and abort or be swallowed): one line, the status, no temporary file."""
    script = HALF_WRITTEN.replace("{name}", signal.Signals(signum).name)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out.bin")], cwd=ROOT, capture_output=True, timeout=60
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (EXIT[signum], b"before\n", b"prog: interrupted\n")
    assert list(tmp_path.iterdir()) == []


def running(path: str) -> list[int]:
    """Process ids of processes running `path` as an argument (Linux's /proc), zombies left out."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if path.encode() in argv and state != "Z":
            found.append(int(pid))
    return found


def test_a_signal_while_a_plug_in_loops_ends_the_run_and_its_worker():
    """The handler exits the process at once: the worker running their loop dies with it (not left spinning)."""
    needs("numpy"), needs("torch")
    loops = str(ROOT / "tests" / "hostile" / "loops.py")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "compare.py"), "--frameworks", f"numpy,{loops}", "--quiet", "--timeout", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not running(loops):
        time.sleep(0.05)
    time.sleep(1)  # past its import: in the loop
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (143, b"", b"compare.py: interrupted\n")
    deadline = time.monotonic() + 5
    while running(loops) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(loops) == []


def test_a_signal_the_process_was_started_ignoring_stays_ignored():
    """A job started in the background by a script ignores Ctrl-C, and the command keeps it so."""
    script = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell leaves it for `command &`\n"
        "from shortcut_gradients.plumbing import files\n"
        "files.exit_on_signals('prog')\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.3)\n"
        "print('still here', files.exits_on(signal.SIGINT), files.exits_on(signal.SIGTERM))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"still here False True\n", b"")

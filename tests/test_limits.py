"""Limits checked before any work (ranges, empty batches, dtype range, memory) and overflow reported as a verdict."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, needs
from safetensors.numpy import save_file

from shortcut_gradients import compare
from shortcut_gradients.plumbing import resources, weights


@pytest.fixture(autouse=True)
def frameworks_present():
    needs("numpy"), needs("torch")


def book_file(path, **replace):
    params = weights.seeded_params((3, 3, 3, 3, 3, 1), 123)
    tensors = {f"layers.{i}.0.{k}": a for i, (W, b) in enumerate(params) for k, a in (("weight", W), ("bias", b))}
    tensors |= {"input": np.array([[1.0, 0.0, -1.0]], np.float32), "target": np.zeros((1, 1), np.float32)}
    save_file(tensors | replace, path)
    return str(path)


REFUSED = {
    "seed-past-64-bits": (["--seed", str(2**64)], "--seed must be between 0 and 2**64 - 1"),
    "negative-seed": (["--seed", "-1"], "--seed must be between 0 and 2**64 - 1"),
    "size-past-64-bits": (["--layer-sizes", f"3,{2**70},1"], "larger than the largest layer size supported"),
    "too-big-for-memory": (["--layer-sizes", "100000,100000,1"], "GiB available: use a smaller network or batch"),
}


@pytest.mark.parametrize("argv, message", REFUSED.values(), ids=REFUSED.keys())
def test_out_of_range_is_refused_before_any_work(argv, message, capsys):
    assert compare.main(argv + ["--frameworks", "numpy"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err


def test_empty_batch_is_refused(tmp_path, capsys):
    path = book_file(
        tmp_path / "w.safetensors", input=np.zeros((0, 3), np.float32), target=np.zeros((0, 1), np.float32)
    )
    assert compare.main(["--weights", path, "--frameworks", "numpy"]) == 2
    assert "input has shape (0, 3): an empty batch" in capsys.readouterr().err


def test_a_value_past_float32s_range_is_refused_in_float32_only(tmp_path, capsys):
    path = book_file(tmp_path / "w.safetensors", target=np.array([[1e300]]))
    assert compare.main(["--weights", path, "--frameworks", "numpy"]) == 2
    assert "target holds 1e+300, beyond float32's largest value" in capsys.readouterr().err
    assert compare.main(["--weights", path, "--frameworks", "numpy", "--dtype", "float64", "--shortcut", "on"]) == 1
    assert "OVERFLOW" in capsys.readouterr().out  # (1e300)^2 overflows float64 in the loss


def test_overflow_is_a_verdict_with_advice_and_no_warning(tmp_path, capsys):
    path = book_file(tmp_path / "w.safetensors", target=np.array([[3e38]], np.float32))
    assert compare.main(["--weights", path, "--frameworks", "torch,numpy"]) == 1
    out, err = capsys.readouterr()
    assert err == ""  # no RuntimeWarning with a source line
    assert out.strip().splitlines()[-1].startswith("OVERFLOW: loss without shortcut is inf or NaN in torch, numpy")
    assert "try --dtype float64" in out
    assert compare.main(["--weights", path, "--frameworks", "torch,numpy", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)  # strict JSON: overflowed values are null
    assert report["runs"][0]["overflow"] == {"tensor": "loss", "frameworks": ["torch", "numpy"]}
    assert report["runs"][0]["frameworks"]["numpy"]["loss"] is None


def test_the_memory_estimate_grows_with_rows_and_widths():
    small = resources.bytes_needed((3, 3, 1), 1, 4)
    assert resources.bytes_needed((3, 3, 1), 1000, 4) > small
    assert resources.bytes_needed((300, 300, 1), 1, 4) > small


def test_jax_refuses_a_network_it_would_take_minutes_to_compile(capsys):
    """Alternating widths cannot be scanned: 300 such layers are refused up front for jax only,
    while a 512-layer run of equal widths is scanned and passes the check."""
    alternating = ",".join(["2", "3"] * 150 + ["2"])
    assert compare.main(["--layer-sizes", alternating, "--frameworks", "torch,jax"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "jax: 300 layers are not in runs of 8 or more" in err
    resources.check_jax_layers((1,) * 513, 8)  # one run of 512: scanned
    resources.check_jax_layers((2, 3) * 128 + (2,), 8)  # 256 unscanned: at the limit, allowed
    with pytest.raises(resources.InputError):
        resources.check_jax_layers((2, 3) * 129, 8)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--frameworks", ""], "--frameworks is empty"),
        (["--weights", "."], "weights file . is not a file"),
        (
            ["--sweep-widths", "2", "--sweep-depth", "2:4"],
            "--sweep-widths takes distinct comma-separated widths from 3",
        ),
        (["--sweep-seeds", "1", "--sweep-depth", "2:4"], "--sweep-seeds takes a number of networks per depth from 2"),
        (["--sweep-depth", "1:4"], "--sweep-depth needs 2 <= FIRST"),
    ],
    ids=["empty-frameworks", "weights-a-folder", "sweep-width-2", "sweep-one-seed", "sweep-depth-1"],
)
def test_more_bad_input_is_one_line(argv, message, capsys):
    assert compare.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err


def test_explain_says_smaller_when_the_shortcut_made_layer_0s_gradient_smaller(capsys):
    """seed 7: with the shortcut, layer 0's dL/dW is 0.04875 times the plain network's."""
    assert compare.main(["--explain", "--seed", "7", "--frameworks", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "times smaller (0.04875 times)" in out and "makes the difference" not in out


# ---- the work estimated up front: memory (the address-space limit included) and time --------------------------------


def test_the_time_estimate_grows_with_layers_rows_widths_frameworks_and_settings():
    def seconds(sizes, rows=1, frameworks=3, settings=2):
        return resources.seconds_needed(sizes, rows, frameworks=frameworks, settings=settings)

    base = seconds((3, 3, 1))
    assert seconds((3,) * 1000 + (1,)) > base
    assert seconds((3, 3, 1), rows=10_000) > base
    assert seconds((3000, 3000, 1)) > base
    assert seconds((3, 3, 1), frameworks=1) < base and seconds((3, 3, 1), settings=1) < base
    # pre-LN's bound is measured with the readable reference, several times fast.py's step
    plain = resources.seconds_needed((128,) * 4, 4096, frameworks=3, settings=2)
    assert resources.seconds_needed((128,) * 4, 4096, frameworks=3, settings=2, norm="pre") > 2 * (plain - 3)


LONG = {
    "100000-layers": (["--layer-sizes", ",".join(["1"] * 100_001)], "this would take about"),
    "big-depth-study": (["--sweep-depth", "2:256", "--sweep-seeds", "4096", "--sweep-widths", "3"], "this would take about"),
}


@pytest.mark.parametrize("argv, message", LONG.values(), ids=LONG.keys())
def test_long_work_is_refused_up_front_unless_asked_for(argv, message, capsys):
    """Estimated in a blink from the sizes, refused with the flag that would run it anyway."""
    assert compare.main(argv + ["--frameworks", "numpy"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and message in err and "pass --allow-long to run it anyway" in err


def test_accepted_long_work_shows_progress(capsys, monkeypatch):
    monkeypatch.setattr(compare, "PROGRESS_EVERY", 0.05)
    with compare.progress(estimate=compare.PROGRESS_SECONDS + 1):
        time.sleep(0.3)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"compare.py: about {compare.PROGRESS_SECONDS + 1} s of work, estimated from the sizes"
    assert len(lines) >= 3 and all(line.startswith("compare.py: working, ") for line in lines[1:])
    with compare.progress(estimate=compare.PROGRESS_SECONDS):  # short work says nothing
        time.sleep(0.1)
    assert capsys.readouterr().err == ""


def test_a_tight_address_space_limit_is_refused_before_any_framework_loads(tmp_path):
    """`ulimit -v` 1 GiB: importing jax alone would map more, and abort from C++ (no Python line at all)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    proc = subprocess.run(
        [sys.executable, str(ROOT / "compare.py")], capture_output=True, text=True, cwd=ROOT, preexec_fn=limit
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "over this process's limit of 1 GiB (ulimit -v)" in proc.stderr


def test_the_address_space_check_counts_the_arrays_and_frameworks_not_yet_imported(monkeypatch):
    monkeypatch.setattr(resources, "address_space_limit", lambda: resources.address_space_used() + 2**20)
    resources.check_memory((3, 3, 1), 1, "float32", frameworks=("mine.py",))  # a user's code: its own process
    with pytest.raises(resources.InputError, match=r"ulimit -v"):
        resources.check_memory((1000, 1000, 1), 1, "float32", frameworks=("mine.py",))  # 1e6 weights: over 1 MiB
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    assert resources.address_space_needed(("jax",)) >= resources.FRAMEWORK_ADDRESS_SPACE["jax"]
    with pytest.raises(resources.InputError, match=r"ulimit -v"):
        resources.check_memory((3, 3, 1), 1, "float32", frameworks=("jax",))


def test_running_out_of_memory_anyway_is_one_line(capsys, monkeypatch):
    """Past the estimate (another process took the memory meanwhile): one line, exit 2, not a traceback."""
    from shortcut_gradients.verdict import run as run_module

    def out_of_memory(inputs, **options):
        raise MemoryError

    monkeypatch.setattr(run_module, "run", out_of_memory)
    assert compare.main(["--frameworks", "numpy"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("compare.py: error: out of memory")


FREED_PAGES = """
import numpy as np
from shortcut_gradients.plumbing import resources
def rss():  # MiB resident
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024
def kept_after_a_free():  # MiB still resident after a 64 MiB array is touched and freed
    before = rss()
    a = np.ones(2**23)
    del a
    return rss() - before
left_to_glibc = kept_after_a_free()
start = rss()
resources.keep_freed_memory()
kept = kept_after_a_free()
resources.give_back_freed_memory()
print(left_to_glibc, kept, rss() - start)
"""


@pytest.mark.skipif(resources.glibc() is None, reason="glibc's mallopt and malloc_trim: elsewhere both do nothing")
def test_freed_pages_stay_for_the_next_arrays_until_given_back():
    """compare.py keeps a freed array's pages for the next one (no fresh page faults per perturbed
    run) and gives them back between stages; left to glibc, a freed 64 MiB array goes back at once."""
    done = subprocess.run([sys.executable, "-c", FREED_PAGES], cwd=ROOT, capture_output=True, text=True)
    left_to_glibc, kept, after_giving_back = map(float, done.stdout.split())
    assert left_to_glibc < 16 and kept > 48 and after_giving_back < 16


HUGE_PAGES = """
import numpy as np
from shortcut_gradients.plumbing import resources
def huge_mib():  # MiB of the process's anonymous memory in transparent huge pages
    rollup = open("/proc/self/smaps_rollup").read().splitlines()
    return next(int(line.split()[1]) for line in rollup if line.startswith("AnonHugePages")) / 1024
def grown_by_a_fresh_array():  # MiB more in huge pages while a fresh 64 MiB array is touched
    before = huge_mib()
    a = np.ones(2**23)
    grown = huge_mib() - before
    del a
    return grown
left_to_numpy = grown_by_a_fresh_array()
resources.plain_pages()
print(left_to_numpy, grown_by_a_fresh_array())
"""


def transparent_huge_pages() -> str:
    """The kernel's transparent huge page setting ("always", "madvise", "never"), or "" where unknown."""
    try:
        setting = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""
    return setting[setting.find("[") + 1 : setting.find("]")]


@pytest.mark.skipif(transparent_huge_pages() != "madvise", reason="huge pages only when asked: elsewhere NumPy's hint changes nothing")
def test_compares_fresh_arrays_get_plain_pages():
    """compare.py stops NumPy's huge-page hint: a fresh 64 MiB array then takes no huge pages, where
    the kernel gives them only when asked (and compacts memory on the fault to find them)."""
    done = subprocess.run([sys.executable, "-c", HUGE_PAGES], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    left_to_numpy, plain = map(float, done.stdout.split())
    assert plain < 2, (left_to_numpy, plain)

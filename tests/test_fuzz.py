"""compare.py under fuzzed flags and weight files: every run ends in 0, 1 or 2, one readable line on error.

Hypothesis draws flag values (sizes up to far past the machine's memory, seeds past 64 bits,
unknown names) and safetensors files (odd shapes and dtypes, extreme and non-finite values,
empty batches, missing and extra tensors). Whatever it draws, compare.py must end with exit 0
or 1 and a verdict, or exit 2 with exactly one line on stderr; never a traceback, never a
file half-written, and never a run that outgrows a fixed time or memory bound (a refusal up
front is the answer to a network too large).
"""

import contextlib
import io
import resource
import time

import numpy as np
import pytest
from conftest import needs
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from shortcut_gradients import compare

MAX_SECONDS = 60  # a hang detector for one run, far above the slowest legitimate draw (a few seconds)
MAX_RSS_GIB = 6  # the test process's peak: a draw that allocates its way past this was not refused in time

VALUES = st.sampled_from([0.0, 1.0, -0.5, 1e-30, 3e38, -3e38, 1e300, np.inf, -np.inf, np.nan])
WIDTH = st.integers(1, 4)


@st.composite
def weight_files(draw):
    """{name: array} for a safetensors file: mostly a valid network, bent in one or two ways."""
    sizes = draw(st.lists(WIDTH, min_size=2, max_size=4))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int32]))
    tensors = {}
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        tensors[f"layers.{i}.0.weight"] = np.full((d_out, d_in), 0.3)
        tensors[f"layers.{i}.0.bias"] = np.zeros(d_out)
    rows = draw(st.sampled_from([(1,), (0,), (3,), (2, 2)]))
    tensors["input"] = np.ones(rows + (sizes[0],))
    tensors["target"] = np.zeros(rows + (sizes[-1],))
    name = draw(st.sampled_from(sorted(tensors)))
    bend = draw(st.sampled_from(["value", "missing", "extra", "shape", "none"]))
    if bend == "value" and tensors[name].size:
        tensors[name] = tensors[name].copy()
        tensors[name].flat[0] = draw(VALUES)
    elif bend == "missing":
        del tensors[name]
    elif bend == "extra":
        tensors["layers.0.1.weight"] = np.ones((2, 2))
    elif bend == "shape":
        tensors[name] = np.ones(draw(st.lists(WIDTH, min_size=1, max_size=3)))
    with np.errstate(over="ignore", invalid="ignore"):
        return {k: np.ascontiguousarray(v.astype(dtype)) for k, v in tensors.items()}


FLAGS = st.fixed_dictionaries(
    {},
    optional={
        "--layer-sizes": st.one_of(
            st.lists(st.integers(1, 5), min_size=1, max_size=5).map(lambda s: ",".join(map(str, s))),
            st.sampled_from(["100000,100000,1", "3," + "9" * 30 + ",1", "0,3", "-1,2", "3;3", ""]),
        ),
        "--seed": st.one_of(st.integers(0, 2**32), st.sampled_from(["-1", str(2**64), "1e3", "x"])),
        "--gelu": st.sampled_from(["tanh", "exact", "precise"]),
        "--dtype": st.sampled_from(["float32", "float64", "float16"]),
        "--shortcut": st.sampled_from(["on", "off", "both", "maybe"]),
        "--frameworks": st.sampled_from(["numpy", "torch,numpy", "numpy,numerical", "numpy,numpy", "mxnet", ""]),
    },
)


def compare_main(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = compare.main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True, scope="module")
def frameworks_present():
    needs("numpy"), needs("torch")


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(flags=FLAGS, weights=st.one_of(st.none(), weight_files()), save=st.booleans())
def test_every_run_ends_in_a_verdict_or_one_line(tmp_path_factory, flags, weights, save):
    folder = tmp_path_factory.mktemp("fuzz")
    argv = [a for flag, value in flags.items() for a in (flag, str(value))]
    if weights is not None:
        save_file(weights, folder / "w.safetensors")
        argv += ["--weights", str(folder / "w.safetensors")]
    if save:
        argv += ["--save-weights", str(folder / "saved.safetensors")]
    before = {p.name for p in folder.iterdir()}

    start = time.perf_counter()
    code, out, err = compare_main(argv)
    assert time.perf_counter() - start < MAX_SECONDS, argv
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss < MAX_RSS_GIB * 2**20, argv

    event(f"exit {code}")
    assert "Traceback" not in err and "Warning" not in err, (argv, err)
    if code == 2:
        assert out == "" and err.count("\n") == 1 and err.startswith("compare.py: error: "), (argv, err)
        assert {p.name for p in folder.iterdir()} == before, argv  # nothing written
    else:
        assert code in (0, 1), (argv, code, err)
        last = out.strip().splitlines()[-1]
        assert last.startswith(("AGREE", "DISAGREE", "OVERFLOW", "ONLY")), (argv, last)
        if save:
            assert (folder / "saved.safetensors").is_file()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

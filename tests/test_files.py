"""Files nothing can lose: outputs checked before any work, never over an input, written atomically, each confirmed.

A refused run exits 2 with one line, leaves its input byte for byte as it was and leaves nothing in the folder.
"""

import json
import os

import numpy as np
import pytest
from conftest import needs

from shortcut_gradients import compare
from shortcut_gradients.plumbing import files, weights
from shortcut_gradients.plumbing.config import InputError


def run(argv, capsys):
    code = compare.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder) -> dict:
    """{relative path: bytes} of every file under folder (links as their target's text)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        found[key] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return found


@pytest.fixture
def saved(tmp_path, capsys):
    """A float64 weights file of a (4, 3, 2) network, written by compare.py, and the folder it is in."""
    needs("torch")
    path = tmp_path / "net.safetensors"
    code, _, err = run(["--layer-sizes", "4,3,2", "--dtype", "float64", "--save-weights", str(path)], capsys)
    assert code == 0, err
    return path


def refused(argv, tmp_path, capsys, message):
    """The run exits 2 with `message` in one line on stderr, nothing on stdout, and the folder unchanged."""
    before = snapshot(tmp_path)
    code, out, err = run(argv + ["--frameworks", "numpy"], capsys)
    assert (code, out) == (2, ""), err
    assert err.count("\n") == 1 and err.startswith("compare.py: error: ") and message in err, err
    assert snapshot(tmp_path) == before  # the input byte for byte, and no new or temporary file


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink"])
def test_saving_over_the_weights_file_is_refused_by_any_name(saved, tmp_path, capsys, alias):
    target = {"same": saved, "symlink": tmp_path / "link.safetensors", "hardlink": tmp_path / "hard.safetensors"}[alias]
    if alias == "symlink":
        target.symlink_to(saved.name)
    if alias == "hardlink":
        os.link(saved, target)
    argv = ["--weights", str(tmp_path / "link.safetensors" if alias == "symlink" else saved)]
    refused(
        argv + ["--save-weights", str(saved if alias == "symlink" else target)],
        tmp_path,
        capsys,
        "is the --weights file",
    )


@pytest.mark.parametrize("flag", ["--plot", "--side-by-side"])
def test_a_picture_or_page_over_the_weights_file_is_refused(tmp_path, capsys, flag):
    pytest.importorskip("matplotlib" if flag == "--plot" else "pygments")
    suffix = ".png" if flag == "--plot" else ".html"
    path = tmp_path / f"w{suffix}"
    weights.save_weights(path, weights.load_weights(weights.FIXTURE)[0], np.ones((1, 3)), np.zeros((1, 1)))
    refused(["--weights", str(path), flag, str(path)], tmp_path, capsys, "is the --weights file")


def test_two_outputs_naming_one_file_are_refused(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = str(tmp_path / "same.png")
    refused(["--plot", path, "--save-weights", path], tmp_path, capsys, "--save-weights and --plot both name")


REFUSED_PATHS = {
    "empty": (lambda p: "", "was given an empty file name"),
    "folder": (lambda p: str(p), "names a folder"),
    "trailing-slash": (lambda p: str(p / "new") + "/", "names a folder"),
    "device": (lambda p: "/dev/null", "is not a regular file"),
    "symlink": (lambda p: (p / "link.png").symlink_to(p / "elsewhere.png") or str(p / "link.png"), "symbolic link"),
    "missing-folder": (lambda p: str(p / "no" / "x.png"), "does not exist"),
    "wrong-suffix": (lambda p: str(p / "x.jpg"), "give a name ending in .png"),
}


@pytest.mark.parametrize("make, message", REFUSED_PATHS.values(), ids=REFUSED_PATHS.keys())
def test_an_output_path_that_is_not_a_new_or_regular_file_is_refused(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        files.check_output_path(make(tmp_path), "--plot", ".png")
    files.check_output_path(tmp_path / "x.png", "--plot", ".png")  # a new file in a writable folder is fine


@pytest.mark.parametrize("flag", ["--save-weights", "--plot", "--sweep-plot", "--side-by-side", "--weights"])
def test_an_empty_path_is_refused_on_the_command_line(tmp_path, capsys, flag):
    refused([flag, ""], tmp_path, capsys, f"{flag} was given an empty file name")


@pytest.mark.parametrize("exception", [KeyboardInterrupt, OSError, SystemExit])
def test_an_interrupted_write_leaves_neither_a_file_nor_a_temporary_one(tmp_path, exception):
    (tmp_path / "keep.txt").write_text("old")

    def half_then_fail(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise exception

    with pytest.raises(exception):
        files.write_atomically(tmp_path / "out.bin", half_then_fail)
    with pytest.raises(exception):
        files.write_atomically(tmp_path / "keep.txt", half_then_fail)
    assert snapshot(tmp_path) == {"keep.txt": b"old"}  # the old file as it was, nothing beside it


def test_each_written_file_is_confirmed_on_stderr_and_the_json_is_unchanged(tmp_path, capsys):
    needs("torch")
    path = tmp_path / "w.safetensors"
    code, plain, _ = run(["--json", "--frameworks", "numpy,torch"], capsys)
    code_saved, out, err = run(["--json", "--frameworks", "numpy,torch", "--save-weights", str(path)], capsys)
    assert code == code_saved == 0
    assert err == f"wrote {path}\n"
    assert out == plain and json.loads(out)["agree"] is True  # stdout is the report alone
    assert snapshot(tmp_path).keys() == {"w.safetensors"}


# ---- the weights file: checked from its header, every name spelled one way ----------------------------------------


def raw_safetensors(path, entries: dict, data: bool = True):
    """A safetensors file written byte by byte: {name: (dtype, shape, bytes)}; data=False leaves the data out."""
    header, offset = {}, 0
    for name, (dtype, shape, nbytes) in entries.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + (b"\0" * offset if data else b""))
    return path


@pytest.mark.parametrize("dtype", [d for d in weights.SAFETENSORS_DTYPES if d not in ("F32", "F64")] + ["Q7"])
def test_every_dtype_but_float32_and_float64_is_one_line(tmp_path, dtype):
    path = raw_safetensors(
        tmp_path / "w.safetensors", {"layers.0.0.weight": (dtype, (1, 3), 3), "layers.0.0.bias": ("F32", (1,), 4)}
    )
    with pytest.raises(InputError, match=r"tensor layers\.0\.0\.weight has dtype .*; expected float32 or float64"):
        weights.read_layout(path)


def test_a_name_given_twice_in_the_header_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    text = (
        b'{"layers.0.0.weight": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]},'
        b' "layers.0.0.bias": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},'
        b' "layers.0.0.weight": {"dtype": "F32", "shape": [1, 1], "data_offsets": [8, 12]}}'
    )
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"\0" * 12)
    with pytest.raises(InputError, match="names 'layers.0.0.weight' twice"):
        weights.read_layout(path)


def test_a_file_too_big_to_run_is_refused_from_its_header_before_its_data_is_read(tmp_path, capsys):
    """The header promises a (200000, 200000) float64 layer (320 GB); the file holds no data at all, so
    a refusal about memory (not about a short file) shows that nothing past the header was read."""
    path = raw_safetensors(
        tmp_path / "huge.safetensors",
        {"layers.0.0.weight": ("F64", (200_000, 200_000), 8 * 200_000**2), "layers.0.0.bias": ("F64", (200_000,), 0)},
        data=False,
    )
    refused(["--weights", str(path)], tmp_path, capsys, "GiB available: use a smaller network or batch")

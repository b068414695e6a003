"""A plain install (a wheel, not the editable checkout): what it puts in site-packages, and that it runs elsewhere.

The wheel is built without dependencies and unpacked into a folder that goes first on PYTHONPATH, so
the commands below import the wheel's files, not the checkout's, from a folder outside the repository.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The top-level names a wheel may install: the three panes, the finite-difference oracle, one namespace.
TOP_LEVEL = {"impl_torch", "impl_jax", "impl_numpy", "impl_numerical", "shortcut_gradients"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    (found,) = out.glob("shortcut_gradients-*.whl")
    return found


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(target)
    return target


def test_the_wheel_installs_the_panes_the_oracle_and_one_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == TOP_LEVEL
    assert "shortcut_gradients/fixtures/book_seed123.safetensors" in names  # the book's weights ship
    assert "shortcut_gradients/exercises/backprop.py" in names  # the skeleton the notebooks and grader use
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "shortcut-compare = shortcut_gradients.compare:main_exit" in scripts
    assert "shortcut-grade = shortcut_gradients.grader.grade:main_exit" in scripts


def run_elsewhere(unpacked: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(unpacked)}
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_installed_checker_runs_outside_the_repository(unpacked, tmp_path):
    done = run_elsewhere(unpacked, tmp_path, "-m", "shortcut_gradients.compare", "--json", "--frameworks", "numpy,numpy-fast")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["agree"] and report["config"]["book_configuration"]  # the fixture was found in the wheel
    where = run_elsewhere(unpacked, tmp_path, "-c", "import shortcut_gradients, impl_numpy; print(shortcut_gradients.__file__, impl_numpy.__file__)")
    assert all(path.startswith(str(unpacked)) for path in where.stdout.split()), where.stdout


def test_the_installed_grader_grades_a_copy_of_the_skeleton_outside_the_repository(unpacked, tmp_path):
    (tmp_path / "mine.py").write_text((ROOT / "exercises" / "backprop.py").read_text())
    done = run_elsewhere(unpacked, tmp_path, "-m", "shortcut_gradients.grader.grade", "mine.py")
    assert done.returncode == 1, done.stderr  # nothing written yet: every step todo, not a crash
    assert "0 of 6 steps ok" in done.stdout

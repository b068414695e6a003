"""Shared test fixtures: the frameworks, and the rule that a missing framework is a failure.

A test that needs a framework asks for it with `needs("jax")`. If the framework is not
installed the test fails, unless ALLOW_MISSING_FRAMEWORKS=1 is set, in which case it is
skipped: a partial install can run what it has, but no run passes by silently skipping.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shortcut_gradients.plumbing import frameworks  # noqa: E402


def needs(name: str):
    """The implementation's loss_and_grads, or a failure (a skip only when allowed) if not installed."""
    missing = [m for m in frameworks.REQUIRES[name] if importlib.util.find_spec(m) is None]
    if missing:
        message = f"{name} needs {', '.join(missing)}: {frameworks.INSTALL[name]}"
        if os.environ.get("ALLOW_MISSING_FRAMEWORKS") == "1":
            pytest.skip(message)
        pytest.fail(message + " (set ALLOW_MISSING_FRAMEWORKS=1 to skip instead)")
    return frameworks.load(name)


# The order the files run in, longest first (the time each took on this project's 2-core machine, setup
# included); files not named follow, in their own order, and take a second or less. pytest-xdist runs each
# file whole on one worker (--dist loadfile in pyproject.toml: a file's module fixtures, JAX's compiled
# programs and cached measurements are then made once, not once per worker) and hands the next file to the
# first worker that is free, so the run ends on short files, with the two workers finishing together.
LONGEST_FIRST = (
    "test_exercises.py",  # the slips catalogue: every slip graded, each in a process of its own
    "test_notebooks.py",  # both notebooks executed in two kernels
    "test_agreement.py",
    "test_isolation.py",
    "test_byo.py",
    "test_layernorm.py",
    "test_course.py",
    "test_deep_jax.py",
    "test_properties.py",
    "test_faults.py",
    "test_tolerance.py",
    "test_install.py",
    "test_book_numbers.py",
    "test_cli.py",
    "test_contract.py",
    "test_signals.py",
    "test_plots.py",
    "test_torch_specifics.py",
    "test_bench.py",
    "test_fuzz.py",
    "test_files.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: a file keeps its order

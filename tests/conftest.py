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

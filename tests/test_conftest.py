"""A missing framework fails its tests; only ALLOW_MISSING_FRAMEWORKS=1 turns that into a skip."""

import importlib.util

import pytest
from conftest import needs


@pytest.fixture
def jax_missing(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "flax" else real_find_spec(name, *a)
    )


def test_missing_framework_fails(jax_missing, monkeypatch):
    monkeypatch.delenv("ALLOW_MISSING_FRAMEWORKS", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"pip install jax flax"):
        needs("jax")


def test_missing_framework_skips_only_when_allowed(jax_missing, monkeypatch):
    monkeypatch.setenv("ALLOW_MISSING_FRAMEWORKS", "1")
    with pytest.raises(pytest.skip.Exception, match=r"pip install jax flax"):
        needs("jax")

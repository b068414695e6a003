"""What the torch version must get right beyond the numbers: no global state moved, at import or per call."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, needs

from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params


def book_call(**overrides):
    loss_and_grads = needs("torch")
    params = seeded_params((3, 3, 3, 3, 3, 1), 123)
    kw = dict(use_shortcut=True, gelu_form="tanh", dtype="float32") | overrides
    return loss_and_grads(params, default_input(3), default_target(1), **kw)


def tf32_flags():
    import torch

    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.fixture
def tf32_on():
    """Both TF32 flags on, as a caller may have set them; the test process's own settings are restored after.

    (monkeypatch cannot undo these: torch.backends exposes them through __setattr__ hooks, not attributes.)"""
    import torch

    saved = tf32_flags()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_call_draws_nothing_from_the_global_rng(dtype):
    """The model is built on the meta device and given the shared weights: no nn.Linear init is drawn."""
    import torch

    torch.manual_seed(0)
    before = torch.get_rng_state()
    result = book_call(dtype=dtype)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(g.dtype == np.dtype(dtype) for g in result["dW"] + result["db"] + [result["dx"]])


def test_the_parameters_are_the_shared_weights_not_a_random_init():
    """Two calls in a row give the same gradients: nothing of a fresh init leaks into them."""
    first, second = book_call(), book_call()
    for a, b in zip(first["dW"] + first["db"], second["dW"] + second["db"]):
        np.testing.assert_array_equal(a, b)


def test_tf32_is_off_inside_the_call_and_put_back_after(monkeypatch, tf32_on):
    import impl_torch.model

    seen = []
    real_mse_loss = impl_torch.model.mse_loss
    monkeypatch.setattr(impl_torch.model, "mse_loss", lambda *a: seen.append(tf32_flags()) or real_mse_loss(*a))
    book_call()
    assert seen == [(False, False)]  # full float32 matmuls for the forward and backward
    assert tf32_flags() == (True, True)  # and the caller's settings back afterwards


def test_flags_are_put_back_when_the_call_fails(tf32_on):
    with pytest.raises(ValueError, match="unknown GELU form"):
        book_call(gelu_form="erf")
    assert tf32_flags() == (True, True)


def test_importing_and_calling_leave_the_process_wide_flags_alone():
    """In a fresh process, where nothing imported impl_torch yet: flags set before the import survive it."""
    needs("torch")
    script = """
import torch
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
import impl_torch
from shortcut_gradients.plumbing.weights import default_input, default_target, seeded_params
flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
assert flags() == (True, True), f"import changed the flags: {flags()}"
impl_torch.loss_and_grads(seeded_params((3, 3, 1), 0), default_input(3), default_target(1),
                          use_shortcut=True, gelu_form="tanh", dtype="float32")
assert flags() == (True, True), f"the call changed the flags: {flags()}"
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

"""The weights file format, the committed fixture and the atomic save."""

import numpy as np
import pytest
from conftest import needs

from shortcut_gradients.plumbing import weights
from shortcut_gradients.plumbing.config import BOOK_LAYER_SIZES, BOOK_SEED, InputError


def test_fixture_matches_torch_seeded_init():
    """The committed book weights are what torch.manual_seed(123) + the book's nn.Linear layers draw."""
    needs("torch")
    import torch

    torch.manual_seed(BOOK_SEED)
    layers = [torch.nn.Linear(i, o) for i, o in zip(BOOK_LAYER_SIZES[:-1], BOOK_LAYER_SIZES[1:])]
    params, x, target = weights.load_weights(weights.FIXTURE)
    assert len(params) == len(layers) == 5
    for (W, b), layer in zip(params, layers):
        assert W.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(W, layer.weight.detach().numpy())  # bit for bit
        np.testing.assert_array_equal(b, layer.bias.detach().numpy())
    np.testing.assert_array_equal(x, [[1.0, 0.0, -1.0]])
    np.testing.assert_array_equal(target, [[0.0]])


def test_seeded_params_for_other_sizes_come_from_torch():
    needs("torch")
    params = weights.seeded_params((4, 2, 1), 7)
    assert [W.shape for W, _ in params] == [(2, 4), (1, 2)]
    again = weights.seeded_params((4, 2, 1), 7)
    other = weights.seeded_params((4, 2, 1), 8)
    np.testing.assert_array_equal(params[0][0], again[0][0])
    assert not np.array_equal(params[0][0], other[0][0])


def test_default_input_is_the_books():
    np.testing.assert_array_equal(weights.default_input(3), [[1.0, 0.0, -1.0]])
    np.testing.assert_array_equal(weights.default_target(1), [[0.0]])
    assert weights.default_input(5).shape == (1, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_save_then_load_round_trips(tmp_path, dtype):
    params = [
        (np.arange(6, dtype=dtype).reshape(2, 3), np.ones(2, dtype)),
        (np.ones((1, 2), dtype), np.zeros(1, dtype)),
    ]
    x, target = np.ones((4, 2, 3), dtype), np.zeros((1, 1), dtype)
    path = tmp_path / "w.safetensors"
    weights.save_weights(path, params, x, target)
    loaded, lx, lt = weights.load_weights(path)
    for (W, b), (lW, lb) in zip(params, loaded):
        np.testing.assert_array_equal(W, lW)
        np.testing.assert_array_equal(b, lb)
        assert lW.dtype == dtype
    np.testing.assert_array_equal(x, lx)
    np.testing.assert_array_equal(target, lt)


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    import safetensors.numpy

    def broken_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken_save)
    path = tmp_path / "w.safetensors"
    with pytest.raises(OSError):
        weights.save_weights(path, weights.load_weights(weights.FIXTURE)[0], np.ones((1, 3)), np.zeros((1, 1)))
    assert list(tmp_path.iterdir()) == []


def test_seeded_params_without_torch_names_the_fix(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch":
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    # The book's configuration needs no torch: it comes from the fixture.
    assert len(weights.seeded_params(BOOK_LAYER_SIZES, BOOK_SEED)) == 5
    with pytest.raises(InputError, match=r"pip install torch==2\.13\.0, or pass --weights FILE"):
        weights.seeded_params((4, 2), 1)

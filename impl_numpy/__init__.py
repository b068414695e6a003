"""NumPy implementation of the book network, backward pass by hand.

model.py is the reference, for reading, and its loss_and_grads is this package's entry
point; fast.py is the same step written for speed (`import impl_numpy.fast`), tested equal.
"""

from . import fast, model
from .model import loss_and_grads

__all__ = ["fast", "loss_and_grads", "model"]

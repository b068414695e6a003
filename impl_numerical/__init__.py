"""The finite-difference oracle: a fourth answer with no backward code at all. See model.py."""

from .model import MAX_ELEMENTS, loss_and_grads

__all__ = ["MAX_ELEMENTS", "loss_and_grads"]

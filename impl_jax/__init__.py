"""jax implementation of the book network: see model.py."""

from .model import loss_and_grads

__all__ = ["loss_and_grads"]

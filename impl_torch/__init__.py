"""torch implementation of the book network: see model.py."""

import torch

from .model import loss_and_grads

# torch's CPU tanh, called for the first time in a process by several threads at once, sometimes
# returns values far off their rounding (44 times it, in 4 or 5 of 12 fresh processes here); after
# one first call on one thread it never has (python -m studies.torch_first_step, docs/tolerances.md).
# So the first call is made here, on one element; erf, the exact form's, likewise.
torch.tanh(torch.zeros(1))
torch.erf(torch.zeros(1))

__all__ = ["loss_and_grads"]

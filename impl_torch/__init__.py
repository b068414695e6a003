"""torch implementation of the book network: see model.py."""

import torch

from .model import loss_and_grads

# torch's CPU tanh, called for the first time in a process by several threads at once, sometimes
# returns values far off their rounding, and after a first call on one thread it has not
# (docs/tolerances.md, python -m studies.torch_first_step). So the first call is made here, on one
# element; erf, the exact form's, likewise.
torch.tanh(torch.zeros(1))
torch.erf(torch.zeros(1))

__all__ = ["loss_and_grads"]

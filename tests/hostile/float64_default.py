"""Hostile: at import, makes float64 torch's default dtype and reseeds torch's generator, which
would change the weights `--seed` draws if it ran in the checker's process. Honest otherwise; its
result is torch tensors, which reach the checker as NumPy arrays of the same dtype."""

import numpy as np
import torch

from impl_numpy import loss_and_grads as reference

torch.set_default_dtype(torch.float64)
torch.manual_seed(0)


def _tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))  # keeps the array's dtype, whatever the default


def loss_and_grads(params, x, target, **kw):
    result = reference(params, x, target, **kw)
    return {key: [_tensor(a) for a in v] if isinstance(v, list) else _tensor(v) for key, v in result.items()}

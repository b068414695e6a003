"""A fifth implementation: the network as a pure function of its parameters, differentiated by torch.func.

No nn.Module and no .backward(): torch.func.grad_and_value over (params, x), as JAX would.
Returns only the required keys (dy and dz are optional in docs/contract.md).
"""

import numpy as np
import torch
from torch.func import grad_and_value


def _gelu(z: torch.Tensor, form: str) -> torch.Tensor:
    return torch.nn.functional.gelu(z, approximate="tanh" if form == "tanh" else "none")


def loss_and_grads(params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str) -> dict:
    to = {"float32": torch.float32, "float64": torch.float64}[dtype]
    tensors = [(torch.tensor(np.asarray(W), dtype=to), torch.tensor(np.asarray(b), dtype=to)) for W, b in params]
    x, target = torch.tensor(np.asarray(x), dtype=to), torch.tensor(np.asarray(target), dtype=to)

    def forward(ps, h):
        for W, b in ps:
            a = _gelu(torch.nn.functional.linear(h, W, b), gelu_form)
            h = h + a if use_shortcut and a.shape == h.shape else a
        return h

    def loss_fn(ps, h):
        output = forward(ps, h)
        return torch.mean((output - target) ** 2), output

    (grads, dx), (loss, output) = grad_and_value(loss_fn, argnums=(0, 1), has_aux=True)(tensors, x)
    return {
        "loss": loss.numpy(),
        "output": output.numpy(),
        "dW": [gW.numpy() for gW, _ in grads],
        "db": [gb.numpy() for _, gb in grads],
        "dx": dx.numpy(),
    }

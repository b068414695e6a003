"""The book's ExampleDeepNeuralNetwork in PyTorch; gradients by loss.backward().

Parameter names are the book's state_dict names, `layers.{i}.0.weight` (d_out, d_in)
and `layers.{i}.0.bias` (d_out,), so a book reader's print_gradients loop works as is;
pre-LN adds `norms.{i}.scale` and `norms.{i}.shift` (d_in,).
"""

import math
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

GELU_CUBIC = 0.044715  # the 0.044715 in the tanh approximation (Hendrycks & Gimpel, 2016)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # a Python float: torch applies it in the tensor's dtype
SQRT_1_OVER_2 = math.sqrt(0.5)
LAYER_NORM_EPS = 1e-5  # the book's eps: keeps 1 / sqrt(var + eps) finite on a constant row


def gelu(x: torch.Tensor, form: str) -> torch.Tensor:
    """GELU of x, (...,) -> (...,), written out rather than torch.nn.GELU():
    form "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the book's formula;
    form "exact": 0.5 x (1 + erf(x / sqrt(2))), what nn.GELU() computes by default."""
    if form == "tanh":
        return 0.5 * x * (1.0 + torch.tanh(SQRT_2_OVER_PI * (x + GELU_CUBIC * x**3)))
    if form == "exact":
        return 0.5 * x * (1.0 + torch.erf(x * SQRT_1_OVER_2))
    raise ValueError(f"unknown GELU form {form!r}: use 'tanh' or 'exact'")


class GELU(nn.Module):
    """gelu(x, form) as a module, so each layer is nn.Sequential(nn.Linear, GELU) as in the book."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x, self.form)


class LayerNorm(nn.Module):
    """The book's LayerNorm, written out rather than nn.LayerNorm: x (..., emb_dim), last axis."""

    def __init__(self, emb_dim: int):
        super().__init__()
        self.eps = LAYER_NORM_EPS
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)  # (..., emb_dim)
        return self.scale * norm_x + self.shift


@contextmanager
def full_float32_matmuls():
    """float32 matmuls in full float32 (no TF32), so a run on a GPU agrees with the CPU. The
    flags are process-wide: set for the length of the block and put back after, never at import."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def make_layer(d_in: int, d_out: int, gelu_form: str) -> nn.Sequential:
    """One of the book's layers, nn.Sequential(nn.Linear, GELU): x (..., d_in) -> (..., d_out)."""
    return nn.Sequential(nn.Linear(d_in, d_out), GELU(gelu_form))


class ExampleDeepNeuralNetwork(nn.Module):
    """(LayerNorm +) Linear + GELU layers; use_shortcut: x = x + layer(x) where the shapes match."""

    def __init__(
        self, layer_sizes: list[int], use_shortcut: bool, gelu_form: str, norm: str = "none"
    ):
        """norm "pre": a LayerNorm in front of every layer, x = x + layer(LN(x)), as GPT-2;
        "none": the book's."""
        super().__init__()
        self.use_shortcut = use_shortcut
        sizes = list(zip(layer_sizes[:-1], layer_sizes[1:]))
        self.layers = nn.ModuleList(make_layer(d_in, d_out, gelu_form) for d_in, d_out in sizes)
        if norm not in ("none", "pre"):
            raise ValueError(f"unknown norm {norm!r}: use 'none' or 'pre'")
        # nn.Identity has no parameters: without the norm, the state_dict is the book's.
        norms = (LayerNorm(d_in) if norm == "pre" else nn.Identity() for d_in, _ in sizes)
        self.norms = nn.ModuleList(norms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., sizes[0]) -> (..., sizes[-1])."""
        for norm, layer in zip(self.norms, self.layers):
            layer_output = layer(norm(x))  # (..., d_out)
            if self.use_shortcut and x.shape == layer_output.shape:
                x = x + layer_output  # the shortcut: the input joins the output
            else:
                x = layer_output
        return x

    @classmethod
    def from_params(
        cls, params: list, use_shortcut: bool, gelu_form: str, norm: str, *, dtype: torch.dtype
    ):
        """The network holding params: [(W (d_out, d_in), b (d_out,)), ...] NumPy arrays in torch's
        layout, with norm "pre" (W, b, scale (d_in,), shift (d_in,)); dtype a torch.dtype, which
        the parameters take."""
        sizes = [params[0][0].shape[1]] + [layer[0].shape[0] for layer in params]
        # On the meta device nn.Linear allocates nothing and draws no random init: the caller's
        # torch RNG is untouched. The weights then take the parameters' place, by the book's names.
        with torch.device("meta"):
            model = cls(sizes, use_shortcut, gelu_form, norm)
        weights = {}
        for i, (W, b, *norm_params) in enumerate(params):  # norm_params: pre-LN's (scale, shift)
            # torch's layout as it is: W (d_out, d_in), b (d_out,), scale and shift (d_in,)
            weights[f"layers.{i}.0.weight"] = torch.tensor(np.asarray(W), dtype=dtype)
            weights[f"layers.{i}.0.bias"] = torch.tensor(np.asarray(b), dtype=dtype)
            for name, p in zip(("scale", "shift"), norm_params):
                weights[f"norms.{i}.{name}"] = torch.tensor(np.asarray(p), dtype=dtype)
        # strict: a missing scale or shift is refused, and so is a name the network lacks.
        model.load_state_dict(weights, assign=True)
        return model


def mse_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of (output - target)^2; target broadcasts to output."""
    return torch.mean((output - target) ** 2)


def loss_and_grads(
    params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str, norm: str = "none"
) -> dict:
    """The common entry point: loss, output and every gradient, as NumPy arrays (docs/contract.md).

    params as from_params takes them; x (..., sizes[0]); target broadcastable to the output;
    dtype "float32" or "float64"; gelu_form "tanh" or "exact". Returns {"loss", "output", "dW",
    "db", "dx"}, pre-LN's dscale, dshift."""
    if any(len(layer) != {"none": 2, "pre": 4}.get(norm) for layer in params):
        raise ValueError(
            f"norm={norm!r} takes layers (W, b) for 'none', (W, b, scale, shift) for 'pre'"
        )
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = ExampleDeepNeuralNetwork.from_params(
        params, use_shortcut, gelu_form, norm, dtype=torch_dtype
    )
    x = torch.tensor(np.asarray(x), dtype=torch_dtype, requires_grad=True)
    target = torch.tensor(np.asarray(target), dtype=torch_dtype)

    with full_float32_matmuls():
        output = model(x)
        loss = mse_loss(output, target)
        loss.backward()

    result = {
        "loss": loss.detach().numpy(),
        "output": output.detach().numpy(),
        "dW": [layer[0].weight.grad.numpy() for layer in model.layers],
        "db": [layer[0].bias.grad.numpy() for layer in model.layers],
        "dx": x.grad.numpy(),
    }
    if norm == "pre":
        result |= {
            "dscale": [n.scale.grad.numpy() for n in model.norms],
            "dshift": [n.shift.grad.numpy() for n in model.norms],
        }
    return result

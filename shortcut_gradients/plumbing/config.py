"""Configuration shared by compare.py and the tests: the run's settings and the book's numbers.

Nothing here computes the network; each implementation does that on its own.
"""

from dataclasses import dataclass

BOOK_LAYER_SIZES = (3, 3, 3, 3, 3, 1)  # ExampleDeepNeuralNetwork in section 4.4
BOOK_SEED = 123  # torch.manual_seed(123) before building the model
GELU_FORMS = ("tanh", "exact")
DTYPES = ("float32", "float64")
# "none": the book's network; "pre": a LayerNorm in front of every layer, x = x + GELU(Linear(LN(x))), as GPT-2.
NORMS = ("none", "pre")
FRAMEWORKS = ("torch", "jax", "numpy")
# The fourth column: finite differences of a float64 forward (impl_numerical/model.py), on request only.
ORACLE = "numerical"
SHORTCUT_SETTINGS = {"off": (False,), "on": (True,), "both": (False, True)}

# The book's printed mean |dL/dW| per layer (float32, seed 123, input [[1., 0., -1.]], target
# [[0.]]). "tanh" is the book's own GELU class; "exact" is what the seeds that build the
# network with torch.nn.GELU() print. Keyed by (gelu form, use_shortcut).
BOOK_WEIGHT_GRAD_MEANS = {
    ("tanh", False): (
        0.00020173587836325169,
        0.0001201116101583466,
        0.0007152041653171182,
        0.001398873864673078,
        0.005049646366387606,
    ),
    ("tanh", True): (
        0.22169792652130127,
        0.20694105327129364,
        0.32896995544433594,
        0.2665732502937317,
        1.3258541822433472,
    ),
    ("exact", False): (
        0.0002017411752603948,
        0.00012011770741082728,
        0.0007152437465265393,
        0.0013988513965159655,
        0.005049604922533035,
    ),
    ("exact", True): (
        0.22186796367168427,
        0.207092747092247,
        0.32923877239227295,
        0.2667771875858307,
        1.3268063068389893,
    ),
}
# The book printed float32 means; our three frameworks land within 4.7e-7 relative of them
# (measured with compare.py, both GELU forms, both shortcut settings), while the
# exact-vs-tanh GELU mix-up moves them by 8.2e-6 or more. 5e-6 passes the first and fails
# the second (tests/test_book.py checks both).
BOOK_RTOL = 5e-6


class InputError(Exception):
    """Bad input: compare.py prints the message as one line on stderr and exits 2."""


@dataclass(frozen=True)
class Config:
    """One compare.py run. Defaults are the book's configuration."""

    layer_sizes: tuple[int, ...] = BOOK_LAYER_SIZES
    seed: int = BOOK_SEED  # torch.manual_seed(seed) draws the nn.Linear weights
    shortcut: str = "both"  # "off", "on" or "both": the book shows both, side by side
    gelu: str = "tanh"  # the book's formula; torch.nn.GELU() would be "exact"
    dtype: str = "float32"  # the book's; "float64" agrees to about 1e-13
    frameworks: tuple[str, ...] = FRAMEWORKS
    weights: str | None = None  # a safetensors file in place of the seeded weights
    norm: str = "none"  # the book's network; "pre" puts a LayerNorm in front of every layer (its next step)


def parse_layer_sizes(text: str) -> tuple[int, ...]:
    """'3,3,3,3,3,1' -> (3, 3, 3, 3, 3, 1); at least two positive integers."""
    parts = [p.strip() for p in text.split(",")] if text.strip() else []
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(f"--layer-sizes must be comma-separated integers such as 3,3,3,3,3,1; got {text!r}") from None
    if len(sizes) < 2:
        raise InputError(f"--layer-sizes needs at least two sizes (input and output width), e.g. 3,1; got {text!r}")
    if any(s <= 0 for s in sizes):
        raise InputError(f"--layer-sizes must all be positive integers; got {text!r}")
    return sizes

"""Wrong on purpose: einsum_backprop with the other GELU form (exact where tanh is asked, and tanh where exact is).

It disagrees in every configuration, first at the loss or the output: the forms differ by up to ~1e-3
relative (compare.py must say DISAGREE and exit 1).
"""

import einsum_backprop as right

OTHER = {"tanh": "exact", "exact": "tanh"}


def loss_and_grads(params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str) -> dict:
    return right.loss_and_grads(params, x, target, use_shortcut=use_shortcut, gelu_form=OTHER[gelu_form], dtype=dtype)

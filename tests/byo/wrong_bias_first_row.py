"""Wrong on purpose: einsum_backprop with each bias gradient taken from the first row of dz, not summed over rows.

Right on the book's one-row input, wrong on any batch of two rows or more: the slip that
hides on one row. Its shapes are right, so it passes shortcut_gradients/verdict/contract.py and only the
values disagree, first at the last layer's bias gradient.
"""

import einsum_backprop as right


def loss_and_grads(params, x, target, *, use_shortcut: bool, gelu_form: str, dtype: str) -> dict:
    result = right.loss_and_grads(params, x, target, use_shortcut=use_shortcut, gelu_form=gelu_form, dtype=dtype)
    result["db"] = [dz.reshape(-1, dz.shape[-1])[0] for dz in result["dz"]]  # (d_out,) of row 0 only
    return result

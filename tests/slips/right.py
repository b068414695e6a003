"""tests/slips/mlp.py with no slip: right, so that a slip test that passes is about the slip."""

from mlp import loss_and_grads  # noqa: F401

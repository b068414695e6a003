"""sign: tests/slips/mlp.py with this one slip (the test that compare.py catches and names it)."""

import functools

import mlp

loss_and_grads = functools.partial(mlp.loss_and_grads, slip="sign")

"""Hostile: changes the current folder at import and in every call, to $HOSTILE_ELSEWHERE (a
folder the test makes). Honest otherwise. Files the checker writes go where it was asked all the same."""

import os

from impl_numpy import loss_and_grads as reference

os.chdir(os.environ["HOSTILE_ELSEWHERE"])


def loss_and_grads(params, x, target, **kw):
    os.chdir(os.environ["HOSTILE_ELSEWHERE"])
    return reference(params, x, target, **kw)

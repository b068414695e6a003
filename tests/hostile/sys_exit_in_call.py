"""Hostile: sys.exit(0) when it is called."""

import sys


def loss_and_grads(params, x, target, **kw):
    sys.exit(0)

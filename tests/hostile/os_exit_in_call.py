"""Hostile: ends its process with status 0 the first time it is called."""

import os


def loss_and_grads(params, x, target, **kw):
    os._exit(0)

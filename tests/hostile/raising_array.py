"""Hostile: returns a dict whose 'loss' is an object that raises when made an array."""

from impl_numpy import loss_and_grads as reference


class Loss:
    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("no array for you")


def loss_and_grads(params, x, target, **kw):
    return reference(params, x, target, **kw) | {"loss": Loss()}

"""Hostile: never returns."""


def loss_and_grads(params, x, target, **kw):
    while True:
        pass

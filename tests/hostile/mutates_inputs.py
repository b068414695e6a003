"""Hostile: adds 1 to the target it was given, in place, then computes honestly on it.

Run inside the checker, the built-ins after it would see the changed target. Its worker's inputs
are read-only, so the `+=` fails there, at this file's line.
"""

from impl_numpy import loss_and_grads as reference


def loss_and_grads(params, x, target, **kw):
    target += 1
    return reference(params, x, target, **kw)

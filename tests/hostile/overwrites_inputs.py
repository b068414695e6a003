"""Hostile: writes over the memory of the params, input and target it was given (past the read-only
flag, through ctypes), then returns the honest result for what it wrote.

Only its worker's copies change: the built-ins keep the checker's arrays, and this one is the odd
one out.
"""

import ctypes

import numpy as np

from impl_numpy import loss_and_grads as reference


def _overwrite(array: np.ndarray, new: np.ndarray) -> None:
    new = np.ascontiguousarray(new, dtype=array.dtype)
    ctypes.memmove(array.ctypes.data, new.ctypes.data, array.nbytes)


def loss_and_grads(params, x, target, **kw):
    for layer in params:
        for array in layer:
            _overwrite(array, array * 2)
    _overwrite(x, x + 1)
    _overwrite(target, target + 1)
    return reference(params, x, target, **kw)

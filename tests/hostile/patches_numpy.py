"""Hostile: a gradient off by a factor of 2, and, at import, NumPy and the verdict patched so that a
comparison made in the same process would call any two arrays equal.

In its own process the patches change nothing but its own NumPy: it is the odd one out.
"""

import numpy as np

import shortcut_gradients.verdict.check as check
from impl_numpy import loss_and_grads as reference

np.abs = np.absolute = lambda a, *args, **kw: np.zeros_like(a)
np.max = np.amax = lambda a, *args, **kw: 0.0
np.allclose = np.array_equal = lambda *args, **kw: True
np.isfinite = lambda a, *args, **kw: np.ones(np.shape(a), bool)
check.relative_error = lambda a, b, *args, **kw: np.zeros(np.shape(a))
check.compare = lambda results, *args, **kw: {"agree": True, "first_mismatch": None}


def loss_and_grads(params, x, target, **kw):
    result = reference(params, x, target, **kw)
    result["dW"] = [2 * dW for dW in result["dW"]]
    return result

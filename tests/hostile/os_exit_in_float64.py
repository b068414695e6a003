"""Hostile: honest in float32; ends its process with status 0 when asked for float64 (the rerun that
settles the GELU form where float32 cannot)."""

import os

from impl_numpy import loss_and_grads as reference


def loss_and_grads(params, x, target, *, dtype, **kw):
    if dtype == "float64":
        os._exit(0)
    return reference(params, x, target, dtype=dtype, **kw)

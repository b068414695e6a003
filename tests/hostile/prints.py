"""Hostile: prints on stdout and stderr at import and in every call. Honest otherwise."""

import sys

from impl_numpy import loss_and_grads as reference

print("hello from import")
print("a warning from import", file=sys.stderr)


def loss_and_grads(params, x, target, *, dtype, **kw):
    print(f"computing in {dtype}")
    print("no newline at the end", end="")
    return reference(params, x, target, dtype=dtype, **kw)

"""A submission whose linear rule never returns; every other rule is the reference's."""

from impl_numpy.model import *  # noqa: F403


def linear_backward(dz, x, W):
    while True:
        pass

"""A submission that patches the grader and NumPy at import, then hands in a sign-flipped loss rule.

Were it graded in the grader's own process, every comparison would pass: its own wrong rule and
every other file graded after it in the same run.
"""

import numpy as np

import shortcut_gradients.grader.diagnose as diagnose
import shortcut_gradients.grader.steps as steps
import shortcut_gradients.verdict.check as check
from impl_numpy.model import *  # noqa: F403  (every other rule right)

steps._check = lambda *args, **kwargs: 0.0
check.relative_error = lambda a, b, tol, eps: np.zeros(np.shape(a))
diagnose.same = lambda *args, **kwargs: True
np.allclose = lambda *args, **kwargs: True
np.abs = np.zeros_like


def mse_loss_backward(output, target):
    return output.dtype.type(2.0 / output.size) * (target - output)  # the sign flipped

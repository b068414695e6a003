"""Finding the implementations: each is imported only when asked for, with a clear error if missing."""

import importlib
import importlib.util

from plumbing.config import InputError

# What each implementation imports, and the command that installs it (versions: constraints.txt).
REQUIRES = {"torch": ("torch",), "jax": ("jax", "flax"), "numpy": ("numpy",)}
INSTALL = {"torch": "pip install torch==2.13.0", "jax": "pip install jax flax", "numpy": "pip install numpy"}


def check_installed(name: str) -> None:
    missing = [m for m in REQUIRES[name] if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(
            f"framework {name} needs {', '.join(missing)}, which is not installed: {INSTALL[name]} "
            "(or leave it out of --frameworks)"
        )


def load(name: str):
    """The implementation's loss_and_grads(params, x, target, *, use_shortcut, gelu_form, dtype)."""
    check_installed(name)
    return importlib.import_module(f"impl_{name}").loss_and_grads

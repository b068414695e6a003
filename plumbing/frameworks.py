"""Finding the implementations: each is imported only when asked for, with a clear error if missing."""

import importlib
import importlib.util

from plumbing.config import FRAMEWORKS, ORACLE, InputError

# Built-in name -> the module whose loss_and_grads it is.
MODULES = {"torch": "impl_torch", "jax": "impl_jax", "numpy": "impl_numpy", "numpy-fast": "impl_numpy.fast"}
MODULES[ORACLE] = "impl_numerical"
# What each implementation imports, and the command that installs it (versions: constraints.txt).
REQUIRES = {"torch": ("torch",), "jax": ("jax", "flax"), "numpy": ("numpy",), "numpy-fast": ("numpy",)}
REQUIRES[ORACLE] = ("numpy",)
INSTALL = {"torch": "pip install torch==2.13.0", "jax": "pip install jax flax", "numpy": "pip install numpy"}
INSTALL["numpy-fast"] = INSTALL[ORACLE] = INSTALL["numpy"]


def parse(text: str) -> tuple[str, ...]:
    """'torch,jax' -> ('torch', 'jax'): built-in names, no repeats, at least one, each installed."""
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [n for n in names if n not in MODULES]
    if not names or unknown:
        bad = ", ".join(unknown) if unknown else "nothing"
        raise InputError(f"--frameworks takes a comma-separated subset of {','.join(MODULES)}; got {bad}")
    if len(set(names)) != len(names):
        raise InputError(f"--frameworks names a framework twice: {text!r}")
    for name in names:
        check_installed(name)
    return names


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
    return importlib.import_module(MODULES[name]).loss_and_grads


__all__ = ["FRAMEWORKS", "MODULES", "check_installed", "load", "parse"]

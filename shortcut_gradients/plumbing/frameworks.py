"""Finding the implementations: each is imported only when asked for, with a clear error if missing."""

import importlib
import importlib.util

from shortcut_gradients.plumbing.config import FRAMEWORKS, ORACLE, InputError

# Built-in name -> the module whose loss_and_grads it is.
MODULES = {"torch": "impl_torch", "jax": "impl_jax", "numpy": "impl_numpy", "numpy-fast": "impl_numpy.fast"}
MODULES[ORACLE] = "impl_numerical"
# What each implementation imports, and the command that installs it (versions: constraints.txt).
REQUIRES = {"torch": ("torch",), "jax": ("jax", "flax"), "numpy": ("numpy",), "numpy-fast": ("numpy",)}
REQUIRES[ORACLE] = ("numpy",)
INSTALL = {"torch": "pip install torch==2.13.0", "jax": "pip install jax flax", "numpy": "pip install numpy"}
INSTALL["numpy-fast"] = INSTALL[ORACLE] = INSTALL["numpy"]


def resolve(text: str) -> dict:
    """'torch,numpy,path/to/mine.py' -> {column name: loss_and_grads}, every one loaded now.

    A built-in name, or a user's implementation: a path to a .py file or an importable module
    name defining loss_and_grads, its column named after the file's stem or the module. Their
    function is wrapped so that an exception in it is one line naming their file and line.
    """
    from shortcut_gradients.plumbing import user_code

    specs = [p.strip() for p in text.split(",") if p.strip()]
    if not specs:
        raise InputError(f"--frameworks takes a comma-separated list of {','.join(MODULES)} or .py files; got nothing")
    fns = {}
    for spec in specs:
        if spec in MODULES:
            name, fn = spec, load(spec)
        elif spec.endswith(".py") or "/" in spec or "." in spec:
            name, fn = user_code.entry(spec)
            if name in MODULES:
                raise InputError(
                    f"--frameworks: {spec} would be a column named {name!r}, a built-in name; rename the file"
                )
        else:
            raise InputError(
                f"--frameworks: unknown framework {spec!r}; use {','.join(MODULES)}, a .py file, or a module name such as pkg.mine"
            )
        if name in fns:
            raise InputError(f"--frameworks names {name!r} twice: {text!r}")
        fns[name] = fn
    return fns


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


__all__ = ["FRAMEWORKS", "MODULES", "check_installed", "load", "resolve"]

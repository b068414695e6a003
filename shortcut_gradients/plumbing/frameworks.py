"""Finding the implementations: each built-in imported only when asked for, with a clear error if missing; a user's
run in a worker process of its own (shortcut_gradients.plumbing.worker), never imported here."""

import importlib
import importlib.util

from shortcut_gradients.plumbing import user_code, worker
from shortcut_gradients.plumbing.config import FRAMEWORKS, ORACLE, InputError

# Built-in name -> the module whose loss_and_grads it is.
MODULES = {"torch": "impl_torch", "jax": "impl_jax", "numpy": "impl_numpy", "numpy-fast": "impl_numpy.fast"}
MODULES[ORACLE] = "impl_numerical"
# What each implementation imports, and the command that installs it (versions: constraints.txt).
REQUIRES = {"torch": ("torch",), "jax": ("jax", "flax"), "numpy": ("numpy",), "numpy-fast": ("numpy",)}
REQUIRES[ORACLE] = ("numpy",)
INSTALL = {"torch": "pip install torch==2.13.0", "jax": "pip install jax flax", "numpy": "pip install numpy"}
INSTALL["numpy-fast"] = INSTALL[ORACLE] = INSTALL["numpy"]
DEFAULT_TIMEOUT = worker.DEFAULT_TIMEOUT  # seconds a user's implementation may take to import, and per call


def resolve(text: str, timeout: float | None = DEFAULT_TIMEOUT) -> dict:
    """'torch,numpy,path/to/mine.py' -> {column name: loss_and_grads}, every one loaded now.

    A built-in name, or a user's implementation: a path to a .py file or an importable module
    name defining loss_and_grads, its column named after the file's stem or the module. A user's
    runs in a worker process of its own (shortcut_gradients.plumbing.worker), started here so that
    a file that does not import is reported now; its callable sends the arrays there and returns
    the plain arrays that come back, and an exception in their code is one line naming their file
    and line. `timeout`: seconds each call (and the import) may take before the worker is killed.
    Workers close when the returned callables are garbage-collected, at exit at the latest, or
    when `close(fns)` is called.
    """
    specs = [p.strip() for p in text.split(",") if p.strip()]
    if not specs:
        raise InputError(f"--frameworks takes a comma-separated list of {','.join(MODULES)} or .py files; got nothing")
    worker.check_timeout(timeout)
    columns = {}  # name -> spec: a built-in's name, or the user's file or module
    for spec in specs:
        if spec in MODULES:
            name = spec
        elif spec.endswith(".py") or "/" in spec or "." in spec:
            name = user_code.display_name(spec)
            if name in MODULES:
                raise InputError(
                    f"--frameworks: {spec} would be a column named {name!r}, a built-in name; rename the file"
                )
        else:
            raise InputError(
                f"--frameworks: unknown framework {spec!r}; use {','.join(MODULES)}, a .py file, or a module name such as pkg.mine"
            )
        if name in columns:
            raise InputError(f"--frameworks names {name!r} twice: {text!r}")
        columns[name] = spec
    # Every user's worker starts before the built-ins import, so that their imports overlap ours.
    workers = {name: worker.Worker(spec, name, timeout) for name, spec in columns.items() if spec not in MODULES}
    try:
        fns = {name: load(name) if name not in workers else None for name in columns}
        for name, running in workers.items():
            running.require(["loss_and_grads"])
            # NotImplementedError arrives as itself: "I cannot do this configuration" (docs/contract.md).
            fns[name] = running.function("loss_and_grads")
            fns[name].worker = running
    except BaseException:
        for running in workers.values():
            running.close()
        raise
    return fns


def close(fns: dict) -> None:
    """Stop the worker behind each user's implementation in `fns` (resolve's); the built-ins need nothing."""
    for fn in fns.values():
        if hasattr(fn, "worker"):
            fn.worker.close()


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


__all__ = ["DEFAULT_TIMEOUT", "FRAMEWORKS", "MODULES", "check_installed", "close", "load", "resolve"]

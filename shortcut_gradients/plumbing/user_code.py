"""Loading and calling someone else's implementation, so that whatever goes wrong is one line.

    name, module = load("path/to/mine.py")        # or an importable module name: load("mypkg.model")
    require(module, ["loss_and_grads"])
    result = call(module, module.loss_and_grads, params, x, target, use_shortcut=True, gelu_form="tanh", dtype="float64")

These run their code in the process that calls them. The checker calls them only inside a worker
process of its own (shortcut_gradients.plumbing.worker), never in the process that decides the verdict.

Each failure raises shortcut_gradients.plumbing.config.InputError with one line: a missing file, a file that does
not import (`mine.py:12: SyntaxError: invalid syntax`), a missing function, or an exception
raised while their code runs, located at the innermost traceback frame that is in *their*
file, not in NumPy's or ours: `mine.py:42 in backward: ValueError: operands could not be broadcast`.
"""

import contextlib
import importlib
import importlib.util
import itertools
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

from shortcut_gradients.plumbing.config import InputError

# Each loaded file gets a fresh module name, so two files called model.py (or one file loaded
# twice) never share a module, and a file called numpy.py does not shadow NumPy.
_counter = itertools.count()


def load(spec: str) -> tuple[str, ModuleType]:
    """(display name, module) for a path to a .py file or an importable module name.

    The display name is the file's stem (`mine` for path/to/mine.py) or the module name.
    A file is imported with its own folder first on sys.path (so it can import its neighbours)
    and without writing __pycache__ into that folder.
    """
    if is_file(spec):
        return _load_file(Path(spec))
    return _load_module(spec)


def is_file(spec: str) -> bool:
    """Whether `load` reads `spec` as a path to a file (rather than an importable module name)."""
    return spec.endswith(".py") or os.sep in spec or "/" in spec or Path(spec).exists()


def display_name(spec: str) -> str:
    """The name `load` gives `spec` without loading it: the file's stem, or the module name."""
    return Path(spec).stem if is_file(spec) else spec


def _load_file(path: Path) -> tuple[str, ModuleType]:
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a .py file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix != ".py":
        raise InputError(f"{path} is not a Python file; give a .py file or an importable module name")
    path = path.resolve()
    safe_stem = re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(f"_user_code_{next(_counter)}_{safe_stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look their module up here
    with _importing_from(path.parent):
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as err:
            del sys.modules[spec.name]
            raise InputError(describe(err, module)) from None
    return path.stem, module


def _load_module(name: str) -> tuple[str, ModuleType]:
    try:
        with _importing_from(None):
            module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            raise InputError(
                f"no module named {name!r}: give a path to a .py file or an importable module name"
            ) from None
        raise InputError(describe(err, _stand_in(name))) from None
    except (Exception, SystemExit) as err:
        raise InputError(describe(err, _stand_in(name))) from None
    return name, module


@contextlib.contextmanager
def _importing_from(folder: Path | None):
    """sys.path starts with `folder` (if given) while their code imports; no bytecode is written."""
    saved_path, saved_flag = list(sys.path), sys.dont_write_bytecode
    if folder is not None:
        sys.path.insert(0, str(folder))
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.path[:], sys.dont_write_bytecode = saved_path, saved_flag


def _stand_in(name: str) -> ModuleType:
    """For a module that failed while importing by name: a stand-in whose __file__ is its top package's.

    Finding a top-level module's spec runs none of its code; its folder holds every submodule.
    """
    stand_in = ModuleType(name)
    try:
        spec = importlib.util.find_spec(name.split(".")[0])
    except (ImportError, ValueError):
        spec = None
    stand_in.__file__ = spec.origin if spec is not None else None
    return stand_in


def require(module: ModuleType, names: Iterable[str]) -> None:
    """Fail with one line if `module` lacks any of `names` (functions or classes)."""
    missing = [n for n in names if not callable(getattr(module, n, None))]
    if missing:
        listed = ", ".join(missing)
        raise InputError(
            f"{shown(_home(module))} has no {listed}: it must define "
            f"{'it' if len(missing) == 1 else 'them'} at module level (see docs/contract.md)"
        )


def call(module: ModuleType, fn: Callable, *args, passthrough: tuple = (), **kwargs):
    """fn(*args, **kwargs), with any exception turned into one InputError line (see `describe`).

    Exceptions of the types in `passthrough` are raised unchanged (the grader reads
    NotImplementedError as "not written yet"); KeyboardInterrupt always is.
    """
    try:
        return fn(*args, **kwargs)
    except passthrough:
        raise
    except (Exception, SystemExit) as err:
        raise InputError(describe(err, module, getattr(fn, "__qualname__", None))) from None


def describe(err: BaseException, module: ModuleType, function: str | None = None) -> str:
    """One line: `mine.py:42 in backward: ValueError: ...`, at the innermost frame in their file.

    A SyntaxError names the line it points at (`mine.py:12: SyntaxError: ...`). When no frame
    is in their file (the call itself failed, e.g. a wrong signature), the line names the
    function that was called instead.
    """
    message = " ".join(str(err).split())  # one line, whatever the exception put in it
    kind = type(err).__name__
    text = f"{kind}: {message}" if message else kind
    if isinstance(err, SyntaxError) and err.filename:
        return f"{shown(Path(err.filename))}:{err.lineno}: {kind}: {err.msg}"
    home = _home(module)
    frame = None
    for candidate in traceback.extract_tb(err.__traceback__):
        if home is not None and _is_within(Path(candidate.filename), home):
            frame = candidate
    if frame is not None:
        return f"{shown(Path(frame.filename))}:{frame.lineno} in {frame.name}: {text}"
    where = shown(home) if home is not None else getattr(module, "__name__", "their code")
    return f"{where}" + (f" in {function}" if function else "") + f": {text}"


def _home(module: ModuleType) -> Path | None:
    """Their file, or their package's folder: where a frame counts as theirs."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    return path.parent if path.name == "__init__.py" else path


def _is_within(path: Path, home: Path) -> bool:
    try:
        path = path.resolve()
    except OSError:
        return False
    return path == home or (home.is_dir() and home in path.parents)


def shown(path: Path) -> str:
    """The path relative to the current folder when it is inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

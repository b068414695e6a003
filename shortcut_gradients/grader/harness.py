"""How the grader calls a submission's rules: in this process (Local) or in a worker process of its own.

    sub = Local(module)                         # the notebooks: the learner's own kernel, their own code
    dout = sub.run("mse_loss_backward", output, target)
    dx = sub.run("residual_dx", W, b, x, dout, "tanh")     # ExampleDeepNeuralNetwork, forward, backward

A rule is a function of theirs by name, or one of ours (HELPERS) that drives an object of
theirs and returns arrays. `run` returns what the rule returned, raises Todo (their
NotImplementedError, with the located line) or InputError (anything else they raised: one
line at their file and line). Every array they get is a fresh, writable copy.

shortcut_gradients/grader/isolation.py's Remote has the same `run`, answered by a worker process
(shortcut_gradients.plumbing.worker) that has imported this module and the submission's source.
The functions under "the worker's side" are what that process serves: they take and return
plain data and arrays only, and never raise, so that every line that comes back names their
file, not ours.
"""

import contextlib
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from shortcut_gradients.plumbing import user_code
from shortcut_gradients.plumbing.config import InputError


class Todo(Exception):
    """Their rule raised NotImplementedError: `description` is the located line (`mine.py:42 in backward: ...`)."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


def copies(value):
    """value with every array copied (writable), through lists and tuples (params is a list of (W, b) tuples)."""
    if isinstance(value, np.ndarray):
        return np.array(value)
    if isinstance(value, list | tuple):
        return type(value)(copies(v) for v in value)
    return value


def residual_dx(module: ModuleType, W, b, x, dout, form: str):
    """dx of one residual layer y = x + gelu(x W^T + b), through their ExampleDeepNeuralNetwork."""
    net = _call(module, module.ExampleDeepNeuralNetwork, [(W, b)], True, form)
    _call(module, net.forward, x)
    return _call(module, net.backward, dout)


HELPERS = {"residual_dx": residual_dx}


def _call(module: ModuleType, fn, *args, **kwargs):
    return user_code.call(module, fn, *args, passthrough=(NotImplementedError,), **kwargs)


# Their rules that a later step builds on and that the reference can stand in for: where one is
# wrong or not written, the later steps run with the reference's in its place, so that each step
# is graded on its own (a wrong GELU rule does not make the shortcut and the network wrong too).
STAND_INS = ("mse_loss_backward", "gelu_backward", "linear_backward", "layer_norm_backward")


@contextlib.contextmanager
def standing_in(module: ModuleType, names):
    """Within the block, impl_numpy.model's function for each of `names`, in the namespace their
    functions look names up in (a module's, or a notebook's), then theirs again."""
    import impl_numpy.model as reference

    if not names:
        yield
        return
    namespace = getattr(getattr(module, "loss_and_grads", None), "__globals__", None) or module.__dict__
    saved = {name: namespace.get(name) for name in names}
    namespace.update({name: getattr(reference, name) for name in names})
    try:
        yield
    finally:
        namespace.update(saved)


def call(module: ModuleType, rule: str, *args, stand_ins=(), **kwargs):
    """Their function `rule` (or our helper of that name) on copies of the arguments, with the
    reference's functions `stand_ins` in place of theirs; NotImplementedError passes."""
    args, kwargs = copies(args), copies(kwargs)
    with standing_in(module, [name for name in stand_ins if name != rule]):
        if rule in HELPERS:
            return HELPERS[rule](module, *args, **kwargs)
        return _call(module, getattr(module, rule), *args, **kwargs)


class Submission:
    """What a step grades: `run` a rule, `defines` a name, `require` names (InputError unless all are there).

    `stand_ins`: their functions (of STAND_INS) that `run` replaces with the reference's."""

    stand_ins: tuple[str, ...] = ()

    def require(self, names) -> None:
        raise NotImplementedError

    def defines(self, name: str) -> bool:
        raise NotImplementedError

    def run(self, rule: str, *args, **kwargs):
        raise NotImplementedError


class Local(Submission):
    """A submission already imported in this process."""

    def __init__(self, module: ModuleType):
        self.module = module

    def require(self, names) -> None:
        user_code.require(self.module, names)

    def defines(self, name: str) -> bool:
        return callable(getattr(self.module, name, None))

    def run(self, rule: str, *args, **kwargs):
        try:
            return call(self.module, rule, *args, stand_ins=self.stand_ins, **kwargs)
        except NotImplementedError as err:
            raise Todo(user_code.describe(err, self.module)) from None


def as_submission(module):
    """A Local for a module; a Local or Remote as it is."""
    return module if isinstance(module, Submission) else Local(module)


# --- the worker's side: one submission per process ------------------------------------------------

_loaded: ModuleType | None = None


def load(source: np.ndarray, path: str) -> dict:
    """Import their source (uint8 bytes, the grader's private copy) as if it were the file at `path`.

    The module is built from the bytes the grader read, never from the file, so nothing that ran
    since (another submission rewriting this one on disk) changes what is graded. As
    shortcut_gradients.plumbing.user_code.load does: a fresh module name, their folder first on
    sys.path, no bytecode written. Tracebacks and messages name `path`, their file.
    Returns {"ok": the names it defines that can be called} or {"error": the one line}.
    """
    global _loaded
    path = Path(path)
    name = "_submission_" + re.sub(r"\W", "_", path.stem)
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    sys.dont_write_bytecode = True
    try:
        exec(compile(np.asarray(source, np.uint8).tobytes(), str(path), "exec", dont_inherit=True), module.__dict__)
    except (Exception, SystemExit) as err:
        return {"error": user_code.describe(err, module)}
    finally:
        sys.path.remove(str(path.parent))
    _loaded = module
    return {"ok": sorted(n for n in dir(module) if not n.startswith("__") and callable(getattr(module, n, None)))}


def require(names: list) -> dict:
    try:
        user_code.require(_loaded, names)
    except InputError as err:
        return {"error": str(err)}
    return {"ok": None}


def run(rule: str, *args, stand_ins=(), **kwargs) -> dict:
    """{"value": what the rule returned}, {"todo": the located line} or {"raised": the one line}."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():  # a NaN they make is graded, not warned about
            warnings.simplefilter("ignore", RuntimeWarning)
            return {"value": call(_loaded, rule, *args, stand_ins=tuple(stand_ins), **kwargs)}
    except NotImplementedError as err:
        return {"todo": user_code.describe(err, _loaded)}
    except InputError as err:
        return {"raised": str(err)}

"""What the notebooks in notebooks/ import: one-line errors, figures shown inline, and the exercise grader.

The notebooks import only the installed project (this module, `shortcut_gradients.teaching.notebook`,
and the three panes), never a file beside them, so a copy of a notebook runs in any folder and in
any kernel where the project is installed (`pip install -e ".[notebook]"` in a checkout).

    one_line_errors()              bad input (shortcut_gradients.plumbing.config.InputError) shows as one line, as compare.py prints it
    show(figure)                   a matplotlib Figure from shortcut_gradients/teaching/plots.py, as a PNG in the cell's output
    grade("loss", globals())       the grader's verdict on one exercise cell: ok, todo, or wrong with the likely slip
"""

import io
import re
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from shortcut_gradients.plumbing.config import InputError

# --- bad input: one line, not a traceback ---------------------------------------------------------


def one_line_errors() -> None:
    """From now on, an InputError raised by a cell shows as one line, `InputError: what was wrong`.

    compare.py prints the same message and exits 2; in a notebook the cell stops with that
    line (so "Run All" stops there too). Every other exception keeps its full traceback: it is a bug.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("one_line_errors() is for a notebook or IPython; plain Python prints tracebacks")
    shell.set_custom_exc((InputError,), _one_line)


def _one_line(shell, etype, value, tb, tb_offset=None):
    # IPython calls this with the exception; _showtraceback is the hook a kernel uses to send it.
    line = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, line)
    return line


# --- figures --------------------------------------------------------------------------------------


def show(figure):
    """The figure as a PNG image the notebook shows inline, drawn as shortcut_gradients/teaching/plots.py saves it (its DPI)."""
    from IPython.display import Image

    from shortcut_gradients.teaching import plots

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=plots.DPI)
    return Image(data=buffer.getvalue(), format="png")


# --- the exercises: each cell graded on its own ---------------------------------------------------

# Each grading cell's check: the grader's step (shortcut_gradients/grader/steps.py), the function the learner
# writes for it (a problem is located in its cell), and the GELU form where one is graded alone.
CHECKS = {
    "loss": ("loss", "mse_loss_backward", None),
    "gelu tanh": ("gelu", "gelu_backward_tanh", "tanh"),
    "gelu exact": ("gelu", "gelu_backward_exact", "exact"),
    "linear": ("linear", "linear_backward", None),
    "shortcut": ("shortcut", "ExampleDeepNeuralNetwork.backward", None),
    "network": ("network", "ExampleDeepNeuralNetwork.backward", None),
    "layernorm": ("layernorm", "layer_norm_backward", None),
}
# The notebook's definitions that take the skeleton's blanks' places, and the exercise that makes each.
DEFINED_IN = {
    "mse_loss_backward": "exercise 1",
    "gelu_backward_tanh": "exercise 2",
    "gelu_backward": "exercise 2 (the cell after it)",
    "gelu_backward_exact": "exercise 3",
    "linear_backward": "exercise 4",
    "ExampleDeepNeuralNetwork": "exercise 5",
    "layer_norm_backward": "exercise 6",
}


def grade(which: str, namespace: dict) -> None:
    """Grade one exercise cell's check (a key of CHECKS), or every one ("all"), and print the verdict.

    namespace: the notebook's globals(), where the learner's functions are. Their code runs
    against torch's autograd in float64, as `python -m shortcut_gradients.grader.grade` runs a file, and each
    check prints what that prints for its step. Nothing is raised: a function not defined yet
    is one line saying which cell to run, and an exception in their code is one line at their
    cell and line.
    """
    names = tuple(CHECKS) if which == "all" else (which,)
    if any(name not in CHECKS for name in names):
        raise ValueError(f"grade() takes one of {', '.join(CHECKS)} or 'all'; got {which!r}")
    statuses = {name: check(name, namespace) for name in names}
    if which == "all":
        ok = sum(status == "ok" for status in statuses.values())
        if ok == len(CHECKS):
            print("PASSED: every step ok")
        else:
            name, status = next((n, s) for n, s in statuses.items() if s != "ok")
            print(f"{ok} of {len(CHECKS)} checks ok; next: {name} ({status})")


def check(name: str, namespace: dict) -> str:
    """Print one check's verdict; returns its status: ok, todo, wrong or error."""
    from shortcut_gradients.grader import steps

    step, written, form = CHECKS[name]
    head = f"  {name:<10}"
    try:
        module = submission(namespace, written, form)
    except NotRunYet as missing:
        print(f"{head} todo   {missing}")
        return "todo"
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if form is None:
                result = steps.GRADERS[step](module)
            else:  # the grader's gelu step on one form's cases (it grades tanh's, then exact's)
                cases = [case for case in steps.gelu_cases() if case.extra["form"] == form]
                result = steps._grade(step, module, cases, steps._gelu_case)
    except InputError as err:  # their code raised: one line, at their cell and line
        print(f"{head} error  {in_cells(str(err), module)}")
        return "error"
    print(format_result(name, result, module))
    return result.status


class NotRunYet(Exception):
    """A definition the check needs is not in the notebook: its cell has not been run."""


def submission(namespace: dict, written: str, form: str | None) -> ModuleType:
    """The learner's rules as a module the grader can call, as if they had filled a copy of exercises/backprop.py.

    The skeleton's code is loaded afresh and the notebook's definitions take the blanks'
    places, so its loss_and_grads calls the learner's ExampleDeepNeuralNetwork and
    mse_loss_backward. The module's file is the cell that defines `written`: an exception
    raised there is located at its line. NotRunYet when a definition the check needs is missing.
    """
    from shortcut_gradients.grader import grade as grader
    from shortcut_gradients.plumbing import user_code

    owner, _, method = written.partition(".")
    for name in (owner, "gelu_backward") if form else (owner,):
        if name not in namespace:
            raise NotRunYet(f"{name} is not defined: run the cell of {DEFINED_IN[name]} first")
    _, module = user_code.load(str(grader.SKELETON))
    for name in DEFINED_IN:
        if name in namespace:
            setattr(module, name, namespace[name])
    function = getattr(namespace[owner], method) if method else namespace[owner]
    module.__file__ = function.__code__.co_filename
    return module


def in_cells(text: str, module: ModuleType) -> str:
    """The grader's text with the cell named as IPython names it: `Cell In[5], line 3 in backward: ...`.

    shortcut_gradients.plumbing.user_code.describe locates a problem at the innermost line of the module's file,
    here the graded function's cell. Where none of that cell's lines is involved (a check of the
    network stopped at an earlier blank, say), the text names no cell rather than the wrong one.
    """
    from IPython import get_ipython

    from shortcut_gradients.plumbing import user_code

    shell = get_ipython()
    label = shell.compile.format_code_name(module.__file__) if shell is not None else None
    if label is None:  # not run by IPython: the file's path stays
        return text
    where = re.escape(user_code.shown(Path(module.__file__)))
    text = re.sub(where + r":(\d+)", lambda m: f"{' '.join(label)}, line {m[1]}", text)
    return re.sub(where + r"(?: in (\S+))?: ", lambda m: f"in {m[1]}: " if m[1] else "", text)


def format_result(name: str, result, module: ModuleType) -> str:
    """One step as `python -m shortcut_gradients.grader.grade` prints it, a blank located at its cell."""
    from shortcut_gradients.grader import grade as grader

    return "\n".join(grader.format_step(result, name, width=10, locate=lambda text: in_cells(text, module)))

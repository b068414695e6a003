"""Grading submissions safely: each in a worker process of its own, from the bytes read before any ran.

    sources = read_all(paths)                            # every file's bytes, before any code runs
    for graded in grade_all(sources, timeout=60, jobs=2, on_graded=print_row):   # in the files' order
        ...

This process computes the answers and every verdict; a submission's process
(shortcut_gradients.plumbing.worker, serving shortcut_gradients/grader/harness.py) only imports its
source and runs its rules on the arrays it is sent, and sends back arrays. So what a submission
does to its own memory (patching NumPy, the grader's modules, its inputs) changes nothing here, and
nothing in another submission's process. Each submission gets a fresh process, a few at a time
(`jobs`), and one time limit for all its calls together (`timeout`): one that loops, exits or is
killed is reported and the others are graded. Each is imported from the grader's private copy of
its bytes, never from the file, so one that rewrites another's file on disk changes nothing graded.

A process is not a sandbox: their code runs as the user who runs the grader, and can read and
write what that user can (the grader's installed files included). docs/grader.md says how a
course runs it.
"""

import concurrent.futures
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shortcut_gradients.grader import answers, steps
from shortcut_gradients.grader.harness import Submission, Todo
from shortcut_gradients.plumbing import user_code
from shortcut_gradients.plumbing.config import InputError
from shortcut_gradients.plumbing.worker import Worker, WorkerError, check_timeout

HARNESS = "shortcut_gradients.grader.harness"  # what each worker imports: it then loads their source
# A minute per submission, all its calls together: a correct one takes well under a second, a
# loop ends the file's grading, not the class's.
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Source:
    path: Path
    data: bytes  # the file's bytes, read before any submission ran


@dataclass
class Graded:
    """One submission's grades: every step's result, or `error` when it could not (all) be graded."""

    path: Path
    results: list  # StepResults, one per step ([] when it did not import)
    error: str | None = None  # one line: why it did not import, or why its process stopped


def read_all(paths: list[Path]) -> list[Source]:
    """Every file's bytes, before any submission runs; InputError (one line) for one that cannot be read."""
    sources = []
    for path in paths:
        try:
            sources.append(Source(Path(path), Path(path).read_bytes()))
        except OSError as err:
            raise InputError(f"{path}: cannot be read ({err.strerror})") from None
    return sources


class Remote(Submission):
    """A submission imported in a worker process of its own, from `source.data`.

    InputError (their file and line) when it does not import; WorkerError when its process
    exits, is killed or runs past `timeout` (counted from the start, all calls together).
    """

    def __init__(self, source: Source, timeout: float):
        self.shown, self.timeout = user_code.shown(source.path), timeout
        self.deadline = time.monotonic() + timeout
        self.worker = Worker(HARNESS, name=source.path.stem, timeout=timeout)
        try:
            reply = self._call("load", np.frombuffer(source.data, np.uint8), str(source.path.resolve()))
        except BaseException:
            self.close()
            raise
        if "error" in reply:
            self.close()
            raise InputError(reply["error"])
        self.names = set(reply["ok"])

    def require(self, names) -> None:
        reply = self._call("require", list(names))
        if "error" in reply:
            raise InputError(reply["error"])

    def defines(self, name: str) -> bool:
        return name in self.names

    def run(self, rule: str, *args, **kwargs):
        reply = self._call("run", rule, *args, stand_ins=list(self.stand_ins), **kwargs)
        if "todo" in reply:
            raise Todo(reply["todo"])
        if "raised" in reply:
            raise InputError(reply["raised"])
        return reply["value"]

    def _call(self, function: str, *args, **kwargs):
        """One request to their process, within what is left of the time limit."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise WorkerError(self._out_of_time())
        self.worker.timeout = left
        try:
            return self.worker.call(function, *args, passthrough=(), **kwargs)
        except WorkerError as err:
            if time.monotonic() >= self.deadline:
                raise WorkerError(self._out_of_time()) from None
            # The worker names the module it imported (ours); the submission is what the reader knows.
            why = str(err).split(": ", 1)[-1]
            raise WorkerError(f"{self.shown}: {why}") from None
        except InputError as err:  # a result the pipe cannot carry (an object, not an array)
            raise InputError(f"{self.shown}: {str(err).split(': ', 1)[-1]}") from None

    def _out_of_time(self) -> str:
        return f"{self.shown}: still running after {self.timeout:g} s, its time limit (--timeout {self.timeout:g})"

    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def grade_one(source: Source, timeout: float) -> Graded:
    """One submission in a fresh process: its grades, or the one line that says why it could not be graded."""
    with np.errstate(all="ignore"):  # their NaNs meet the diagnoses' divisions: named, not warned about
        try:
            with Remote(source, timeout) as submission:
                results = steps.grade(submission)
        except (InputError, WorkerError) as err:
            return Graded(source.path, [], str(err))
    stopped = next((r.diagnosis for r in results if r.status == "error"), None)
    return Graded(source.path, results, stopped)


def warm() -> None:
    """Build the answer key once, before the threads that share it start."""
    for cases in (
        answers.loss_cases,
        answers.gelu_cases,
        answers.linear_cases,
        answers.shortcut_cases,
        answers.network_cases,
        answers.layernorm_cases,
        answers.pre_ln_network_cases,
    ):
        cases()


def grade_all(
    sources: list[Source], timeout: float, jobs: int, on_graded: Callable[[Graded], None] = lambda graded: None
) -> list[Graded]:
    """Each source graded by grade_one, `jobs` at a time; on_graded(each) as soon as it is done, in the
    order they finish. Returns every one, in the sources' order."""
    check_timeout(timeout)
    warm()
    graded: list[Graded | None] = [None] * len(sources)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(grade_one, source, timeout): i for i, source in enumerate(sources)}
        try:
            for future in concurrent.futures.as_completed(futures):
                graded[futures[future]] = future.result()
                on_graded(graded[futures[future]])
        except BaseException:  # Ctrl-C: the files not started are not started; each worker dies with its Remote
            for future in futures:
                future.cancel()
            raise
    return graded

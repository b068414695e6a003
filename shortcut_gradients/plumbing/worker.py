"""Someone else's code, run in a process of its own: the process that decides the verdict never imports it.

    with Worker("path/to/mine.py", timeout=600) as worker:       # or an importable module name
        worker.require(["loss_and_grads"])
        result = worker.call("loss_and_grads", params, x, target, use_shortcut=True, gelu_form="tanh", dtype="float32")

The child imports their file or module as shortcut_gradients.plumbing.user_code.load does (its own folder
first on sys.path, no __pycache__ written, a fresh module name), then answers requests: call a
module-level function (or "Class.function") by name, which names the module defines, whether it
defines the ones required. Whatever their code does to its own memory, globals, NumPy, torch's
defaults, the current folder or stdout stays in the child:

- Requests and replies travel on two pipes of their own, not on the child's stdout. Each message
  is a tree of dicts, lists, tuples, str, int, float, bool and None in JSON, and NumPy arrays in
  .npy format, read back with allow_pickle=False: the parent never unpickles, so nothing the child
  sends can run code here. The child turns anything else (a torch tensor, a JAX array) into a
  NumPy array with np.asarray before sending; dtypes arrive exactly as they left.
- The arrays the child receives are read-only, as the parent's own are to it.
- The child's stdout and stderr are one pipe, forwarded to the parent's stderr line by line as
  `[name] text`; stdout stays the report's (a --json one still parses).
- Each request has a time limit (DEFAULT_TIMEOUT unless given). A child that runs past it is
  killed with its process group; one that exits without a reply (os._exit(0) included) or is
  killed is a WorkerError; Ctrl-C here kills it too.

An exception in their code comes back as the one line user_code.describe builds
(`mine.py:42 in backward: ValueError: ...`) and is raised here as InputError, except the types in
`passthrough` (NotImplementedError by default: "not written yet"), raised as that type with
their message and the located line in its `description` attribute.

A process is not a sandbox: code that sets out to kill its parent or write over its files can.
What this stops is code that, by accident or on purpose, changes the checker's arrays, state,
output or exit status from inside the checker's own process.
"""

import builtins
import ctypes
import io
import json
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np

from shortcut_gradients.plumbing import user_code
from shortcut_gradients.plumbing.config import InputError

# Ten minutes a request. The slowest implementation in this repository at the largest size in
# docs/performance.md takes about a second a step; an honest one in plain Python loops, a hundred
# times slower, and an import of torch or JAX on a busy machine both fit many times over, while
# a loop that never ends still ends the run the same day.
DEFAULT_TIMEOUT = 600.0
MAX_DEPTH = 64  # nesting of lists and dicts in a message: a result is two deep
_LENGTH = struct.Struct("<Q")
_CHUNK = 1 << 20
_MAX_HEADER = 1 << 26  # a reply's JSON: plain data, the arrays apart; a longer one is not a reply
_PARTIAL_LINE = 1 << 16  # forward a line this long even without its newline
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The child: the parent's sys.path exactly (so a module name imports what it would here), with no
# folder of the caller's in front of it before then (-P), no bytecode written (-B), unbuffered
# output so that each line reaches the parent before the reply it precedes (-u).
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]);"
    " from shortcut_gradients.plumbing.worker import serve; serve(sys.argv[2:])"
)


class WorkerError(ChildProcessError):
    """Their process ended, was killed or ran out of time before it replied: one line naming their file.

    An OSError, so a run that catches InputError from their code (the float64 rerun leaves a
    raising implementation's float32 verdict with a caution) still stops here, with exit status 2.
    """


class Worker:
    """A child process that has imported `spec` (a .py path or a module name) and runs its functions.

    Starting returns at once; the first request (or `ready()`) waits for the import and raises its
    one-line InputError, as user_code.load would. Close with `close()`, a `with` block, or let it be
    garbage-collected: every worker is closed when it is, and at exit at the latest.
    """

    def __init__(self, spec: str, name: str | None = None, timeout: float | None = DEFAULT_TIMEOUT):
        check_timeout(timeout)
        self.spec, self.name, self.timeout = spec, name or user_code.display_name(spec), timeout
        self.where = user_code.shown(Path(spec)) if user_code.is_file(spec) else spec  # their file, in messages
        self._child = _Child(spec, self.name)
        self._finalizer = weakref.finalize(self, self._child.close)
        self._loaded = False

    def ready(self) -> "Worker":
        """Wait for their code to import; InputError with its line if it does not."""
        if not self._loaded:
            reply = self._exchange(None, "finish importing")
            if not (isinstance(reply, dict) and isinstance(reply.get("where"), str)):
                self._child.kill()
                raise WorkerError(f"{self.where}: sent something that is not a reply")
            self.where = reply["where"]
            self._loaded = True
        return self

    def call(self, function: str, *args, passthrough: tuple = (NotImplementedError,), **kwargs):
        """function(*args, **kwargs) in the child ("name" or "Class.name"), its result as plain data and arrays.

        args and kwargs: dicts, lists, tuples, str, int, float, bool, None and NumPy arrays.
        passthrough: built-in exception types raised here as themselves rather than as InputError.
        """
        names = []
        for kind in passthrough:
            if getattr(builtins, kind.__name__, None) is not kind:
                raise TypeError(f"passthrough takes built-in exception types; got {kind!r}")
            names.append(kind.__name__)
        request = {"op": "call", "function": function, "args": list(args), "kwargs": kwargs, "passthrough": names}
        return self.ready()._exchange(request, "return", passthrough)

    def function(self, function: str, passthrough: tuple = (NotImplementedError,)):
        """A callable running `function` in the child: fn(*args, **kwargs) is call(function, *args, **kwargs)."""

        def run(*args, **kwargs):
            return self.call(function, *args, passthrough=passthrough, **kwargs)

        run.__name__ = run.__qualname__ = function
        return run

    def callables(self) -> list[str]:
        """The names their module defines at module level that are functions or classes, sorted."""
        return self.ready()._exchange({"op": "callables"}, "return")

    def require(self, names) -> None:
        """InputError, user_code.require's line, unless their module defines every one of `names`."""
        self.ready()._exchange({"op": "require", "names": list(names)}, "return")

    def close(self) -> None:
        """Stop the child and its process group; forward what it had printed. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _exchange(self, request: dict | None, doing: str, passthrough: tuple = ()):
        """Send `request` (None: only wait for the import's reply) and return the reply's value."""
        frame = None if request is None else encode(request, _strict)
        timeout = self.timeout
        try:
            reply = decode(*self._child.exchange(frame, timeout))
        except _MALFORMED:
            self._child.kill()
            raise WorkerError(f"{self.where}: sent something that is not a reply") from None
        except _Dead as dead:
            self._child.kill()
            raise WorkerError(f"{self.where}: {dead.why}") from None
        except TimeoutError:
            self._child.kill()
            raise WorkerError(f"{self.where}: did not {doing} within {timeout:g} s (--timeout {timeout:g})") from None
        except BaseException:  # Ctrl-C, or a reply that is not one: their process does not outlive it
            self._child.kill()
            raise
        if not isinstance(reply, dict) or len(reply) != 1:
            self._child.kill()
            raise WorkerError(f"{self.where}: sent something that is not a reply")
        ((kind, value),) = reply.items()
        if kind == "ok":
            return value
        if kind == "error" and isinstance(value, str):
            raise InputError(value)
        if kind == "raise" and isinstance(value, dict):
            for exception in passthrough:
                if exception.__name__ == value.get("type"):
                    err = exception(value.get("message", ""))
                    err.description = value.get("line")
                    raise err
        self._child.kill()
        raise WorkerError(f"{self.where}: sent something that is not a reply")


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (isinstance(timeout, int | float) and 0 < timeout < float("inf")):
        raise InputError(f"--timeout takes a positive number of seconds; got {timeout!r}")


# --- the parent's side of the pipes ----------------------------------------------------------------------


# What reading a reply that is not one raises: bad JSON, a bad .npy header, a tree of the wrong shape.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, RecursionError, EOFError, struct.error)


class _Dead(Exception):
    def __init__(self, why: str):
        self.why = why


class _Child:
    """The process, its three pipes (requests in, replies out, stdout and stderr out) and the forwarding.

    Holds no reference to its Worker, so that the Worker's finalizer can close it.
    """

    def __init__(self, spec: str, name: str):
        self.name = name
        request_r, self.requests = os.pipe()
        self.replies, reply_w = os.pipe()
        self.output, output_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    "-B",
                    "-u",
                    "-c",
                    _BOOT,
                    json.dumps(sys.path),
                    str(os.getpid()),
                    str(request_r),
                    str(reply_w),
                    spec,
                ],
                stdin=subprocess.DEVNULL,
                stdout=output_w,
                stderr=output_w,
                pass_fds=(request_r, reply_w),
                process_group=0,  # its own: killed as a group, and out of reach of the terminal's Ctrl-C
            )
        finally:
            for fd in (request_r, reply_w, output_w):
                os.close(fd)
        for fd in (self.requests, self.replies, self.output):
            os.set_blocking(fd, False)
        try:
            self.exited = os.pidfd_open(self.process.pid)  # readable once it exits, whoever holds its pipes
        except (AttributeError, OSError):
            self.exited = None
        self.partial = b""
        self.dead = None
        self.closed = False

    def exchange(self, frame: bytes | None, timeout: float | None) -> tuple:
        """Write `frame`, then read one reply frame, forwarding output meanwhile. Raises _Dead or TimeoutError."""
        if self.dead is not None:
            raise _Dead(self.dead)
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = memoryview(frame or b"")
        reader = _FrameReader()
        with selectors.DefaultSelector() as selector:
            selector.register(self.replies, selectors.EVENT_READ, "reply")
            selector.register(self.output, selectors.EVENT_READ, "output")
            if self.exited is not None:
                selector.register(self.exited, selectors.EVENT_READ, "exited")
            if pending:
                selector.register(self.requests, selectors.EVENT_WRITE, "request")
            while True:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    raise TimeoutError
                if self.exited is None:
                    wait = 0.25 if wait is None else min(wait, 0.25)  # no pidfd: look now and then
                for key, _ in selector.select(wait):
                    if key.data == "request":
                        try:
                            pending = pending[os.write(self.requests, pending[:_CHUNK]) :]
                        except BrokenPipeError:
                            pending = memoryview(b"")  # it is gone: the reply pipe will say so
                        if not pending:
                            selector.unregister(self.requests)
                    elif key.data == "output":
                        if not self._forward_available():
                            selector.unregister(self.output)
                    elif key.data == "reply":
                        data = os.read(self.replies, _CHUNK)
                        if not data:
                            return self._ended(reader)
                        if reader.feed(data):
                            return self._delivered(reader)
                    else:
                        return self._ended(reader)
                if self.exited is None and self.process.poll() is not None:
                    return self._ended(reader)

    def _delivered(self, reader: "_FrameReader") -> tuple:
        """The reply, once every line it printed before it has been forwarded."""
        self._forward_available()
        self._flush_partial()
        return reader.frame

    def _ended(self, reader: "_FrameReader") -> tuple:
        """The child exited or closed its reply pipe: a reply it finished before it went still counts."""
        while data := _read_now(self.replies):
            if reader.feed(data):
                return self._delivered(reader)
        try:
            status = self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.dead = "closed its pipe to the checker before returning a result"
        else:
            if status < 0:
                self.dead = f"was killed by {_signal_name(-status)} before returning a result"
            else:
                self.dead = f"exited with status {status} before returning a result"
        self._forward_available()
        self._flush_partial()
        raise _Dead(self.dead)

    def _forward_available(self) -> bool:
        """Forward whatever output is waiting, line by line; False once the pipe is closed."""
        while True:
            data = _read_now(self.output)
            if data is None:
                return True
            if not data:
                return False
            self.partial += data
            *lines, self.partial = self.partial.split(b"\n")
            if len(self.partial) >= _PARTIAL_LINE:
                lines, self.partial = lines + [self.partial], b""
            for line in lines:
                self._emit(line)

    def _flush_partial(self) -> None:
        if self.partial:
            self._emit(self.partial)
            self.partial = b""

    def _emit(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        try:
            print(f"[{self.name}] {text}", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # no stderr left to write to (at exit): their output goes with them
            pass

    def kill(self) -> None:
        """SIGKILL its process group (and it, should it have left the group), and wait for it."""
        for kill in (lambda: os.killpg(self.process.pid, signal.SIGKILL), self.process.kill):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
        self.process.wait()
        if self.dead is None:
            self.dead = "was stopped earlier in this run"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.kill()
        deadline = time.monotonic() + 0.5  # its last lines; a grandchild that keeps the pipe open is not waited for
        while time.monotonic() < deadline:
            data = _read_now(self.output)
            if data is None:
                time.sleep(0.01)
                continue
            if not data:
                break
            self.partial += data
            *lines, self.partial = self.partial.split(b"\n")
            for line in lines:
                self._emit(line)
        self._flush_partial()
        for fd in (self.requests, self.replies, self.output, self.exited):
            if fd is not None:
                os.close(fd)


def _read_now(fd: int) -> bytes | None:
    """What the pipe holds now (b"" at its end), or None when it is open and empty."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _FrameReader:
    """Bytes in, one frame out: 8-byte length, JSON header {"body", "sizes"}, then one .npy blob per size."""

    def __init__(self):
        self.buffer = bytearray()
        self.header = None
        self.frame = None

    def feed(self, data: bytes) -> bool:
        """Add `data`; True once the frame is complete (then in self.frame as (body, blobs))."""
        self.buffer += data
        if self.header is None:
            if len(self.buffer) < _LENGTH.size:
                return False
            (head_size,) = _LENGTH.unpack_from(self.buffer)
            if head_size > _MAX_HEADER:
                raise ValueError(f"a header of {head_size} bytes")
            if len(self.buffer) < _LENGTH.size + head_size:
                return False
            self.header = json.loads(bytes(self.buffer[_LENGTH.size : _LENGTH.size + head_size]))
            sizes = self.header["sizes"]
            if not (isinstance(sizes, list) and all(type(n) is int and n >= 0 for n in sizes)):
                raise ValueError("the frame's sizes are not sizes")
            self.start = _LENGTH.size + head_size
        sizes, start = self.header["sizes"], self.start
        if len(self.buffer) < start + sum(sizes):
            return False
        blobs = []
        for size in sizes:
            blobs.append(bytes(self.buffer[start : start + size]))
            start += size
        self.frame = (self.header["body"], blobs)
        return True


# --- the codec: plain data and arrays, never pickle ---------------------------------------------------------


class Unsendable(Exception):
    """A value the codec cannot carry: what and where in the value; `located`: the message already names their file."""

    def __init__(self, message: str, located: bool = False):
        super().__init__(message)
        self.located = located


def _strict(value, path: str) -> np.ndarray:
    raise TypeError(f"{path} is a {type(value).__name__}; a message carries plain data and NumPy arrays")


def encode(value, convert=_strict) -> bytes:
    """One frame for `value`; `convert(value, path)` turns anything else into a NumPy array or raises."""
    blobs = []
    return _frame(_encode(value, blobs, convert, "the message", 0), blobs)


def _frame(body, blobs: list[bytes]) -> bytes:
    head = json.dumps({"body": body, "sizes": [len(b) for b in blobs]}).encode()
    return b"".join([_LENGTH.pack(len(head)), head, *blobs])


def _encode(value, blobs: list, convert, path: str, depth: int):
    if depth > MAX_DEPTH:
        raise Unsendable(f"{path} is nested more than {MAX_DEPTH} deep")
    if value is None or type(value) in (bool, int, float, str):  # exactly: np.float64 is a float, with a dtype
        return value
    if isinstance(value, np.generic | np.ndarray):
        return _array(np.asarray(value), blobs, path)
    if isinstance(value, Mapping):
        pairs = []
        for key, item in value.items():
            if key is not None and type(key) not in (str, int, float, bool):
                raise Unsendable(f"{path} has a key of type {type(key).__name__}; expected str keys")
            pairs.append([key, _encode(item, blobs, convert, f"{path}[{key!r}]", depth + 1)])
        return {"dict": pairs}
    if isinstance(value, list | tuple):
        items = [_encode(item, blobs, convert, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    return _array(convert(value, path), blobs, path)


def _array(array: np.ndarray, blobs: list, path: str) -> dict:
    if array.dtype.hasobject:
        raise Unsendable(f"{path} is an array of Python objects (dtype object); expected numbers")
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    blobs.append(buffer.getvalue())
    return {"array": len(blobs) - 1}


def decode(body, blobs: list, writeable: bool = True):
    """The value a frame carries; ValueError for anything that is not a well-formed message."""
    return _decode(body, blobs, writeable, 0)


def _decode(node, blobs: list, writeable: bool, depth: int):
    if depth > MAX_DEPTH + 1:
        raise ValueError("nested too deep")
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is not dict or len(node) != 1:
        raise ValueError(f"not a message node: {type(node).__name__}")
    ((kind, value),) = node.items()
    if kind == "array" and type(value) is int and 0 <= value < len(blobs):
        array = np.lib.format.read_array(io.BytesIO(blobs[value]), allow_pickle=False)
        array.flags.writeable = writeable
        return array
    if kind in ("list", "tuple") and type(value) is list:
        items = [_decode(item, blobs, writeable, depth + 1) for item in value]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and type(value) is list:
        out = {}
        for pair in value:
            if (
                type(pair) is not list
                or len(pair) != 2
                or not (pair[0] is None or type(pair[0]) in (bool, int, float, str))
            ):
                raise ValueError("not a key and value")
            out[pair[0]] = _decode(pair[1], blobs, writeable, depth + 1)
        return out
    raise ValueError(f"not a message node: {kind!r}")


# --- the child's side --------------------------------------------------------------------------------------


def serve(argv: list[str]) -> None:
    """The child's main: import their code, reply with where it lives, then answer requests until the pipe closes."""
    _die_with(int(argv[0]))
    requests, replies, spec = open(int(argv[1]), "rb"), open(int(argv[2]), "wb"), argv[3]
    try:
        _, module = user_code.load(spec)
    except InputError as err:
        return _send(replies, {"error": str(err)}, None)
    except BaseException as err:  # KeyboardInterrupt and the like, raised at import: one line all the same
        return _send(replies, {"error": user_code.describe(err, _stand_in(spec))}, None)
    home = user_code._home(module)
    _send(replies, {"ok": {"where": user_code.shown(home) if home is not None else spec}}, module)
    while (frame := _receive(requests)) is not None:
        _send(replies, _answer(module, decode(*frame, writeable=False)), module)


def _die_with(parent: int) -> None:
    """Ask Linux to kill this process when the thread that started it ends, so that a checker killed
    outright (SIGKILL) leaves no loop of theirs running; elsewhere, closing the pipes is the only signal."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it ended before the request was made
        os._exit(1)


def _answer(module: ModuleType, request: dict) -> dict:
    op = request["op"]
    if op == "callables":
        return {"ok": sorted(n for n in dir(module) if not n.startswith("__") and callable(getattr(module, n, None)))}
    if op == "require":
        try:
            user_code.require(module, request["names"])
        except InputError as err:
            return {"error": str(err)}
        return {"ok": None}
    function = request["function"]
    fn = module
    for part in function.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        try:
            user_code.require(module, [function])
        except InputError as err:
            return {"error": str(err)}
    passthrough = tuple(getattr(builtins, name) for name in request["passthrough"])
    try:
        value = user_code.call(module, fn, *request["args"], passthrough=passthrough, **request["kwargs"])
    except passthrough as err:
        kind = next(k for k in passthrough if isinstance(err, k))
        line = user_code.describe(err, module, function)
        return {"raise": {"type": kind.__name__, "message": _text(err), "line": line}}
    except InputError as err:
        return {"error": str(err)}
    except BaseException as err:  # KeyboardInterrupt, GeneratorExit: user_code.call lets them through
        return {"error": user_code.describe(err, module, function)}
    return {"ok": value}


def _text(err: BaseException) -> str:
    try:
        return str(err)
    except Exception:
        return type(err).__name__


def _send(replies, reply: dict, module: ModuleType | None) -> None:
    """Write one reply; a result that cannot be carried is replaced by the one line that says why."""

    def convert(value, path):
        try:
            array = np.asarray(value)  # a torch tensor, a JAX array, anything with __array__
        except BaseException as err:
            line = f"{user_code.describe(err, module)} (converting {path} to a NumPy array)"
            raise Unsendable(line, located=True) from None
        if array.dtype.hasobject:
            raise Unsendable(
                f"{path} is of type {type(value).__name__}, not an array, a number, or a dict or list of them"
                " (docs/contract.md)"
            )
        return array

    ((kind, value),) = reply.items()
    blobs = []
    try:
        frame = _frame({"dict": [[kind, _encode(value, blobs, convert, "the result", 0)]]}, blobs)
    except Unsendable as err:
        home = user_code._home(module) if module is not None else None
        where = user_code.shown(home) if home is not None else getattr(module, "__name__", "their code")
        frame = encode({"error": str(err) if err.located else f"{where}: {err}"})
    except BaseException as err:  # a Mapping whose methods raise, ...
        frame = encode({"error": f"{user_code.describe(err, module)} (reading the result)"})
    replies.write(frame)
    replies.flush()


def _receive(requests) -> tuple | None:
    """One frame from the parent, or None when it has closed the pipe."""
    size = requests.read(_LENGTH.size)
    if len(size) < _LENGTH.size:
        return None
    (head_size,) = _LENGTH.unpack(size)
    header = json.loads(requests.read(head_size))
    return header["body"], [requests.read(n) for n in header["sizes"]]


def _stand_in(spec: str) -> ModuleType:
    stand_in = ModuleType(spec)
    stand_in.__file__ = str(Path(spec).resolve()) if user_code.is_file(spec) else None
    return stand_in

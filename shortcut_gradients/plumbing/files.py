"""Writing output files: checked before any work, written atomically, never over an input.

A run writes only to a new path or over a regular file, and only through a temporary file
beside the target that is renamed onto it at the end: an error, Ctrl-C or SIGTERM on the way
removes the temporary file, and the target is the old file or the new one, never half of each.
"""

import os
import signal
import stat
import sys
import tempfile
from pathlib import Path

from shortcut_gradients.plumbing.config import InputError

SIGNALS = {signal.SIGINT, signal.SIGTERM}  # held back while a temporary file is created and named
WRITING: set[str] = set()  # the temporary files being written now, for exit_on_signals to remove


def exit_on_signals(program: str) -> None:
    """For a command-line run: Ctrl-C and SIGTERM end the process at once, with `program: interrupted` on
    stderr and status 128 + the signal's number, after removing the temporary files being written.

    Exiting from the handler, rather than raising KeyboardInterrupt wherever the program happens to be,
    is what makes this hold everywhere: that place may be Python code called from a framework's C++
    (torch's import), where an exception is swallowed or aborts the process with a C++ message. A
    user's code runs in worker processes, which die with this one (plumbing.worker)."""

    def handler(signum, frame):
        for tmp in list(WRITING):
            Path(tmp).unlink(missing_ok=True)
        try:
            sys.stdout.flush()  # what was printed stays printed
        except Exception:  # stdout was in the middle of a write, or is closed: nothing more to save
            pass
        os.write(2, f"{program}: interrupted\n".encode())
        os._exit(128 + signum)

    handler.exits_process = True  # what exits_on(signum) looks for
    for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored (a background job's Ctrl-C) stays ignored
            signal.signal(signum, handler)


def exits_on(signum: int) -> bool:
    """Whether exit_on_signals's handler is the one for `signum` now."""
    return getattr(signal.getsignal(signum), "exits_process", False)


def check_output_path(path, flag: str, suffix: str | None = None, *, inputs=()) -> None:
    """Fail before any work unless `path` names a new file or a regular file, in a writable folder.

    suffix: the name must end in it (".png"); inputs: (flag, path) pairs of files the run reads,
    which `path` must not be, by any name (a symbolic or hard link counts as the same file)."""
    text = os.fspath(path)
    if not text:
        raise InputError(f"{flag} was given an empty file name; give a file name, or leave {flag} out")
    p = Path(text)
    if text.endswith(("/", os.sep)) or p.is_dir():
        raise InputError(f"{flag} {text} names a folder; give a file name such as {p / ('out' + (suffix or ''))}")
    if p.is_symlink():
        raise InputError(f"{flag} {text} is a symbolic link; name the file it points to, or a new file")
    if p.exists() and not stat.S_ISREG(p.stat().st_mode):
        raise InputError(f"{flag} {text} exists and is not a regular file (a device, pipe or socket); give a file name")
    if suffix and p.suffix.lower() != suffix:
        raise InputError(f"{flag} writes a {suffix} file; give a name ending in {suffix}, got {text!r}")
    if not p.parent.is_dir():
        raise InputError(f"{flag} {text}: folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK):
        raise InputError(f"{flag} {text}: folder {p.parent} is not writable")
    for input_flag, input_path in inputs:
        if input_path and same_file(text, input_path):
            raise InputError(
                f"{flag} {text} is the {input_flag} file; write to another name so the input stays as it is"
            )


def same_file(a, b) -> bool:
    """Whether two paths name one file: the same real path, or the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_distinct(outputs: dict) -> None:
    """{flag: path} of the files a run writes: no two may be one file."""
    given = [(flag, path) for flag, path in outputs.items() if path]
    for i, (flag, path) in enumerate(given):
        for other_flag, other in given[:i]:
            if same_file(path, other):
                raise InputError(f"{other_flag} and {flag} both name {path}; give each its own file")


def write_atomically(path, write) -> None:
    """write(temporary path) then rename onto `path`: a failed or interrupted write leaves no file behind.

    The temporary file is created with SIGINT and SIGTERM held back, so that a signal cannot land
    between its creation and the `try` that removes it; any exception after that, including the
    KeyboardInterrupt a signal raises, removes it."""
    path = Path(path)
    tmp = None
    held = hold_signals()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        WRITING.add(tmp)
        os.close(fd)
        release_signals(held)  # a signal that came meanwhile is raised here, inside the try
        held = None
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; the result is an ordinary file
        os.replace(tmp, path)  # atomic on one file system: readers see the old file or the new one
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        WRITING.discard(tmp)
        release_signals(held)


def hold_signals():
    """Block SIGINT and SIGTERM (they stay pending); returns what to restore, or None off the main thread."""
    try:
        return signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    except (AttributeError, ValueError, OSError):  # no pthread_sigmask on this platform
        return None


def release_signals(held) -> None:
    if held is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)

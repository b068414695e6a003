"""Writing output files: checked before any work, written atomically."""

import os
import tempfile
from pathlib import Path

from shortcut_gradients.plumbing.config import InputError


def check_output_path(path, flag: str, suffix: str | None = None) -> None:
    """Fail before any work if `path` is not a writable file name (ending in `suffix`, if given)."""
    p = Path(path)
    if suffix and p.suffix.lower() != suffix:
        raise InputError(f"{flag} writes a {suffix} file; give a name ending in {suffix}, got {str(path)!r}")
    if p.is_dir():
        raise InputError(f"{flag} {path} is a directory; give a file name")
    if not p.parent.is_dir():
        raise InputError(f"{flag} {path}: folder {p.parent} does not exist")
    if not os.access(p.parent, os.W_OK):
        raise InputError(f"{flag} {path}: folder {p.parent} is not writable")


def write_atomically(path, write) -> None:
    """write(temporary path) then rename onto `path`: a failed write leaves no file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; the result is an ordinary file
        os.replace(tmp, path)  # atomic on one file system: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

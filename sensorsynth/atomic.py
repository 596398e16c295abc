"""One way to put a file in place whole: :func:`atomic_write`.

Why one function. Instruments, certificates, learned mappings, WAV renders, ready files and trainer results
are all read by other processes (the library's scan, a supervisor, the tests) while they may be being written,
and a crash or a full disk must never leave half a file under the real name. The recipe is always the same:
write a temporary file in the same folder (a rename only stays atomic within one file system), flush it to
disk, rename it over the name (or, with ``clobber=False``, link it there, which fails if the name exists), then
flush the folder so that the rename itself survives a power cut. Each step done differently in eight places
(some not fsynced, one with a fixed ``.tmp`` name two writers would share) is what this module replaces.

The temporary name is unique (``mkstemp``) and starts with a dot: the library's scan and ``ls`` skip it, and
it is removed whatever goes wrong.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "default_mode"]


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status): setting it to read
    it back would, for that instant, apply to files other threads create."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o077)  # elsewhere: the strictest mask for the instant it is in force
    os.umask(umask)
    return umask


def default_mode() -> int:
    """The permissions a plain ``open(path, "w")`` would give a new file (0666 less the umask)."""
    return 0o666 & ~_umask()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder: nothing more to do
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | str | Callable[[Path], object],
    *,
    clobber: bool = True,
    mode: int | None = None,
    durable: bool = True,
) -> Path:
    """Put ``data`` at ``path`` all at once: readers see the old file (or none) or the whole new one.

    ``data``: bytes, text (written as UTF-8), or a writer called with the temporary path to write to (for
    libraries that write files themselves: soundfile, safetensors); the writer may replace the file.
    ``clobber=False``: never overwrite; raises :class:`FileExistsError` when ``path`` exists (checked
    atomically with a hard link where the file system has them). ``mode``: the file's permissions (default:
    what a new file gets under the umask; ``0o600`` for secrets, set before the name appears).
    ``durable``: fsync the file and the folder (turn off only for files nobody needs after a crash).
    The folder must exist. Returns ``path`` as a :class:`Path`.
    """
    target = Path(path)
    folder = target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=folder)
    tmp = Path(tmp_name)
    try:
        if callable(data):
            os.close(fd)
            fd = -1
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, default_mode() if mode is None else mode)
        if durable:
            rd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(rd)
            finally:
                os.close(rd)
        if clobber:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # atomic, and fails when the name exists
            except FileExistsError:
                raise FileExistsError(f"{target}: exists") from None
            except OSError:  # a file system without hard links: check, then rename
                if target.exists():
                    raise FileExistsError(f"{target}: exists") from None
                os.replace(tmp, target)
        if durable:
            _fsync_folder(folder)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target

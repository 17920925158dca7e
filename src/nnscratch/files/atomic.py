"""Atomic, durable file output: nothing we write is ever left half-written.

Every output goes to a temporary file in the destination folder first. On success the file is
given the usual permissions (``0666 & ~umask``, as ``open()`` would), flushed to disk
(``fsync``), renamed over the final name (``os.replace`` is atomic on POSIX and Windows), and the
folder's entry is flushed too; so after a crash or a power loss the path holds either the old file
or the whole new one, never a truncated or empty one. On any exception, Ctrl-C included, the
temporary file is removed and the old file is left as it was.

Symbolic links are followed, never replaced: the temporary file is made beside the link's target
(``os.path.realpath``) and renamed over the target, so the link still points at the new file.
A target that is a stream is written straight into, without a temporary file (there is nothing
to replace, and replacing ``/dev/stdout`` would be wrong): a character device or pipe
(``/dev/null``, a terminal, a pipe) and a name of an open file descriptor (``/dev/stdout``,
``/dev/fd/N``, ``/proc/self/fd/N``), whatever it points at; this process's own descriptor is
written through the descriptor itself, after what Python buffered for stdout and stderr, so that
``--json /dev/stdout > file`` keeps every line in order. Any other target that is not a regular
file (a block device, a socket) is refused with :class:`~nnscratch.errors.UsageError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from nnscratch.errors import UsageError

#: Names of an open file descriptor: written in place whatever they point at.
_DESCRIPTOR_NAMES = re.compile(r"^/dev/(stdout|stderr|fd/(?P<fd>\d+))$|^/proc/(?P<pid>self|\d+)/fd/(?P<n>\d+)$")


def _own_descriptor(path: Path) -> int | None:
    """The descriptor of this process that ``path`` names (``/dev/stdout`` is 1), or None."""
    m = _DESCRIPTOR_NAMES.match(str(path))
    if not m:
        return None
    if m.group("pid") not in (None, "self", str(os.getpid())):
        return None
    return {"/dev/stdout": 1, "/dev/stderr": 2}.get(str(path)) or int(m.group("fd") or m.group("n"))


def _write_in_place(path: Path, data: bytes) -> None:
    """Write ``data`` into a stream: one of our own descriptors directly (after what Python has
    buffered for stdout and stderr, at the descriptor's own position: ``> file`` keeps the order),
    anything else by opening it."""
    fd = _own_descriptor(path)
    if fd is None:
        with open(path, "wb") as f:
            f.write(data)
        return
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where a write of ``path`` goes, and whether in place: ``(the link's target, False)`` for a
    file (existing or not), ``(path, True)`` for a stream (see the module docstring).

    Raises
    ------
    UsageError
        ``path`` is a block device or a socket: nothing we write belongs there.
    """
    path = Path(path)
    if _DESCRIPTOR_NAMES.match(str(path)):
        return path, True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        return path, True
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
        raise UsageError(f"{path} is a {kind}, not a file; write to a regular file")
    return Path(os.path.realpath(path)), False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it.

    Use it for libraries that want a file name (matplotlib, safetensors)::

        with atomic_path("out/fig.png") as tmp:
            fig.savefig(tmp, format="png")

    A symbolic link is followed (the temporary file goes beside its target); a stream target
    (``/dev/stdout``) is refused with :class:`~nnscratch.errors.UsageError`: these writers need a
    file to rename (:func:`atomic_write_bytes` writes into a stream).
    """
    path, in_place = write_target(path)
    if in_place:
        raise UsageError(f"{path} is a stream (a device or pipe), not a file; this output needs a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # after the writer: some libraries (safetensors) replace the file, which undoes an earlier chmod
        os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        _fsync_file(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); folders cannot be opened for this on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not support fsync on a folder
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path (a stream such as ``/dev/stdout``
    is written straight into; see the module docstring)."""
    target, in_place = write_target(path)
    if in_place:
        _write_in_place(target, data)
        return Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON, atomically: NaN and infinities (a diverged run's
    losses) are written as ``null``, which every JSON reader accepts."""
    return atomic_write_text(path, json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n")


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (lists, tuples and dicts walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj

"""Extract a tar archive without trusting it.

A tar member can name any path (``/etc/passwd``, ``../../.bashrc``), be a symbolic or hard link
that points outside the destination, or be a device file. :func:`safe_extract` checks *every*
member before writing anything and refuses the whole archive, with one line naming the archive
and the member, when one of them is:

* an absolute path (``/x``, ``C:\\x``) or a path with a ``..`` component;
* a symbolic link or a hard link;
* a character or block device, a FIFO, or any other type that is not a regular file or folder.

**Sizes.** A member's header declares its size: a wanted member may declare no more than the
caller's ``max_bytes`` for it, all members together (listing one means inflating those before it)
no more than ``max_total`` and :func:`~nnscratch.data.limits.max_input_bytes`, and the archive may list at most
:data:`MAX_MEMBERS` members. Each header is checked as soon as it is read, so an archive whose
first member claims 4 GiB is refused before a byte of it is inflated. Then the wanted regular
files are copied out in chunks, never more bytes than declared (a member that holds more is
refused and the partial file deleted).
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from nnscratch.errors import DataError
from nnscratch.data.limits import InputTooLargeError, check_input_bytes

__all__ = ["MAX_MEMBERS", "UnsafeArchiveError", "safe_extract", "unsafe_reason"]

#: The most members an archive may list (CIFAR-10's has 8): listing costs memory per member.
MAX_MEMBERS = 10_000
_CHUNK = 1 << 20


class UnsafeArchiveError(DataError):
    """An archive member would write outside the destination, or is a link or a device."""


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None when it is a plain file or folder inside."""
    name = member.name.replace("\\", "/")
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":"):
        return "has an absolute path"
    if ".." in PurePosixPath(name).parts:
        return "has a '..' path component (path traversal)"
    if member.issym():
        return f"is a symbolic link (to {member.linkname!r})"
    if member.islnk():
        return f"is a hard link (to {member.linkname!r})"
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isfile() or member.isdir()):
        return "is not a regular file or folder"
    return None


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, wanted: set[str],
                 fix: str, optional: set[str] = frozenset(),
                 max_bytes: dict[str, int] | None = None, max_total: int | None = None) -> list[Path]:
    """Check every member of ``archive``, then extract the members named in ``wanted``.

    Parameters
    ----------
    archive
        A tar file, gzip-compressed or not.
    dest
        Existing folder to extract into.
    wanted
        Member names (``"folder/file"``) to extract; the others are checked but not written.
    fix
        What the user should do, appended to every error message.
    optional
        Member names to extract too when present; their absence is no error.
    max_bytes
        The most bytes each wanted or optional member may declare (by name); a name not in it is
        bounded by :func:`~nnscratch.data.limits.max_input_bytes` alone.
    max_total
        The most bytes all members together may declare (extracted or not).

    Returns
    -------
    list of pathlib.Path
        The extracted files (wanted and optional ones present), sorted by name.

    Raises
    ------
    UnsafeArchiveError
        A member is unsafe (see the module docstring); nothing was extracted.
    InputTooLargeError
        A member, or all of them together, declares more than allowed; nothing was extracted.
    DataError
        The archive cannot be read (corrupt or truncated), or a wanted member is missing.
    """
    max_bytes = max_bytes or {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            chosen = _check_members(tar, archive, wanted | optional, max_bytes, max_total, fix)
            absent = sorted(wanted - {m.name for m in chosen})
            if absent:
                raise DataError(f"{archive}: archive lacks {', '.join(absent)}; {fix}")
            for member in chosen:
                _copy_member(tar, member, Path(dest), archive, fix)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{archive}: not a readable tar archive ({reason}: corrupt or "
                        f"truncated?); {fix}") from exc
    except OSError as exc:
        raise DataError(f"{archive}: cannot extract into {dest} ({exc.strerror or exc}); "
                        f"free some disk space or check the folder's permissions") from exc
    return [Path(dest, name) for name in sorted(m.name for m in chosen)]


def _check_members(tar: tarfile.TarFile, archive, names: set[str], max_bytes: dict[str, int],
                   max_total: int | None, fix: str) -> list[tarfile.TarInfo]:
    """Read the member headers one at a time, checking each before the next is read (which would
    inflate this one's data); return the regular files named in ``names``."""
    chosen, total, count = [], 0, 0
    seen: set[str] = set()
    while (member := tar.next()) is not None:
        count += 1
        if count > MAX_MEMBERS:
            raise InputTooLargeError(f"{archive}: lists more than {MAX_MEMBERS:,} members; {fix}")
        reason = unsafe_reason(member)
        if reason:
            raise UnsafeArchiveError(f"{archive}: refusing to extract: member {member.name!r} {reason}; {fix}")
        wanted = member.isfile() and member.name in names
        limit = max_bytes.get(member.name) if wanted else None
        if limit is not None and member.size > limit:
            raise InputTooLargeError(f"{archive}: member {member.name!r} declares {member.size:,} bytes, "
                                     f"more than the {limit:,} it can have; {fix}")
        total += member.size
        if max_total is not None and total > max_total:
            raise InputTooLargeError(f"{archive}: its members declare more than the {max_total:,} bytes "
                                     f"it can hold; {fix}")
        check_input_bytes(str(archive), total, "what its members declare")
        if wanted:
            if member.name in seen:
                raise DataError(f"{archive}: member {member.name!r} occurs twice; {fix}")
            seen.add(member.name)
            chosen.append(member)
    return chosen


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, archive, fix: str) -> None:
    """Copy one checked regular file out, in chunks, never more than its declared size."""
    target = dest.joinpath(*PurePosixPath(member.name.replace("\\", "/")).parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = tar.extractfile(member)
    written = 0
    try:
        with source, open(target, "xb") as out:
            while chunk := source.read(min(_CHUNK, member.size + 1 - written)):
                written += len(chunk)
                if written > member.size:
                    raise InputTooLargeError(f"{archive}: member {member.name!r} holds more than the "
                                             f"{member.size:,} bytes it declares; {fix}")
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if written < member.size:
        target.unlink(missing_ok=True)
        raise DataError(f"{archive}: member {member.name!r} is cut short ({written:,} of {member.size:,} "
                        f"bytes: truncated?); {fix}")

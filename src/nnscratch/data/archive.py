"""Extract a tar archive without trusting it.

A tar member can name any path (``/etc/passwd``, ``../../.bashrc``), be a symbolic or hard link
that points outside the destination, or be a device file. :func:`safe_extract` checks *every*
member before writing anything and refuses the whole archive, with one line naming the archive
and the member, when one of them is:

* an absolute path (``/x``, ``C:\\x``) or a path with a ``..`` component;
* a symbolic link or a hard link;
* a character or block device, a FIFO, or any other type that is not a regular file or folder.

Only then are the wanted regular files extracted, with :mod:`tarfile`'s own ``"data"`` filter on
top where this Python has it (3.12, and 3.8.17 / 3.9.17 / 3.10.12 / 3.11.4 and later).
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from nnscratch.errors import DataError

__all__ = ["UnsafeArchiveError", "safe_extract", "unsafe_reason"]


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
                 fix: str, optional: set[str] = frozenset()) -> list[Path]:
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

    Returns
    -------
    list of pathlib.Path
        The extracted files (wanted and optional ones present), sorted by name.

    Raises
    ------
    UnsafeArchiveError
        A member is unsafe (see the module docstring); nothing was extracted.
    DataError
        The archive cannot be read (corrupt or truncated), or a wanted member is missing.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                reason = unsafe_reason(member)
                if reason:
                    raise UnsafeArchiveError(
                        f"{archive}: refusing to extract: member {member.name!r} {reason}; {fix}"
                    )
            chosen = [m for m in members if m.isfile() and m.name in wanted | optional]
            absent = sorted(wanted - {m.name for m in chosen})
            if absent:
                raise DataError(f"{archive}: archive lacks {', '.join(absent)}; {fix}")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=chosen, **kwargs)
    except tarfile.FilterError as exc:
        raise UnsafeArchiveError(f"{archive}: refusing to extract: {exc}; {fix}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{archive}: not a readable tar archive ({reason}: corrupt or "
                        f"truncated?); {fix}") from exc
    except OSError as exc:
        raise DataError(f"{archive}: cannot extract into {dest} ({exc.strerror or exc}); "
                        f"free some disk space or check the folder's permissions") from exc
    return [Path(dest, name) for name in sorted(m.name for m in chosen)]

"""Download a dataset file from a list of mirrors, verified, atomically, or not at all.

:func:`fetch` tries each mirror in turn. A transfer goes into a temporary file in the
destination folder; it is accepted only if it is complete (as many bytes as the server's
``Content-Length``) and the SHA-256 of its decompressed content is the expected one. Then it is
renamed over the final name (:func:`nnscratch.files.atomic.atomic_path`, an atomic :func:`os.replace`).
A failed, cut-off or corrupt transfer deletes its temporary file and moves on to the next mirror,
so the destination never holds a partial or wrong file. The file is kept as downloaded (usually the
original ``.gz`` bytes); only its decompressed content is hashed, so any mirror's compression of
the same data is accepted. An archive (``digest_of="file"``, e.g. CIFAR-10's ``.tar.gz``) is
instead checked by the SHA-256 of the downloaded bytes themselves. A transfer (and the content it
decompresses to) may not run past :func:`~nnscratch.data.limits.max_input_bytes`: a mirror that sends
more is a bad transfer, stopped at the cap.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Iterable

from tqdm import tqdm

from nnscratch.files.atomic import atomic_path
from nnscratch.data.idx import IDXError, check_digest, sha256_of_idx, verify_sha256
from nnscratch.errors import DataError
from nnscratch.data.limits import InputTooLargeError, max_input_bytes

__all__ = ["DownloadError", "fetch", "mirror_url"]

DEFAULT_TIMEOUT = 30.0
_CHUNK = 1 << 20
_USER_AGENT = "nnscratch/0.1 (dataset downloader; Python urllib)"


class DownloadError(DataError):
    """No mirror delivered a complete file with the expected checksum.

    Attributes
    ----------
    filename
        The file that was wanted.
    attempts
        One ``"URL (reason)"`` string per mirror tried, in order.
    """

    def __init__(self, message: str, filename: str = "", attempts: tuple[str, ...] = ()):
        super().__init__(message)
        self.filename = filename
        self.attempts = attempts


class _BadTransfer(Exception):
    """Internal: this mirror's transfer is unusable; the message says why."""


def mirror_url(mirror: str, filename: str) -> str:
    """Join a mirror's base URL and a file name (with or without a trailing ``/``)."""
    return mirror.rstrip("/") + "/" + filename


def fetch(
    filename: str,
    sha256: str,
    dest_dir: str | os.PathLike,
    mirrors: Iterable[str],
    progress: bool = True,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    digest_of: str = "content",
) -> Path:
    """Download ``filename`` from the first mirror that delivers it intact.

    Parameters
    ----------
    filename
        The file name, appended to each mirror's base URL (e.g. ``train-images-idx3-ubyte.gz``).
    sha256
        Expected hex SHA-256 of the file's *decompressed* content (of the content itself when the
        server sends it uncompressed).
    dest_dir
        Folder to store the file in, created if needed. The result is ``dest_dir / filename``,
        replaced atomically if it exists.
    mirrors
        Base URLs, tried in order.
    progress
        Show a tqdm progress bar (bytes) on stderr.
    timeout
        Seconds to wait for a connection or for data before giving up on a mirror.
    digest_of
        ``"content"``: ``sha256`` is that of the decompressed content (IDX files);
        ``"file"``: that of the bytes as downloaded (archives such as ``.tar.gz``).

    Returns
    -------
    pathlib.Path
        The path of the verified file.

    Raises
    ------
    DownloadError
        Every mirror failed; the one-line message lists each URL with its reason and how to use
        local files instead. Nothing is left in ``dest_dir``.
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / filename
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create download folder {dest_dir} ({exc.strerror or exc}); "
            f"{_local_files_hint(filename)}",
            filename,
        ) from exc
    attempts: list[str] = []
    for mirror in mirrors:
        url = mirror_url(mirror, filename)
        try:
            _download_verified(url, final, sha256, progress, timeout, digest_of)
        except _BadTransfer as exc:
            attempts.append(f"{url} ({exc})")
            continue
        return final
    tried = "; ".join(attempts) if attempts else "no mirrors configured"
    raise DownloadError(
        f"could not download {filename}: tried {tried}; {_local_files_hint(filename)}",
        filename,
        tuple(attempts),
    )


def _local_files_hint(filename: str) -> str:
    return (
        f"copy {filename} from a machine that has it and pass --data-dir DIR or set "
        f"NNSCRATCH_DATA_DIR to the folder holding it"
    )


def _download_verified(url: str, final: Path, sha256: str, progress: bool, timeout: float,
                       digest_of: str = "content") -> None:
    """Download ``url`` to a temp file beside ``final``, verify it, rename it to ``final``
    (:func:`nnscratch.files.atomic.atomic_path`: the temp file is removed whatever goes wrong).

    Raises :class:`_BadTransfer` when anything goes wrong with this mirror,
    :class:`DownloadError` when the folder is not writable (no mirror can help).
    """
    try:
        with atomic_path(final) as tmp:
            with open(tmp, "wb") as out:
                _transfer(url, out, final.name, progress, timeout)
            _verify(tmp, sha256, url, digest_of)
    except OSError as exc:  # _transfer turns the network's OSErrors into _BadTransfer: this is the disk
        raise DownloadError(
            f"cannot write into {final.parent} ({exc.strerror or exc}); "
            f"{_local_files_hint(final.name)}",
            final.name,
        ) from exc


def _transfer(url: str, out: BinaryIO, label: str, progress: bool, timeout: float) -> None:
    """Copy the body at ``url`` into ``out``; raise :class:`_BadTransfer` if it is incomplete."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            expected = _content_length(response)
            received = _copy_body(response, out, expected, label, progress)
    except urllib.error.HTTPError as exc:
        raise _BadTransfer(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _BadTransfer(f"cannot connect: {_reason(exc.reason)}") from exc
    except http.client.IncompleteRead as exc:
        raise _BadTransfer(f"transfer cut off after {len(exc.partial):,} bytes") from exc
    except (http.client.HTTPException, OSError) as exc:
        raise _BadTransfer(f"transfer failed: {_reason(exc)}") from exc
    if expected is not None and received != expected:
        raise _BadTransfer(f"transfer cut off: got {received:,} of {expected:,} bytes")
    if received == 0:
        raise _BadTransfer("server sent an empty file")


def _copy_body(response, out: BinaryIO, expected: int | None, label: str, progress: bool) -> int:
    """Stream the response body into ``out``, with an optional progress bar; return its size.
    A body (announced or real) beyond :func:`~nnscratch.data.limits.max_input_bytes` is refused."""
    limit = max_input_bytes()
    if expected is not None and expected > limit:
        raise _BadTransfer(f"the server announces {expected:,} bytes, above the limit of {limit:,}")
    received = 0
    with tqdm(
        total=expected,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not progress,
        leave=False,
    ) as bar:
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            received += len(chunk)
            if received > limit:
                raise _BadTransfer(f"the server sent more than the limit of {limit:,} bytes")
            bar.update(len(chunk))
    return received


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _verify(path: Path, sha256: str, url: str, digest_of: str = "content") -> None:
    """Check the SHA-256 of the downloaded file's decompressed content (or of the file itself)."""
    try:
        if digest_of == "file":
            verify_sha256(path, sha256, url, of="the file")
        else:
            check_digest(sha256_of_idx(path, source=url), sha256, url)  # streamed, capped
    except (IDXError, InputTooLargeError) as exc:
        raise _BadTransfer(_short_reason(str(exc), url)) from exc


def _short_reason(message: str, url: str) -> str:
    """Turn an IDXError message about ``url`` into a short reason for the attempts list."""
    message = message.removeprefix(f"{url}: ")
    return message.split(";")[0]


def _reason(exc: object) -> str:
    """A short, single-line description of a network error."""
    if isinstance(exc, BaseException):
        text = str(exc) or type(exc).__name__
    else:
        text = str(exc)
    return " ".join(text.split())

"""Our own reader for the IDX format, the file format of MNIST and Fashion-MNIST.

An IDX file is a tiny header followed by one big array, all big-endian::

    offset  size        content
    0       2           two zero bytes
    2       1           data type code (see below)
    3       1           number of dimensions, ``ndim`` (at least 1)
    4       4 * ndim    the size of each dimension, unsigned 32-bit big-endian
    ...     prod(dims) * itemsize
                        the values, big-endian, in C (row-major) order

Data type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
``0x0D`` float32, ``0x0E`` float64. The first four bytes together are the "magic number":
``0x00000803`` for the MNIST image files (uint8, 3 dimensions: count x rows x columns) and
``0x00000801`` for the label files (uint8, 1 dimension: count).

The files are usually distributed gzip-compressed. :func:`read_idx` recognises gzip by its
magic bytes ``1f 8b``, never by the file name, so a ``.gz`` that was decompressed in place
(or an uncompressed file that was renamed) still reads correctly.

**Bounded cost.** A file is decompressed as a stream, in 1 MiB chunks, and its SHA-256 computed
on the way (:class:`ContentStream`), never inflated whole first: the header is read, the size it
declares (``prod(dims) * itemsize``) is checked against
:func:`~nnscratch.data.limits.max_input_bytes` before anything is allocated, and the content is
collected as it arrives (so a header that lies costs what the file really holds) and never past
the limit: a small gzip bomb stops at the cap with one line.

Everything that can be wrong with a file raises a subclass of :class:`IDXError`, itself a
:class:`~nnscratch.errors.DataError`, whose message is one line naming the file, the problem
and the fix; the command line prints it and exits with status 2.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib

import numpy as np

from nnscratch.errors import DataError
from nnscratch.data.limits import MAX_INPUT_BYTES_ENV, InputTooLargeError, check_input_bytes, max_input_bytes

__all__ = [
    "IDX_DTYPES",
    "IDXError",
    "EmptyFileError",
    "BadMagicError",
    "TruncatedFileError",
    "TrailingBytesError",
    "DimensionError",
    "ChecksumError",
    "read_idx",
    "read_idx_bytes",
    "parse_idx",
    "sha256_of_idx",
    "sha256_hex",
    "verify_sha256",
    "ContentStream",
]

#: IDX data type code -> big-endian NumPy dtype of the stored values.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_REDOWNLOAD = "delete it and download it again"
_CHUNK = 1 << 20  # bytes decompressed (and hashed) at a time


class IDXError(DataError):
    """Base class: an IDX file is missing, unreadable or malformed."""


class EmptyFileError(IDXError):
    """The file (or its decompressed content) holds zero bytes."""


class BadMagicError(IDXError):
    """The magic number is not that of an IDX file (wrong leading bytes or unknown dtype)."""


class TruncatedFileError(IDXError):
    """The header or the payload is shorter than the header promises (e.g. a cut-off download)."""


class TrailingBytesError(IDXError):
    """The file holds more bytes than the header promises."""


class DimensionError(IDXError):
    """Bad dimensions: ``ndim`` of 0, a zero-length dimension, or not the shape the caller needs."""


class ChecksumError(IDXError):
    """The SHA-256 of a file (or of its decompressed content) is not the expected one.

    The message is ``finding`` (what was found) then ``advice`` (what to do); ``actual`` is the
    hex digest found, so a caller that knows more (which dataset's file it is) can say so
    through :meth:`with_advice`.
    """

    def __init__(self, finding: str, advice: str = "", actual: str = "") -> None:
        super().__init__(f"{finding} {advice}".rstrip())
        self.finding, self.advice, self.actual = finding, advice, actual

    def with_advice(self, advice: str) -> "ChecksumError":
        """The same finding with other advice."""
        return ChecksumError(self.finding, advice, self.actual)


def is_gzip(data: bytes) -> bool:
    """Return True when ``data`` starts with the gzip magic bytes ``1f 8b``."""
    return data[:2] == _GZIP_MAGIC


class ContentStream:
    """The content of a file (decompressed when it is gzip) as a stream: read in chunks, hashed
    (SHA-256) and counted on the way, and never past :func:`~nnscratch.data.limits.max_input_bytes`.

    Use it as a context manager over a path or an open binary file::

        with ContentStream(path) as stream:
            head = stream.read(4)
            ...
            rest = stream.drain()      # bytes left, hashed and counted but not kept
        digest = stream.hexdigest()

    Raises :class:`TruncatedFileError` (gzip cut off), :class:`IDXError` (corrupt gzip, unreadable
    file) or :class:`~nnscratch.data.limits.InputTooLargeError` (content beyond the limit).
    """

    def __init__(self, source: str | os.PathLike, fileobj=None, name: str | None = None) -> None:
        self.source = name or str(source)
        self._path, self._fileobj = source, fileobj
        self.limit = max_input_bytes()
        self.count = 0
        self._digest = hashlib.sha256()
        self._raw = self._stream = None

    def __enter__(self) -> "ContentStream":
        try:
            self._raw = self._fileobj if self._fileobj is not None else open(self._path, "rb")
        except FileNotFoundError as exc:
            raise IDXError(f"{self.source}: no such file; check the path") from exc
        except OSError as exc:
            raise IDXError(f"{self.source}: cannot read ({exc.strerror or exc})") from exc
        magic = self._raw.read(2)
        self._raw.seek(-len(magic), os.SEEK_CUR)
        self.gzip = magic == _GZIP_MAGIC
        self._stream = gzip.GzipFile(fileobj=self._raw, mode="rb") if self.gzip else self._raw
        return self

    def __exit__(self, *exc) -> None:
        if self._stream is not self._raw:
            self._stream.close()
        if self._fileobj is None:
            self._raw.close()

    def hexdigest(self) -> str:
        """The SHA-256 (hex) of everything read so far."""
        return self._digest.hexdigest()

    def _chunk(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end), hashed and counted; refuses the limit's excess."""
        size = min(size, self.limit + 1 - self.count)
        try:
            data = self._stream.read(size)
        except EOFError as exc:
            raise TruncatedFileError(
                f"{self.source}: gzip stream ends early (file truncated?); {_REDOWNLOAD}") from exc
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise IDXError(f"{self.source}: corrupt gzip data ({exc}); {_REDOWNLOAD}") from exc
        except OSError as exc:
            raise IDXError(f"{self.source}: cannot read ({exc.strerror or exc})") from exc
        self.count += len(data)
        if self.count > self.limit:
            what = "its decompressed content" if self.gzip else "it"
            raise InputTooLargeError(f"{self.source}: {what} runs past the limit of {self.limit:,} bytes; if the "
                                     f"data is honest, raise {MAX_INPUT_BYTES_ENV}")
        self._digest.update(data)
        return data

    def read(self, size: int) -> bytes:
        """The next ``size`` bytes, fewer only where the content ends. Memory grows with what the
        content really holds, never with ``size`` (which a header may inflate)."""
        first = self._chunk(min(size, _CHUNK))
        if len(first) == size or not first:
            return first
        out = bytearray(first)
        while len(out) < size and (data := self._chunk(min(size - len(out), _CHUNK))):
            out += data
        return out

    def drain(self) -> int:
        """Read (hash and count) the rest of the content without keeping it; return its length."""
        total = 0
        while data := self._chunk(_CHUNK):
            total += len(data)
        return total


def decompress_if_gzip(data: bytes, source: str) -> bytes:
    """Return ``data`` decompressed when it is gzip, else unchanged; decompressed as a stream and
    never past :func:`~nnscratch.data.limits.max_input_bytes` (see :class:`ContentStream`)."""
    if not is_gzip(data):
        return data
    import io

    with ContentStream(source, io.BytesIO(data)) as stream:
        return bytes(stream.read(stream.limit + 1))


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """Read a file and return its content, decompressed when it is gzip (streamed, capped).

    Raises
    ------
    IDXError
        The file cannot be read, or its gzip stream is corrupt.
    EmptyFileError
        The file is empty.
    InputTooLargeError
        The content runs past :func:`~nnscratch.data.limits.max_input_bytes`.
    """
    with ContentStream(path) as stream:
        data = bytes(stream.read(stream.limit + 1))
    if not data:
        raise EmptyFileError(f"{path}: file is empty (0 bytes); {_REDOWNLOAD}")
    return data


def sha256_of_idx(path: str | os.PathLike, source: str | None = None) -> str:
    """Return the hex SHA-256 of a file's decompressed content (the content itself if raw), streamed.

    This is the checksum listed in ``SHA256SUMS.uncompressed``: it is the same for the official
    ``.gz`` files, for a re-compressed copy and for the decompressed file. ``source`` names the
    file in messages (default: the path).
    """
    with ContentStream(path, name=source) as stream:
        stream.drain()
    return stream.hexdigest()


def sha256_hex(data: bytes | str | os.PathLike) -> str:
    """Hex SHA-256 of ``data``: bytes, or a file's bytes as stored (no decompression), read in 1 MiB chunks."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with open(data, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(data: bytes | str | os.PathLike, expected: str, source: str, *,
                  of: str = "the decompressed content",
                  advice: str = f"(corrupt or a different file); {_REDOWNLOAD}") -> None:
    """The one checksum check of the data package: raise :class:`ChecksumError` unless the SHA-256
    of ``data`` (bytes, or a file hashed as stored) is ``expected`` (hex, any case).

    The message is ``"{source}: SHA-256 of {of} is <actual>, expected <expected> {advice}"``.
    """
    check_digest(sha256_hex(data), expected, source, of=of, advice=advice)


def check_digest(actual: str, expected: str, source: str, *, of: str = "the decompressed content",
                 advice: str = f"(corrupt or a different file); {_REDOWNLOAD}") -> None:
    """:func:`verify_sha256` for a digest already computed (e.g. by a :class:`ContentStream`)."""
    actual, expected = actual.lower(), expected.lower()
    if actual != expected:
        raise ChecksumError(f"{source}: SHA-256 of {of} is {actual}, expected {expected}", advice, actual)


def read_idx(path: str | os.PathLike, *, sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian NumPy array.

    One streamed pass (:class:`ContentStream`): the header is parsed and the size it declares
    checked against :func:`~nnscratch.data.limits.max_input_bytes` first, the payload collected as it
    is decompressed, the SHA-256 computed on the way.

    Parameters
    ----------
    path
        The file. Gzip is recognised by its magic bytes, not by the name.
    sha256
        If given, the expected hex SHA-256 of the decompressed content; a mismatch is reported
        before any problem of the content itself (a wrong file is a wrong file).

    Returns
    -------
    numpy.ndarray
        A writeable, native-endian array of the shape stored in the header.

    Raises
    ------
    IDXError
        Or one of its subclasses; see :func:`parse_idx` and :class:`ChecksumError`.
    InputTooLargeError
        The header declares, or the gzip stream inflates to, more than the limit.
    """
    source = str(path)
    problem = None
    with ContentStream(path) as stream:
        head = stream.read(4)
        try:
            dtype, ndim = _parse_magic(head, source)
            head += stream.read(4 * ndim)
            dims = _parse_dims(head, ndim, source)
        except IDXError as exc:  # reported after the checksum, which needs the rest of the content
            problem = exc
        if problem is None:
            count = math.prod(dims)
            check_input_bytes(source, len(head) + count * dtype.itemsize,
                              f"the content its header declares ({' x '.join(map(str, dims))} {dtype.name})")
            payload = stream.read(count * dtype.itemsize)
            trailing = stream.drain()
        else:
            stream.drain()
    if sha256 is not None:
        check_digest(stream.hexdigest(), sha256, source)
    if problem is not None:
        raise problem
    _check_payload_size(len(payload) + trailing, count * dtype.itemsize, source)
    array = np.frombuffer(payload, dtype=dtype, count=count)
    if dtype.itemsize == 1 and isinstance(payload, bytearray):  # already writeable, no byte order
        return array.reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the (decompressed) bytes of an IDX file.

    Parameters
    ----------
    data
        The whole file content, header included, not compressed.
    source
        What to call the data in error messages, usually the file path.

    Returns
    -------
    numpy.ndarray
        A writeable, native-endian array of shape ``dims``.

    Raises
    ------
    EmptyFileError
        ``data`` is empty.
    BadMagicError
        The first two bytes are not zero, or the data type code is unknown.
    DimensionError
        The header declares 0 dimensions, or a dimension of size 0.
    TruncatedFileError
        The header or the payload is shorter than announced.
    TrailingBytesError
        The payload is longer than announced.
    """
    dtype, ndim = _parse_magic(data, source)
    dims = _parse_dims(data, ndim, source)
    offset = 4 + 4 * ndim
    expected = math.prod(dims) * dtype.itemsize
    _check_payload_size(len(data) - offset, expected, source)
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=offset)
    # astype copies: the result is writeable and owns its memory in native byte order.
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _parse_magic(data: bytes, source: str) -> tuple[np.dtype, int]:
    """Check the 4-byte magic number; return (big-endian dtype, ndim)."""
    if not data:
        raise EmptyFileError(f"{source}: file is empty (0 bytes); {_REDOWNLOAD}")
    if data[:2] != b"\x00\x00"[: len(data[:2])]:
        raise BadMagicError(
            f"{source}: not an IDX file (starts with bytes {data[:4].hex(' ')}, "
            f"expected 00 00 <type> <ndim>); check that the path points at an IDX file"
        )
    if len(data) < 4:
        raise TruncatedFileError(
            f"{source}: only {len(data)} bytes, shorter than the 4-byte IDX magic number "
            f"(file truncated?); {_REDOWNLOAD}"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise BadMagicError(
            f"{source}: unknown IDX data type code 0x{code:02X} (known: {known}); "
            f"the file is corrupt or not an IDX file, {_REDOWNLOAD}"
        )
    if ndim == 0:
        raise DimensionError(
            f"{source}: IDX header declares 0 dimensions (at least 1 needed); "
            f"the file is corrupt, {_REDOWNLOAD}"
        )
    return IDX_DTYPES[code], ndim


def _parse_dims(data: bytes, ndim: int, source: str) -> tuple[int, ...]:
    """Read the ``ndim`` big-endian uint32 dimension sizes after the magic number."""
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise TruncatedFileError(
            f"{source}: header of {ndim} dimensions needs {header_size:,} bytes, file has "
            f"{len(data):,} (file truncated?); {_REDOWNLOAD}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if 0 in dims:
        shape = " x ".join(str(d) for d in dims)
        raise DimensionError(
            f"{source}: IDX header declares a dimension of size 0 ({shape}); "
            f"the file is corrupt, {_REDOWNLOAD}"
        )
    return dims


def _check_payload_size(actual: int, expected: int, source: str) -> None:
    """Raise unless the payload after the header is exactly ``expected`` bytes."""
    if actual < expected:
        raise TruncatedFileError(
            f"{source}: payload is {actual:,} bytes, header promises {expected:,} "
            f"(file truncated?); {_REDOWNLOAD}"
        )
    if actual > expected:
        raise TrailingBytesError(
            f"{source}: payload is {actual:,} bytes, header promises {expected:,} "
            f"({actual - expected:,} trailing bytes: corrupt or not an IDX file); {_REDOWNLOAD}"
        )


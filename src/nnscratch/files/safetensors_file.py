"""A safetensors reader that checks everything a file declares before it reads a tensor.

A safetensors file is::

    offset      size    content
    0           8       N, the header's length, unsigned 64-bit little-endian
    8           N       the header: a UTF-8 JSON object (padded with spaces)
    8 + N       ...     the payload: every tensor's bytes, little-endian, C order

The header maps each tensor name to ``{"dtype": "F32", "shape": [533, 784], "data_offsets":
[begin, end]}`` (offsets into the payload) and may hold ``"__metadata__"``, an object of strings.

:func:`read_header` reads the 8 bytes and the header only, and refuses (one-line
:class:`~nnscratch.errors.DataError` naming the file) anything that does not add up: a header
longer than the file or than :data:`~nnscratch.data.limits.MAX_SAFETENSORS_HEADER`, JSON that is not an
object, metadata that is not strings, an unknown dtype, a shape whose size is not what its offsets
span, tensors that overlap or leave gaps, a payload that is cut short or has bytes appended. So a
caller knows every name, shape and dtype (and so what reading will cost) before any tensor is
read; :func:`read_tensors` then reads the payload in chunks, straight into the arrays, and returns
the payload's SHA-256 with them. :func:`write_safetensors` writes a file atomically through the
safetensors library, optionally with that digest in its metadata, and :func:`payload_sha256_of`
gives the digest a file of given tensors will have.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnscratch.errors import DataError
from nnscratch.files.atomic import atomic_path
from nnscratch.data.limits import MAX_SAFETENSORS_HEADER, check_input_bytes
from nnscratch.files.json_text import parse_json

__all__ = ["DTYPES", "TensorEntry", "SafetensorsHeader", "read_header", "read_tensors", "payload_sha256_of",
           "write_safetensors"]

#: The safetensors dtypes NumPy can hold, as little-endian NumPy dtypes (others, e.g. BF16 or the
#: 8-bit floats, are refused as unknown: nnscratch never writes them).
DTYPES: dict[str, np.dtype] = {name: np.dtype(code) for name, code in {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "F16": "<f2", "U32": "<u4", "I32": "<i4",
    "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8"}.items()}

_CHUNK = 8 << 20  # bytes read at a time


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header declares it: ``begin``/``end`` are byte offsets into the payload."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked header: ``payload_offset`` is where the payload starts in the file (``8 + N``) and
    ``payload_size`` its length, which the tensors cover exactly."""

    path: Path
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    payload_offset: int
    payload_size: int


def _unique_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the key {duplicate!r} occurs twice")
    return dict(pairs)


def read_header(path: str | os.PathLike, what: str = "model file") -> SafetensorsHeader:
    """Read and check the header of the safetensors file ``path`` (never its payload).

    Parameters
    ----------
    path
        The file.
    what
        What the file should be, for messages: ``"PATH is not a {what}: ..."``.

    Raises
    ------
    DataError
        One line naming ``path`` and what is wrong (see the module docstring), or that it cannot
        be read.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise DataError(f"{path} is not a {what}: it has {size:,} bytes, fewer than the 8 that give a "
                                "safetensors header's length")
            length = int.from_bytes(head, "little")
            if length > size - 8:
                raise DataError(f"{path} is not a {what}: its header claims {length:,} bytes but the file has "
                                f"{size:,}")
            if length > MAX_SAFETENSORS_HEADER:
                raise DataError(f"{path} is not a {what}: its header claims {length:,} bytes, more than the "
                                f"{MAX_SAFETENSORS_HEADER:,} a safetensors header may have here")
            raw = f.read(length)
    except IsADirectoryError:
        raise DataError(f"{path} is not a {what}: it is a folder") from None
    except FileNotFoundError:
        raise DataError(f"{path} is not a {what}: it does not exist") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if len(raw) < length:
        raise DataError(f"{path} is not a {what}: it was cut short while being read")
    try:
        obj = parse_json(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path} is not a {what}: its header is not UTF-8 JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a {what}: its header is a JSON {type(obj).__name__}, not an object")
    payload_size = size - 8 - length
    metadata = _metadata(obj.pop("__metadata__", None), path, what)
    tensors = {name: _entry(name, value, path, what) for name, value in obj.items()}
    _check_layout(tensors, payload_size, path, what)
    check_input_bytes(str(path), payload_size, f"the {what}'s tensor data")
    return SafetensorsHeader(path, tensors, metadata, 8 + length, payload_size)


def _metadata(value, path: Path, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DataError(f"{path} is not a {what}: its __metadata__ is not an object of strings")
    return dict(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(name: str, value, path: Path, what: str) -> TensorEntry:
    """One header entry as a :class:`TensorEntry`, its fields checked one by one."""
    bad = f"{path} is not a {what}: tensor {name!r}"
    if not isinstance(value, dict) or not {"dtype", "shape", "data_offsets"} <= set(value):
        raise DataError(f"{bad} lacks a dtype, shape or data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in DTYPES:
        raise DataError(f"{bad} has the unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise DataError(f"{bad} has the shape {shape!r}; expected a list of whole numbers >= 0")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise DataError(f"{bad} has the data_offsets {offsets!r}; expected [begin, end] with 0 <= begin <= end")
    nbytes = DTYPES[dtype].itemsize * math.prod(shape)
    if offsets[1] - offsets[0] != nbytes:
        raise DataError(f"{bad} of {dtype} {tuple(shape)} needs {nbytes:,} bytes but its data_offsets span "
                        f"{offsets[1] - offsets[0]:,}")
    return TensorEntry(dtype, tuple(shape), offsets[0], offsets[1])


def _check_layout(tensors: dict[str, TensorEntry], payload_size: int, path: Path, what: str) -> None:
    """The tensors must tile the payload: no overlap, no gap, nothing missing, nothing appended."""
    cursor, previous = 0, None
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.end > payload_size:
            raise DataError(f"{path} is not a {what}: tensor {name!r} ends at byte {entry.end:,} of the payload, "
                            f"which has only {payload_size:,} bytes (the file is truncated)")
        if entry.begin < cursor:
            raise DataError(f"{path} is not a {what}: tensors {previous!r} and {name!r} overlap")
        if entry.begin > cursor:
            raise DataError(f"{path} is not a {what}: {entry.begin - cursor:,} bytes before tensor {name!r} "
                            "belong to no tensor")
        cursor, previous = entry.end, name
    if cursor != payload_size:
        raise DataError(f"{path} is not a {what}: {payload_size - cursor:,} bytes after its last tensor belong to "
                        "no tensor (junk appended to the file?)")


def read_tensors(header: SafetensorsHeader, names=None) -> tuple[dict[str, np.ndarray], str]:
    """Read the tensors ``names`` (all if None) of a file whose header :func:`read_header` checked.

    The whole payload is read once, in chunks, straight into the arrays (the tensors not asked for
    are only hashed). Returns ``(arrays, digest)``: writable native-endian arrays in the order of
    ``names`` and the hex SHA-256 of the whole payload (compare it with a digest stored in the
    metadata by :func:`write_safetensors`).

    Raises
    ------
    DataError
        A name the file does not hold, or the file changed (shrank or grew) since its header was read.
    """
    wanted = list(header.tensors) if names is None else list(names)
    missing = [n for n in wanted if n not in header.tensors]
    if missing:
        raise DataError(f"{header.path} has no tensor {missing[0]!r}")
    arrays = {name: np.empty(header.tensors[name].shape, dtype=DTYPES[header.tensors[name].dtype])
              for name in wanted}
    digest = hashlib.sha256()
    scratch = None
    try:
        with open(header.path, "rb") as f:
            f.seek(header.payload_offset)
            for name, entry in sorted(header.tensors.items(), key=lambda item: item[1].begin):
                if name in arrays:
                    _read_into(f, arrays[name].reshape(-1).view(np.uint8), digest, header.path)
                else:
                    scratch = scratch if scratch is not None else np.empty(_CHUNK, dtype=np.uint8)
                    _skip(f, entry.end - entry.begin, scratch, digest, header.path)
            if f.read(1):
                raise DataError(f"{header.path} grew while it was being read; read it again once it is written")
    except OSError as exc:
        raise DataError(f"{header.path}: cannot read the tensors ({exc.strerror or exc})") from None
    native = {name: a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("=")) for name, a in arrays.items()}
    return native, digest.hexdigest()


def _read_into(f, target: np.ndarray, digest, path: Path) -> None:
    view = memoryview(target)
    pos = 0
    while pos < len(view):
        got = f.readinto(view[pos:pos + _CHUNK])
        if not got:
            raise DataError(f"{path} was cut short while it was being read; read it again once it is written")
        digest.update(view[pos:pos + got])
        pos += got


def _skip(f, nbytes: int, scratch: np.ndarray, digest, path: Path) -> None:
    while nbytes:
        _read_into(f, scratch[:min(nbytes, len(scratch))], digest, path)
        nbytes -= min(nbytes, len(scratch))


def _contiguous(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {str(k): np.asarray(v, order="C") for k, v in tensors.items()}  # (ascontiguousarray makes 0-d 1-d)


def payload_sha256_of(tensors: dict[str, np.ndarray]) -> str:
    """The hex SHA-256 the payload of a file of ``tensors`` written by :func:`write_safetensors` has.

    Computed on the very bytes ``safetensors.numpy.save`` lays out (its order of tensors, its
    alignment), so it holds whatever that order is; this costs one in-memory copy of the tensors.
    """
    from safetensors.numpy import save

    data = save(_contiguous(tensors))
    length = int.from_bytes(data[:8], "little")
    return hashlib.sha256(memoryview(data)[8 + length:]).hexdigest()


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray], metadata: dict[str, str], *,
                      digest_key: str | None = None) -> Path:
    """Write ``tensors`` and ``metadata`` to ``path`` atomically (temp file, fsync, rename).

    With ``digest_key``, ``metadata[digest_key]`` is set to the payload's SHA-256
    (:func:`payload_sha256_of`), so a reader can tell a damaged payload from a sound one: compare
    it with the digest :func:`read_tensors` returns. Returns ``path``.
    """
    from safetensors.numpy import save_file

    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("safetensors metadata must map strings to strings")
    arrays = _contiguous(tensors)
    metadata = dict(metadata)
    if digest_key is not None:
        metadata[digest_key] = payload_sha256_of(arrays)
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata=metadata)
    return Path(path)

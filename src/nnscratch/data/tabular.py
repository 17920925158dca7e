"""``csv:PATH`` and ``npz:PATH``: images stored as numbers in one file.

**CSV.** One image per line: a label column and ``H * W * C`` pixel columns, in the feature order
of :mod:`nnscratch.data.preprocess` (row by row, pixel by pixel, channel by channel). The label
column is the first unless ``label_column`` names it (a header name) or gives its index (0 is
the first column, -1 the last). A header line is optional: the first line is taken as a header
when a pixel cell in it is not a number, or when its label cell is not a number while the next
line's is. Labels are whole numbers ``0..K-1`` or text (the classes are then the sorted distinct
texts). The image is square and greyscale unless ``image_shape`` (``(H, W)`` or ``(H, W, C)``)
says otherwise. Pixels are 0..255, or floats in [0, 1] (scaled by 255, with a note).

**NPZ** (``numpy.savez``). Arrays ``x``: images ``(N, H, W)`` or ``(N, H, W, C)``; ``y``: ``N``
labels (whole numbers ``0..K-1`` or text); optional ``class_names``: ``K`` strings. Read with
``allow_pickle=False``: object arrays (which need pickle, and pickle can run code) are refused.
Pixels: uint8 or other integers in 0..255, or floats: in [0, 1] (scaled by 255 to uint8, with a
note) or in [0, 255] (rounded); NaN, infinity or other ranges are an error.

An NPZ is read member by member with :mod:`zipfile` and NumPy's ``.npy`` header parser, never
by trusting it: each member's declared uncompressed size (the ZIP directory's ``file_size``) and
its ``.npy`` header's shape and dtype are checked against
:func:`~nnscratch.data.limits.max_input_bytes` and against each other before anything is read, and the
data is then collected as it inflates (so a member that lies costs what it really holds, never
more than it declared). ``x`` must have at least one image and no dimension of size 0, images at
most :func:`~nnscratch.data.limits.max_image_side` pixels a side.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from nnscratch.data.common import labels_from_values, pixels_to_uint8, shape_str
from nnscratch.errors import DataError, UsageError
from nnscratch.data.limits import check_image_side, check_input_bytes

__all__ = ["Pool", "read_csv", "read_npz"]

_CHUNK_ROWS = 2048
_NPZ_FIX = "save it with numpy.savez(path, x=images, y=labels)"


class Pool:
    """Images uint8 ``(N, H, W, C)``, int64 labels, class names, and notes on what was done."""

    def __init__(self, images, labels, class_names, notes) -> None:
        self.images, self.labels, self.class_names, self.notes = images, labels, class_names, notes


# --- CSV ---------------------------------------------------------------------------------------


def _parses(text: str, kind: type = float) -> bool:
    """True when ``kind(text)`` succeeds: ``float`` for a number cell, ``int`` for a column index."""
    try:
        kind(text)
    except ValueError:
        return False
    return True


def read_csv(path: str | os.PathLike, *, label_column: str | int | None = None,
             image_shape: tuple[int, ...] | None = None) -> Pool:
    """Read a CSV of labelled images (module docstring).

    Raises
    ------
    DataError
        Unreadable or empty file; a line of the wrong length; a cell that is not a number;
        NaN/infinite or out-of-range pixels; bad labels; columns that do not form the image.
    UsageError
        ``label_column`` names no column; ``image_shape`` does not match the pixel columns.
    """
    path = Path(path).expanduser()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = [(row, n) for n, row in _numbered_rows(csv.reader(f)) if row]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file; check the path given to csv:PATH") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV text ({exc}); give a comma-separated "
                        f"UTF-8 text file") from exc
    if not lines:
        raise DataError(f"{path}: file holds no lines; give one labelled image per line")
    header, col = _header_and_label_column(lines, label_column, path)
    if header is not None:
        lines = lines[1:]
    if not lines:
        raise DataError(f"{path}: only a header line, no images; give one labelled image per line")
    width = len(header) if header is not None else len(lines[0][0])
    labels_text, pixels = _parse_rows(lines, width, col, path)
    _check_printable_labels(labels_text, lines, path)
    shape = _image_shape(width - 1, image_shape, path)
    notes: list[str] = []
    integral = bool((pixels == np.rint(pixels)).all()) if np.isfinite(pixels).all() else None
    images = pixels_to_uint8(pixels, str(path), notes, integral=integral)
    values = (np.array(labels_text, dtype=np.float64) if all(map(_parses, labels_text))
              else np.array(labels_text, dtype=str))
    labels, class_names = labels_from_values(values, f"{path} (label column)")
    return Pool(images.reshape(len(images), *shape), labels, class_names, notes)


def _numbered_rows(reader):
    for row in reader:
        yield reader.line_num, row


def _header_and_label_column(lines, label_column, path: Path) -> tuple[list[str] | None, int]:
    first = lines[0][0]
    if isinstance(label_column, str) and not _parses(label_column, int):
        if label_column not in first:
            shown = ", ".join(first[:8]) + (", ..." if len(first) > 8 else "")
            raise UsageError(f"--label-column {label_column!r}: {path} has no such column "
                             f"(header: {shown}); give a column name or a 0-based index")
        return first, first.index(label_column)
    index = 0 if label_column is None else int(label_column)
    if not -len(first) <= index < len(first):
        raise UsageError(f"--label-column {label_column}: {path} has {len(first)} columns "
                         f"(0..{len(first) - 1}); give a column name or a 0-based index")
    index %= len(first)
    pixels_text = any(not _parses(c) for k, c in enumerate(first) if k != index)
    label_text = not _parses(first[index]) and len(lines) > 1 and \
        len(lines[1][0]) > index and _parses(lines[1][0][index])
    return (first if pixels_text or label_text else None), index


def _parse_rows(lines, width: int, col: int, path: Path) -> tuple[list[str], np.ndarray]:
    """Check each line's length; convert the pixel cells, chunk by chunk, to float64."""
    labels: list[str] = []
    chunks: list[np.ndarray] = []
    for start in range(0, len(lines), _CHUNK_ROWS):
        block = []
        for row, line_no in lines[start:start + _CHUNK_ROWS]:
            if len(row) != width:
                raise DataError(f"{path}: line {line_no} has {len(row)} values, expected {width} "
                                f"(like the first line); fix or delete that line")
            labels.append(row[col].strip())
            block.append(row[:col] + row[col + 1:])
        try:
            chunks.append(np.array(block, dtype=np.float64))
        except ValueError:
            _raise_first_non_number(lines[start:start + _CHUNK_ROWS], col, path)
    return labels, np.concatenate(chunks)


def _check_printable_labels(labels: list[str], lines, path: Path) -> None:
    """A label with a NUL byte or another non-printable character is refused, shown escaped: it is
    damage, and NumPy's text arrays would even drop a trailing NUL (merging it into another class)."""
    bad = next((k for k, text in enumerate(labels) if not text.isprintable()), None)
    if bad is not None:
        raise DataError(f"{path}: line {lines[bad][1]}: the label {labels[bad]!r} holds a non-printable "
                        f"character (shown escaped); fix the label (a NUL byte or a control character is "
                        f"usually damage)")


def _raise_first_non_number(lines, col: int, path: Path) -> None:
    for row, line_no in lines:
        for k, cell in enumerate(row):
            if k != col and not _parses(cell):
                raise DataError(f"{path}: line {line_no}, column {k + 1}: {cell!r} is not a "
                                f"number; every pixel must be a number (0..255, or 0..1)")
    raise DataError(f"{path}: a pixel cell is not a number; every pixel must be a number")


def _image_shape(n_pixels: int, image_shape, path: Path) -> tuple[int, int, int]:
    if image_shape is not None:
        shape = tuple(int(v) for v in image_shape)
        if len(shape) == 2:
            shape = (*shape, 1)
        if len(shape) != 3 or min(shape) < 1:
            raise UsageError(f"--image-shape {image_shape!r}: expected HxW or HxWxC")
        if math.prod(shape) != n_pixels:
            raise UsageError(f"--image-shape {'x'.join(map(str, shape))} needs "
                             f"{math.prod(shape):,} pixel columns, {path} has {n_pixels:,}; "
                             f"give the shape of its images")
        return shape
    side = math.isqrt(n_pixels)
    if side * side != n_pixels or n_pixels == 0:
        raise DataError(f"{path}: {n_pixels:,} pixel columns do not form a square greyscale "
                        f"image; pass --image-shape HxW or HxWxC")
    return side, side, 1


# --- NPZ ---------------------------------------------------------------------------------------


def read_npz(path: str | os.PathLike) -> Pool:
    """Read ``x``, ``y`` and optional ``class_names`` from an ``.npz`` file (module docstring).

    Raises
    ------
    DataError
        Unreadable file; no ``x`` or ``y``; an object (pickle) array; a member or a shape above
        the limits; ``x`` and ``y`` of different lengths; bad shapes, pixel values or labels.
    """
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise DataError(f"{path}: holds a single array (.npy), not named arrays; {_NPZ_FIX}")
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                members = {name.removesuffix(".npy"): name for name in archive.namelist()}
                missing = [k for k in ("x", "y") if k not in members]
                if missing:
                    raise DataError(f"{path}: has arrays {', '.join(members) or 'none'}, lacks "
                                    f"{' and '.join(repr(k) for k in missing)} (images x, labels y); "
                                    f"{_NPZ_FIX}")
                x = read_npz_member(archive, members["x"], "x", path, images=True)
                y = read_npz_member(archive, members["y"], "y", path)
                names = read_npz_member(archive, members["class_names"], "class_names", path) \
                    if "class_names" in members else None
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file; check the path given to npz:PATH") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({' '.join(str(exc).split())}); "
                        f"{_NPZ_FIX}") from exc
    return _pool_from_arrays(x, y, names, path)


def read_npz_member(archive: zipfile.ZipFile, member: str, key: str, path: Path, images: bool = False) -> np.ndarray:
    """One ``.npy`` member, its declared sizes checked before its data is read (module docstring);
    also the reader of the folder cache (:mod:`nnscratch.data.folder`)."""
    info = archive.getinfo(member)
    check_input_bytes(str(path), info.file_size, f"array {key!r} (its declared uncompressed size)")
    try:
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0(f))
            if dtype.hasobject:
                raise DataError(
                    f"{path}: array {key!r} is an object array, which only pickle can load; "
                    f"nnscratch reads .npz files with allow_pickle=False (pickle can run code); save "
                    f"plain arrays, e.g. numpy.savez(path, x=np.asarray(images, dtype=np.uint8), "
                    f"y=np.asarray(labels))")
            _check_declared_shape(shape, dtype, key, path, images)
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes != info.file_size - f.tell():
                raise DataError(f"{path}: array {key!r} declares {shape_str(shape)} {dtype} ({nbytes:,} bytes) "
                                f"but its member holds {info.file_size - f.tell():,}; {_NPZ_FIX}")
            data = _read_exactly(f, nbytes)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks
        raise DataError(f"{path}: array {key!r} is damaged ({' '.join(str(exc).split())}); {_NPZ_FIX}") from exc
    if len(data) != nbytes:
        raise DataError(f"{path}: array {key!r} is cut short ({len(data):,} of {nbytes:,} bytes); {_NPZ_FIX}")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
    return array.reshape(shape, order="F" if fortran else "C")


def _check_declared_shape(shape: tuple[int, ...], dtype: np.dtype, key: str, path: Path, images: bool) -> None:
    """Refuse, from the ``.npy`` header alone, a shape that would cost more than the limit or that
    cannot be images."""
    check_input_bytes(str(path), math.prod(shape) * dtype.itemsize,
                      f"array {key!r} of shape {shape_str(shape)} {dtype} (as its header declares)")
    if images:
        if len(shape) not in (3, 4) or shape[0] == 0 or 0 in shape:
            raise DataError(f"{path}: x has shape {shape_str(shape)}, expected images (N, H, W) or "
                            f"(N, H, W, C) with every size at least 1; {_NPZ_FIX}")
        check_image_side(f"{path} (x)", shape[1], shape[2])


def _read_exactly(f, nbytes: int) -> bytearray:
    """Up to ``nbytes`` from ``f``, collected in 1 MiB chunks: memory grows with what really
    inflates, never with what a header declares."""
    out = bytearray()
    while len(out) < nbytes and (chunk := f.read(min(nbytes - len(out), 1 << 20))):
        out += chunk
    return out


def _pool_from_arrays(x: np.ndarray, y: np.ndarray, names, path: Path) -> Pool:
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or len(x) == 0:
        raise DataError(f"{path}: x has shape {shape_str(x)}, expected images (N, H, W) or "
                        f"(N, H, W, C) with N >= 1; {_NPZ_FIX}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: x holds {len(x):,} images but y has shape {shape_str(y)}; "
                        f"give one label per image (y of length {len(x):,})")
    class_names = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(f"{path}: class_names has shape {shape_str(names)} and type "
                            f"{names.dtype}; give a 1-D array of strings")
        class_names = tuple(str(n) for n in names)
    notes: list[str] = []
    images = pixels_to_uint8(x, f"{path} (x)", notes)
    labels, class_names = labels_from_values(y, f"{path} (y)", class_names)
    return Pool(images, labels, class_names, notes)

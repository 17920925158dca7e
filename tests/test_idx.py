"""The IDX reader: round trips for every dtype, gzip or raw, and one error class per defect."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import pytest

from conftest import _require_data
from helpers import encode_idx
from nnscratch.data import (
    BadMagicError,
    ChecksumError,
    DimensionError,
    EmptyFileError,
    IDXError,
    TrailingBytesError,
    TruncatedFileError,
    parse_idx,
    read_idx,
    sha256_of_idx,
)
from nnscratch.errors import DataError

DTYPE_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """IDX bytes written by hand (independently of encode_idx): magic, dims, big-endian data."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + big_endian.tobytes()


def sample(dtype) -> np.ndarray:
    """A small 3-D array using negative values and fractions where the dtype allows."""
    values = np.arange(-12, 12, dtype=np.float64).reshape(2, 3, 4) * 1.5
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        values = np.clip(np.round(values), info.min, info.max)
        values[0, 0, 0] = info.max  # exercise the extreme value (byte order matters for it)
    return values.astype(dtype)


def write(path, data: bytes, *, gz: bool):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def one_line_naming(exc_info, path) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", list(DTYPE_CODES), ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path, dtype, gz):
    expected = sample(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(expected, DTYPE_CODES[dtype]), gz=gz)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype)
    assert got.dtype.isnative
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, expected)
    assert got.flags.writeable


def test_encode_idx_matches_hand_written_bytes():
    for dtype, code in DTYPE_CODES.items():
        array = sample(dtype)
        assert encode_idx(array) == idx_bytes(array, code)
    with pytest.raises(ValueError):
        encode_idx(np.zeros(3, dtype=np.int64))


def test_gzip_is_detected_by_magic_bytes_not_by_name(tmp_path):
    expected = np.arange(10, dtype=np.uint8)
    gz_named_idx = write(tmp_path / "labels.idx", idx_bytes(expected, 0x08), gz=True)
    raw_named_gz = write(tmp_path / "labels.gz", idx_bytes(expected, 0x08), gz=False)
    np.testing.assert_array_equal(read_idx(gz_named_idx), expected)
    np.testing.assert_array_equal(read_idx(raw_named_gz), expected)


def test_one_dimensional_labels(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], dtype=np.uint8)
    header = bytes([0, 0, 8, 1, 0, 0, 0, 5])
    path = write(tmp_path / "labels-idx1-ubyte", header + labels.tobytes(), gz=False)
    got = read_idx(path)
    assert got.shape == (5,)
    np.testing.assert_array_equal(got, labels)


def test_errors_are_data_errors():
    for cls in (EmptyFileError, BadMagicError, TruncatedFileError, TrailingBytesError,
                DimensionError, ChecksumError):
        assert issubclass(cls, IDXError)
    assert issubclass(IDXError, DataError)
    assert DataError.exit_code == 2


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_empty_file(tmp_path, gz):
    path = tmp_path / "empty-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"") if gz else b"")
    with pytest.raises(EmptyFileError) as exc_info:
        read_idx(path)
    assert "empty" in one_line_naming(exc_info, path)


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(40),
        b"<html>Not Found</html>",
        b"\x01\x00\x08\x01\x00\x00\x00\x01\x07",
    ],
    ids=["png", "html", "nonzero-first-byte"],
)
def test_bad_magic(tmp_path, content):
    path = write(tmp_path / "train-images-idx3-ubyte", content, gz=False)
    with pytest.raises(BadMagicError) as exc_info:
        read_idx(path)
    assert "not an IDX file" in one_line_naming(exc_info, path)


@pytest.mark.parametrize("code", [0x00, 0x07, 0x0A, 0x0F, 0xFF])
def test_unknown_dtype_code(tmp_path, code):
    path = write(tmp_path / "x.idx", bytes([0, 0, code, 1, 0, 0, 0, 1, 0]), gz=True)
    with pytest.raises(BadMagicError) as exc_info:
        read_idx(path)
    assert f"0x{code:02X}" in one_line_naming(exc_info, path)


def test_zero_dimensions(tmp_path):
    path = write(tmp_path / "x.idx", bytes([0, 0, 8, 0, 7]), gz=False)
    with pytest.raises(DimensionError) as exc_info:
        read_idx(path)
    assert "0 dimensions" in one_line_naming(exc_info, path)


def test_dimension_of_size_zero(tmp_path):
    header = bytes([0, 0, 8, 3]) + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path = write(tmp_path / "x.idx", header, gz=False)
    with pytest.raises(DimensionError) as exc_info:
        read_idx(path)
    assert "size 0" in one_line_naming(exc_info, path)


@pytest.mark.parametrize("content", [b"\x00\x00\x08", b"\x00\x00\x08\x03\x00\x00\xea\x60\x00\x00"],
                         ids=["magic", "dims"])
def test_truncated_header(tmp_path, content):
    path = write(tmp_path / "x.idx", content, gz=False)
    with pytest.raises(TruncatedFileError) as exc_info:
        read_idx(path)
    assert "truncated" in one_line_naming(exc_info, path)


def test_truncated_payload_message_gives_sizes(tmp_path):
    header = bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path = write(tmp_path / "train-images-idx3-ubyte.gz", header + bytes(1000), gz=True)
    with pytest.raises(TruncatedFileError) as exc_info:
        read_idx(path)
    message = one_line_naming(exc_info, path)
    assert "payload is 1,000 bytes, header promises 47,040,000" in message
    assert "download" in message


def test_truncated_multibyte_payload(tmp_path):
    data = idx_bytes(np.arange(6, dtype=np.float64), 0x0E)
    path = write(tmp_path / "x.idx", data[:-3], gz=False)
    with pytest.raises(TruncatedFileError) as exc_info:
        read_idx(path)
    assert "45 bytes, header promises 48" in one_line_naming(exc_info, path)


def test_cut_off_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32), 0x0C))
    path = tmp_path / "x.idx.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(TruncatedFileError) as exc_info:
        read_idx(path)
    one_line_naming(exc_info, path)


def test_corrupt_gzip_stream(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32), 0x0C)))
    compressed[-6] ^= 0xFF  # inside the CRC-32 / size trailer
    path = tmp_path / "x.idx.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(IDXError) as exc_info:
        read_idx(path)
    assert "gzip" in one_line_naming(exc_info, path)


def test_trailing_bytes(tmp_path):
    data = idx_bytes(np.arange(10, dtype=np.uint8), 0x08) + b"extra"
    path = write(tmp_path / "x.idx", data, gz=True)
    with pytest.raises(TrailingBytesError) as exc_info:
        read_idx(path)
    assert "5 trailing bytes" in one_line_naming(exc_info, path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.gz"
    with pytest.raises(IDXError) as exc_info:
        read_idx(path)
    assert "no such file" in one_line_naming(exc_info, path)


def test_checksum(tmp_path):
    data = idx_bytes(np.arange(10, dtype=np.uint8), 0x08)
    path = write(tmp_path / "x.idx.gz", data, gz=True)
    good = hashlib.sha256(data).hexdigest()
    assert sha256_of_idx(path) == good
    assert sha256_of_idx(write(tmp_path / "raw.idx", data, gz=False)) == good
    np.testing.assert_array_equal(read_idx(path, sha256=good.upper()), np.arange(10))
    with pytest.raises(ChecksumError) as exc_info:
        read_idx(path, sha256="0" * 64)
    message = one_line_naming(exc_info, path)
    assert good in message and "0" * 64 in message


def test_parse_idx_uses_source_in_messages():
    with pytest.raises(BadMagicError, match=r"^memory://labels: "):
        parse_idx(b"\xff\xff\x08\x01", "memory://labels")
    with pytest.raises(EmptyFileError, match=r"^memory://labels: "):
        parse_idx(b"", "memory://labels")


def test_real_mnist_test_labels_if_available():
    """The shared MNIST test labels read back as 10,000 digits (skipped without the data)."""
    base = os.environ.get("NNSCRATCH_DATA_DIR", "")
    path = os.path.join(base, "mnist", "t10k-labels-idx1-ubyte.gz")
    if not base or not os.path.isfile(path):
        if _require_data():
            pytest.fail(f"real MNIST needed (NNSCRATCH_REQUIRE_DATA=1): {path} not found")
        pytest.skip("real MNIST not found: set NNSCRATCH_DATA_DIR")
    labels = read_idx(path)
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert sorted(set(labels.tolist())) == list(range(10))

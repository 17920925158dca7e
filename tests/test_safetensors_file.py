"""The safetensors reader: every declared size checked before a byte of payload is read, the payload
read in chunks with its SHA-256, and files written atomically with that digest in their metadata."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from helpers import one_line
from memcap import run_capped
from nnscratch.errors import DataError
from nnscratch.files.safetensors_file import (
    SafetensorsHeader,
    TensorEntry,
    payload_sha256_of,
    read_header,
    read_tensors,
    write_safetensors,
)

TENSORS = {"0.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "0.bias": np.array([1.5, -2.0, 3.25]),
           "1.num_batches_tracked": np.array(7, dtype=np.int64), "empty": np.zeros((0, 5), dtype=np.float32)}


def _craft(path, header: dict, payload: bytes = b"", length: int | None = None) -> None:
    """A safetensors file from a header object and payload bytes, written by hand (any lie allowed)."""
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + payload)


def test_round_trip_matches_the_safetensors_library(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {"format": "x"})
    header = read_header(path)
    assert isinstance(header, SafetensorsHeader) and header.path == path
    assert header.metadata == {"format": "x"}
    assert header.tensors["0.weight"] == TensorEntry("F32", (3, 4), header.tensors["0.weight"].begin,
                                                     header.tensors["0.weight"].begin + 48)
    assert header.payload_offset + header.payload_size == path.stat().st_size
    arrays, digest = read_tensors(header)
    reference = load_file(str(path))
    assert set(arrays) == set(reference) == set(TENSORS)
    for name, value in TENSORS.items():
        assert arrays[name].dtype == value.dtype and arrays[name].shape == value.shape
        np.testing.assert_array_equal(arrays[name], value)
        assert arrays[name].flags.writeable
    payload = path.read_bytes()[header.payload_offset:]
    assert digest == hashlib.sha256(payload).hexdigest() == payload_sha256_of(TENSORS)


def test_read_only_some_tensors_still_hashes_the_whole_payload(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {})
    arrays, digest = read_tensors(read_header(path), ["0.bias"])
    assert list(arrays) == ["0.bias"]
    np.testing.assert_array_equal(arrays["0.bias"], TENSORS["0.bias"])
    assert digest == payload_sha256_of(TENSORS)
    with pytest.raises(DataError, match="no tensor 'nope'"):
        read_tensors(read_header(path), ["nope"])


def test_digest_key_stores_the_payload_digest_and_reads_back_equal(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {"a": "b"}, digest_key="sha256")
    header = read_header(path)
    assert header.metadata["a"] == "b"
    assert header.metadata["sha256"] == read_tensors(header)[1] == payload_sha256_of(TENSORS)
    # a flipped payload byte is seen in the digest
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    path.write_bytes(bytes(data))
    assert read_tensors(read_header(path))[1] != header.metadata["sha256"]


def test_a_file_from_the_safetensors_library_reads(tmp_path):
    path = tmp_path / "lib.safetensors"
    save_file({"a": np.ones((2, 2), dtype=np.float64), "b": np.arange(3, dtype=np.int32)}, str(path))
    arrays, _ = read_tensors(read_header(path))
    np.testing.assert_array_equal(arrays["b"], [0, 1, 2])
    assert read_header(path).metadata == {}


def test_write_is_atomic_a_failure_leaves_the_old_file(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {"v": "1"})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_safetensors(path, TENSORS, {"v": 2})
    with pytest.raises(Exception):
        write_safetensors(path, {"x": np.array([object()])}, {"v": "2"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
_DUPLICATE_JSON = b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "x": 1}'
_DUPLICATE = struct.pack("<Q", len(_DUPLICATE_JSON)) + _DUPLICATE_JSON + b"\x00" * 8

BAD_HEADERS = [
    ("short file", None, b"\x01\x02", "fewer than the 8"),
    ("header beyond the file", {"x": F32}, 9_999_999_999, "header claims 9,999,999,999 bytes but the file has"),
    ("not JSON", None, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", "not UTF-8 JSON"),
    ("not UTF-8", None, b"\x04\x00\x00\x00\x00\x00\x00\x00\xff\xfe\xfd\xfc", "not UTF-8 JSON"),
    ("a list", [1, 2], None, "a JSON list, not an object"),
    ("metadata not strings", {"__metadata__": {"a": 1}, "x": F32}, None, "__metadata__ is not an object of strings"),
    ("metadata a list", {"__metadata__": ["a"], "x": F32}, None, "__metadata__ is not an object of strings"),
    ("no dtype", {"x": {"shape": [2], "data_offsets": [0, 8]}}, None, "lacks a dtype, shape or data_offsets"),
    ("unknown dtype", {"x": {**F32, "dtype": "BF16"}}, None, "unknown dtype 'BF16'"),
    ("negative shape", {"x": {**F32, "shape": [-2]}}, None, "has the shape [-2]"),
    ("float shape", {"x": {**F32, "shape": [2.0]}}, None, "has the shape [2.0]"),
    ("bool shape", {"x": {**F32, "shape": [True]}}, None, "has the shape [True]"),
    ("reversed offsets", {"x": {**F32, "data_offsets": [8, 0]}}, None, "data_offsets [8, 0]"),
    ("offsets of the wrong length", {"x": {**F32, "shape": [3]}}, None, "needs 12 bytes but its data_offsets span 8"),
    ("overlap", {"x": F32, "y": F32}, None, "overlap"),
    ("gap", {"x": {**F32, "data_offsets": [4, 12]}}, None, "4 bytes before tensor 'x' belong to no tensor"),
    ("duplicate key", None, _DUPLICATE, "occurs twice"),
    ("nested too deep", None, struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000,
     "not UTF-8 JSON (it is nested deeper"),
]


@pytest.mark.parametrize("case", BAD_HEADERS, ids=[c[0] for c in BAD_HEADERS])
def test_a_bad_header_is_one_line_naming_the_file(tmp_path, case):
    _, header, extra, expected = case  # header None: extra is the whole file; else extra is a lying length
    path = tmp_path / "bad.safetensors"
    if header is None:
        path.write_bytes(extra)
    else:
        _craft(path, header, b"\x00" * 16, length=extra)
    with pytest.raises(DataError) as exc:
        read_header(path)
    message = one_line(exc)
    assert str(path) in message and expected in message, message


def test_a_truncated_file_and_appended_junk_are_refused(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {})
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(DataError, match="truncated"):
        read_header(path)
    path.write_bytes(data + b"junk")
    with pytest.raises(DataError, match="4 bytes after its last tensor belong to no tensor"):
        read_header(path)


def test_a_header_above_the_cap_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:  # a sparse 17 MiB file: the header length fits the file, not the cap
        f.write(struct.pack("<Q", 17 << 20))
        f.truncate(8 + (17 << 20))
    with pytest.raises(DataError, match="more than the 16,777,216 a safetensors header may have"):
        read_header(path)


def test_a_file_changed_after_its_header_was_read_is_refused(tmp_path):
    path = write_safetensors(tmp_path / "m.safetensors", TENSORS, {})
    header = read_header(path)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DataError, match="cut short"):
        read_tensors(header)


def test_a_tiny_file_declaring_a_terabyte_tensor_costs_nothing(tmp_path):
    """A 100-byte file whose header declares a 4 TB tensor (and a header of 9 EB) is refused from the
    header alone, in a child whose memory is capped at 1 GiB above its baseline."""
    path = tmp_path / "huge.safetensors"
    _craft(path, {"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 4 << 40]}}, b"\x00" * 16)
    error, message = run_capped(f"read_header({str(path)!r})",
                                "from nnscratch.files.safetensors_file import read_header", tmp_path)
    assert error == "DataError" and "truncated" in message and str(path) in message, message
    _craft(path, {"w": F32}, b"\x00" * 8, length=(1 << 63) - 1)
    error, message = run_capped(f"read_header({str(path)!r})",
                                "from nnscratch.files.safetensors_file import read_header", tmp_path)
    assert error == "DataError" and "header claims 9,223,372,036,854,775,807 bytes" in message, message

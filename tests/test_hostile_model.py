"""Crafted model files: every lie in the metadata or the header is one line naming the file, checked
before any tensor is read, and a model whose weights are not all finite is refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from helpers import assert_one_line_error, cli_env, one_line, run_cli
from memcap import run_capped
from nnscratch.errors import DataError
from nnscratch.files.model_files import DIGEST_KEY, FORMAT, load_model, save_model
from nnscratch.files.safetensors_file import read_header, write_safetensors
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import mlp_spec

SPEC = mlp_spec(input_dim=16, hidden=(8,), num_classes=3)
INFO = {"engine": "numpy", "dtype": "float32", "dataset": "mnist", "data_options": {"val_size": 100, "seed": 1},
        "standardization": {"mean": [0.5], "std": [0.25]}}


def _state():
    return {k: v.astype(np.float32) for k, v in initial_state(SPEC, np.random.default_rng(0)).items()}


def _model(tmp_path, state=None, **metadata) -> "Path":  # noqa: F821
    """A model file whose metadata is ours, changed by ``metadata`` (a value of None drops the key)."""
    path = save_model(tmp_path / "m.safetensors", state or _state(), SPEC, **INFO)
    meta = dict(read_header(path).metadata)
    meta.update({k: v for k, v in metadata.items() if v is not None})
    for key in [k for k, v in metadata.items() if v is None]:
        meta.pop(key)
    return write_safetensors(path, state or _state(), meta, digest_key=DIGEST_KEY if DIGEST_KEY in meta else None)


def test_a_sound_model_loads_with_its_info_and_digest(tmp_path):
    path = save_model(tmp_path / "m.safetensors", _state(), SPEC, **INFO)
    assert len(read_header(path).metadata[DIGEST_KEY]) == 64
    state, spec, info = load_model(path)
    assert spec == SPEC and info == INFO
    for name, value in _state().items():
        np.testing.assert_array_equal(state[name], value)


BAD_INFO = [
    ("info a list", {"info": "[1, 2]"}, "info metadata is a JSON list, not an object"),
    ("info not JSON", {"info": "{oops"}, "info metadata is not JSON"),
    ("an unknown data option", {"info": json.dumps({**INFO, "data_options": {"shuffle_pixels": True}})},
     "unknown data option(s) 'shuffle_pixels'"),
    ("data options a list", {"info": json.dumps({**INFO, "data_options": [1]})}, "data_options is a JSON list"),
    ("standardisation without std", {"info": json.dumps({**INFO, "standardization": {"mean": [0.5]}})},
     "standardization needs both mean and std"),
    ("std of zero", {"info": json.dumps({**INFO, "standardization": {"mean": [0.5], "std": [0.0]}})},
     "every std above 0"),
    ("mean NaN", {"info": json.dumps({**INFO, "standardization": {"mean": [float("nan")], "std": [1.0]}})},
     "must be finite"),
    ("mean and std of different lengths", {"info": json.dumps({**INFO, "standardization": {"mean": [0.5, 0.5],
                                                                                           "std": [1.0]}})},
     "of the same length"),
    ("a dtype the engines lack", {"info": json.dumps({**INFO, "dtype": "int8"})}, "dtype 'int8' is not one of"),
    ("a spec that is not layers", {"spec": json.dumps({"input_dim": 16, "layers": [1, 2]})}, "model spec is damaged"),
    ("no spec", {"spec": None}, "has no nnscratch model spec"),
    ("info nested too deep", {"info": "[" * 100_000 + "]" * 100_000}, "info metadata is not JSON (it is nested deeper"),
    ("spec nested too deep", {"spec": '{"layers": ' + "[" * 100_000 + "]" * 100_000 + "}"},
     "model spec is damaged (it is nested deeper"),
]


@pytest.mark.parametrize("case", BAD_INFO, ids=[c[0] for c in BAD_INFO])
def test_crafted_metadata_is_one_line_naming_the_file(tmp_path, case):
    _, metadata, expected = case
    path = _model(tmp_path, **metadata)
    with pytest.raises(DataError) as exc:
        load_model(path)
    message = one_line(exc)
    assert str(path) in message and expected in message, message


def test_a_model_with_nan_weights_is_refused(tmp_path):
    state = _state()
    state["2.weight"][1, 2] = np.nan
    state["2.bias"][0] = np.inf
    path = save_model(tmp_path / "nan.safetensors", state, SPEC, **INFO)
    with pytest.raises(DataError) as exc:
        load_model(path)
    message = one_line(exc)
    assert str(path) in message and "not all finite (2 NaN or infinite values" in message, message


def test_a_damaged_payload_fails_its_digest(tmp_path):
    path = save_model(tmp_path / "m.safetensors", _state(), SPEC, **INFO)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # a flipped bit in a weight: still a finite number, so only the digest sees it
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="tensor data is damaged") as exc:
        load_model(path)
    assert str(path) in one_line(exc)


def test_wrong_dtypes_are_refused_from_the_header(tmp_path):
    state = {k: v.astype(np.float16) for k, v in _state().items()}
    path = _model(tmp_path, state=state)
    with pytest.raises(DataError, match="0.weight is float16, not float32/float64"):
        load_model(path)


def test_a_declared_2_gib_tensor_is_refused_before_it_is_read(tmp_path):
    """A sparse file (a few KB on disk) whose 0.weight declares 2 GiB, the wrong shape for its spec: refused
    from its header, in a child capped at 1 GiB above its baseline."""
    good = save_model(tmp_path / "good.safetensors", _state(), SPEC, **INFO)
    metadata = read_header(good).metadata
    shape, nbytes = [1 << 29], 4 << 29
    header = {"__metadata__": metadata, "0.weight": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + nbytes)
    error, message = run_capped(f"load_model({str(path)!r})", "from nnscratch.files.model_files import load_model",
                                tmp_path)
    assert error == "DataError" and "0.weight has shape (536870912,), not (8, 16)" in message, message


def test_evaluate_refuses_a_nan_model_in_one_line(tmp_path):
    state = _state()
    state["0.weight"][:] = np.nan
    path = save_model(tmp_path / "nan.safetensors", state, SPEC, **INFO)
    proc = run_cli(["evaluate", "--model", str(path)], cwd=tmp_path, env=cli_env())
    assert proc.returncode == 2
    line = assert_one_line_error(proc.stderr, proc.stdout)
    assert str(path) in line and "not all finite" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]


def test_format_is_unchanged(tmp_path):
    assert read_header(save_model(tmp_path / "m.safetensors", _state(), SPEC)).metadata["format"] == FORMAT

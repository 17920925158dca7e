"""Saved models: safetensors files with the spec in their metadata, readable by either engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from helpers import optional_import, rel_error
from nnscratch.engines import make_engine
from nnscratch.errors import DataError
from nnscratch.files.model_files import FORMAT, load_model, save_model
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import ModelSpec, mlp_spec

SPEC = mlp_spec(input_dim=784, hidden=(64, 32), num_classes=10)


def _trained_numpy_engine(dtype=np.float64, steps: int = 3):
    """A NumPy engine after a few SGD steps on random data (so that the biases are non-zero)."""
    rng = np.random.default_rng(0)
    engine = make_engine("numpy", SPEC, initial_state(SPEC, rng), dtype=dtype)
    for _ in range(steps):
        engine.train_step(np.asfortranarray(rng.uniform(0, 1, size=(32, 784)).astype(dtype)),
                          rng.integers(0, 10, size=32), 0.1)
    return engine


def _assert_readable_data_error(exc: DataError, path) -> str:
    message = str(exc)
    assert message and "\n" not in message, repr(message)
    assert str(path) in message
    assert "Traceback" not in message
    return message


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(tmp_path, dtype):
    state = {k: v.astype(dtype) for k, v in _trained_numpy_engine(np.dtype(dtype)).state_dict().items()}
    path = tmp_path / "model.safetensors"
    info = {"engine": "numpy", "dtype": np.dtype(dtype).name, "dataset": "mnist", "seed": 3, "epochs": 2}
    assert save_model(path, state, SPEC, **info) == path

    loaded, spec, loaded_info = load_model(path)
    assert spec == SPEC
    assert loaded_info == info
    assert set(loaded) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    for name, value in state.items():
        assert loaded[name].dtype == np.dtype(dtype)
        assert loaded[name].shape == value.shape
        np.testing.assert_array_equal(loaded[name], value)
    assert np.any(loaded["0.bias"] != 0)

    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    assert metadata["format"] == FORMAT
    assert ModelSpec.from_json(metadata["spec"]) == SPEC
    assert [layer["kind"] for layer in json.loads(metadata["spec"])["layers"]] == \
        ["dense", "relu", "dense", "relu", "dense"]
    assert json.loads(metadata["info"]) == info
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary file left


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "m.safetensors"
    a = initial_state(SPEC, np.random.default_rng(1))
    b = initial_state(SPEC, np.random.default_rng(2))
    save_model(path, a, SPEC)
    save_model(path, b, SPEC)
    loaded, _, info = load_model(path)
    np.testing.assert_array_equal(loaded["0.weight"], b["0.weight"])
    assert info == {}
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_numpy_file_loads_into_torch_twin_with_identical_logits(tmp_path):
    torch = optional_import("torch")
    from safetensors.torch import load_file as torch_load_file

    from nnscratch.torch_engine import build_twin

    engine = _trained_numpy_engine(np.float64)
    path = save_model(tmp_path / "numpy_model.safetensors", engine.state_dict(), SPEC, engine="numpy",
                      dtype="float64")
    x = np.random.default_rng(9).uniform(0, 1, size=(300, 784))
    logits_np = engine.predict_logits(x).copy()

    state, spec, info = load_model(path)
    assert info["engine"] == "numpy"
    twin = make_engine("torch", spec, state, dtype=np.float64, device="cpu")
    logits_twin = twin.predict_logits(x)
    assert logits_twin.dtype == np.float64
    assert rel_error(logits_twin, logits_np) < 1e-13
    np.testing.assert_array_equal(logits_twin.argmax(axis=1), logits_np.argmax(axis=1))

    # and into plain PyTorch, as the module docstring promises
    model = build_twin(spec).to(torch.float64)
    model.load_state_dict(torch_load_file(str(path)))  # strict: every name must match
    with torch.no_grad():
        logits_plain = model(torch.from_numpy(x)).numpy()
    assert rel_error(logits_plain, logits_np) < 1e-13

    # and back into a fresh NumPy engine, bit for bit
    again = make_engine("numpy", spec, state, dtype=np.float64)
    np.testing.assert_array_equal(again.predict_logits(x), logits_np)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("hello world\nthis is not a model\n")
    with pytest.raises(DataError) as err:
        load_model(path)
    assert "safetensors" in _assert_readable_data_error(err.value, path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError) as err:
        load_model(path)
    _assert_readable_data_error(err.value, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_model(path)
    _assert_readable_data_error(err.value, path)


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}, {"spec": SPEC.to_json()}],
                         ids=["no-metadata", "other-metadata", "spec-without-format"])
def test_safetensors_without_our_metadata(tmp_path, metadata):
    path = tmp_path / "foreign.safetensors"
    save_file(initial_state(SPEC, np.random.default_rng(0)), str(path), metadata=metadata)
    with pytest.raises(DataError) as err:
        load_model(path)
    assert "nnscratch" in _assert_readable_data_error(err.value, path)


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(DataError) as err:
        load_model(path)
    assert "does not exist" in _assert_readable_data_error(err.value, path)


@pytest.mark.parametrize("spec_text", ["{not json", "[1, 2]", '{"hidden": [3]}'],
                         ids=["not-json", "not-an-object", "missing-keys"])
def test_damaged_spec_is_a_data_error(tmp_path, spec_text):
    path = tmp_path / "damaged.safetensors"
    save_file({"0.weight": np.zeros((2, 2))}, str(path), metadata={"format": FORMAT, "spec": spec_text})
    with pytest.raises(DataError) as err:
        load_model(path)
    assert "spec" in _assert_readable_data_error(err.value, path)


def test_invalid_spec_values_are_a_data_error(tmp_path):
    """A spec that parses but cannot be built (input_dim 0) is a damaged file, not a usage error."""
    path = tmp_path / "invalid.safetensors"
    bad = json.dumps({"input_dim": 0, "hidden": [3], "num_classes": 10, "activation": "relu"})
    save_file({"0.weight": np.zeros((3, 1))}, str(path), metadata={"format": FORMAT, "spec": bad})
    with pytest.raises(DataError) as err:
        load_model(path)
    _assert_readable_data_error(err.value, path)


def test_tensors_that_do_not_fit_the_spec_are_a_data_error(tmp_path):
    """A file whose tensors do not match its own spec must be rejected when loaded, with a
    DataError naming the file, not later by an engine with a bare ValueError (a traceback in
    ``nnscratch evaluate``)."""
    path = tmp_path / "mismatch.safetensors"
    state = initial_state(mlp_spec(hidden=(16,)), np.random.default_rng(0))
    save_model(path, state, SPEC)  # the metadata claims 784-64-32-10
    with pytest.raises(DataError) as err:
        load_model(path)
    _assert_readable_data_error(err.value, path)


def test_version_1_files_still_load(tmp_path):
    """A file written before layers had specs of their own (format nnscratch-mlp/1, spec
    ``{input_dim, hidden, num_classes, activation}``) loads as the same network."""
    state = {k: v.astype(np.float32) for k, v in initial_state(SPEC, np.random.default_rng(4)).items()}
    old_spec = json.dumps({"activation": "relu", "hidden": [64, 32], "input_dim": 784, "num_classes": 10})
    path = tmp_path / "old.safetensors"
    save_file(state, str(path), metadata={"format": "nnscratch-mlp/1", "spec": old_spec,
                                          "info": json.dumps({"engine": "numpy", "dtype": "float32"})})
    loaded, spec, info = load_model(path)
    assert spec == SPEC and spec.describe() == "784-64-32-10 (relu)"
    assert info["engine"] == "numpy"
    for name in state:
        np.testing.assert_array_equal(loaded[name], state[name])


def test_batch_norm_model_round_trips_with_its_buffers(tmp_path):
    """Buffers travel with the parameters; the integer counter stays a 0-d int64, as in torch."""
    spec = mlp_spec(input_dim=20, hidden=(8,), num_classes=3, batch_norm=True, dropout=0.1, activation="gelu")
    rng = np.random.default_rng(5)
    engine = make_engine("numpy", spec, initial_state(spec, rng), dtype=np.float64)
    for _ in range(3):
        x = rng.uniform(size=(16, 20))
        engine.train_step(x, rng.integers(0, 3, size=16), 0.1, {3: rng.random((16, 8)) >= 0.1})
    state = engine.state_dict()
    assert state["1.num_batches_tracked"].shape == () and int(state["1.num_batches_tracked"]) == 3
    path = save_model(tmp_path / "bn.safetensors", state, spec, engine="numpy", dtype="float64")
    loaded, spec2, _ = load_model(path)
    assert spec2 == spec
    assert sorted(loaded) == sorted(state)
    assert loaded["1.num_batches_tracked"].dtype == np.int64 and loaded["1.num_batches_tracked"].shape == ()
    for name in state:
        np.testing.assert_array_equal(loaded[name], state[name])

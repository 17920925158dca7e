"""``nnscratch export --to onnx`` (docs/export.md): ONNX Runtime computes what the NumPy engine
computes, in float32 to 1e-5 with the same predicted class, for the seed network on real MNIST and
for deep batch-norm networks of every activation; ``--probabilities`` gives a softmax; the metadata
carries the class names and the preprocessing (enough to go from uint8 pixels to the same outputs);
the command writes its file atomically and refuses bad input with one line, exit 2.

Without onnx and onnxruntime these tests skip, except under ``NNSCRATCH_REQUIRE_OPTIONAL=1`` (CI),
where they fail: the ``test`` extra installs both.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest

from helpers import assert_one_line_error, optional_import, run_cli

onnx = optional_import("onnx")
ort = optional_import("onnxruntime")

from nnscratch.engines import make_engine  # noqa: E402
from nnscratch.errors import INSTALL_ONNX, UsageError  # noqa: E402
from nnscratch.files.model_files import save_model  # noqa: E402
from nnscratch.files.onnx_export import OPSET, export_onnx, to_onnx  # noqa: E402
from nnscratch.model.registry import ACTIVATIONS, LAYER_KINDS, initial_state, register_layer  # noqa: E402
from nnscratch.model.spec import LayerSpec, ModelSpec, mlp_spec  # noqa: E402
from nnscratch.training.streams import init_rng  # noqa: E402

#: float32 agreement asked of ONNX Runtime against the NumPy engine (the issue's bound).
TOLERANCE = 1e-5


def _session(model) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the test machines' cores are shared
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _both(spec: ModelSpec, state: dict, x: np.ndarray, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(ONNX Runtime's output, the NumPy engine's logits)`` on float32 ``x``."""
    ours = make_engine("numpy", spec, state, np.float32).eval().predict_logits(x)
    theirs = _session(to_onnx(state, spec, {"dataset": "mnist"}, probabilities)).run(None, {"input": x})[0]
    return theirs, ours


def _assert_same(theirs: np.ndarray, ours: np.ndarray) -> None:
    assert theirs.dtype == np.float32 and theirs.shape == ours.shape
    assert float(np.max(np.abs(theirs - ours))) < TOLERANCE
    assert np.array_equal(theirs.argmax(axis=1), ours.argmax(axis=1))


def _trained_looking(spec: ModelSpec, seed: int = 0) -> dict:
    """The spec's initial state with every batch norm moved off its start: random running means and
    variances, scales and shifts, and biases, so that none of them is the identity."""
    state = initial_state(spec, init_rng(seed))
    rng = np.random.default_rng(seed + 1)
    for i, layer, d_in, _ in spec.walk():
        if layer.kind == "batch_norm":
            state[f"{i}.running_mean"] = rng.normal(0.0, 0.5, d_in)
            state[f"{i}.running_var"] = rng.uniform(0.3, 3.0, d_in)
            state[f"{i}.weight"] = rng.uniform(0.5, 1.5, d_in)
            state[f"{i}.bias"] = rng.normal(0.0, 0.2, d_in)
        elif layer.kind == "dense" and layer.args["bias"]:
            state[f"{i}.bias"] = rng.normal(0.0, 0.1, state[f"{i}.bias"].shape)
    return state


# ----------------------------------------------------------------------------- the numbers

def test_the_seed_network_on_1000_mnist_test_images_matches_the_numpy_engine(mnist):
    from nnscratch.data.preprocess import model_inputs

    spec = mlp_spec()  # 784-533-10 ReLU
    x = model_inputs(mnist.test_images[:1000], np.float32, None)
    _assert_same(*_both(spec, initial_state(spec, init_rng(0)), x))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_a_deep_batch_norm_network_matches_for_every_activation(activation):
    """784-256-128-64-10, batch norm before and dropout after each activation, on 1,000 random inputs."""
    spec = mlp_spec(784, (256, 128, 64), 10, activation, dropout=0.3, batch_norm=True)
    x = np.random.default_rng(7).random((1000, 784), dtype=np.float32)
    _assert_same(*_both(spec, _trained_looking(spec), x))


def test_every_kind_in_one_network_with_arguments_off_their_defaults():
    """Each layer kind once, one after another, with non-default arguments (slope, alpha, eps) and a
    dense layer with a bias before a batch norm."""
    dense = lambda n, bias=True: LayerSpec("dense", {"out_features": n, "bias": bias})  # noqa: E731
    layers = (dense(48), LayerSpec("batch_norm", {"eps": 1e-3}), LayerSpec("relu"),
              dense(40), LayerSpec("leaky_relu", {"negative_slope": 0.2}), LayerSpec("dropout", {"p": 0.5}),
              dense(36, bias=False), LayerSpec("batch_norm"), LayerSpec("elu", {"alpha": 0.7}),
              dense(32), LayerSpec("gelu"), dense(28), LayerSpec("gelu", {"approximate": "tanh"}),
              dense(24), LayerSpec("tanh"), dense(20), LayerSpec("sigmoid"), dense(5))
    spec = ModelSpec(30, layers)
    x = np.random.default_rng(3).normal(size=(500, 30)).astype(np.float32)
    _assert_same(*_both(spec, _trained_looking(spec, seed=4), x))


def test_probabilities_are_the_softmax_of_the_logits_and_sum_to_one():
    spec = mlp_spec(784, (64,), 10, "gelu", batch_norm=True)
    x = np.random.default_rng(5).random((300, 784), dtype=np.float32)
    probabilities, logits = _both(spec, _trained_looking(spec), x, probabilities=True)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert np.allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    assert float(np.max(np.abs(probabilities - shifted / shifted.sum(axis=1, keepdims=True)))) < 1e-6
    assert np.array_equal(probabilities.argmax(axis=1), logits.argmax(axis=1))


def test_the_graph_its_input_output_opset_and_ops():
    """``input (batch, 784)`` with a dynamic batch, ``logits (batch, 10)``; opset 17; dense as Gemm with
    transB, batch norm as BatchNormalization, no Dropout; any batch size runs, one image too."""
    spec = mlp_spec(784, (32, 16), 10, "relu", dropout=0.2, batch_norm=True)
    state = _trained_looking(spec)
    model = to_onnx(state, spec, {})
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)] and OPSET == 17
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp), out.name, dims(out)) == ("input", ["batch", 784], "logits", ["batch", 10])
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Gemm", "BatchNormalization", "Relu"] * 2 + ["Gemm", "Identity"]
    assert all(a.i == 1 for n in model.graph.node if n.op_type == "Gemm" for a in n.attribute if a.name == "transB")
    session = _session(model)
    engine = make_engine("numpy", spec, state, np.float32).eval()
    for n in (1, 7):
        x = np.random.default_rng(n).random((n, 784), dtype=np.float32)
        assert float(np.max(np.abs(session.run(None, {"input": x})[0] - engine.predict_logits(x)))) < TOLERANCE


def test_a_layer_kind_export_does_not_know_is_refused_naming_it():
    from nnscratch.numpy_engine.layers import ReLU

    register_layer("my_relu", ReLU, lambda a, d: None, activation=True)
    try:
        spec = mlp_spec(8, (4,), 3, "my_relu")
        with pytest.raises(UsageError) as exc:
            to_onnx(initial_state(spec, init_rng(0)), spec, {})
        assert "'my_relu'" in str(exc.value) and "\n" not in str(exc.value)
    finally:  # the registry is process-wide: leave it as the other tests expect it
        LAYER_KINDS.pop("my_relu", None)
        ACTIVATIONS.pop("my_relu", None)


# ----------------------------------------------------------------------------- the metadata

def _metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_metadata_turns_uint8_pixels_into_the_engines_outputs(mnist, tmp_path):
    """A model file trained with standardisation: the exported metadata gives MNIST's class names, the
    image shape and the preprocessing, and applying that preprocessing to uint8 images by hand gives
    ONNX Runtime the inputs on which it agrees with the engine on the images ``model_inputs`` made."""
    from nnscratch.data.preprocess import model_inputs

    standardization = {"mean": [0.1307], "std": [0.3081]}
    spec = mlp_spec()
    state = initial_state(spec, init_rng(0))
    model = save_model(tmp_path / "model.safetensors", state, spec, engine="numpy", dtype="float32",
                       dataset="mnist", standardization=standardization)
    out = export_onnx(model, tmp_path / "model.onnx")
    meta = _metadata(out)
    assert json.loads(meta["class_names"]) == list(mnist.class_names)
    pre = json.loads(meta["preprocessing"])
    assert pre["image_shape"] == [28, 28, 1] and pre["divide_by"] == 255 and pre["scale"] == 1 / 255
    assert pre["standardization"] == standardization
    assert (meta["output"], meta["dataset"], meta["model"]) == ("logits", "mnist", "784-533-10 (relu)")
    assert ModelSpec.from_json(meta["nnscratch_spec"]) == spec

    images = mnist.test_images[:1000]
    x = (images.reshape(len(images), -1).astype(np.float32) / np.float32(pre["divide_by"])
         - np.float32(pre["standardization"]["mean"][0])) / np.float32(pre["standardization"]["std"][0])
    theirs = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ours = make_engine("numpy", spec, state, np.float32).eval().predict_logits(
        model_inputs(images, np.float32, standardization))
    _assert_same(theirs, ours)


def test_metadata_class_names_come_from_the_run_folder_of_the_model(tmp_path):
    """A dataset of one's own: its class names and image shape are those of the run's metrics.json;
    without a run folder, the class indices and no image shape."""
    spec = mlp_spec(12, (5,), 3)
    run = tmp_path / "run"
    run.mkdir()
    model = save_model(run / "numpy_model.safetensors", initial_state(spec, init_rng(0)), spec,
                       engine="numpy", dtype="float32", dataset="npz:/data/shapes.npz")
    (run / "metrics.json").write_text(json.dumps({"dataset": {
        "name": "npz:/data/shapes.npz", "class_names": ["circle", "square", "star"], "image_shape": [2, 2, 3]}}))
    meta = _metadata(export_onnx(model, tmp_path / "a.onnx"))
    assert json.loads(meta["class_names"]) == ["circle", "square", "star"]
    assert json.loads(meta["preprocessing"])["image_shape"] == [2, 2, 3]
    (run / "metrics.json").unlink()
    meta = _metadata(export_onnx(model, tmp_path / "b.onnx"))
    assert json.loads(meta["class_names"]) == ["0", "1", "2"]
    assert json.loads(meta["preprocessing"]) | {"image_shape": None} == json.loads(meta["preprocessing"])


# ----------------------------------------------------------------------------- the command

def _main(args: list[str]) -> tuple[int, str, str]:
    from nnscratch.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def model_file(tmp_path):
    spec = mlp_spec(64, (16,), 10)
    return save_model(tmp_path / "models" / "digits.safetensors", initial_state(spec, init_rng(0)), spec,
                      engine="numpy", dtype="float32", dataset="mnist")


def test_the_command_writes_the_file_atomically(model_file, tmp_path):
    """A real ``python -m nnscratch export`` twice (the second replaces the first): exit 0, one line
    saying what it wrote, only ``model.onnx`` in the folder (no temporary file left), a valid model."""
    out = tmp_path / "exported" / "model.onnx"
    for extra in ([], ["--probabilities"]):
        proc = run_cli(["export", "--model", str(model_file), "--to", "onnx", str(out), *extra], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"wrote {out} (ONNX opset {OPSET}") and proc.stderr == ""
        assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]
    onnx.checker.check_model(str(out))
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["probabilities"]


@pytest.mark.parametrize("case", ["missing model", "not a model", "OUT is a folder", "unknown format"])
def test_the_command_refuses_bad_input_with_one_line(case, model_file, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    (tmp_path / "a_folder").mkdir()
    model, to, out = str(model_file), "onnx", str(tmp_path / "out.onnx")
    if case == "missing model":
        model = str(tmp_path / "missing.safetensors")
    elif case == "not a model":
        model = str(tmp_path / "junk.safetensors")
    elif case == "OUT is a folder":
        out = str(tmp_path / "a_folder")
    else:
        to = "tflite"
    code, stdout, stderr = _main(["export", "--model", model, "--to", to, out])
    line = assert_one_line_error(stderr, stdout)
    assert code == 2, line
    assert not (tmp_path / "out.onnx").exists() and list((tmp_path / "a_folder").iterdir()) == []


def test_without_the_onnx_package_the_command_says_how_to_install_it(model_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    code, stdout, stderr = _main(["export", "--model", str(model_file), "--to", "onnx", str(tmp_path / "m.onnx")])
    line = assert_one_line_error(stderr, stdout)
    assert code == 2 and INSTALL_ONNX in line
    assert not (tmp_path / "m.onnx").exists()

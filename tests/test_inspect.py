"""``nnscratch inspect`` and :mod:`nnscratch.analysis.inspect`: saliency and SmoothGrad against torch's
input gradients (float64), the chain rule through standardisation, the per-class units, activations
and top losses against direct NumPy computations, training untouched by the first layer's ``dx``
path, every figure written for real MNIST and Fashion-MNIST models, and the colour, linear and
non-image cases."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import optional_import, rel_error  # noqa: E402

from nnscratch.analysis import inspect as ins  # noqa: E402
from nnscratch.errors import UsageError  # noqa: E402
from nnscratch.model.registry import initial_state  # noqa: E402
from nnscratch.model.spec import LayerSpec, ModelSpec, mlp_spec  # noqa: E402

FIGURES = ("first_layer_weights.png", "class_units.png", "activations.png", "saliency.png", "top_losses.png")


def _net(d_in: int = 12, classes: int = 4) -> ModelSpec:
    """Batch norm (before and after an activation), dropout, and five activations."""
    L = LayerSpec
    return ModelSpec(d_in, (L("dense", {"out_features": 9}), L("batch_norm"), L("gelu"), L("dropout", {"p": 0.3}),
                            L("dense", {"out_features": 8}), L("tanh"), L("batch_norm"),
                            L("dense", {"out_features": 7}), L("elu"), L("dense", {"out_features": 6}),
                            L("leaky_relu"), L("dropout", {"p": 0.5}), L("dense", {"out_features": 5}), L("sigmoid"),
                            L("dense", {"out_features": classes})))


def _trained_looking_state(spec: ModelSpec, rng) -> dict:
    """Initial weights with batch norm's running statistics and affine parameters away from their start."""
    state = initial_state(spec, rng)
    for name, value in state.items():
        if name.endswith("running_mean"):
            state[name] = rng.normal(size=value.shape)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.3, 3.0, size=value.shape)
        elif value.ndim == 1 and name.endswith((".weight", ".bias")):
            state[name] = rng.normal(size=value.shape)
    return state


def _torch_input_gradients(spec, state, x, classes, standardization=None, image_shape=None):
    """torch autograd's ``d z_c / d input`` through the twin (eval mode), optionally through the
    standardisation ``(p - mean) / std`` done in torch."""
    torch = optional_import("torch")
    from nnscratch.torch_engine.model import build_twin

    twin = build_twin(spec).double()
    twin.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    twin.eval()
    p = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    inputs = p
    if standardization:
        channels = image_shape[2]
        mean = torch.tensor(standardization["mean"], dtype=torch.float64)
        std = torch.tensor(standardization["std"], dtype=torch.float64)
        inputs = ((p.reshape(len(x), -1, channels) - mean) / std).reshape(len(x), -1)
    z = twin(inputs)
    z[torch.arange(len(x)), torch.as_tensor(np.asarray(classes))].sum().backward()
    return p.grad.numpy()


def test_saliency_equals_torch_input_gradient_float64():
    rng = np.random.default_rng(3)
    spec = _net()
    state = _trained_looking_state(spec, rng)
    model = ins.eval_model(spec, state, np.float64)
    x = rng.normal(size=(7, spec.input_dim))
    classes = rng.integers(0, spec.num_classes, size=7)
    ours = ins.input_gradient(model, x, classes)
    theirs = _torch_input_gradients(spec, state, x, classes)
    assert rel_error(ours, theirs) < 1e-10
    assert np.abs(theirs).max() > 1e-3  # a real gradient, not zeros
    # the chain rule through per-channel standardisation: d z / d pixel, colour images 2x2x3
    norm = {"mean": [0.2, 0.5, 0.7], "std": [0.3, 0.1, 0.25]}
    pixels = rng.uniform(0, 1, size=(7, 12))
    ours = ins.saliency(model, pixels, classes, standardization=norm, image_shape=(2, 2, 3))
    theirs = _torch_input_gradients(spec, state, pixels, classes, norm, (2, 2, 3))
    assert rel_error(ours, theirs) < 1e-10
    # a class out of range, or one class too few, is refused
    with pytest.raises(UsageError, match="classes"):
        ins.input_gradient(model, x, classes[:-1])
    # a layer of one's own whose forward takes no keep: one line naming it, not a wrong gradient
    from nnscratch.numpy_engine.layers import Tanh

    class Plain(Tanh):
        def forward(self, x, train=True):
            return super().forward(x, train)

    model.layers[5] = Plain(8, dtype=np.float64)
    with pytest.raises(UsageError, match=r"layer 5 \(tanh\) cannot keep .* no keep argument"):
        ins.input_gradient(model, x, classes)


def test_smoothgrad_is_the_mean_of_torch_gradients_at_the_same_noisy_inputs():
    rng = np.random.default_rng(4)
    spec = _net()
    state = _trained_looking_state(spec, rng)
    model = ins.eval_model(spec, state, np.float64)
    pixels = rng.uniform(0, 1, size=(3, 12))
    classes, keys, samples, seed = [1, 3, 0], [5, 17, 4242], 20, 7
    ours = ins.smoothgrad(model, pixels, classes, keys, samples, noise=0.15, seed=seed)
    for p, c, key, got in zip(pixels, classes, keys, ours):
        noise = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, key))).normal(size=(samples, 12))
        noisy = p + 0.15 * (p.max() - p.min()) * noise  # sigma: 15 % of the image's pixel range
        expected = _torch_input_gradients(spec, state, noisy, [c] * samples).mean(axis=0)
        assert rel_error(got, expected) < 1e-10
        assert rel_error(got, ins.saliency(model, p[None], [c])[0]) > 1e-3  # the noise did something
    # keyed: an image's SmoothGrad does not depend on the images inspected with it
    alone = ins.smoothgrad(model, pixels[1:2], classes[1:2], keys[1:2], samples, seed=seed)
    np.testing.assert_array_equal(alone[0], ours[1])
    with pytest.raises(UsageError, match="noise"):
        ins.smoothgrad(model, pixels, classes, keys, samples, noise=-0.1)


def test_class_units_activations_and_top_losses_equal_direct_computations():
    rng = np.random.default_rng(5)
    spec = mlp_spec(input_dim=6, hidden=(5, 4), num_classes=3)
    state = initial_state(spec, rng)
    model = ins.eval_model(spec, state, np.float64)
    x = rng.normal(size=(40, 6))
    labels = rng.integers(0, 3, size=40)
    # activations: relu(x W0^T + b0), then relu(h1 W1^T + b1), by hand
    h1 = np.maximum(x @ state["0.weight"].T + state["0.bias"], 0)
    h2 = np.maximum(h1 @ state["2.weight"].T + state["2.bias"], 0)
    got = ins.hidden_outputs(model, x, batch=16)
    assert len(got) == 2 and rel_error(got[0], h1) < 1e-14 and rel_error(got[1], h2) < 1e-14
    # per-class scores: the class's mean activation minus the whole set's, unit by unit, by loops
    scores = ins.class_unit_scores(h1, labels, 3)
    for c in range(3):
        for u in range(5):
            rows = [h1[i, u] for i in range(40) if labels[i] == c]
            assert scores[c, u] == pytest.approx(sum(rows) / len(rows) - sum(h1[:, u]) / 40, abs=1e-12)
    top = ins.top_units(scores, 2)
    for c in range(3):
        assert list(top[c]) == sorted(range(5), key=lambda u: (-scores[c, u], u))[:2]
    # top losses: -log softmax(z)[y], highest first
    z = ins.logits(model, x)
    losses = [float(np.log(np.sum(np.exp(z[i]))) - z[i, labels[i]]) for i in range(40)]
    t = ins.top_losses(z, labels, 5)
    order = sorted(range(40), key=lambda i: (-losses[i], i))[:5]
    assert list(t["index"]) == order
    assert t["loss"] == pytest.approx([losses[i] for i in order], rel=1e-12)
    assert list(t["predicted"]) == [int(np.argmax(z[i])) for i in order]
    assert t["confidence"] == pytest.approx([np.exp(z[i]).max() / np.exp(z[i]).sum() for i in order], rel=1e-12)
    assert list(t["true"]) == [labels[i] for i in order]
    # the first layer's units: by weight norm, largest first, when there are more than shown
    units, how = ins.first_layer_units(state["0.weight"], show=3)
    assert list(units) == list(np.argsort(-np.linalg.norm(state["0.weight"], axis=1))[:3]) and "largest" in how


def test_the_first_layers_dx_path_does_not_change_training():
    """Training never computes the first layer's dx (a spy on its backward), and evaluation passes
    that keep what backward needs, run on the very model being trained between its steps, leave
    every step's loss and the final weights bit for bit as without them (and as torch's twin's)."""
    from nnscratch.engines import make_engine
    from nnscratch.model.registry import dropout_layers
    from nnscratch.training.streams import dropout_keeps

    rng = np.random.default_rng(6)
    spec = mlp_spec(input_dim=10, hidden=(8, 6), num_classes=3, activation="gelu", batch_norm=True, dropout=0.25)
    initial = initial_state(spec, rng)
    x, y, x_eval = rng.normal(size=(32, 10)), rng.integers(0, 3, size=32), rng.normal(size=(5, 10))
    optional_import("torch")
    engines = {"numpy": make_engine("numpy", spec, initial, np.float64),
               "probed": make_engine("numpy", spec, initial, np.float64),
               "torch": make_engine("torch", spec, initial, np.float64, device="cpu")}
    first = engines["probed"].model.layers[0]
    calls = []
    original = first.backward
    first.backward = lambda dout, need_dx=True: calls.append(need_dx) or original(dout, need_dx)
    for step in range(4):
        rows = slice(8 * step, 8 * step + 8)
        masks = dropout_keeps(0, 0, step, dropout_layers(spec), 8)
        probed = engines["probed"]
        probed.model.forward(x_eval.copy(), train=False, keep=True)  # an inspection pass on the training model
        probed.predict_logits(x_eval)
        for engine in engines.values():
            engine.train_step(x[rows], y[rows], 0.1, masks)
    assert calls == [False] * 4
    losses = {name: engine.take_epoch_stats()[0] for name, engine in engines.items()}
    np.testing.assert_array_equal(losses["probed"], losses["numpy"])
    a, b = engines["numpy"].state_dict(), engines["probed"].state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert rel_error(losses["torch"], losses["numpy"]) < 1e-10


def test_parse_images():
    from nnscratch.cli.inspect import MAX_IMAGES, parse_images

    assert parse_images("0,7,42") == [0, 7, 42]
    assert parse_images("3-5, 1, 4") == [3, 4, 5, 1]  # the order given, each once
    for bad in ("", "a", "1,-2", "5-3", "1.5"):
        with pytest.raises(UsageError, match="--images"):
            parse_images(bad)
    with pytest.raises(UsageError, match=f"at most {MAX_IMAGES}"):
        parse_images(f"0-{MAX_IMAGES}")


def _inspect_cli(args: list[str]) -> tuple[int, str, str]:
    from nnscratch.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["inspect", *args])
    return code, out.getvalue(), err.getvalue()


def _assert_pngs(folder: Path, names) -> None:
    from PIL import Image

    for name in names:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and min(image.size) > 200, name


@pytest.fixture(scope="module")
def fashion():
    """Fashion-MNIST from $NNSCRATCH_DATA_DIR (skipped when absent, failed when NNSCRATCH_REQUIRE_DATA=1)."""
    from nnscratch.data import load_dataset
    from nnscratch.errors import DataError

    base = os.environ.get("NNSCRATCH_DATA_DIR", "")
    required = os.environ.get("NNSCRATCH_REQUIRE_DATA", "") not in ("", "0")
    try:
        if not base:
            raise DataError("set NNSCRATCH_DATA_DIR to the folder that holds fashion-mnist/")
        return load_dataset("fashion-mnist", base, download=False, progress=False)
    except DataError as exc:
        (pytest.fail if required else pytest.skip)(f"real Fashion-MNIST needed: {exc}")


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_inspect_writes_every_figure(dataset, tmp_path, request):
    """A model file of each dataset (built directly: initial weights, batch norm and dropout for
    Fashion-MNIST, standardised inputs), inspected on the real test set."""
    from nnscratch.files.model_files import save_model

    data = request.getfixturevalue("mnist" if dataset == "mnist" else "fashion")
    rng = np.random.default_rng(8)
    extra = {"batch_norm": True, "dropout": 0.2, "activation": "gelu"} if dataset == "fashion-mnist" else {}
    spec = mlp_spec(input_dim=784, hidden=(32, 16), num_classes=10, **extra)
    norm = {"mean": [0.286], "std": [0.353]} if dataset == "fashion-mnist" else None
    model = save_model(tmp_path / "numpy_model.safetensors", _trained_looking_state(spec, rng), spec, engine="numpy",
                       dtype="float32", dataset=dataset, seed=3, standardization=norm)
    code, out, err = _inspect_cli(["--model", str(model), "--out", str(tmp_path / "inspect"), "--images", "0,7,42",
                                   "--smooth", "4", "--top", "8"])
    assert code == 0, err
    folder = tmp_path / "inspect"
    _assert_pngs(folder, FIGURES)
    assert f"wrote {folder}/" in out
    record = json.loads((folder / "inspect.json").read_text())
    assert [r["index"] for r in record["images"]] == [0, 7, 42] and len(record["top_losses"]) == 8
    assert set(record["class_units"]) == set(data.class_names)  # class names from the dataset
    assert record["settings"]["seed"] == 3  # SmoothGrad's noise from the model's run seed
    text = (folder / "inspect.md").read_text()
    assert all(f"]({name})" in text for name in FIGURES) and data.class_names[-1] in text
    assert json.loads((folder / "metrics.json").read_text())["engines"] == {}


def _synthetic_images(rng, n: int = 60, shape=(8, 8, 3), classes: int = 3):
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images[:, 0, 0] = 0  # one pixel the same in every image
    return images, rng.integers(0, classes, size=n)


def test_colour_images_and_a_network_without_hidden_layer(tmp_path):
    """Colour images (RGB weights and saliency), and a linear model: its first layer's units are
    the classes (labelled so), it has no hidden units, activations or class units to draw."""
    from nnscratch.report.inspect_report import write_inspection

    rng = np.random.default_rng(9)
    images, labels = _synthetic_images(rng)
    names = ["red", "green", "blue"]
    for hidden, expected in (((16,), FIGURES), ((), ("first_layer_weights.png", "saliency.png", "top_losses.png"))):
        spec = mlp_spec(input_dim=192, hidden=hidden, num_classes=3) if hidden else \
            ModelSpec(192, (LayerSpec("dense", {"out_features": 3}),))
        result = ins.inspect_model(spec, initial_state(spec, rng), images, labels, images=[0, 1], smooth=3,
                                   top=4, standardization={"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.25]})
        assert result.unused.sum() == 1 and result.unused[0, 0]
        out = tmp_path / f"linear{len(hidden)}"
        out.mkdir()
        written = write_inspection(out, result, test_images=images, test_labels=labels, class_names=names,
                                   model="m.safetensors", model_text=spec.describe(), dataset="toy", command="c")
        assert tuple(n for n in written if n.endswith(".png")) == expected
        _assert_pngs(out, expected)
        if not hidden:
            assert result.scores is None and result.hidden == [] and list(result.units) == [0, 1, 2]


def test_features_that_are_not_images_get_the_top_losses_only(tmp_path):
    """A CSV of 1x6 feature rows: one line says so, inspect.md and inspect.json hold the top losses."""
    from nnscratch.files.model_files import save_model

    rng = np.random.default_rng(10)
    rows = [f"{k % 2}," + ",".join(str(v) for v in rng.integers(0, 256, size=6)) for k in range(60)]
    (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n")
    spec = mlp_spec(input_dim=6, hidden=(4,), num_classes=2)
    model = save_model(tmp_path / "m.safetensors", initial_state(spec, rng), spec, engine="numpy", dtype="float32",
                       dataset=f"csv:{tmp_path / 'rows.csv'}", data_options={"image_shape": "1x6"})
    code, out, err = _inspect_cli(["--model", str(model), "--out", str(tmp_path / "out"), "--top", "3"])
    assert code == 0, err
    assert "not images: wrote only the top losses" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["inspect.json", "inspect.md", "metrics.json"]
    assert len(json.loads((tmp_path / "out" / "inspect.json").read_text())["top_losses"]) == 3
    assert "| rank | test image |" in (tmp_path / "out" / "inspect.md").read_text()

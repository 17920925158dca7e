"""Deskewing (:mod:`nnscratch.data.deskew`): each image sheared upright and centred by its moments.

* Known answers: a slanted bar comes out upright and centred; an upright centred image and a
  blank one come back exactly; the skew is the hand formula.
* Oracle: SciPy's ``ndimage.affine_transform`` (order 1) with the same matrix, to a grey level,
  on real MNIST digits; the centroid is ``ndimage.center_of_mass``.
* The data option: the three sets alike, colour refused in one line; a saved model remembers it,
  and ``evaluate`` and ``predict`` deskew as training did.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import assert_one_line_error, cli_env, run_cli  # noqa: E402

from nnscratch.data.deskew import deskew, skew  # noqa: E402
from nnscratch.errors import UsageError  # noqa: E402

H = W = 28


def slanted_bar(slope: float, x0: float = 13.5) -> np.ndarray:
    """A 3-pixel-wide bar from row 4 to row 23 whose column moves ``slope`` pixels a row, anti-aliased."""
    img = np.zeros((H, W))
    for r in range(4, 24):
        centre = x0 + slope * (r - 13.5)
        img[r] = np.clip(2.0 - np.abs(np.arange(W) - centre), 0, 1)
    return np.rint(img * 255).astype(np.uint8)


def test_a_slanted_bar_comes_out_upright_and_centred():
    bars = np.stack([slanted_bar(0.4), slanted_bar(-0.3, x0=11.0)])
    alpha, centroid = skew(bars)
    assert alpha == pytest.approx([0.4, -0.3], abs=0.01)
    out = deskew(bars)
    alpha_out, centroid_out = skew(out)
    assert np.abs(alpha_out).max() < 0.01
    assert np.abs(centroid_out - 13.5).max() < 0.05
    for img in out:                                   # every inked row's ink sits in the middle columns
        rows = np.flatnonzero(img.sum(axis=1))
        for r in rows:
            cols = np.flatnonzero(img[r] > 64)
            assert cols.min() >= 12 and cols.max() <= 15, (r, cols)


def test_an_upright_centred_image_and_a_blank_one_come_back_exactly():
    upright = np.zeros((H, W), np.uint8)
    upright[6:22, 13:15] = 200                          # centroid (13.5, 13.5), no covariance
    upright[6, 12:16] = 90                              # symmetric serifs
    upright[21, 12:16] = 90
    blank = np.zeros((H, W), np.uint8)
    out = deskew(np.stack([upright, blank]))
    np.testing.assert_array_equal(out[0], upright)
    np.testing.assert_array_equal(out[1], blank)
    assert skew(blank[None])[0][0] == 0.0


def test_the_skew_is_the_hand_formula_and_the_centroid_scipys():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, H, W)).astype(np.uint8) * (rng.random((5, H, W)) < 0.2)
    alpha, centroid = skew(images)
    y, x = np.mgrid[:H, :W]
    for img, a, c in zip(images.astype(np.float64), alpha, centroid):
        m = img.sum()
        xb, yb = (img * x).sum() / m, (img * y).sum() / m
        expected = (img * (x - xb) * (y - yb)).sum() / (img * (y - yb) ** 2).sum()
        assert a == pytest.approx(expected, rel=1e-12)
        assert c[::-1] == pytest.approx(ndimage.center_of_mass(img), rel=1e-12)  # scipy gives (row, col)


def scipy_deskew(img: np.ndarray, alpha: float, centroid: np.ndarray) -> np.ndarray:
    """The same transform by SciPy: input (row, col) = m + A (out - c), A = [[1, 0], [alpha, 1]]."""
    A = np.array([[1.0, 0.0], [alpha, 1.0]])
    m = centroid[::-1]
    offset = m - A @ np.array([(H - 1) / 2, (W - 1) / 2])
    value = ndimage.affine_transform(img.astype(np.float64), A, offset=offset, order=1, mode="grid-constant")
    return np.floor(value + 0.5)


def test_deskewing_real_digits_is_scipys_affine_transform_to_a_grey_level(mnist):
    digits = np.asarray(mnist.test_images[:300])
    out = deskew(digits)
    assert out.shape == digits.shape and out.dtype == np.uint8
    alpha, centroid = skew(digits[..., 0])
    expected = np.stack([scipy_deskew(d[..., 0], a, c) for d, a, c in zip(digits, alpha, centroid)])
    diff = np.abs(expected - out[..., 0])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert np.abs(alpha).mean() > 0.1                   # MNIST digits do lean...
    assert np.abs(skew(out[..., 0])[0]).mean() < 0.01   # ...and no longer do


def test_deskew_refuses_colour_and_other_dtypes():
    with pytest.raises(ValueError, match="greyscale"):
        deskew(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        deskew(np.zeros((2, 8, 8), np.float32))


def test_the_data_option_deskews_the_three_sets_alike(tmp_path):
    from nnscratch.data import load_dataset

    rng = np.random.default_rng(0)
    x = np.stack([slanted_bar(s) for s in rng.uniform(-0.5, 0.5, 60)])
    y = np.arange(60) % 3
    np.savez(tmp_path / "bars.npz", x=x, y=y)
    plain = load_dataset(f"npz:{tmp_path / 'bars.npz'}", val_size=10)
    skewless = load_dataset(f"npz:{tmp_path / 'bars.npz'}", val_size=10, deskew=True)
    for part in ("train_images", "val_images", "test_images"):
        np.testing.assert_array_equal(getattr(skewless, part), deskew(getattr(plain, part)))
        assert not getattr(skewless, part).flags.writeable
    assert any("deskewed" in note for note in skewless.notes)
    np.testing.assert_array_equal(skewless.test_labels, plain.test_labels)

    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, x=np.zeros((40, 8, 8, 3), np.uint8), y=np.arange(40) % 2)
    with pytest.raises(UsageError, match="greyscale.*--grayscale"):
        load_dataset(f"npz:{rgb}", deskew=True)
    assert load_dataset(f"npz:{rgb}", deskew=True, color="grayscale").image_shape == (8, 8, 1)


def test_a_deskewed_model_is_evaluated_and_predicts_as_it_was_trained(mnist, tmp_path):
    """train --deskew writes the option into the model file; evaluate reloads the test set deskewed
    (its accuracy is the run's), and predict deskews the prepared drawing before the network."""
    from nnscratch.data.handwriting import prepare_for_model
    from nnscratch.data.preprocess import model_inputs
    from nnscratch.engines import make_engine
    from nnscratch.files.model_files import load_model
    from nnscratch.training.metrics import softmax

    env = cli_env()
    out = tmp_path / "run"
    done = run_cli(["train", "--engine", "numpy", "--deskew", "--epochs", "1", "--train-subset", "2000",
                    "--hidden", "32", "--quiet", "--no-gradient-flow", "--out", str(out)], tmp_path, env)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["deskew"] is True
    model = out / "numpy_model.safetensors"
    state, spec, info = load_model(model)
    assert info["data_options"]["deskew"] is True

    evaluated = run_cli(["evaluate", "--model", str(model), "--json", str(tmp_path / "eval.json")], tmp_path, env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "eval.json").read_text())["test"]["accuracy"] == pytest.approx(metrics["engines"]["numpy"]["test"]["accuracy"])

    digit = np.asarray(mnist.test_images[7][..., 0])
    Image.fromarray(digit).save(tmp_path / "digit.png")
    predicted = run_cli(["predict", "--model", str(model), str(tmp_path / "digit.png"), "--json"], tmp_path, env)
    assert predicted.returncode == 0, predicted.stderr
    top = json.loads(predicted.stdout)[0]["top"]
    prepared = prepare_for_model(np.asarray(Image.open(tmp_path / "digit.png")), "mnist", (28, 28, 1), "digit.png")
    engine = make_engine("numpy", spec, state, dtype=np.float32).eval()
    def probabilities(images):
        return softmax(engine.predict_logits(model_inputs(images, np.float32, None)))[0]

    expected, undeskewed = probabilities(deskew(prepared[None])), probabilities(prepared[None])
    assert np.abs(expected - undeskewed).max() > 1e-3   # the two readings differ: the test can tell them apart
    assert [name for name, _ in top] == [str(k) for k in np.argsort(-expected)[:3]]
    assert [q for _, q in top] == pytest.approx(np.sort(expected)[::-1][:3], abs=5e-4)


def test_deskew_without_greyscale_images_is_one_line(tmp_path):
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, x=np.zeros((40, 8, 8, 3), np.uint8), y=np.arange(40) % 2)
    done = run_cli(["train", "--engine", "numpy", "--dataset", f"npz:{rgb}", "--deskew", "--epochs", "1",
                    "--out", str(tmp_path / "run")], tmp_path)
    assert done.returncode == 2
    assert "--grayscale" in assert_one_line_error(done.stderr, done.stdout)


def test_deskewing_in_chunks_is_deskewing_each_image_alone(monkeypatch):
    import nnscratch.data.deskew as module

    rng = np.random.default_rng(1)
    images = np.stack([slanted_bar(s, x0) for s, x0 in zip(rng.uniform(-0.6, 0.6, 7), rng.uniform(9, 18, 7))])
    whole = deskew(images)
    monkeypatch.setattr(module, "CHUNK_PIXELS", 2 * H * W + 5)   # chunks of 2 images, the last of 1
    np.testing.assert_array_equal(deskew(images), whole)
    np.testing.assert_array_equal(np.concatenate([deskew(img[None]) for img in images]), whole)


def test_degenerate_ink_is_sheared_at_most_the_bound_and_wide_images_work():
    from nnscratch.data.deskew import MAX_SKEW

    line = np.zeros((1, 12, 40), np.uint8)
    line[0, 6, 5:35] = 255                     # ink along one row, and a faint pixel below its end
    line[0, 7, 34] = 5
    alpha, _ = skew(line)
    assert abs(alpha[0]) == MAX_SKEW
    wide = np.zeros((3, 20, 44), np.uint8)
    for b, slope in enumerate((0.5, -0.4, 0.0)):
        for r in range(3, 17):
            wide[b, r, int(round(21.5 + slope * (r - 9.5)))] = 255
    out = deskew(wide)
    assert out.shape == wide.shape
    assert np.abs(skew(out)[0]).max() < 0.02
    expected = np.stack([scipy_deskew_hw(img, a, c) for img, a, c in zip(wide, *skew(wide))])
    assert np.abs(expected - out).max() <= 1


def scipy_deskew_hw(img: np.ndarray, alpha: float, centroid: np.ndarray) -> np.ndarray:
    h, w = img.shape
    A = np.array([[1.0, 0.0], [alpha, 1.0]])
    offset = centroid[::-1] - A @ np.array([(h - 1) / 2, (w - 1) / 2])
    value = ndimage.affine_transform(img.astype(np.float64), A, offset=offset, order=1, mode="grid-constant")
    return np.floor(value + 0.5)


def test_a_given_dataset_must_be_loaded_as_the_settings_say(mnist):
    from nnscratch import api

    with pytest.raises(UsageError, match="deskew"):
        api.train(engine="numpy", data=mnist, deskew=True, epochs=1, train_subset=200, hidden=(8,))


def test_finetuning_a_deskewed_model_deskews_unless_told_not_to(tmp_path):
    from nnscratch.files.model_files import save_model
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec
    from nnscratch.run.config import resolve_config

    spec = mlp_spec(784, (8,), 10)
    state = initial_state(spec, np.random.default_rng(0))
    for name, deskewed in (("plain", False), ("deskewed", True)):
        save_model(tmp_path / f"{name}.safetensors", state, spec, engine="numpy", dtype="float32", dataset="mnist",
                   data_options={"deskew": True} if deskewed else {})
    assert resolve_config(None, {"finetune_from": str(tmp_path / "deskewed.safetensors")}, ("numpy",)).deskew
    assert not resolve_config(None, {"finetune_from": str(tmp_path / "plain.safetensors")}, ("numpy",)).deskew
    assert not resolve_config(None, {"finetune_from": str(tmp_path / "deskewed.safetensors"), "deskew": False},
                              ("numpy",)).deskew

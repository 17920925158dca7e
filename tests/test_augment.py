"""Data augmentation (issue 20): each transform against a known answer or an independent oracle
(np.roll, np.rot90, scipy's map_coordinates and gaussian_filter, the theory of smoothed noise),
the spec and its errors, keyed batches, the prefetching thread, and the augmented training loop:
both twins of a comparison get the same arrays (computed once), a resumed run is bit for bit the
uninterrupted one, validation and test data are never augmented."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from nnscratch import api
from nnscratch.data.augment import (PRESETS, Augmentation, Draw, Warper, elastic_field, inverse_matrices,
                                    parse_augment, smoothing_matrix)
from nnscratch.errors import ParameterError, RunInterrupted, UsageError
from nnscratch.training.augmented import THREAD_NAME, AugmentedBatches, Prefetcher, augment_rng


def _draw(n=1, theta=0.0, s=1.0, phi=0.0, f=1.0, shift=(0, 0), field=None) -> Draw:
    ones = np.ones(n)
    return Draw(inverse_matrices(np.radians(theta) * ones, s * ones, np.radians(phi) * ones, f * ones),
                np.tile(np.asarray(shift, dtype=float), (n, 1)), field)


def _dot(size=28, row=10, col=12) -> np.ndarray:
    image = np.zeros((1, size, size), np.uint8)
    image[0, row, col] = 255
    return image


def _augmenter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


# ------------------------------------------------------------------------------ the transforms


def test_a_shifted_dot_lands_where_it_should():
    out = Warper().warp(_dot(), _draw(shift=(3, -2)))  # (x, y): 3 to the right, 2 up
    assert out[0, 8, 15] == 255 and out.sum() == 255


def test_random_shifts_are_whole_pixel_copies_with_background_coming_in():
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (16, 20, 24, 1), dtype=np.uint8)   # no zero pixel inside
    draw = Augmentation(shift=3).draw(np.random.default_rng(2), 16, images.shape[1:])
    out = Warper().warp(images, draw)
    for image, result, (tx, ty) in zip(images, out, draw.shift.astype(int)):
        assert abs(tx) <= 3 and abs(ty) <= 3
        expected = np.zeros_like(image)                                 # np.roll, without the wrap-around
        src = image[max(-ty, 0):image.shape[0] - max(ty, 0), max(-tx, 0):image.shape[1] - max(tx, 0)]
        expected[max(ty, 0):max(ty, 0) + src.shape[0], max(tx, 0):max(tx, 0) + src.shape[1]] = src
        np.testing.assert_array_equal(result, expected)
    assert len({tuple(t) for t in draw.shift}) > 5  # the shifts do vary


def test_a_quarter_turn_is_numpys_rot90_and_a_centred_square_stays_itself():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(Warper().warp(images, _draw(3, theta=90)), np.rot90(images, 1, axes=(1, 2)))
    square = np.zeros((1, 28, 28), np.uint8)
    square[0, 8:20, 8:20] = 200
    np.testing.assert_array_equal(Warper().warp(square, _draw(theta=90)), square)
    np.testing.assert_array_equal(Warper().warp(square, _draw(theta=-90)), square)


def test_a_mirror_is_the_image_read_backwards_and_colour_channels_travel_together():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Warper().warp(images, _draw(2, f=-1)), images[:, :, ::-1])
    turned = Warper().warp(images, _draw(2, theta=-90))
    np.testing.assert_array_equal(turned, np.rot90(images, -1, axes=(1, 2)))


def test_zoom_and_shear_move_a_dot_by_the_formula():
    # 29 x 29: the centre is pixel (14, 14). Zoom 2: a dot 2 to the right of it lands 4 to the right,
    # the pixels beside it read half of it (bilinear: 127.5, rounded half up).
    out = Warper().warp(_dot(29, 14, 16), _draw(s=2.0))
    assert out[0, 14, 18] == 255 and out[0, 14, 17] == out[0, 14, 19] == 128
    # shear 45 degrees: x' = x + tan(45) y, so a dot 3 below the centre moves 3 to the right
    out = Warper().warp(_dot(29, 17, 14), _draw(phi=45.0))
    assert out[0, 17, 17] == 255 and out.sum() == 255


def test_the_inverse_matrices_invert_the_forward_transform():
    rng = np.random.default_rng(3)
    n = 20
    theta, s, phi = rng.uniform(-1, 1, n), rng.uniform(0.8, 1.2, n), rng.uniform(-0.5, 0.5, n)
    f = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    inverse = inverse_matrices(theta, s, phi, f)
    for k in range(n):  # A = R(theta) Sh(phi) s F, multiplied out here
        c, sn = np.cos(theta[k]), np.sin(theta[k])
        forward = np.array([[c, sn], [-sn, c]]) @ np.array([[1, np.tan(phi[k])], [0, 1]]) @ (s[k] * np.diag([f[k], 1]))
        np.testing.assert_allclose(inverse[k] @ forward, np.eye(2), atol=1e-12)


def test_the_bilinear_resampling_equals_scipys_map_coordinates():
    """Random images, random warps with elastic fields: each pixel is scipy's order-1 spline with
    zeros outside (``mode="grid-constant"``), rounded; float32 against float64 may differ by one
    where a value sits on a rounding boundary."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    aug = Augmentation(rotate=30, shift=3, scale=0.3, shear=10, elastic=(34, 4), hflip=0.5)
    draw = aug.draw(rng, 8, images.shape[1:])
    out = Warper().warp(images, draw)
    c = 13.5
    v, u = np.mgrid[0:28, 0:28] - c
    for k in range(8):
        m, (tx, ty) = draw.inverse[k], draw.shift[k]
        x = m[0, 0] * (u - tx) + m[0, 1] * (v - ty) + c + draw.field[k, 0]
        y = m[1, 0] * (u - tx) + m[1, 1] * (v - ty) + c + draw.field[k, 1]
        expected = np.floor(map_coordinates(images[k].astype(float), [y, x], order=1, mode="grid-constant") + 0.5)
        diff = np.abs(out[k].astype(int) - expected)
        assert diff.max() <= 1 and np.mean(diff) < 0.01


def test_zero_strength_returns_the_input_itself():
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    for aug in (Augmentation(), Augmentation(rotate=0, elastic=(0.0, 4.0)), parse_augment("none")):
        assert not aug.active and aug.spec() == "none"
        assert aug.apply(images, np.random.default_rng(0)) is images


def test_the_smoothing_matrix_and_elastic_field_are_scipys_gaussian_filter():
    from scipy.ndimage import gaussian_filter, gaussian_filter1d

    rng = np.random.default_rng(0)
    v = rng.random((28, 5))
    np.testing.assert_allclose(smoothing_matrix(28, 4.0) @ v, gaussian_filter1d(v, 4.0, axis=0, mode="constant"),
                               atol=1e-6)
    noise = rng.random((3, 2, 28, 20), dtype=np.float32)
    expected = 34 * gaussian_filter(2 * noise.astype(np.float64) - 1, sigma=(0, 0, 4, 4), mode="constant")
    np.testing.assert_allclose(elastic_field(noise.copy(), 34, 4), expected, atol=1e-4)


def test_elastic_fields_have_the_stated_scale_and_smoothness():
    """Delta = alpha G U G^T with U ~ U(-1, 1): away from the borders each displacement has the
    standard deviation alpha / sqrt(3) * sum_i g_i^2 (g the 1-D kernel), and neighbours are
    correlated as sum_i g_i g_(i+1) / sum_i g_i^2 (exp(-1 / (4 sigma^2)) = 0.985 at sigma 4)."""
    alpha, sigma, size = 34.0, 4.0, 96
    g = smoothing_matrix(size, sigma)[:, size // 2].astype(np.float64)      # the kernel, centred
    std, corr = alpha / np.sqrt(3) * np.sum(g ** 2), np.sum(g[:-1] * g[1:]) / np.sum(g ** 2)
    assert std == pytest.approx(1.38, abs=0.01) and corr == pytest.approx(np.exp(-1 / (4 * sigma ** 2)), abs=2e-3)
    rng = np.random.default_rng(0)
    field = elastic_field(rng.random((40, 2, size, size), dtype=np.float32), alpha, sigma).astype(np.float64)
    inner = field[:, :, 24:-24, 24:-24]                                     # 3 sigma from every border
    assert inner.std() == pytest.approx(std, rel=0.03)
    assert abs(inner.mean()) < 0.12 * std  # about 1,000 independent values: 4 standard errors
    measured = np.mean(inner[..., :-1] * inner[..., 1:]) / np.mean(inner ** 2)
    assert measured == pytest.approx(corr, abs=0.01)
    far = np.mean(inner[..., :-16] * inner[..., 16:]) / np.mean(inner ** 2)  # 4 sigma apart: nearly independent
    assert abs(far) < 0.15
    # Simard's setting on MNIST: the displacement at the image centre has that same 1.38 pixels
    mnist = elastic_field(rng.random((2000, 2, 28, 28), dtype=np.float32), alpha, sigma)
    assert mnist[:, :, 13:15, 13:15].std() == pytest.approx(std, rel=0.05)


# ----------------------------------------------------------------------------------- the spec


def test_specs_are_read_written_and_presets_resolved():
    aug = parse_augment("rotate=10, shift=2,scale=0.1,shear=5,elastic=34:4,hflip=0.5")
    assert aug == Augmentation(10.0, 2, 0.1, 5.0, (34.0, 4.0), 0.5)
    assert aug.spec() == "rotate=10,shift=2,scale=0.1,shear=5,elastic=34:4,hflip=0.5"
    assert parse_augment(aug.spec()) == aug
    assert parse_augment("auto", "mnist").spec() == PRESETS["mnist"]
    assert "hflip" not in PRESETS["mnist"] and "hflip" in PRESETS["cifar10"]
    assert parse_augment("auto,hflip=0.5,rotate=3", "fashion-mnist").spec() == "rotate=3,shift=2,scale=0.05,hflip=0.5"
    assert api.config(augment="auto", dataset="cifar10").augment == "shift=4,hflip=0.5"
    assert api.config(augment={"rotate": 10, "elastic": [34, 4]}).augment == "rotate=10,elastic=34:4"


@pytest.mark.parametrize("spec, message", [
    ("rotat=10", "unknown transform 'rotat'; did you mean 'rotate'"),
    ("rotate", "rotate needs a value"),
    ("rotate=ten", "rotate=ten: takes a number"),
    ("rotate=200", r"rotate=200: must be in \[0, 180\]"),
    ("shift=1.5", "shift=1.5: takes a whole number"),
    ("shift=-1", "shift=-1: must be a whole number of pixels >= 0"),
    ("scale=1", r"scale=1: must be in \[0, 1\)"),
    ("elastic=34", "elastic=34: takes alpha:sigma like 34:4"),
    ("elastic=34:0", r"sigma must be a number in \(0, 100\]"),
    ("hflip=2", r"hflip=2: must be in \[0, 1\]"),
    ("rotate=1,rotate=2", "rotate is given twice"),
    ("shift=2,auto", "'auto' can only come first"),
    ("auto", "auto has no preset for folder:/x"),
])
def test_a_bad_spec_is_one_line_naming_the_mistake(spec, message):
    with pytest.raises(ParameterError, match=message):
        parse_augment(spec, "folder:/x")
    with pytest.raises(UsageError, match="^--augment (elastic=34:0: )?" + message):
        api.config(augment=spec, dataset="folder:/x")


def test_a_shift_that_moves_everything_out_of_view_is_refused():
    with pytest.raises(ParameterError, match="shift=28 moves 28x28 images out of view; use at most 27"):
        Augmentation(shift=28).check_images((28, 28, 1))


# ------------------------------------------------------------------------ keyed batches, prefetch


@pytest.fixture(scope="module")
def pixels():
    return np.random.default_rng(0).integers(0, 256, (300, 28 * 28), dtype=np.uint8)


AUG = Augmentation(rotate=10, shift=2, scale=0.1, elastic=(34.0, 4.0))


def test_batches_are_a_function_of_seed_epoch_step_and_rows(pixels):
    source = AugmentedBatches(pixels, (28, 28, 1), AUG, seed=5, batch_size=32)
    idx = np.arange(40, 72)
    a = source.batch(2, 3, idx)
    expected = AUG.apply(pixels[idx].reshape(32, 28, 28, 1), augment_rng(5, 2, 3)).reshape(32, -1)
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(AugmentedBatches(pixels, (28, 28, 1), AUG, seed=5, batch_size=32).batch(2, 3, idx), a)
    assert not np.array_equal(source.batch(2, 4, idx), a) and not np.array_equal(source.batch(3, 3, idx), a)
    assert not np.array_equal(AugmentedBatches(pixels, (28, 28, 1), AUG, 6, 32).batch(2, 3, idx), a)


@pytest.mark.parametrize("share", [False, True])
def test_prefetched_batches_are_the_ones_computed_inline_and_step_k_is_the_one_drawn_directly(pixels, share):
    order = np.random.default_rng(1).permutation(300)
    ahead = AugmentedBatches(pixels, (28, 28, 1), AUG, seed=0, batch_size=64, share=share)
    inline = AugmentedBatches(pixels, (28, 28, 1), AUG, seed=0, batch_size=64, prefetch=0)
    with ahead.epoch(1, order, start=1) as a, inline.epoch(1, order, start=1) as b:
        for s in range(1, 5):
            batch = a(s).copy()
            np.testing.assert_array_equal(batch, b(s))
            np.testing.assert_array_equal(batch, ahead.batch(1, s, order[s * 64:(s + 1) * 64]))
    assert not _augmenter_threads()


def test_the_memo_serves_the_next_engine_and_forgets_another_epoch(pixels):
    order = np.random.default_rng(1).permutation(300)
    source = AugmentedBatches(pixels, (28, 28, 1), AUG, seed=0, batch_size=64, share=True, prefetch=0)  # exact counts
    for _ in range(2):  # two engines on epoch 0: computed once
        with source.epoch(0, order) as rows:
            first = [rows(s).copy() for s in range(5)]
    assert source.computed == 5
    with source.epoch(1, order) as rows:
        rows(0)
    with source.epoch(0, order) as rows:  # epoch 1 replaced it: computed again, the same bytes
        np.testing.assert_array_equal(rows(0), first[0])
    assert source.computed == 7


def test_the_producer_thread_hands_its_error_over_and_stops():
    def produce(k):
        if k == 3:
            raise ValueError("batch 3 cannot be made")
        return k

    with pytest.raises(ValueError, match="batch 3 cannot be made"):
        with Prefetcher(produce, range(10), depth=2) as p:
            for k in range(10):
                assert p.get(k) == k
    assert not _augmenter_threads()


def test_closing_a_producer_blocked_on_a_full_queue_does_not_hang():
    p = Prefetcher(lambda k: np.zeros(10), range(10 ** 6), depth=2)
    p.get(0)
    p.close()
    assert not _augmenter_threads()


# ------------------------------------------------------------------------- the training loop


RUN = dict(train_subset=640, val_size=200, hidden=[16], epochs=2, batch_size=64, augment="rotate=10,shift=2,elastic=34:4")


@pytest.fixture()
def recorded(monkeypatch):
    """Every training batch and every prediction input each engine gets, by engine."""
    from nnscratch.numpy_engine.model import NumpyEngine
    from nnscratch.torch_engine.model import TorchEngine

    seen = {"train": {"numpy": [], "torch": []}, "predict": {"numpy": [], "torch": []}}
    for cls in (NumpyEngine, TorchEngine):
        step, predict = cls.train_step, cls.predict_logits

        def train_step(self, x, y, lr, masks=None, _step=step):
            seen["train"][self.name].append((x.copy(), y.copy()))
            return _step(self, x, y, lr, masks)

        def predict_logits(self, x, _predict=predict):
            seen["predict"][self.name].append(np.array(x, copy=True))
            return _predict(self, x)
        monkeypatch.setattr(cls, "train_step", train_step)
        monkeypatch.setattr(cls, "predict_logits", predict_logits)
    return seen


def test_both_twins_get_the_same_augmented_arrays_computed_once_and_never_on_val_or_test(mnist, recorded, monkeypatch):
    from nnscratch.data.preprocess import to_features
    from nnscratch.training.streams import EpochOrders

    made = []
    batch = AugmentedBatches.batch
    monkeypatch.setattr(AugmentedBatches, "batch", lambda self, *a, **k: made.append(a[:2]) or batch(self, *a, **k))
    run = api.compare(data=mnist, **RUN)
    numpy_batches, torch_batches = recorded["train"]["numpy"], recorded["train"]["torch"]
    assert len(numpy_batches) == len(torch_batches) == 20
    for (xa, ya), (xb, yb) in zip(numpy_batches, torch_batches):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert sorted(made) == [(e, s) for e in range(2) for s in range(10)]  # once, not once per engine
    # each batch is the keyed one of its step, and it was augmented (not the plain rows)
    pixels = mnist.train_images[:640].reshape(640, -1)
    source = AugmentedBatches(pixels, (28, 28, 1), parse_augment(RUN["augment"]), 0, 64)
    for k, (x, y) in enumerate(numpy_batches):
        e, s = divmod(k, 10)
        idx = EpochOrders(0, 640).order(e)[s * 64:(s + 1) * 64]
        np.testing.assert_array_equal(x, source.batch(e, s, idx) / np.float32(255))
        np.testing.assert_array_equal(y, mnist.train_labels[idx])
        assert not np.array_equal(x, pixels[idx] / np.float32(255))
    # validation (after each epoch) and test (at the end): exactly the plain images
    from nnscratch.run.experiment import prepare_arrays

    val = prepare_arrays(mnist, api.config(**RUN)).x_val
    for engine in ("numpy", "torch"):
        inputs = recorded["predict"][engine]
        assert len(inputs) == 3  # two validation passes, one test pass
        np.testing.assert_array_equal(inputs[0], val)
        np.testing.assert_array_equal(inputs[1], val)
        np.testing.assert_array_equal(inputs[2], to_features(mnist.test_images, np.float32))
    assert run.config["augment"] == RUN["augment"]
    assert run.metrics["config"]["augment"] == RUN["augment"]
    assert run.twin["test_prediction_agreement"] > 0.99


def _same_run(a, b):
    for engine in a.history:
        assert a.history[engine]["step_loss"] == b.history[engine]["step_loss"], engine
        assert [dict(r, time_s=0) for r in a.history[engine]["epochs"]] == \
            [dict(r, time_s=0) for r in b.history[engine]["epochs"]]
        for k, v in a.models[engine].items():
            np.testing.assert_array_equal(b.models[engine][k], v, err_msg=f"{engine} {k}")


SETTINGS = dict(RUN, dropout=0.2, checkpoint_every_steps=7)


@pytest.fixture(scope="module")
def uninterrupted(mnist):
    return api.compare(data=mnist, **SETTINGS)


@pytest.fixture(scope="module")
def interrupted(mnist, tmp_path_factory):
    """A comparison stopped by Ctrl-C after numpy's step 14 (in epoch 2; torch has done epoch 1):
    ``(its folder, the augmentation threads left after it)``."""
    from nnscratch.numpy_engine.model import NumpyEngine

    step = NumpyEngine.train_step

    def interrupting(self, x, y, lr, masks=None):
        step(self, x, y, lr, masks)
        if self.steps == 14:
            os.kill(os.getpid(), signal.SIGINT)  # the handler asks the trainer to stop after this step
    out = tmp_path_factory.mktemp("aug") / "cut"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NumpyEngine, "train_step", interrupting)
        with pytest.raises(RunInterrupted):
            api.compare(data=mnist, out=out, **SETTINGS)
    return out, _augmenter_threads()


def test_a_comparison_interrupted_mid_epoch_resumes_bit_for_bit(mnist, uninterrupted, interrupted):
    """The twin ended at its epoch, both checkpoints were kept, no augmentation thread was left,
    and the resumed comparison (torch catches up first) is the uninterrupted one."""
    from nnscratch.files.checkpoint import read_checkpoint

    out, threads = interrupted
    assert not threads
    positions = {e: read_checkpoint(out / "checkpoints" / e / "last.safetensors").trainer for e in ("numpy", "torch")}
    assert (positions["numpy"]["epoch"], positions["numpy"]["step_in_epoch"]) == (1, 4)
    assert (positions["torch"]["epoch"], positions["torch"]["step_in_epoch"]) == (1, 0)
    _same_run(uninterrupted, api.compare(resume=out, data=mnist))


def test_resuming_from_inside_an_epoch_gets_the_same_augmented_batches(mnist, uninterrupted, interrupted, tmp_path):
    out, _ = interrupted
    folder = tmp_path / "ck"
    for engine in ("numpy", "torch"):  # both twins from step 7 (inside epoch 1)
        (folder / engine).mkdir(parents=True)
        (folder / engine / "last.safetensors").write_bytes((out / "checkpoints" / engine / "step-7.safetensors").read_bytes())
    _same_run(uninterrupted, api.compare(resume=folder, data=mnist))
    with pytest.raises(UsageError, match=r"--augment 'shift=1' \(the checkpoint has 'rotate=10,shift=2,elastic=34:4'\)"):
        api.compare(resume=folder, data=mnist, augment="shift=1")


def test_the_producer_stops_when_the_engine_raises_or_the_run_is_interrupted():
    from nnscratch.engines import make_engine
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec
    from nnscratch.training.streams import init_rng
    from nnscratch.training.trainer import Trainer

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (256, 64), dtype=np.uint8), rng.integers(0, 3, 256)
    spec = mlp_spec(input_dim=64, hidden=(8,), num_classes=3)

    class Failing:
        def __init__(self, engine, at):
            self.engine, self.at = engine, at

        def __getattr__(self, name):
            return getattr(self.engine, name)

        def train_step(self, *args):
            if self.engine.steps == self.at:
                raise FloatingPointError("the engine failed at step 3")
            self.engine.train_step(*args)

    def trainer(engine):
        source = AugmentedBatches(x, (8, 8), Augmentation(rotate=20, elastic=(8, 2)), 0, 16, prefetch=2)
        return Trainer(engine, (x, y), None, seed=0, epochs=2, batch_size=16, num_classes=3, schedule=0.1,
                       dtype=np.float32, augment=source)

    with pytest.raises(FloatingPointError, match="at step 3"):
        trainer(Failing(make_engine("numpy", spec, initial_state(spec, init_rng(0)), np.float32), 3)).run()
    assert not _augmenter_threads()
    t = trainer(make_engine("numpy", spec, initial_state(spec, init_rng(0)), np.float32))
    t.sinks.append(lambda e: e.kind == "step_end" and e.step == 5 and t.request_stop(signal.SIGINT))
    t.loss_block = 1
    with pytest.raises(RunInterrupted):
        t.run()
    assert t.step == 5 and not _augmenter_threads()

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
from nnscratch.data.augment import (PRESETS, Augmentation, Draw, Warper, _compiled_warp, elastic_field, elastic_field_reference,
                                    field_basis, inverse_matrices, parse_augment, smoothing_matrix)
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


@pytest.fixture(params=["compiled", "numpy"])
def new_warper(request):
    """The transform tests run on both resampling paths: the compiled loop (the default) and the
    whole-batch NumPy reference."""
    if request.param == "compiled":
        assert _compiled_warp(), "numba, a dependency, is missing: the compiled warp is not tested"
    return lambda: Warper(compiled=request.param == "compiled")


def test_a_shifted_dot_lands_where_it_should(new_warper):
    out = new_warper().warp(_dot(), _draw(shift=(3, -2)))  # (x, y): 3 to the right, 2 up
    assert out[0, 8, 15] == 255 and out.sum() == 255


def test_random_shifts_are_whole_pixel_copies_with_background_coming_in(new_warper):
    rng = np.random.default_rng(1)
    images = rng.integers(1, 256, (16, 20, 24, 1), dtype=np.uint8)   # no zero pixel inside
    draw = Augmentation(shift=3).draw(np.random.default_rng(2), 16, images.shape[1:])
    out = new_warper().warp(images, draw)
    for image, result, (tx, ty) in zip(images, out, draw.shift.astype(int)):
        assert abs(tx) <= 3 and abs(ty) <= 3
        expected = np.zeros_like(image)                                 # np.roll, without the wrap-around
        src = image[max(-ty, 0):image.shape[0] - max(ty, 0), max(-tx, 0):image.shape[1] - max(tx, 0)]
        expected[max(ty, 0):max(ty, 0) + src.shape[0], max(tx, 0):max(tx, 0) + src.shape[1]] = src
        np.testing.assert_array_equal(result, expected)
    assert len({tuple(t) for t in draw.shift}) > 5  # the shifts do vary


def test_a_quarter_turn_is_numpys_rot90_and_a_centred_square_stays_itself(new_warper):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(new_warper().warp(images, _draw(3, theta=90)), np.rot90(images, 1, axes=(1, 2)))
    square = np.zeros((1, 28, 28), np.uint8)
    square[0, 8:20, 8:20] = 200
    np.testing.assert_array_equal(new_warper().warp(square, _draw(theta=90)), square)
    np.testing.assert_array_equal(new_warper().warp(square, _draw(theta=-90)), square)


def test_a_mirror_is_the_image_read_backwards_and_colour_channels_travel_together(new_warper):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(new_warper().warp(images, _draw(2, f=-1)), images[:, :, ::-1])
    turned = new_warper().warp(images, _draw(2, theta=-90))
    np.testing.assert_array_equal(turned, np.rot90(images, -1, axes=(1, 2)))


def test_zoom_and_shear_move_a_dot_by_the_formula(new_warper):
    # 29 x 29: the centre is pixel (14, 14). Zoom 2: a dot 2 to the right of it lands 4 to the right,
    # the pixels beside it read half of it (bilinear: 127.5, rounded half up).
    out = new_warper().warp(_dot(29, 14, 16), _draw(s=2.0))
    assert out[0, 14, 18] == 255 and out[0, 14, 17] == out[0, 14, 19] == 128
    # shear 45 degrees: x' = x + tan(45) y, so a dot 3 below the centre moves 3 to the right
    out = new_warper().warp(_dot(29, 17, 14), _draw(phi=45.0))
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


def test_the_bilinear_resampling_equals_scipys_map_coordinates(new_warper):
    """Random images, random warps with elastic fields: each pixel is scipy's order-1 spline with
    zeros outside (``mode="grid-constant"``), rounded; float32 against float64 may differ by one
    where a value sits on a rounding boundary."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    aug = Augmentation(rotate=30, shift=3, scale=0.3, shear=10, elastic=(34, 4), hflip=0.5)
    draw = aug.draw(rng, 8, images.shape[1:])
    out = new_warper().warp(images, draw)
    c = 13.5
    v, u = np.mgrid[0:28, 0:28] - c
    for k in range(8):
        m, (tx, ty) = draw.inverse[k], draw.shift[k]
        x = m[0, 0] * (u - tx) + m[0, 1] * (v - ty) + c + draw.field[k, 0]
        y = m[1, 0] * (u - tx) + m[1, 1] * (v - ty) + c + draw.field[k, 1]
        expected = np.floor(map_coordinates(images[k].astype(float), [y, x], order=1, mode="grid-constant") + 0.5)
        diff = np.abs(out[k].astype(int) - expected)
        assert diff.max() <= 1 and np.mean(diff) < 0.01


def test_the_compiled_warp_is_the_numpy_reference_to_a_grey_level():
    """Every transform at once, gray and colour: the same pixels up to the float32 rounding of the
    coordinates (a value next to a rounding boundary may round the other way)."""
    rng = np.random.default_rng(5)
    aug = Augmentation(rotate=30, shift=3, scale=0.3, shear=10, elastic=(34, 4), hflip=0.5)
    for shape in ((64, 28, 28), (64, 28, 28, 1), (16, 32, 32, 3), (8, 20, 24)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        draw = aug.draw(rng, shape[0], shape[1:])
        compiled, reference = Warper().warp(images, draw), Warper(compiled=False).warp(images, draw)
        assert compiled.shape == reference.shape == shape and compiled.dtype == np.uint8
        diff = np.abs(compiled.astype(int) - reference)
        assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, (shape, diff.max(), np.mean(diff > 0))
    out = np.full((64, 28, 28), 7, np.uint8)             # into a given array, reused scratch
    warper = Warper()
    for _ in range(2):
        draw = aug.draw(rng, 64, (28, 28))
        images = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
        assert warper.warp(images, draw, out) is out
        assert np.abs(out.astype(int) - Warper(compiled=False).warp(images, draw)).max() <= 1


def test_one_warper_serves_batches_of_any_size_and_shape_in_turn():
    """Scratch arrays are kept between calls: a smaller, a larger, a colour and another shape of
    batch on the same warper each give what a fresh warper gives."""
    rng = np.random.default_rng(6)
    aug = Augmentation(rotate=20, shift=2, scale=0.2, elastic=(34, 4))
    warper = Warper()
    for shape in ((64, 28, 28, 1), (8, 28, 28, 1), (128, 28, 28, 1), (16, 32, 32, 3), (4, 28, 28, 1), (5, 20, 24)):
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        draw = aug.draw(rng, shape[0], shape[1:])
        np.testing.assert_array_equal(warper.warp(images, draw), Warper().warp(images, draw), err_msg=str(shape))


def test_without_numba_the_warp_is_the_numpy_reference(monkeypatch):
    from nnscratch.data import augment

    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    draw = Augmentation(rotate=20, elastic=(34, 4)).draw(rng, 8, (28, 28))
    monkeypatch.setattr(augment, "_warp_kernel", False)  # as _compiled_warp leaves it where numba is missing
    np.testing.assert_array_equal(Warper().warp(images, draw), Warper(compiled=False).warp(images, draw))


def test_a_nan_coordinate_reads_the_background_on_both_paths():
    """A NaN in a field (a Draw built by hand; specs cap alpha so that fields stay finite) reads 0
    there and leaves every other pixel as it was, never an index outside the image. In a
    subprocess: an out-of-bounds read would crash the interpreter, not fail an assertion."""
    import subprocess
    import sys

    code = """
import numpy as np
from nnscratch.data.augment import Augmentation, Draw, Warper
rng = np.random.default_rng(0)
images = rng.integers(1, 256, (4, 27, 28), dtype=np.uint8)
draw = Augmentation(rotate=10).draw(rng, 4, (27, 28))
clean = Draw(draw.inverse, draw.shift, np.zeros((4, 2, 27, 28), np.float32))
field = clean.field.copy()
field[0, 0, 5, 6] = field[1, 1, 7, 8] = np.nan
field[2, :, 9, 10] = np.nan
for compiled in (True, False):
    out = Warper(compiled=compiled).warp(images, Draw(draw.inverse, draw.shift, field))
    expected = Warper(compiled=compiled).warp(images, clean)
    hit = np.isnan(field).any(axis=1)
    assert (out[hit] == 0).all() and np.array_equal(out[~hit], expected[~hit]), compiled
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_zero_strength_returns_the_input_itself():
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    for aug in (Augmentation(), Augmentation(rotate=0, elastic=(0.0, 4.0)), parse_augment("none")):
        assert not aug.active and aug.spec() == "none"
        assert aug.apply(images, np.random.default_rng(0)) is images


def test_the_smoothing_matrix_is_scipys_gaussian_filter_and_the_basis_its_square():
    from scipy.ndimage import gaussian_filter1d

    v = np.random.default_rng(0).random((28, 5))
    g = smoothing_matrix(28, 4.0).astype(np.float64)
    np.testing.assert_allclose(g @ v, gaussian_filter1d(v, 4.0, axis=0, mode="constant"), atol=1e-6)
    # the field's covariance along one axis is (1/3) G G^T for the recipe, (1/3) P P^T drawn in the basis
    p = field_basis(28, 4.0).astype(np.float64)
    assert p.shape == (28, 9)
    np.testing.assert_allclose(p @ p.T, g @ g.T, atol=2e-6 * np.max(g @ g.T))


def test_elastic_fields_have_simards_scale_and_smoothness():
    """Simard's field alpha G U G^T (U ~ U(-1, 1) per pixel) has the covariance
    cov(D[i, j], D[i', j']) = alpha^2 / 3 (G G^T)[i, i'] (G G^T)[j, j']: at the centre of a 28x28
    image a standard deviation of 1.38 pixels at alpha 34, sigma 4 (less towards the borders,
    where the kernel is cut), and neighbours correlated 0.985 (exp(-1 / (4 sigma^2)) away from
    the borders). The fields drawn (in the basis) and the recipe's (scipy, from pixel noise) both
    match that theory pixel by pixel."""
    alpha, sigma, n = 34.0, 4.0, 3000
    gg = alpha ** 2 / 3 * (lambda g: g @ g.T)(smoothing_matrix(28, sigma).astype(np.float64))
    var = np.outer(np.diag(gg), np.diag(gg)) / (alpha ** 2 / 3)            # theory, per pixel
    right = np.outer(np.diag(gg), np.diag(gg, 1)) / (alpha ** 2 / 3)       # with the right neighbour
    assert np.sqrt(var[13, 13]) == pytest.approx(1.38, abs=0.01)
    assert right[13, 13] / var[13, 13] == pytest.approx(np.exp(-1 / (4 * sigma ** 2)), abs=2e-3)
    rng = np.random.default_rng(0)
    drawn = elastic_field(rng, n, (28, 28), alpha, sigma).astype(np.float64)
    recipe = elastic_field_reference(rng.uniform(-1, 1, (n, 2, 28, 28)), alpha, sigma)
    for field in (drawn, recipe):
        d = field.reshape(2 * n, 28, 28)
        assert np.abs(d.mean(axis=0)).max() < 5 * np.sqrt(var.max() / (2 * n))
        np.testing.assert_allclose(np.mean(d ** 2, axis=0), var, rtol=0.12)   # 6,000 samples: 2.6 % each
        np.testing.assert_allclose(np.mean(d[:, :, :-1] * d[:, :, 1:], axis=0), right, rtol=0.12)
        centre = d[:, 10:18, 10:18]
        assert np.mean(centre ** 2) == pytest.approx(np.mean(var[10:18, 10:18]), rel=0.04)  # ~4 independent values per field


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
    ("elastic=3e38:4", r"alpha must be a number in \[0, 10000\] pixels"),
    ("hflip=2", r"hflip=2: must be in \[0, 1\]"),
    ("rotate=1,rotate=2", "rotate is given twice"),
    ("shift=2,auto", "'auto' can only come first"),
    ("auto", "auto has no preset for folder:/x"),
])
def test_a_bad_spec_is_one_line_naming_the_mistake(spec, message):
    with pytest.raises(ParameterError, match=message):
        parse_augment(spec, "folder:/x")
    with pytest.raises(UsageError, match=r"^--augment (elastic=(34:0|3e\+?38:4): )?" + message):
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
    with source.epoch(1, order) as rows:  # shared and made in this thread: the whole epoch on entering
        assert source.computed == 10
        rows(0)
    with source.epoch(0, order) as rows:  # epoch 1 replaced it: computed again, the same bytes
        np.testing.assert_array_equal(rows(0), first[0])
    assert source.computed == 15


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
        step, recorded_step, predict = cls.train_step, cls.train_step_recorded, cls.predict_logits

        def train_step(self, x, y, lr, masks=None, _step=step):
            seen["train"][self.name].append((x.copy(), y.copy()))
            return _step(self, x, y, lr, masks)

        def train_step_recorded(self, x, y, lr, masks=None, _step=recorded_step):  # gradient flow's sampled steps
            seen["train"][self.name].append((x.copy(), y.copy()))
            return _step(self, x, y, lr, masks)

        def predict_logits(self, x, _predict=predict):
            seen["predict"][self.name].append(np.array(x, copy=True))
            return _predict(self, x)
        monkeypatch.setattr(cls, "train_step", train_step)
        monkeypatch.setattr(cls, "train_step_recorded", train_step_recorded)
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
    from nnscratch.report import render_report

    assert f"**Augmentation:** every training batch, on the fly: `{RUN['augment']}`" in render_report(run.metrics, [])
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

    def interrupting(step):  # train_step and gradient flow's train_step_recorded alike
        def run_step(self, x, y, lr, masks=None):
            result = step(self, x, y, lr, masks)
            if self.steps == 14:
                os.kill(os.getpid(), signal.SIGINT)  # the handler asks the trainer to stop after this step
            return result
        return run_step
    out = tmp_path_factory.mktemp("aug") / "cut"
    with pytest.MonkeyPatch.context() as patch:
        for method in ("train_step", "train_step_recorded"):
            patch.setattr(NumpyEngine, method, interrupting(getattr(NumpyEngine, method)))
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


# ------------------------------------------------------------------------------- preview, bench


def test_augment_preview_writes_both_figures_with_the_spec_in_the_title(mnist, tmp_path):
    import json

    from PIL import Image

    from nnscratch.cli.main import main

    out = tmp_path / "preview"
    assert main(["augment-preview", "--data-dir", str(mnist.source), "--out", str(out), "--quiet",
                 "--per-class", "1", "--versions", "3"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["augment_preview"]["augment"] == PRESETS["mnist"] and record["engines"] == {}
    for name in ("augment_preview.png", "augment_transforms.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 300
    assert sorted(p.name for p in out.iterdir()) == ["augment_preview.png", "augment_transforms.png", "metrics.json"]
    assert main(["augment-preview", "--data-dir", str(mnist.source), "--out", str(out), "--quiet"]) == 2  # finished
    assert main(["augment-preview", "--data-dir", str(mnist.source), "--out", str(out), "--quiet", "--overwrite",
                 "--augment", "shear=10", "--versions", "2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["augment_preview"]["augment"] == "shear=10"


def test_the_bench_row_of_the_seed_configuration_with_augmentation():
    from nnscratch.run.benchmark import AUGMENTED, format_table, run_benchmark

    rng = np.random.default_rng(0)
    pixels, y = rng.integers(0, 256, (256, 784), dtype=np.uint8), rng.integers(0, 10, 256)
    result = run_benchmark(pixels, y, engines=["numpy-float32"], batch_sizes=[64], deep=[], epochs=2, progress=False,
                           settle_s=0.0, peak_size=64, augment=AUG)
    rows = {r["engine"]: r for r in result["rows"]}
    assert set(rows) == {"numpy-float32", AUGMENTED} and rows[AUGMENTED]["arch"] == "784-533-10"
    overhead = result["augment_overhead"]
    assert overhead["augment"] == AUG.spec() and len(overhead["ratios"]) == 2
    assert overhead["ratios"] == pytest.approx([a / p for p, a in zip(rows["numpy-float32"]["epochs_s"],
                                                                      rows[AUGMENTED]["epochs_s"])])
    assert overhead["percent"] == pytest.approx(100 * (np.median(overhead["ratios"]) - 1))
    assert f"{AUGMENTED}: --augment {AUG.spec()}" in format_table(result)
    assert not _augmenter_threads()


def test_an_augmented_epoch_leaves_a_core_to_its_thread_and_gives_it_back(pixels):
    from threadpoolctl import threadpool_info, threadpool_limits

    from nnscratch.training.augmented import PREFETCH_DEPTH, PREFETCH_MIN_THREADS, prefetch_plan
    from nnscratch.threads import usable_cores

    assert prefetch_plan(1) == prefetch_plan(2) == (0, None)   # two cores: made in the training thread
    n = usable_cores()
    assert prefetch_plan(None) == ((PREFETCH_DEPTH, n - 1) if n >= PREFETCH_MIN_THREADS else (0, None))
    source = AugmentedBatches(pixels, (28, 28, 1), AUG, 0, 64, engine_threads=1, share=True)
    order = np.arange(300)
    blas = lambda: {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}  # noqa: E731
    with threadpool_limits(2):
        with source.epoch(0, order) as rows:   # the first engine's epoch: its thread augments
            inside = [rows(s) is not None and blas() for s in range(5)]
        after = blas()
        with source.epoch(0, order) as rows:   # the twin's, from the memo: no thread, the same threads
            twin = [rows(s) is not None and blas() for s in range(5)]
    assert inside == twin == [{1}] * 5 and after == {2}  # (another count might round products otherwise)


def test_batches_made_in_blocks_are_the_ones_made_one_by_one(pixels):
    """In the training thread the batches are augmented several at a time (one warp): each the
    batch drawn directly for its step, the epoch's short last batch too, whatever step it starts at."""
    from nnscratch.training import augmented

    order = np.random.default_rng(2).permutation(300)          # 5 batches of 64, the last of 44
    source = AugmentedBatches(pixels, (28, 28, 1), AUG, seed=4, batch_size=64, prefetch=0)
    assert augmented.BLOCK_BATCHES >= 3
    with source.epoch(3, order, start=1) as rows:
        made = [rows(s).copy() for s in range(1, 5)]
    assert source.computed == 4 and made[-1].shape == (44, 784)
    for s, batch in zip(range(1, 5), made):
        np.testing.assert_array_equal(batch, source.batch(3, s, order[s * 64:(s + 1) * 64]))
    block = source.block(3, range(0, 5), order, Warper(compiled=False))   # the NumPy warp: to a grey level
    assert all(np.abs(b.astype(int) - source.batch(3, s, order[s * 64:(s + 1) * 64]).astype(int)).max() <= 1
               for s, b in zip(range(5), block))

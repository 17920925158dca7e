"""Pixels to features: scaling, feature order, per-channel statistics and standardisation; the split."""

from __future__ import annotations

import numpy as np
import pytest

from nnscratch.data import channel_stats, scale_pixels, standardize, to_features
from nnscratch.data.split import (SPLIT_STREAM, builtin_val_size, check_val_size,
                                  split_stratified)
from nnscratch.errors import DataError, UsageError


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_pixels_is_division_by_255_in_the_output_dtype(dtype):
    pixels = np.arange(256, dtype=np.uint8)
    out = scale_pixels(pixels, np.empty(256, dtype))
    expected = np.array([dtype(p) / dtype(255) for p in range(256)], dtype)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == dtype and out[0] == 0 and out[-1] == 1


def test_feature_order_is_h_w_c_flattened_in_c_order():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3)  # H=2, W=3, C=3
    features = to_features(image, np.float64)
    assert features.shape == (1, 18)
    # feature d is pixel (d // (W*C), (d // C) % W), channel d % C
    for d in range(18):
        assert features[0, d] * 255 == image[0, d // 9, (d // 3) % 3, d % 3]


def test_to_features_of_greyscale_images_matches_the_old_flattening():
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)
    old = images[..., 0].reshape(5, -1).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(to_features(images, np.float32), old)


def test_channel_stats_are_exact():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 6, 7, 3), dtype=np.uint8)
    images[..., 2] //= 4  # a darker channel
    stats = channel_stats(images)
    scaled = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(stats.mean, scaled.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(stats.std, scaled.std(axis=(0, 1, 2)), rtol=1e-12)
    assert stats.mean[2] < stats.mean[0]


def test_constant_channel_gets_unit_std():
    images = np.full((4, 2, 2, 1), 17, np.uint8)
    stats = channel_stats(images)
    assert stats.std.tolist() == [1.0]
    np.testing.assert_allclose(to_features(images, np.float64, stats), 0.0, atol=1e-15)


def test_standardize_each_channel_with_its_own_statistics():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (200, 5, 5, 3), dtype=np.uint8)
    images[..., 1] = images[..., 1] // 3 + 100
    stats = channel_stats(images)
    features = to_features(images, np.float64, stats).reshape(200, 25, 3)
    np.testing.assert_allclose(features.mean(axis=(0, 1)), 0.0, atol=1e-12)
    np.testing.assert_allclose(features.std(axis=(0, 1)), 1.0, rtol=1e-12)
    plain = to_features(images, np.float32)
    again = standardize(plain, stats, images.shape[1:])
    assert again.dtype == np.float32
    np.testing.assert_allclose(again.reshape(200, 25, 3), features, atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        standardize(plain, stats, (15, 5, 1))


# --- the split -------------------------------------------------------------------------------------


def labels_of(counts):
    return np.repeat(np.arange(len(counts)), counts)


def test_stratified_split_same_seed_same_split_other_seed_other_split():
    labels = labels_of([400, 250, 100, 50])
    a, b, c = (split_stratified(labels, 4, None, seed, "x") for seed in (0, 0, 1))
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.val, c.val)
    everything = np.concatenate([a.train, a.val, a.test])
    assert sorted(everything.tolist()) == list(range(800))  # a partition
    assert len(a.test) == 800 // 7 and len(a.val) == (800 - 800 // 7) // 6
    # each class in proportion to its size (largest remainder)
    assert np.bincount(labels[a.test], minlength=4).tolist() == [57, 36, 14, 7]


def test_split_uses_a_stream_of_its_own():
    labels = labels_of([30, 30])
    split = split_stratified(labels, 2, None, 4, "x")
    loop_stream = np.random.default_rng(np.random.SeedSequence(4).spawn(1)[0]).permutation(60)
    own = np.random.default_rng(np.random.SeedSequence(4, spawn_key=(SPLIT_STREAM,))).permutation(60)
    test_set = set(split.test.tolist())
    assert [i for i in own if i in test_set] == split.test.tolist()  # its own stream's order ...
    assert not np.array_equal(own, loop_stream)  # ... not the training loop's


def test_val_size_rules():
    assert check_val_size(None, 60_000, "x") == 10_000
    assert check_val_size(None, 600, "x") == 100
    assert check_val_size(123, 600, "x") == 123
    assert builtin_val_size(60_000) == 10_000 and builtin_val_size(50_000) == 10_000
    assert builtin_val_size(100) == 16
    for bad in (0, -1, 600, 1.5, True):
        with pytest.raises(UsageError, match="--val-size"):
            check_val_size(bad, 600, "x")
    with pytest.raises(DataError, match="too few"):
        split_stratified(np.array([0, 1]), 2, None, 0, "tiny.npz")

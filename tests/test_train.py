"""The training loop's batch gathering: uint8 pixels scaled per batch give the very numbers of a
float copy of the whole set, in the order the batch indices ask."""

import numpy as np
import pytest

from nnscratch.data.preprocess import scale_pixels, to_features
from nnscratch.training.loop import BatchGatherer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixels_gathered_and_scaled_equal_the_float_features(dtype):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 4, 5), dtype=np.uint8)
    images[0] = 255  # the ends of the range
    images[1] = 0
    labels = rng.integers(0, 10, 300)
    features = to_features(images, dtype)
    pixels = images.reshape(300, -1)
    from_pixels = BatchGatherer(pixels, labels, 64, dtype)
    from_floats = BatchGatherer(features, labels, 64)
    order = rng.permutation(300)
    for start in range(0, 300, 64):  # the last batch is short (44 rows)
        idx = order[start:start + 64]
        xa, ya = from_pixels.batch(idx)
        expected_x = features[idx]
        assert xa.dtype == dtype and xa.shape == expected_x.shape
        np.testing.assert_array_equal(xa, expected_x)
        np.testing.assert_array_equal(ya, labels[idx])
        xb, yb = from_floats.batch(idx)
        np.testing.assert_array_equal(xb, expected_x)
        np.testing.assert_array_equal(yb, labels[idx])


def test_scale_pixels_is_division_by_255_in_the_output_dtype():
    pixels = np.arange(256, dtype=np.uint8)
    for dtype in (np.float32, np.float64):
        out = scale_pixels(pixels, np.empty(256, dtype))
        np.testing.assert_array_equal(out, pixels.astype(dtype) / dtype(255))
        assert out[0] == 0 and out[-1] == 1


def test_pixels_without_a_dtype_are_refused():
    with pytest.raises(ValueError, match="dtype"):
        BatchGatherer(np.zeros((10, 4), np.uint8), np.zeros(10, np.int64), 4)


def test_a_batch_larger_than_the_data_allocates_only_the_data():
    x = np.zeros((10, 4), dtype=np.float32)
    gather = BatchGatherer(x, np.arange(10), batch_size=10**9)
    rows, labels = gather.batch(np.arange(10))
    assert rows.shape == (10, 4) and gather._rows.shape == (10, 4)

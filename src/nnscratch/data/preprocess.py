"""From uint8 images to model inputs: the one place where pixels become numbers.

Every dataset arrives as uint8 images of shape ``(N, H, W, C)`` (C = 1 for greyscale, 3 for
RGB). A model sees each image as one row of ``D = H * W * C`` features:

* **Feature order.** The image is flattened in C (row-major) order over ``(H, W, C)``: row by
  row, pixel by pixel, and within a pixel channel by channel. Feature ``d`` is pixel
  ``(d // (W * C), (d // C) % W)``, channel ``d % C``. For greyscale images this is exactly the
  old ``(H, W)`` flattening, so MNIST features are unchanged.
* **Scaling.** ``x = pixel / 255`` computed in the model's float dtype (:func:`scale_pixels`),
  so inputs lie in ``[0, 1]``.
* **Standardisation** (optional). ``x' = (x - mean[c]) / std[c]`` per channel ``c``, with the
  mean and standard deviation of the scaled *training* pixels (:func:`channel_stats`). The
  validation and test sets are standardised with the training statistics, never their own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ChannelStats", "channel_stats", "model_inputs", "scale_pixels", "standardize", "to_features"]


class ChannelStats(NamedTuple):
    """Per-channel mean and standard deviation of the scaled pixels (``pixel / 255``).

    Both are float64 arrays of shape ``(C,)``. A constant channel has ``std`` 1 (not 0), so
    standardising it only centres it.
    """

    mean: np.ndarray
    std: np.ndarray


def scale_pixels(pixels: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = pixels / 255`` in ``out``'s dtype: uint8 pixels as model inputs in ``[0, 1]``.

    Division (not multiplication by ``1/255``) in the output dtype, so every engine and every
    batch sees the very same numbers a float copy of the whole set would hold.
    """
    return np.divide(pixels, out.dtype.type(255), out=out, dtype=out.dtype)


def to_features(images: np.ndarray, dtype, stats: ChannelStats | None = None) -> np.ndarray:
    """uint8 images ``(N, H, W, C)`` (or ``(N, H, W)``) -> features ``(N, H*W*C)`` of ``dtype``.

    Parameters
    ----------
    images
        uint8 pixels, any number of trailing image dimensions.
    dtype
        Float type of the result, e.g. ``np.float32``.
    stats
        If given, standardise each channel with these training-set statistics
        (:func:`standardize`); otherwise the features are ``pixel / 255`` in ``[0, 1]``.
    """
    pixels = images.reshape(len(images), -1)
    out = scale_pixels(pixels, np.empty(pixels.shape, dtype=np.dtype(dtype)))
    if stats is not None:
        standardize(out, stats, images.shape[1:], out=out)
    return out


def model_inputs(images: np.ndarray, dtype, standardization: dict | None, model: str = "the model") -> np.ndarray:
    """uint8 images -> the inputs a trained model expects, from the data options it stored.

    ``standardization`` is what a model file's metadata and ``metrics.json`` hold: ``None`` (the
    model saw ``pixel / 255``) or ``{"mean": [...], "std": [...]}``, one value per channel, of its
    training split. The one place that turns those stored options into inputs: ``nnscratch
    evaluate`` and :meth:`nnscratch.api.Run.predict` both call it. Images with another number of
    channels than the statistics are a :class:`~nnscratch.errors.UsageError` naming ``model``.
    """
    stats = None
    if standardization:
        stats = ChannelStats(np.asarray(standardization["mean"], dtype=np.float64),
                             np.asarray(standardization["std"], dtype=np.float64))
        channels = images.shape[-1] if images.ndim == 4 else 1
        if len(stats.mean) != channels:
            from nnscratch.errors import UsageError

            raise UsageError(f"{model} was trained on {len(stats.mean)}-channel images, these images have {channels}")
    return to_features(images, dtype, stats)


def channel_stats(train_images: np.ndarray) -> ChannelStats:
    """Mean and standard deviation of each channel of ``pixel / 255`` over the training images.

    Computed exactly from a 256-bin histogram per channel (no float accumulation over millions
    of pixels, no float copy of the set): the sums of the pixel values and of their squares are
    whole numbers, so the variance ``(N * S2 - S1**2) / (N * 255)**2`` is exact and a constant
    channel has variance exactly 0 (float sums once gave it 1e-32, so a std of 1e-16 that blew
    its features up to 1e16). Pass the *training* split only: statistics that saw the
    validation or test images would leak them into the model.

    Parameters
    ----------
    train_images
        uint8 ``(N, H, W, C)``; an ``(N, H, W)`` array counts as one channel.
    """
    images = np.asarray(train_images)
    if images.dtype != np.uint8:
        raise ValueError(f"channel_stats needs uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.size == 0:
        raise ValueError("channel_stats needs at least one pixel")
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.int64)
        n, s1, s2 = int(counts.sum()), int(counts @ values), int(counts @ (values * values))
        var = (n * s2 - s1 * s1) / (n * 255) ** 2  # exact integers, one rounding
        means.append(s1 / (n * 255))
        stds.append(float(np.sqrt(var)) if var > 0 else 1.0)
    return ChannelStats(np.array(means), np.array(stds))


def standardize(features: np.ndarray, stats: ChannelStats, image_shape: tuple[int, ...],
                out: np.ndarray | None = None) -> np.ndarray:
    """``(features - mean[c]) / std[c]`` for each feature's channel ``c``.

    Parameters
    ----------
    features
        ``(N, H*W*C)`` scaled features in the order of :func:`to_features`.
    stats
        From :func:`channel_stats` on the training split.
    image_shape
        ``(H, W, C)`` (or ``(H, W)`` for one channel): tells which feature is which channel.
    out
        Where to write the result (may be ``features`` itself); a new array if None.
    """
    channels = image_shape[2] if len(image_shape) == 3 else 1
    if len(stats.mean) != channels:
        raise ValueError(f"statistics for {len(stats.mean)} channels, images have {channels}")
    n = len(features)
    if out is None:
        out = np.empty_like(features)
    # C-order (H, W, C): the channel is the fastest-varying index, so a (N, H*W, C) view lines
    # each feature up with its channel's statistics.
    view_in = features.reshape(n, -1, channels)
    view_out = out.reshape(n, -1, channels)
    mean = stats.mean.astype(features.dtype)
    std = stats.std.astype(features.dtype)
    np.subtract(view_in, mean, out=view_out)
    np.divide(view_out, std, out=view_out)
    return out

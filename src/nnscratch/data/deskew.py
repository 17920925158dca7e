"""Deskewing: each greyscale image sheared upright and centred by its own moments.

A preprocessing of the whole dataset (training, validation and test images alike, and the
images ``nnscratch predict`` is given), not an augmentation: it is the same for every epoch and
draws no random number. LeCun et al.'s MNIST table lists it ("deskewing") for several
classifiers; for a plain MLP it takes away most of the slant that varies from writer to writer.

For image ``b`` with ink ``I(y, x) >= 0`` (``y`` the row, ``x`` the column, ``M = sum I``)::

    centroid    x_bar = sum I x / M,   y_bar = sum I y / M
    moments     var_y = sum I (y - y_bar)^2 / M,   cov_xy = sum I (x - x_bar)(y - y_bar) / M
    skew        alpha = cov_xy / var_y                      (0 when M = 0 or var_y = 0; within +-2)

    out(c + (u, v)) = in(x_bar + u + alpha v,  y_bar + v)      c = ((W - 1) / 2, (H - 1) / 2)

so each row ``v`` of the output is the input's row through the centroid's line of slant, moved
by ``alpha v`` columns: the output's centroid is the image centre and its ``cov_xy`` is 0 (up to
the resampling). ``in`` is read by the augmentation's bilinear resampling (0 outside the image,
rounded to uint8): :class:`~nnscratch.data.augment.Warper`, given the transform as a
:class:`~nnscratch.data.augment.Draw` with ``A^-1 = [[1, alpha], [0, 1]]`` and
``t = -A (x_bar - c_x, y_bar - c_y)``. An image already upright and centred comes back exactly;
a blank one too.

Measured (docs/best-config.md, runs P1 and D1): 784-1024-1024-10 on MNIST, 30 epochs of
``configs/best.toml``'s recipe, validation 98.99 % deskewed against 98.55 % on the plain pixels.
"""

from __future__ import annotations

import numpy as np

from nnscratch.data.augment import Draw, Warper

__all__ = ["deskew", "deskew_draw", "skew"]

#: The largest skew applied (a shear of 63 degrees): ink spread along one row has a var_y near 0
#: and an alpha without bound. MNIST's largest is 1.87.
MAX_SKEW = 2.0

#: Pixels per pass. The warp's scratch is about 20 bytes a pixel (a padded float32 copy, a zero
#: displacement field): some 40 MB however many images there are, or 20 bytes a pixel of one
#: image larger than this (measured: 324 MB for one image of the largest side the readers take,
#: 4,096; the moments need no copy).
CHUNK_PIXELS = 2 ** 21


def skew(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, centroid)`` of uint8 ``images`` ``(n, H, W)``: the skew ``(n,)`` and the ink's
    centroid ``(n, 2)`` as ``(x_bar, y_bar)`` in pixels, in float64 (see the module docstring).

    From the ink's row and column sums and each row's first moment, never a float copy of the
    images: ``cov_xy = sum_y (y - y_bar) (sum_x I x - x_bar sum_x I) / M``. ``alpha`` is kept
    within +-:data:`MAX_SKEW`."""
    n, H, W = images.shape
    x, y = np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64)
    rows = images.sum(axis=2, dtype=np.float64)                 # (n, H): the ink of each row
    cols = images.sum(axis=1, dtype=np.float64)                 # (n, W): of each column
    row_x = np.einsum("nhw,w->nh", images, x)                   # (n, H): sum_x I x, row by row
    mass = rows.sum(axis=1)
    safe = np.where(mass > 0, mass, 1.0)
    x_bar, y_bar = cols @ x / safe, rows @ y / safe
    dy = y[None, :] - y_bar[:, None]
    var_y = (rows * dy * dy).sum(axis=1) / safe
    cov_xy = (dy * (row_x - x_bar[:, None] * rows)).sum(axis=1) / safe
    alpha = np.divide(cov_xy, var_y, out=np.zeros(n), where=var_y > 1e-12)
    np.clip(alpha, -MAX_SKEW, MAX_SKEW, out=alpha)
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    centroid = np.where((mass > 0)[:, None], np.stack([x_bar, y_bar], axis=1), centre)
    return alpha, centroid


def deskew_draw(images: np.ndarray) -> Draw:
    """The deskewing of uint8 ``images`` ``(n, H, W)`` as a transform the :class:`Warper` applies."""
    n, H, W = images.shape
    alpha, centroid = skew(images)
    inverse = np.zeros((n, 2, 2))
    inverse[:, 0, 0] = inverse[:, 1, 1] = 1.0
    inverse[:, 0, 1] = alpha
    d = centroid - np.array([(W - 1) / 2, (H - 1) / 2])
    shift = -np.stack([d[:, 0] - alpha * d[:, 1], d[:, 1]], axis=1)   # -A d, A = [[1, -alpha], [0, 1]]
    return Draw(inverse, shift)


def deskew(images: np.ndarray) -> np.ndarray:
    """Deskewed copies of uint8 greyscale ``images`` ``(n, H, W)`` or ``(n, H, W, 1)``, same shape.

    Raises ``ValueError`` for another dtype or shape (colour images have no one slant: convert
    them with ``--grayscale`` first)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 1):
        raise ValueError(f"deskew takes uint8 greyscale images (n, H, W) or (n, H, W, 1), "
                         f"got {images.dtype} {images.shape}")
    gray = images.reshape(images.shape[:3])
    out = np.empty(gray.shape, np.uint8)
    warper = Warper()
    chunk = max(1, CHUNK_PIXELS // (gray.shape[1] * gray.shape[2]))
    for k in range(0, len(gray), chunk):
        part = gray[k:k + chunk]
        warper.warp(part, deskew_draw(part), out[k:k + chunk])
    return out.reshape(images.shape)

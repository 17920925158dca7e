"""Data augmentation of uint8 images, a whole batch at a time: random affine warps (rotation,
scale, shear, shift, mirror) and Simard's elastic distortion, in one bilinear resampling.

Every image ``b`` of a batch gets its own random transform. With ``p = (x, y)`` a pixel's
position relative to the image centre ``((W - 1) / 2, (H - 1) / 2)`` (x to the right, y down),
the image content is moved by ::

    p_out = A p_in + t,        A = R(theta) Sh(phi) s F

    R(theta) = [[cos, sin], [-sin, cos]]  a turn by theta, counter-clockwise on screen,   theta ~ U(-rotate, rotate) degrees
    Sh(phi)  = [[1, tan phi], [0, 1]]     a horizontal shear,                             phi   ~ U(-shear, shear) degrees
    s                                     a zoom (s > 1 enlarges),                        s     ~ U(1 - scale, 1 + scale)
    F        = diag(-1, 1)                a left-right mirror with probability hflip, else the identity
    t                                     a shift by whole pixels,                        t     ~ U{-shift, ..., shift} per axis

and each output pixel reads the input where that transform brought it from, plus, with
``elastic = (alpha, sigma)``, Simard's displacement field (Simard, Steinkraus and Platt 2003,
"Best practices for convolutional neural networks applied to visual document analysis", sec. 2)::

    out(p) = in( A^-1 (p - t) + Delta(p) ),     Delta = alpha * (G_sigma conv U),   U ~ U(-1, 1) per pixel and axis

``G_sigma`` is the normalised Gaussian of standard deviation ``sigma`` pixels, truncated at
4 sigma, with zeros beyond the image (``scipy.ndimage.gaussian_filter(mode="constant")``); as it
is separable and linear, one axis of the field is the matrix product ``G_H U G_W^T``
(:func:`smoothing_matrix`; the recipe as written: :func:`elastic_field_reference`). ``in`` is
read by bilinear interpolation with 0 (the background) outside the image and rounded to the
nearest integer: one resampling, however many transforms.

The field is drawn in the smoothing's eigenbasis (:func:`elastic_field`): with ``G = V L V^T``
(symmetric), ``G U G^T = V L (V^T U V) L V^T``, and ``Z = V^T U V`` is noise of the same
covariance as ``U`` (``I / 3``: a rotation of uncorrelated noise). ``L`` falls fast, so ``Z`` is
drawn uniform on (-1, 1) for the fewest leading components that leave out at most 1e-5 of the
field's variance (sigma 4 on 28 pixels: 9 of 28, leaving out 1.5e-6): Simard's covariance, from
162 random numbers per image instead of 1,568 and a third of the multiplications. Each
displacement is then a weighted sum of 81 uniforms instead of ~800: both are Gaussian to the eye
(``tests/test_augment.py`` checks the covariance against the recipe's and the theory's).

A transform at zero strength is not drawn at all; with every strength zero the batch comes back
as it went in (the same array). Integer shifts and mirrors alone read whole pixels: no blur.
The random numbers come from the generator given, in a fixed order (angles, zooms, shears, shifts,
mirrors, elastic noise), so the same generator state gives the same batch. The training loop keys
that generator by ``(seed, epoch, step)``: :mod:`nnscratch.training.augmented`.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnscratch.errors import ParameterError

#: The transforms, in the order a spec is written (their numbers are drawn in another: :meth:`Augmentation.draw`).
TRANSFORMS = ("rotate", "shift", "scale", "shear", "elastic", "hflip")
#: What each transform's value means, for errors and ``--help``.
TRANSFORM_HELP = {"rotate": "degrees, turned by up to +-rotate", "shift": "whole pixels, up to +-shift per axis",
                  "scale": "zoom by a factor in [1 - scale, 1 + scale]", "shear": "degrees, sheared by up to +-shear",
                  "elastic": "Simard's elastic distortion; 34:4 on 28x28 images",
                  "hflip": "probability of a left-right mirror"}
#: The presets of ``augment = "auto"``, per built-in dataset (see docs/augmentation.md).
PRESETS = {
    "mnist": "rotate=10,shift=2,scale=0.1,elastic=34:4",   # digits: no mirrors
    "fashion-mnist": "rotate=5,shift=2,scale=0.05",        # mirrors optional: --augment auto,hflip=0.5
    "cifar10": "shift=4,hflip=0.5",                        # the usual pad-4 crop and mirror
}
NONE = "none"


@dataclass(frozen=True)
class Augmentation:
    """How to augment training images (every strength 0: not at all). See the module docstring
    for what each does; :func:`parse_augment` reads them from ``"rotate=10,elastic=34:4"``."""

    rotate: float = 0.0                         # degrees
    shift: int = 0                              # pixels
    scale: float = 0.0                          # zoom range around 1
    shear: float = 0.0                          # degrees
    elastic: tuple[float, float] | None = None  # (alpha, sigma) in pixels
    hflip: float = 0.0                          # probability

    def __post_init__(self) -> None:
        for name in TRANSFORMS:
            problem = _check(name, getattr(self, name))
            if problem:
                raise ParameterError("augment", f"{name}={_shown(name, getattr(self, name))}: {problem} "
                                                f"({TRANSFORM_HELP[name]})")
        if self.elastic is not None:
            object.__setattr__(self, "elastic", (float(self.elastic[0]), float(self.elastic[1])))

    @property
    def active(self) -> bool:
        """Whether any transform has a strength above zero."""
        return any(_strength(name, getattr(self, name)) for name in TRANSFORMS)

    def spec(self) -> str:
        """The canonical spec, ``"rotate=10,shift=2,elastic=34:4"`` (``"none"`` when inactive):
        what configs, checkpoints and reports record."""
        items = [f"{name}={_shown(name, getattr(self, name))}" for name in TRANSFORMS
                 if _strength(name, getattr(self, name))]
        return ",".join(items) or NONE

    def only(self, name: str) -> "Augmentation":
        """This augmentation with every transform but ``name`` off (for the preview's rows)."""
        return Augmentation(**{name: getattr(self, name)})

    def check_images(self, shape: tuple[int, ...]) -> None:
        """Refuse image shapes it cannot work on: it needs ``(H, W)`` or ``(H, W, C)`` images, and
        a shift that leaves something in view."""
        if len(shape) not in (2, 3) or min(shape[:2]) < 2:
            raise ParameterError("augment", f"needs images of at least 2x2 pixels, the data's are {shape}")
        if self.shift >= min(shape[:2]):
            raise ParameterError("augment", f"shift={self.shift} moves {shape[0]}x{shape[1]} images out of view; "
                                            f"use at most {min(shape[:2]) - 1}")

    def draw(self, rng: np.random.Generator, n: int, image_shape: tuple[int, ...]) -> "Draw":
        """The random transforms of ``n`` images of ``image_shape``, their numbers drawn from ``rng``
        in this order: angles, zooms, shears, shifts, mirrors, elastic noise (those of the
        transforms that are on)."""
        H, W = image_shape[:2]
        theta = np.radians(rng.uniform(-self.rotate, self.rotate, n)) if self.rotate else np.zeros(n)
        s = rng.uniform(1.0 - self.scale, 1.0 + self.scale, n) if self.scale else np.ones(n)
        phi = np.radians(rng.uniform(-self.shear, self.shear, n)) if self.shear else np.zeros(n)
        t = rng.integers(-self.shift, self.shift + 1, (n, 2)) if self.shift else np.zeros((n, 2), dtype=np.int64)
        f = np.where(rng.random(n) < self.hflip, -1.0, 1.0) if self.hflip else np.ones(n)
        field = None
        if self.elastic is not None and self.elastic[0] > 0:
            field = elastic_field(rng, n, (H, W), *self.elastic)
        return Draw(inverse_matrices(theta, s, phi, f), t.astype(np.float64), field)

    def apply(self, images: np.ndarray, rng: np.random.Generator, warper: "Warper | None" = None,
              out: np.ndarray | None = None) -> np.ndarray:
        """Augmented copies of uint8 ``images`` ``(n, H, W)`` or ``(n, H, W, C)``, same shape and
        dtype, each with its own transform drawn from ``rng``. Inactive: ``images`` itself.
        ``warper`` keeps scratch arrays between calls (the training loop's fast path); ``out``
        receives the result."""
        if not self.active:
            if out is not None:
                out[...] = images
                return out
            return images
        if images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"augment takes uint8 images (n, H, W[, C]), got {images.dtype} {images.shape}")
        draw = self.draw(rng, len(images), images.shape[1:])
        return (warper or Warper()).warp(images, draw, out)


@dataclass
class Draw:
    """The transforms of a batch: ``inverse`` ``(n, 2, 2)`` (``A^-1`` in (x, y)), ``shift`` ``(n, 2)``
    (``t`` as (x, y)), ``field`` ``(n, 2, H, W)`` float32 (``Delta`` as (x, y)) or None."""

    inverse: np.ndarray
    shift: np.ndarray
    field: np.ndarray | None = None


def inverse_matrices(theta: np.ndarray, s: np.ndarray, phi: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``A^-1 = F^-1 s^-1 Sh(phi)^-1 R(theta)^-1`` of each image, ``(n, 2, 2)``, in closed form::

        R^-1 = [[cos, -sin], [sin, cos]],   Sh^-1 = [[1, -tan phi], [0, 1]],   F^-1 = F = diag(f, 1)
        A^-1 = (1 / s) [[f (cos - k sin), -f (sin + k cos)], [sin, cos]],   k = tan phi
    """
    c, sn, k = np.cos(theta), np.sin(theta), np.tan(phi)
    m = np.empty((len(theta), 2, 2))
    m[:, 0, 0], m[:, 0, 1] = f * (c - k * sn) / s, -f * (sn + k * c) / s
    m[:, 1, 0], m[:, 1, 1] = sn / s, c / s
    return m


@functools.lru_cache(maxsize=16)
def smoothing_matrix(n: int, sigma: float) -> np.ndarray:
    """``G`` ``(n, n)`` float32 with ``G @ v`` = ``scipy.ndimage.gaussian_filter1d(v, sigma,
    mode="constant")``: the filter applied to the identity, one column per unit vector."""
    from scipy.ndimage import gaussian_filter1d

    g = gaussian_filter1d(np.eye(n), sigma, axis=0, mode="constant").astype(np.float32)
    g.flags.writeable = False
    return g


#: The largest elastic ``alpha`` (pixels) a spec may ask for: far beyond any image (Simard: 34 on
#: 28 pixels), and small enough that the field stays finite in float32.
MAX_ELASTIC_ALPHA = 1e4

#: The share of an elastic field's variance its eigenbasis may leave out (see the module docstring).
ELASTIC_TOLERANCE = 1e-5


@functools.lru_cache(maxsize=16)
def field_basis(n: int, sigma: float) -> np.ndarray:
    """``V_r L_r`` ``(n, r)`` float32: the leading eigenvectors of :func:`smoothing_matrix` times
    their eigenvalues, the fewest ``r`` whose variance (``L^4`` summed) leaves out at most
    :data:`ELASTIC_TOLERANCE` of the whole (a square image's field: ``sum L_i^2 L_j^2``)."""
    values, vectors = np.linalg.eigh(smoothing_matrix(n, sigma).astype(np.float64))
    keep = np.argsort(-np.abs(values))
    values, vectors = values[keep], vectors[:, keep]
    left_out = 1 - (np.cumsum(values ** 2) / np.sum(values ** 2)) ** 2   # with r = 1, 2, ... components
    r = int(np.argmax(left_out <= ELASTIC_TOLERANCE)) + 1 if np.any(left_out <= ELASTIC_TOLERANCE) else n
    basis = (vectors[:, :r] * values[:r]).astype(np.float32)
    basis.flags.writeable = False
    return basis


def elastic_field(rng: np.random.Generator, n: int, shape: tuple[int, int], alpha: float, sigma: float) -> np.ndarray:
    """``n`` images' displacement fields ``(n, 2, H, W)`` float32 (x, then y), drawn in the
    smoothing's eigenbasis: ``alpha * P_H Z P_W^T``, ``P = V_r L_r`` (:func:`field_basis`), ``Z``
    uniform on (-1, 1) ``(r_H, r_W)`` per image and axis. Simard's field in distribution, to the
    tolerance (the module docstring): :func:`elastic_field_reference` is the recipe as written."""
    p_h, p_w = field_basis(shape[0], float(sigma)), field_basis(shape[1], float(sigma))
    z = rng.random((n, 2, p_h.shape[1], p_w.shape[1]), dtype=np.float32)
    z *= np.float32(2 * alpha)
    z -= np.float32(alpha)                                  # alpha Z, Z ~ U(-1, 1)
    # one small product per image and axis: each far below the size at which BLAS would start its
    # thread pool (another pool than the engine's, which would fight it for the cores: backend.py)
    return np.matmul(np.matmul(p_h, z), _transposed_basis(shape[1], float(sigma)))


@functools.lru_cache(maxsize=16)
def _transposed_basis(n: int, sigma: float) -> np.ndarray:
    """``field_basis(n, sigma).T``, contiguous (a product with a transposed view is slower)."""
    return np.ascontiguousarray(field_basis(n, sigma).T)


def elastic_field_reference(noise: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """Simard's recipe as written: ``alpha * gaussian_filter(noise, sigma)`` per image and axis
    (``noise`` on (-1, 1), ``(n, 2, H, W)``; zeros beyond the image, truncated at 4 sigma), in float64."""
    from scipy.ndimage import gaussian_filter

    return alpha * gaussian_filter(np.asarray(noise, np.float64), sigma=(0, 0, sigma, sigma), mode="constant")


class Warper:
    """Resamples a batch through its :class:`Draw`, with scratch arrays kept between calls.

    1. The source coordinates of every output pixel, ``(x, y) = A^-1 (p - t) + c (+ Delta(p))``:
       ``[x; y]`` of image b is ``[A^-1 | c - A^-1 t]`` ``(2, 3)`` (:meth:`affine`) times
       ``[u; v; 1]``, ``p = (u, v)`` the pixel's position about the centre ``c``.
    2. Their whole and fractional parts, ``x0 = floor(x)``, ``wx = x - x0`` (the same for y),
       beyond one pixel out of the image clipped to there (all four neighbours are then 0).
    3. The four neighbours ``a = in(y0, x0)``, ``b = in(y0, x0 + 1)``, ``c = in(y0 + 1, x0)``,
       ``d = in(y0 + 1, x0 + 1)``, read from a copy of the batch with a border of zeros.
    4. ``top = a + wx (b - a)``, ``bottom = c + wx (d - c)``, ``value = top + wy (bottom - top)``,
       rounded half up to uint8.

    Two implementations of these steps, the same up to float32 rounding of the coordinates (a
    pixel differs by at most one grey level; ``tests/test_augment.py``):

    * ``compiled=True`` (the default, where numba is installed): :func:`_warp_gray`, one
      compiled loop over the images, steps 1-4 for up to 4,096 pixels of an image at a time in a
      few scratch arrays of that length. Channels (CIFAR-10) are warped as gray planes, each with its
      image's transform.
    * ``compiled=False`` (and without numba): whole-batch NumPy, the reference (:meth:`_source`,
      :meth:`_bilinear`): the coordinates as small matrix products, ``floor``, four ``take``
      from a zero-padded float copy, the blend in place.

    Measured per batch of 64 MNIST images with the MNIST preset's draw (2-core AMD EPYC VM, one
    thread, taking turns): compiled 287 us, NumPy 542 (the loop alone: 221 beside a busy core)
    (docs/augmentation.md#cost). In the NumPy path, reusing the arrays instead of a dozen fresh
    200 kB temporaries per call made it 4x faster
    (their pages are mapped and zeroed anew each time), and the coordinates as products instead of
    broadcast arithmetic 5x faster for that step (25 against 125 us). One warper per thread.
    """

    def __init__(self, compiled: bool = True) -> None:
        self.compiled = compiled
        self._key: tuple | None = None
        self._gray_key: tuple | None = None

    def warp(self, images: np.ndarray, draw: Draw, out: np.ndarray | None = None) -> np.ndarray:
        """``images`` ``(n, H, W)`` or ``(n, H, W, C)`` uint8 resampled through ``draw``, into ``out``
        (a new array if None)."""
        n, shape = len(images), images.shape[1:]
        H, W = shape[:2]
        if out is None:
            out = np.empty(images.shape, np.uint8)
        kernel = _compiled_warp() if self.compiled else False
        if kernel:
            self._warp_compiled(kernel, images.reshape(n, H, W, -1), draw, out.reshape(n, H, W, -1))
            return out
        self._buffers(n, shape)
        xy = self._source(draw, n, H, W)
        value = self._bilinear(images.reshape(n, H, W, -1), xy, H, W)
        value += 0.5                                       # round half up (value >= 0): truncation below
        np.copyto(out.reshape(value.shape), value, casting="unsafe")
        return out

    @staticmethod
    def affine(draw: Draw, H: int, W: int) -> np.ndarray:
        """``[A^-1 | c - A^-1 t]`` ``(n, 2, 3)`` float32 of each image: its source ``[x; y]`` in
        pixel coordinates is this times ``[u; v; 1]`` (``u, v`` about the centre ``c``)."""
        m = np.empty((len(draw.inverse), 2, 3), np.float32)
        m[:, :, :2] = draw.inverse
        m[:, :, 2] = np.array([(W - 1) / 2, (H - 1) / 2]) - (draw.inverse @ draw.shift[:, :, None])[:, :, 0]
        return m

    # -- the compiled path

    def _warp_compiled(self, kernel, images: np.ndarray, draw: Draw, out: np.ndarray) -> None:
        """Steps 1-4 by :func:`_warp_gray` on ``(n, H, W, C)`` ``images`` into ``out``."""
        n, H, W, C = images.shape
        m = self.affine(draw, H, W)
        m[:, :, 2] += 1                                    # in the padded copy, pixel (0, 0) is at (1, 1)
        field = draw.field
        if C > 1:                                          # each channel a gray plane, its image's transform
            m = np.repeat(m, C, axis=0)
            field = None if field is None else np.repeat(field, C, axis=0)
        planes = n * C
        key = (H, W)
        if self._gray_key is None or self._gray_key[1:] != key or self._gray_key[0] < planes:
            self._gray_key = (planes, H, W)
            # 1 row and column of zeros before, 2 after; float32, so that the compiled gathers read
            # floats (vector gathers: 125 against 151 us per batch of 64 with uint8 reads, the same bytes)
            self.gray_padded = np.zeros((planes, H + 3, W + 3), np.float32)
            self.no_field = np.zeros((planes, 2, H, W), np.float32)
            self.gray_out = np.empty((planes, H, W), np.uint8)
            self.centred_u = np.tile(np.arange(W, dtype=np.float32) - np.float32((W - 1) / 2), H)    # (H W,)
            self.centred_v = np.repeat(np.arange(H, dtype=np.float32) - np.float32((H - 1) / 2), W)
        padded = self.gray_padded[:planes]
        planes_view = padded.reshape(n, C, H + 3, W + 3)[:, :, 1:H + 1, 1:W + 1]
        planes_view[...] = images.transpose(0, 3, 1, 2)    # (n, H, W, C) -> n C planes, in one copy
        field = self.no_field[:planes] if field is None else np.ascontiguousarray(field, np.float32)
        direct = C == 1 and out.flags.c_contiguous
        result = out.reshape(planes, H, W) if direct else self.gray_out[:planes]
        kernel(padded.reshape(-1), m, field, self.centred_u, self.centred_v, result)
        if not direct:
            out[...] = result.reshape(n, C, H, W).transpose(0, 2, 3, 1)

    # -- the NumPy path (the reference)

    def _buffers(self, n: int, shape: tuple[int, ...]) -> None:
        key = (n, *shape)
        if self._key is not None and self._key[1:] == key[1:] and self._key[0] >= n:
            return
        H, W = shape[:2]
        C = shape[2] if len(shape) == 3 else 1
        self._key, Hp, Wp = key, H + 3, W + 3    # 1 row and column of zeros before the image, 2 after
        self.padded = np.zeros((n, Hp, Wp, C), np.float32)
        self.xy, self.whole = np.empty((n, 2, H, W), np.float32), np.empty((n, 2, H, W), np.float32)
        self.flat_index, self.index = np.empty((n, H, W), np.float32), np.empty((n, H, W), np.intp)
        self.corners = [np.empty((n, H, W, C) if C > 1 else (n, H, W), np.float32) for _ in range(4)]
        u, v = np.meshgrid(np.arange(W, dtype=np.float32) - (W - 1) / 2, np.arange(H, dtype=np.float32) - (H - 1) / 2)
        self.grid = np.stack([u.ravel(), v.ravel(), np.ones(H * W, np.float32)])        # (3, H W)
        # rows of coordinates per product: each under 2^18 multiplications, the size below which
        # OpenBLAS stays in the calling thread (NumPy's pool would fight the engine's: backend.py)
        self.chunk = max(1, 2 ** 18 // (3 * H * W))
        # where row y0, column x0 of image b sits in the flat padded batch: b Hp Wp + (y0 + 1) Wp + x0 + 1
        self.origin = (np.arange(n, dtype=np.float32) * Hp * Wp + Wp + 1)[:, None, None]

    def _source(self, draw: Draw, n: int, H: int, W: int) -> np.ndarray:
        """``(n, 2, H, W)``: the ``x`` and ``y`` each output pixel reads, in pixel coordinates:
        :meth:`affine` times ``[u; v; 1]`` per image, as products with the grid of ``[u; v; 1]``."""
        if self._key is None or self._key[1:3] != (H, W) or self._key[0] < n:
            self._buffers(n, (H, W))                       # called alone (benchmarks/augment.py)
        m = self.affine(draw, H, W)
        xy = self.xy[:n]
        rows, m = xy.reshape(2 * n, H * W), m.reshape(2 * n, 3)
        for k in range(0, 2 * n, self.chunk):
            np.matmul(m[k:k + self.chunk], self.grid, out=rows[k:k + self.chunk])
        if draw.field is not None:
            xy += draw.field
        return xy

    def _bilinear(self, images: np.ndarray, xy: np.ndarray, H: int, W: int) -> np.ndarray:
        """Bilinear reads of ``images`` ``(n, H, W, C)`` at ``xy`` (0 outside the image); returns
        ``(n, H, W, C)`` float32, a scratch array. ``xy`` is overwritten with the fractions."""
        n, Wp = len(images), W + 3
        if H == W:
            np.clip(xy, -1, W, out=xy)                     # beyond one pixel out, every neighbour is 0
        else:
            np.clip(xy[:, 0], -1, W, out=xy[:, 0])
            np.clip(xy[:, 1], -1, H, out=xy[:, 1])
        if np.isnan(xy.sum()):                             # (a hand-made Draw's) NaN reads 0, not an index
            np.copyto(xy, -1, where=np.isnan(xy))
        whole = self.whole[:n]
        np.floor(xy, out=whole)
        xy -= whole                                        # the fractions wx, wy
        flat = self.flat_index[:n]                         # b Hp Wp + (y0 + 1) Wp + x0 + 1, exact in float32
        np.multiply(whole[:, 1], Wp, out=flat)
        flat += whole[:, 0]
        flat += self.origin[:n]
        index = self.index[:n]
        np.copyto(index, flat, casting="unsafe")
        padded = self.padded[:n]
        padded[:, 1:H + 1, 1:W + 1] = images
        C = images.shape[-1]
        flat_pixels = padded.reshape(-1, C) if C > 1 else padded.reshape(-1)
        a, b, c, d = (k[:n] for k in self.corners)
        for corner, step in ((a, 0), (b, 1), (d, Wp), (c, -1)):  # (y0, x0), (y0, x0+1), (y0+1, x0+1), (y0+1, x0)
            index += step
            np.take(flat_pixels, index, axis=0, out=corner, mode="wrap")  # in range by construction: no check
        wx, wy = xy[:, 0], xy[:, 1]
        if C > 1:
            wx, wy = wx[..., None], wy[..., None]
        b -= a
        b *= wx
        a += b                                             # top = a + wx (b - a)
        d -= c
        d *= wx
        c += d                                             # bottom = c + wx (d - c)
        c -= a
        c *= wy
        a += c                                             # top + wy (bottom - top)
        return a


_warp_kernel: Any = None  # compiled on first use (None: not yet; False: numba missing)


def _compiled_warp():
    """:func:`_warp_gray` compiled by numba (on first use, cached on disk), or False without numba."""
    global _warp_kernel
    if _warp_kernel is None:
        try:
            import numba
        except ImportError:
            _warp_kernel = False
        else:
            _warp_kernel = numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")(_warp_gray)
    return _warp_kernel


def _warp_gray(padded, m, field, u, v, out):  # pragma: no cover - runs compiled (numba does not trace coverage)
    """:class:`Warper`'s steps 1-4 for gray images, one image at a time; numba compiles it.

    ``padded`` ``(n (H + 3) (W + 3),)`` float32: the images with 1 row and column of zeros before
    and 2 after, flat; ``m`` ``(n, 2, 3)`` float32: :meth:`Warper.affine` in padded coordinates (+1);
    ``field`` ``(n, 2, H, W)`` float32 (zeros without elastic); ``u``, ``v`` ``(H W,)``: each
    pixel's centred column and row; ``out`` ``(n, H, W)`` uint8. Per image, 4,096 pixels at a time
    (all of an MNIST or CIFAR-10 image): the coordinates
    ``x = m00 u + (m01 v + m02) + Delta_x`` (and y), clipped to the padded image, ``[0, W + 1]``
    and ``[0, H + 1]`` (so that ``x0 = int(x)`` is the floor; NaN becomes 0), their flat index and
    fractions; then the four neighbours' gathers; then the blend. Three loops rather than one
    (fused, it took 291 against 221 us per batch), each over the whole image rather than row by
    row (150 against 170 us: loops of 784 instead of 28 keep the vector units busy), reading
    float32 pixels rather than uint8 (125 against 150 us: the gathers vectorise;
    docs/augmentation.md#cost).
    """
    n, H, W = out.shape
    P, Wp = H * W, W + 3
    L = min(P, 4096)                    # pixels per pass: bounded scratch whatever the image's size
    index = np.empty(L, np.int32)       # int32: numba's float -> int64 conversion is 2.5x slower
    wx, wy = np.empty(L, np.float32), np.empty(L, np.float32)
    a, b, c, d = np.empty(L, np.float32), np.empty(L, np.float32), np.empty(L, np.float32), np.empty(L, np.float32)
    x_max, y_max, zero, half = np.float32(W + 1), np.float32(H + 1), np.float32(0.0), np.float32(0.5)
    fields = field.reshape(n, 2, P)
    pixels = out.reshape(n, P)
    for i in range(n):
        base = i * (H + 3) * Wp
        m00, m01, m02, m10, m11, m12 = m[i, 0, 0], m[i, 0, 1], m[i, 0, 2], m[i, 1, 0], m[i, 1, 1], m[i, 1, 2]
        for first in range(0, P, L):
            count = min(L, P - first)
            uk, vk, fx, fy = u[first:first + count], v[first:first + count], fields[i, 0, first:], fields[i, 1, first:]
            block = pixels[i, first:first + count]
            for k in range(count):                               # steps 1 and 2
                x = m00 * uk[k] + (m01 * vk[k] + m02) + fx[k]
                y = m10 * uk[k] + (m11 * vk[k] + m12) + fy[k]
                x = x if x > zero else zero          # NaN too (a comparison with NaN is false):
                y = y if y > zero else zero          # never an index outside the padded copy
                x = x if x < x_max else x_max
                y = y if y < y_max else y_max
                x0, y0 = np.int32(x), np.int32(y)
                wx[k], wy[k] = x - x0, y - y0
                index[k] = y0 * Wp + x0                  # within the image: int32 suffices
            for k in range(count):                               # step 3
                j = base + index[k]
                a[k], b[k], c[k], d[k] = padded[j], padded[j + 1], padded[j + Wp], padded[j + Wp + 1]
            for k in range(count):                               # step 4
                top = a[k] + wx[k] * (b[k] - a[k])
                bottom = c[k] + wx[k] * (d[k] - c[k])
                block[k] = np.uint8(top + wy[k] * (bottom - top) + half)


def transform_label(name: str, augmentation: Augmentation) -> str:
    """What transform ``name`` of ``augmentation`` does, in a few words (figure labels)."""
    a = augmentation
    return {"rotate": f"rotate ±{a.rotate:g}°", "shift": f"shift ±{a.shift} px",
            "scale": f"zoom ×{1 - a.scale:g} to ×{1 + a.scale:g}", "shear": f"shear ±{a.shear:g}°",
            "elastic": "elastic α={:g}, σ={:g}".format(*(a.elastic or (0, 0))),
            "hflip": f"mirror, p = {a.hflip:g}"}[name]


# ------------------------------------------------------------------------------------ the spec


def parse_augment(text: str, dataset: str | None = None) -> Augmentation:
    """An :class:`Augmentation` from a spec: ``"rotate=10,shift=2,scale=0.1,shear=5,elastic=34:4,hflip=0.5"``,
    ``"none"`` (off), or ``"auto"`` (the preset of ``dataset``, :data:`PRESETS`), which later items
    may change: ``"auto,hflip=0.5"``. A mistake raises :class:`~nnscratch.errors.ParameterError`
    (parameter ``augment``) naming it and the fix."""
    return _parse(text, lambda: _preset(dataset))


def check_spec(text: str) -> None:
    """Raise what :func:`parse_augment` would for ``text``, but for ``auto``'s dataset (not known yet)."""
    _parse(text, dict)


def _parse(text: str, preset) -> Augmentation:
    if not isinstance(text, str):
        raise ParameterError("augment", f"takes a spec like rotate=10,shift=2,elastic=34:4, got {text!r}")
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items or items == [NONE]:
        return Augmentation()
    values: dict = {}
    given: set[str] = set()  # named in the spec (a preset's values may be changed once)
    for k, item in enumerate(items):
        if item in ("auto", NONE):
            if k:
                raise ParameterError("augment", f"{item!r} can only come first, as in auto,hflip=0.5")
            if item == "auto":
                values.update(preset())
            continue
        name, sep, raw = (part.strip() for part in item.partition("="))
        if name not in TRANSFORMS:
            close = difflib.get_close_matches(name, TRANSFORMS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ParameterError("augment", f"unknown transform {name!r}; {hint}choose from {', '.join(TRANSFORMS)} "
                                            "(as name=value), or none, or auto")
        if not sep or not raw:
            raise ParameterError("augment", f"{name} needs a value: {name}=VALUE ({TRANSFORM_HELP[name]})")
        if name in given:
            raise ParameterError("augment", f"{name} is given twice")
        given.add(name)
        values[name] = _value(name, raw)
    return Augmentation(**values)


def augment_spec(value) -> str:
    """A config's ``augment``, the string of the flag or a TOML table (``{rotate = 10, elastic =
    [34, 4]}``), as a spec string (not resolved: ``auto`` stays ``auto``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        parts = []
        for name, v in value.items():
            if name == "elastic" and isinstance(v, (list, tuple)):
                v = ":".join(map(str, v))
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise ParameterError("augment", f"{name} takes a number, got {v!r}")
            parts.append(f"{name}={v}")
        return ",".join(parts) or NONE
    raise ParameterError("augment", f"takes a spec like rotate=10,shift=2,elastic=34:4 or a table of them, got {value!r}")


def _preset(dataset: str | None) -> dict:
    if dataset not in PRESETS:
        known = ", ".join(PRESETS)
        raise ParameterError("augment", f"auto has no preset for {dataset or 'this dataset'} (presets: {known}); "
                                        "name the transforms, e.g. shift=2,rotate=10")
    return {name: _value(name, raw) for name, raw in (item.split("=") for item in PRESETS[dataset].split(","))}


def _value(name: str, raw: str):
    """``raw`` as the value of transform ``name`` (a number; alpha:sigma for elastic)."""
    try:
        if name == "elastic":
            alpha, sep, sigma = raw.partition(":")
            if not sep:
                raise ValueError
            value = (float(alpha), float(sigma))
        elif name == "shift":
            value = int(raw)
        else:
            value = float(raw)
    except ValueError:
        wanted = {"elastic": "alpha:sigma like 34:4", "shift": "a whole number of pixels"}.get(name, "a number")
        raise ParameterError("augment", f"{name}={raw}: takes {wanted} ({TRANSFORM_HELP[name]})") from None
    return value


def _check(name: str, value) -> str | None:
    """What is wrong with a transform's value (None: fine)."""
    def number_in(low, high, high_open=False):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(value) or value < low or (value >= high if high_open else value > high):
            return f"must be in [{low:g}, {high:g}{')' if high_open else ']'}"
        return None

    if name == "rotate":
        return number_in(0, 180)
    if name == "shift":
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0
        return None if ok else "must be a whole number of pixels >= 0"
    if name == "scale":
        return number_in(0, 1, high_open=True)
    if name == "shear":
        return number_in(0, 60)
    if name == "hflip":
        return number_in(0, 1)
    if value is None:  # elastic
        return None
    try:
        alpha, sigma = (float(v) for v in value)
    except (TypeError, ValueError):
        return "takes alpha:sigma like 34:4"
    if not (math.isfinite(alpha) and 0 <= alpha <= MAX_ELASTIC_ALPHA):
        return f"alpha must be a number in [0, {MAX_ELASTIC_ALPHA:g}] pixels"
    if not (math.isfinite(sigma) and 0 < sigma <= 100):
        return "sigma must be a number in (0, 100] pixels"
    return None


def _strength(name: str, value) -> bool:
    return bool(value[0]) if name == "elastic" and value is not None else bool(value)


def _shown(name: str, value) -> str:
    if name == "elastic":
        return "none" if value is None else f"{value[0]:g}:{value[1]:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)

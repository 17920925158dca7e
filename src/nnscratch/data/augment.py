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
is separable and linear, the whole field is two small matrix products, ``G_H U G_W^T``
(:func:`smoothing_matrix`). ``in`` is read by bilinear interpolation with 0 (the background)
outside the image and rounded to the nearest integer: one resampling, however many transforms.

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

import numpy as np

from nnscratch.errors import ParameterError

#: The transforms, in the order a spec is written and their random numbers are drawn.
TRANSFORMS = ("rotate", "shift", "scale", "shear", "elastic", "hflip")
#: What each transform's value means, for errors and ``--help``.
TRANSFORM_HELP = {"rotate": "degrees, turned by up to +-rotate", "shift": "whole pixels, up to +-shift per axis",
                  "scale": "zoom by a factor in [1 - scale, 1 + scale]", "shear": "degrees, sheared by up to +-shear",
                  "elastic": "alpha:sigma, Simard's elastic distortion (34:4 on 28x28)",
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
                raise ParameterError("augment", f"{name}={_shown(name, getattr(self, name))}: {problem}")
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
        """The random transforms of ``n`` images (numbers drawn in the order of :data:`TRANSFORMS`'
        documentation: angles, zooms, shears, shifts, mirrors, then the elastic noise)."""
        H, W = image_shape[:2]
        theta = np.radians(rng.uniform(-self.rotate, self.rotate, n)) if self.rotate else np.zeros(n)
        s = rng.uniform(1.0 - self.scale, 1.0 + self.scale, n) if self.scale else np.ones(n)
        phi = np.radians(rng.uniform(-self.shear, self.shear, n)) if self.shear else np.zeros(n)
        t = rng.integers(-self.shift, self.shift + 1, (n, 2)) if self.shift else np.zeros((n, 2), dtype=np.int64)
        f = np.where(rng.random(n) < self.hflip, -1.0, 1.0) if self.hflip else np.ones(n)
        field = None
        if self.elastic is not None and self.elastic[0] > 0:
            alpha, sigma = self.elastic
            noise = rng.random((n, 2, H, W), dtype=np.float32)
            field = elastic_field(noise, alpha, sigma)
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


def elastic_field(noise: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """Simard's displacement fields from uniform ``noise`` in [0, 1) ``(n, 2, H, W)`` float32 (the
    x and y fields of each image): ``alpha * G_H (2 noise - 1) G_W^T``, in place of ``noise``."""
    H, W = noise.shape[-2:]
    noise *= 2.0
    noise -= 1.0                                           # U(-1, 1)
    g_h, g_w = smoothing_matrix(H, float(sigma)), smoothing_matrix(W, float(sigma))
    smoothed = np.matmul(g_h, noise)                       # along y (rows)
    np.matmul(smoothed, g_w.T, out=noise)                  # along x (columns)
    noise *= np.float32(alpha)
    return noise


class Warper:
    """Resamples a batch through its :class:`Draw`, with scratch arrays kept between calls.

    The coordinates each output pixel reads, ``(x, y) = A^-1 (p - t) + c + Delta(p)``, are built
    as ``(n, H, W)`` float32; the four neighbours are read from a zero-padded float copy of the
    batch with one flat ``take`` each, and mixed as ``top = a + wx (b - a)``, ``bottom = c + wx
    (d - c)``, ``value = top + wy (bottom - top)``, rounded half up. Reusing the arrays matters: a
    fresh set of a dozen 200 kB temporaries per batch of 64 MNIST images made the warp 4x slower
    (their pages are mapped and zeroed anew every time). One warper per thread.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None

    def _buffers(self, n: int, shape: tuple[int, ...]) -> None:
        key = (n, *shape)
        if self._key is not None and self._key[1:] == key[1:] and self._key[0] >= n:
            return
        H, W = shape[:2]
        C = shape[2] if len(shape) == 3 else 1
        self._key = key
        self.padded = np.zeros((n, H + 3, W + 3, C), np.float32)  # 1 row/column of zeros before, 2 after
        grid = (n, H, W)
        self.x, self.y, self.wx, self.wy = (np.empty(grid, np.float32) for _ in range(4))
        self.index, self.column = np.empty(grid, np.intp), np.empty(grid, np.intp)
        self.corners = [np.empty((*grid, C) if C > 1 else grid, np.float32) for _ in range(4)]
        # where image b's row -1, column -1 starts in the flat padded batch
        self.origin = (np.arange(n, dtype=np.intp) * (H + 3) * (W + 3))[:, None, None]
        self.cx, self.cy = np.arange(W, dtype=np.float32) - (W - 1) / 2, np.arange(H, dtype=np.float32) - (H - 1) / 2

    def warp(self, images: np.ndarray, draw: Draw, out: np.ndarray | None = None) -> np.ndarray:
        n, shape = len(images), images.shape[1:]
        H, W = shape[:2]
        self._buffers(n, shape)
        x, y = self.x[:n], self.y[:n]
        self._source(draw, x, y, H, W)
        padded = self.padded[:n]
        padded[:, 1:H + 1, 1:W + 1] = images.reshape(n, H, W, -1)
        value = self._bilinear(padded, x, y, H, W)
        value += 0.5                                       # round half up (value >= 0): truncation below
        if out is None:
            out = np.empty(images.shape, np.uint8)
        np.copyto(out.reshape(value.shape), value, casting="unsafe")
        return out

    def _source(self, draw: Draw, x: np.ndarray, y: np.ndarray, H: int, W: int) -> None:
        """``(x, y) = A^-1 (p - t) + c (+ Delta)`` in pixel coordinates, into ``x`` and ``y``."""
        m = draw.inverse.astype(np.float32)[:, :, :, None, None]      # (n, 2, 2, 1, 1)
        tx, ty = draw.shift[:, 0], draw.shift[:, 1]
        # the shift and the centre as one offset per image: c - A^-1 t
        off_x = ((W - 1) / 2 - draw.inverse[:, 0, 0] * tx - draw.inverse[:, 0, 1] * ty).astype(np.float32)
        off_y = ((H - 1) / 2 - draw.inverse[:, 1, 0] * tx - draw.inverse[:, 1, 1] * ty).astype(np.float32)
        u, v = self.cx[None, None, :], self.cy[None, :, None]           # (1, 1, W), (1, H, 1)
        np.add(m[:, 0, 0] * u, m[:, 0, 1] * v + off_x[:, None, None], out=x)
        np.add(m[:, 1, 0] * u, m[:, 1, 1] * v + off_y[:, None, None], out=y)
        if draw.field is not None:
            x += draw.field[:, 0]
            y += draw.field[:, 1]

    def _bilinear(self, padded: np.ndarray, x: np.ndarray, y: np.ndarray, H: int, W: int) -> np.ndarray:
        """Bilinear reads of ``padded`` at ``(x, y)`` (0 outside the image); returns a scratch array."""
        n, C = len(x), padded.shape[-1]
        wx, wy, index, column = self.wx[:n], self.wy[:n], self.index[:n], self.column[:n]
        np.clip(x, -1, W, out=x)                           # beyond one pixel out, every neighbour is 0
        np.clip(y, -1, H, out=y)
        np.floor(x, out=wx)
        np.floor(y, out=wy)
        np.copyto(column, wx, casting="unsafe")            # exact: whole numbers
        np.copyto(index, wy, casting="unsafe")
        np.subtract(x, wx, out=wx)                         # the fractions
        np.subtract(y, wy, out=wy)
        Wp = W + 3
        index *= Wp
        index += column
        index += self.origin[:n] + Wp + 1                  # row y0, column x0 of image b, padding skipped
        flat = padded.reshape(-1, C) if C > 1 else padded.reshape(-1)
        a, b, c, d = (k[:n] for k in self.corners)
        take = functools.partial(np.take, flat, axis=0, mode="wrap")  # in range by construction; no check
        take(index, out=a)
        index += 1
        take(index, out=b)
        index += Wp
        take(index, out=d)
        index -= 1
        take(index, out=c)
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
    if not (math.isfinite(alpha) and alpha >= 0):
        return "alpha must be a number >= 0"
    if not (math.isfinite(sigma) and 0 < sigma <= 100):
        return "sigma must be a number in (0, 100] pixels"
    return None


def _strength(name: str, value) -> bool:
    return bool(value[0]) if name == "elastic" and value is not None else bool(value)


def _shown(name: str, value) -> str:
    if name == "elastic":
        return "none" if value is None else f"{value[0]:g}:{value[1]:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)

"""Your own images, prepared the way a model's training images were: a digit you drew, read like MNIST's.

A model trained on MNIST has only ever seen one kind of picture: a white digit on black,
size-normalised into a 20x20 box and centred by its centre of mass in 28x28. A photo or a
drawing of a digit (dark ink on white paper, any size, anywhere on the page) looks nothing like
that to it, so :func:`mnist_style` redoes MNIST's own preparation (LeCun et al.) on any image:

1. **Grey.** Pillow's ``L = 0.299 R + 0.587 G + 0.114 B``; alpha is flattened on white (a
   transparent canvas is paper), 16-bit images keep their high byte (``v >> 8``, as
   :mod:`~nnscratch.data.folder` reads them), a GIF is its first frame (:func:`read_image`).
2. **Background and polarity.** The background level ``b`` is the median of the image's border
   (a frame ``max(1, min(H, W) // 20)`` pixels wide): the paper. Ink is whatever differs from it
   in the direction away from the paper: ``ink = b - g`` on light paper (``b >= 128``: dark on
   light, the usual drawing), ``ink = g - b`` on dark (light on dark, like MNIST), negatives
   clipped to 0. So the ink is bright and the paper 0, whichever way round the image was.
3. **Which pixels are ink.** The threshold is Otsu's (the grey level that best splits the ink
   values into two classes, maximising the between-class variance), but at least
   :data:`MIN_INK_SHARE` of the brightest ink: Otsu alone would split faint paper texture in
   two on a nearly blank page. Connected groups of ink pixels (8-neighbours) holding less than
   :data:`MIN_SPECK_SHARE` of the largest group's ink are specks (dust, a stray dot) and are
   dropped. Of the rest, the pixels up to :data:`EDGE_PX` pixels from the ink are kept (the
   anti-aliased edges of the strokes), minus the noise floor: the 90th percentile of the ink
   values farther away, where there surely is no ink (paper texture, JPEG noise). A page whose
   ink is fainter than :data:`MIN_CONTRAST` grey levels is blank: :class:`NoInkError`.
4. **Stroke width.** A thin pen on a large canvas would shrink to a hair in 20x20, thinner than
   any MNIST stroke. The stroke width is estimated as ``2 * area / boundary`` of the ink mask
   (a stroke of length ``L`` and width ``w`` has area ``L w`` and about ``2 L`` boundary pixels);
   where it would come out below :data:`STROKE_PX` pixels in the 20x20 box, the ink is thickened
   first (grey dilation with a disc of the missing radius). MNIST's own strokes are about 2.6
   pixels wide, so its images are not thickened. Thick strokes are left as they are. Where the
   disc's radius would pass :data:`MAX_DILATION_PX` (a thin pen on a photo: a disc of radius 200
   on 12 megapixels takes minutes and gigabytes), the ink is first reduced by max-pooling
   ``k x k`` blocks (``k = ceil(radius / MAX_DILATION_PX)``; each block becomes its brightest
   pixel, so a hairline keeps its full intensity) and the width and radius are found again on
   the smaller ink: the digit is shrunk to 20x20 anyway in step 5.
5. **Size.** The ink's bounding box is scaled to fit 20x20 keeping its aspect ratio (its longer
   side becomes 20 pixels), anti-aliased (Pillow's Lanczos filter, on float pixels), and the
   result is rescaled so that its brightest pixel is 255 (MNIST's are).
6. **Centre of mass.** The 20x20-fitted digit is placed in 28x28 at the *integer* offset that
   puts its intensity-weighted centre of mass nearest to pixel ``(14, 14)`` (row, column;
   pixel ``k``'s centre is at ``k``), so it is within half a pixel of it on each axis. That is
   what MNIST itself did: its test images' centres of mass lie uniformly within ±0.5 pixel of
   (14, 14) (mean 13.99, 14.01; mean absolute deviation 0.25 per axis) and their ink's bounding
   box is exactly 20 pixels on its longer side. A sub-pixel shift would blur the digit and widen
   that box to 21. Where the centre of mass is so far off-centre that the box would leave the
   28x28 field, the box is moved back inside (the centre of mass then misses by more).

Models trained on any other dataset (Fashion-MNIST's garments are not centred by mass, CIFAR-10
is photos) get the preparation their training images had: :func:`prepare_for_model` resizes to
the model's image size (Pillow, bilinear) in its number of channels. :func:`input_shape` finds
that shape from what a model file stores.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from nnscratch.errors import DataError, UsageError

__all__ = ["MNIST_SIDE", "BOX_SIDE", "NoInkError", "read_image", "image_files", "to_grey", "mnist_style",
           "input_shape", "prepare_for_model", "side_by_side"]

MNIST_SIDE = 28  #: side of an MNIST image
BOX_SIDE = 20  #: side of the box MNIST's digits are fitted into, keeping their aspect ratio
CENTRE = (14.0, 14.0)  #: where MNIST's centres of mass are (row, column), see step 6
MIN_CONTRAST = 32.0  #: ink fainter than this (grey levels above the paper) is no ink: a blank page
MIN_INK_SHARE = 0.2  #: the ink threshold is at least this share of the brightest ink
MIN_SPECK_SHARE = 0.05  #: groups of ink pixels with less than this share of the largest group's ink are specks
EDGE_PX = 2  #: pixels around the ink kept as its anti-aliased edge
STROKE_PX = 2.0  #: the thinnest stroke (pixels, in the 20x20 box) that is not thickened first
MAX_DILATION_PX = 8  #: the widest disc (radius, pixels) the ink is dilated with; wider: max-pooled first
_SHOW_SIDE = 280  #: height of each half of a side-by-side picture (:func:`side_by_side`)


class NoInkError(DataError):
    """An image with nothing drawn on it: every pixel is within :data:`MIN_CONTRAST` of the paper."""


# --- reading -----------------------------------------------------------------------------------


def image_files(paths) -> list[Path]:
    """The image files that ``paths`` name: each file as given, each folder's image files (not its
    sub-folders; ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``, any case; hidden ones skipped),
    sorted by name. A missing path, a pipe or a device, or a folder without images is a
    :class:`DataError`."""
    from nnscratch.data.folder import IMAGE_EXTENSIONS

    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{path}: a folder with no images ({', '.join(IMAGE_EXTENSIONS)}); "
                                "pass image files or a folder holding some")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():  # a pipe or a device: reading it could block forever, or never end
            raise DataError(f"{path}: not a regular file (a pipe or a device); pass image files or a folder")
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def read_image(path: str | os.PathLike):
    """One image file as a Pillow image in mode ``L`` (grey) or ``RGB``: its first frame, alpha
    flattened on white, 16-bit grey as its high byte (module docstring, step 1).

    Its size is checked from the header before any pixel is decoded
    (:func:`~nnscratch.data.limits.check_image_side`: an
    :class:`~nnscratch.data.limits.InputTooLargeError` naming both sides; Pillow's own
    decompression-bomb check, which would fire first for huge sides with a pixel count instead,
    is off while the header is read: ours is far below it). An empty file, or one Pillow cannot
    decode, is a :class:`DataError` naming it.
    """
    from PIL import Image

    from nnscratch.data.limits import check_image_side

    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); give a PNG, JPEG, BMP or GIF image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            bomb, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our limit (far lower) says it, below
            try:
                img = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = bomb
        with img:
            check_image_side(str(path), img.size[1], img.size[0])
            img.seek(0)
            return _flatten(img)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"{path}: no such file") from None
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: cannot read the image ({reason}); give a PNG, JPEG, BMP or GIF image") from None


def _flatten(img):
    """Decoded ``L`` or ``RGB``: alpha (and a palette's transparent colour) composited on white."""
    from PIL import Image

    from nnscratch.data.folder import to_8_bits

    img = to_8_bits(img)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        grey = img.mode in ("LA", "La")
        paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, img.convert("RGBA")).convert("L" if grey else "RGB")
    if img.mode in ("1", "L", "I", "F"):
        return img.convert("L")
    return img.convert("RGB")


def to_grey(image) -> np.ndarray:
    """A Pillow image, or an array ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` of
    values in 0..255, as float64 grey ``(H, W)`` (alpha flattened on white)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(_flatten(image).convert("L"), dtype=np.float64)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        if array.shape[2] == 1:
            array = array[..., 0]
        else:
            rgb = array[..., :3].astype(np.float64)
            if array.shape[2] == 4:
                alpha = array[..., 3:].astype(np.float64) / 255
                rgb = rgb * alpha + 255 * (1 - alpha)
            array = rgb @ np.array([0.299, 0.587, 0.114])
    if array.ndim != 2 or min(array.shape) < 1:
        raise UsageError(f"image must be (H, W) or (H, W, 1|3|4) pixels, got shape {array.shape}")
    return array.astype(np.float64)


# --- MNIST's preparation -----------------------------------------------------------------------


def mnist_style(image, source: str = "the image") -> np.ndarray:
    """Any picture of a digit -> uint8 ``(28, 28)``, white on black, prepared as MNIST's were.

    The six steps and their conventions are in the module docstring: grey, paper found from the
    border and ink made bright, ink pixels by Otsu's threshold (specks and paper texture dropped),
    thin strokes thickened, fitted into 20x20 keeping the aspect ratio (anti-aliased), placed in
    28x28 with its centre of mass within half a pixel of (14, 14).

    Parameters
    ----------
    image
        A Pillow image or an array (see :func:`to_grey`), any size, either polarity.
    source
        What to call the image in an error message (a file name).

    Raises
    ------
    NoInkError
        Nothing is drawn: no pixel differs from the paper by :data:`MIN_CONTRAST` grey levels.
    """
    ink = _ink(to_grey(image), source)
    ink = _crop(_thicken(ink))
    return _centre(_fit(ink))


def _border_median(g: np.ndarray) -> float:
    frame = max(1, min(g.shape) // 20)
    inner = np.zeros(g.shape, dtype=bool)
    inner[frame:-frame, frame:-frame] = True
    return float(np.median(g[~inner])) if (~inner).any() else float(np.median(g))


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` in [0, 255]: the level ``t`` of a 256-bin histogram that
    maximises the between-class variance ``w0 w1 (mu0 - mu1)^2`` of ``values < t`` and ``>= t``."""
    counts = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(counts)[:-1]  # pixels below t = 1..255
    s0 = np.cumsum(counts * levels)[:-1]
    w1, s1 = counts.sum() - w0, (counts * levels).sum() - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - s1 / w1) ** 2
    between[(w0 == 0) | (w1 == 0)] = -1
    return float(np.argmax(between) + 1)


def _ink(g: np.ndarray, source: str) -> np.ndarray:
    """Steps 2-3: float ink (bright on 0) with specks and paper texture removed, full size."""
    from scipy import ndimage

    paper = _border_median(g)
    ink = np.clip(paper - g if paper >= 128 else g - paper, 0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise NoInkError(f"{source}: no ink found, the page is blank (no pixel differs from the paper by "
                         f"{MIN_CONTRAST:.0f} grey levels); draw a digit on it")
    mask = ink >= max(_otsu(ink), MIN_INK_SHARE * peak)
    groups, count = ndimage.label(mask, structure=np.ones((3, 3)))
    mass = ndimage.sum(ink, groups, index=np.arange(1, count + 1))
    keep = np.zeros(count + 1, dtype=bool)
    keep[1:] = mass >= MIN_SPECK_SHARE * mass.max()
    near = ndimage.binary_dilation(keep[groups], structure=np.ones((3, 3)), iterations=EDGE_PX)
    far = ink[~ndimage.binary_dilation(mask, structure=np.ones((3, 3)), iterations=EDGE_PX)]
    floor = float(np.percentile(far, 90)) if far.size else 0.0
    return np.where(near, np.clip(ink - floor, 0, None), 0.0)


def _crop(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _stroke_width(crop: np.ndarray) -> float:
    """``2 * area / boundary`` of the ink at half its peak, in pixels (module docstring, step 4)."""
    from scipy import ndimage

    mask = crop >= 0.5 * crop.max()
    boundary = mask & ~ndimage.binary_erosion(mask)
    return 2 * mask.sum() / max(int(boundary.sum()), 1)


def _max_pool(ink: np.ndarray, k: int) -> np.ndarray:
    """Each ``k x k`` block (the edges padded with 0) -> its brightest pixel: a thin stroke keeps
    its full intensity, one pixel wide or more, where an average would fade it."""
    h, w = ink.shape
    padded = np.pad(ink, ((0, -h % k), (0, -w % k)))
    return padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k).max(axis=(1, 3))


def _thicken(ink: np.ndarray) -> np.ndarray:
    """Step 4: grey dilation by a disc when the strokes would be thinner than :data:`STROKE_PX` in
    20x20; a disc wider than :data:`MAX_DILATION_PX` is made small by max-pooling the ink first."""
    from scipy import ndimage

    crop = _crop(ink)
    radius = round((STROKE_PX * max(crop.shape) / BOX_SIDE - _stroke_width(crop)) / 2)
    if radius > MAX_DILATION_PX:
        crop = _crop(_max_pool(crop, math.ceil(radius / MAX_DILATION_PX)))
        radius = round((STROKE_PX * max(crop.shape) / BOX_SIDE - _stroke_width(crop)) / 2)
    if radius < 1:
        return crop
    r = np.arange(-radius, radius + 1)
    disc = r[:, None] ** 2 + r[None, :] ** 2 <= radius ** 2
    return ndimage.grey_dilation(np.pad(crop, radius), footprint=disc)


def _fit(ink: np.ndarray) -> np.ndarray:
    """Step 5: the longer side to 20 pixels, aspect ratio kept, Lanczos; brightest pixel 255."""
    from PIL import Image

    h, w = ink.shape
    scale = BOX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # Pillow: (width, height)
    small = np.asarray(Image.fromarray(ink.astype(np.float32), "F").resize(size, Image.Resampling.LANCZOS),
                       dtype=np.float64)
    small = np.clip(small, 0, None)
    return small * (255.0 / small.max())


def _centre(digit: np.ndarray) -> np.ndarray:
    """Step 6: into 28x28 at the integer offset putting the centre of mass nearest (14, 14)."""
    digit = np.clip(np.rint(digit), 0, 255).astype(np.uint8)  # the centre of mass of what is placed
    h, w = digit.shape
    rows, cols = np.indices(digit.shape)
    mass = digit.sum(dtype=np.float64)
    cy, cx = (rows * digit).sum() / mass, (cols * digit).sum() / mass
    top = min(max(math.floor(CENTRE[0] - cy + 0.5), 0), MNIST_SIDE - h)
    left = min(max(math.floor(CENTRE[1] - cx + 0.5), 0), MNIST_SIDE - w)
    out = np.zeros((MNIST_SIDE, MNIST_SIDE), dtype=np.uint8)
    out[top:top + h, left:left + w] = digit
    return out


# --- any model ---------------------------------------------------------------------------------


def input_shape(input_dim: int, dataset: str | None, data_options: dict | None = None,
                standardization: dict | None = None) -> tuple[int, int, int]:
    """``(H, W, C)`` of the images a model was trained on, from what its file stores.

    ``H, W``: the ``image_size`` it was trained with, else a CSV's ``image_shape``, else the
    built-in dataset's, else the square ``input_dim / C`` is. ``C``: 1 for ``color="grayscale"``,
    3 for ``"rgb"``, else the built-in dataset's, else one per standardisation statistic, else 1
    when ``input_dim`` is a square and 3 when ``input_dim / 3`` is. A shape whose ``H * W * C`` is
    not ``input_dim`` is a :class:`UsageError`.
    """
    from nnscratch.data.common import parse_size
    from nnscratch.data.datasets import DATASETS

    options = data_options or {}
    builtin = DATASETS.get(dataset or "")
    native = tuple(builtin.image_shape) if builtin else None
    if native and len(native) == 2:
        native = (*native, 1)
    size = options.get("image_size")
    if isinstance(size, str):
        size = parse_size(size, "image_size")
    if not size and options.get("image_shape"):
        shape = parse_size(str(options["image_shape"]), "image_shape", parts=(2, 3))
        size, channels = shape[:2], (shape[2] if len(shape) == 3 else 1)
    else:
        channels = {"grayscale": 1, "rgb": 3}.get(str(options.get("color") or "").lower())
    if channels is None and native:
        channels = native[2]
    if channels is None and standardization:
        channels = len(standardization.get("mean", [])) or None
    if not size and native:
        size = native[:2]
    candidates = [channels] if channels else [1, 3]
    for c in candidates:
        if size:
            h, w = size
        else:
            side = math.isqrt(input_dim // c)
            h = w = side
        if h * w * c == input_dim:
            return int(h), int(w), int(c)
    raise UsageError(f"cannot tell the image shape of a model with {input_dim} inputs trained on "
                     f"{dataset or 'an unknown dataset'}; its file stores no image size that fits")


def prepare_for_model(image, dataset: str | None, shape: tuple[int, int, int], source: str = "the image",
                      color: str | None = None) -> np.ndarray:
    """An image as uint8 ``(H, W, C)`` = ``shape``, prepared as the model's training images were.

    MNIST models: :func:`mnist_style`, then resized and coloured like the training images were with
    the model's ``image_size`` and ``color`` options
    (:func:`~nnscratch.data.common.convert_images`). Any other dataset: the image (grey when
    ``C`` is 1, RGB when 3) resized to ``(H, W)`` with Pillow's bilinear filter, as the folder
    reader does.
    """
    from PIL import Image

    h, w, c = shape
    if dataset == "mnist":
        from nnscratch.data.common import convert_images

        digit = mnist_style(image, source)[np.newaxis, :, :, np.newaxis]
        return convert_images(digit, (h, w), "rgb" if c == 3 else None, source)[0]
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8).squeeze())
    img = _flatten(image).convert("L" if c == 1 else "RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    return array.reshape(h, w, c)


def side_by_side(original, prepared: np.ndarray):
    """A Pillow RGB picture: ``original`` (scaled to a height of 280 pixels) on the left, the
    ``prepared`` model input (uint8 ``(H, W)`` or ``(H, W, C)``, scaled up to 280 pixels high with
    nearest-neighbour, so each input pixel is a visible square) on the right, a grey bar between."""
    from PIL import Image

    left = _flatten(original).convert("RGB")
    left = left.resize((max(1, round(left.width * _SHOW_SIDE / left.height)), _SHOW_SIDE),
                       Image.Resampling.LANCZOS)
    array = np.asarray(prepared, dtype=np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    right = Image.fromarray(array).convert("RGB")
    right = right.resize((max(1, round(right.width * _SHOW_SIDE / right.height)), _SHOW_SIDE),
                         Image.Resampling.NEAREST)
    gap = 8
    out = Image.new("RGB", (left.width + gap + right.width, _SHOW_SIDE), (128, 128, 128))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    return out

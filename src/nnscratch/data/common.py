"""Small pieces every reader shares: messages on stderr, read-only arrays, pixel and label checks.

Each fact lives here once: how a float pixel becomes a byte, how a colour image becomes grey
(Pillow's ``L`` formula, so a CSV/NPZ image and the same image read from a PNG agree), what a
valid label is.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nnscratch.errors import DataError, UsageError
from nnscratch.data.limits import (MAX_CLASSES_ENV, MAX_IMAGE_SIDE_ENV, check_classes, check_input_bytes, max_classes,
                                   max_image_side)

__all__ = ["FileSpec", "Parts", "cache_dir", "convert_images", "frozen", "labels_from_values", "note", "parse_size",
           "pixels_to_uint8", "shape_str", "warn", "check_image_options"]

COLORS = {"grayscale": "grayscale", "greyscale": "grayscale", "gray": "grayscale",
          "grey": "grayscale", "rgb": "rgb"}


@dataclass(frozen=True)
class FileSpec:
    """One file of a built-in dataset: its name and its SHA-256 (of the decompressed content for
    the IDX files of MNIST and Fashion-MNIST, of the bytes as stored for CIFAR-10's files)."""

    filename: str
    sha256: str


class Parts(NamedTuple):
    """What a built-in reader returns: the training file, the test file and the class names.

    Images are uint8 ``(N, H, W, C)``, labels integer ``(N,)``.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]


def cache_dir() -> Path:
    """The user cache folder for nnscratch: ``$XDG_CACHE_HOME/nnscratch`` or ``~/.cache/nnscratch``.

    As the XDG specification says, an unset, empty or relative ``XDG_CACHE_HOME`` is ignored.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "nnscratch"


def warn(message: str) -> None:
    """One line on stderr: ``nnscratch: warning: <message>``."""
    print(f"nnscratch: warning: {message}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """One line on stderr: ``nnscratch: note: <message>`` (what was done to the data)."""
    print(f"nnscratch: note: {message}", file=sys.stderr, flush=True)


def frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``."""
    view = array.view()
    view.flags.writeable = False
    return view


def shape_str(array_or_shape) -> str:
    shape = getattr(array_or_shape, "shape", array_or_shape)
    return " x ".join(f"{d:,}" for d in shape) or "scalar"


def parse_size(text: str, flag: str, parts: tuple[int, ...] = (2,)) -> tuple[int, ...]:
    """Parse ``"28x28"`` (or ``"32x32x3"`` when 3 is in ``parts``) into positive ints.

    For the command line: ``parse_size(args.image_size, "--image-size")``; a bad value is a
    :class:`UsageError` naming the flag.
    """
    pieces = str(text).lower().replace("*", "x").split("x")
    try:
        values = tuple(int(p) for p in pieces)
    except ValueError:
        values = ()
    if len(values) not in parts or min(values, default=0) < 1:
        forms = " or ".join({2: "HxW (e.g. 28x28)", 3: "HxWxC (e.g. 32x32x3)"}[p] for p in parts)
        raise UsageError(f"{flag} {text!r}: expected {forms}, positive whole numbers")
    return values


def parse_classes(text: str) -> tuple[int, ...]:
    """Parse ``"0-4"`` or ``"0,2,5-9"`` (class indices and inclusive ranges) into sorted, distinct ints.

    A bad value is a :class:`UsageError` naming ``--classes``; whether the dataset has those
    classes is checked when it is loaded.
    """
    values: set[int] = set()
    for piece in str(text).replace(" ", "").split(","):
        low, dash, high = piece.partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            first, last = 0, -1
        if not low.isdigit() or (dash and not high.isdigit()) or last < first:
            raise UsageError(f"--classes {text!r}: expected class indices and ranges such as 0-4 or 0,2,5-9")
        if last - first >= max_classes():
            raise UsageError(f"--classes {text!r}: the range {piece} is longer than the limit of {max_classes():,} "
                             f"classes; raise {MAX_CLASSES_ENV} if you mean it")
        values.update(range(first, last + 1))
    return tuple(sorted(values))


def check_image_options(image_size, color) -> tuple[tuple[int, int] | None, str | None]:
    """Validate ``image_size`` (``(H, W)`` or ``"HxW"``) and ``color``; return them normalised."""
    if image_size is not None:
        if isinstance(image_size, str):
            image_size = parse_size(image_size, "--image-size")
        image_size = tuple(image_size)
        if (len(image_size) != 2 or not all(isinstance(v, (int, np.integer)) for v in image_size)
                or min(image_size) < 1):
            raise UsageError(f"--image-size {image_size!r}: expected HxW, positive whole numbers")
        image_size = (int(image_size[0]), int(image_size[1]))
        if max(image_size) > max_image_side():
            raise UsageError(f"--image-size {image_size[0]}x{image_size[1]}: above the maximum of "
                             f"{max_image_side():,} pixels per side; raise {MAX_IMAGE_SIDE_ENV} for larger images")
    if color is not None:
        if str(color).lower() not in COLORS:
            raise UsageError(f"color {color!r}: choose grayscale (--grayscale) or rgb (--rgb)")
        color = COLORS[str(color).lower()]
    return image_size, color


def pixels_to_uint8(x: np.ndarray, source: str, notes: list[str], *,
                    integral: bool | None = None) -> np.ndarray:
    """Pixels of any numeric type as uint8, range checked; what was done is appended to ``notes``.

    * uint8: as is. Other integers (or ``integral`` floats, e.g. parsed CSV text): must lie in
      0..255.
    * floats: NaN/inf are an error; values in [0, 1] are taken as intensities and scaled by 255
      (rounded); values in [0, 255] are rounded; anything else is an error.
    """
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind == "b":
        notes.append(f"{source}: boolean pixels mapped to 0 and 255")
        return x.astype(np.uint8) * np.uint8(255)
    if x.dtype.kind not in "iuf":
        raise DataError(f"{source}: pixels of type {x.dtype} are not numbers; store the images "
                        f"as uint8 (0..255) or floats (0..1 or 0..255)")
    if x.size == 0:
        raise DataError(f"{source}: holds no pixels; give at least one image")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            first = np.unravel_index(int(np.argmax(bad)), x.shape)
            raise DataError(
                f"{source}: {int(bad.sum()):,} pixel value(s) are NaN or infinite (first in "
                f"image {first[0]}); replace them with numbers in 0..255 or 0..1"
            )
        if integral is None:
            integral = False
    else:
        integral = True
    lo, hi = x.min(), x.max()
    if integral:
        if lo < 0 or hi > 255:
            raise DataError(f"{source}: pixel values run from {lo:g} to {hi:g}, expected 0..255; "
                            f"rescale the pixels to 0..255 (or to 0..1 as floats)")
        return x.astype(np.uint8)
    if lo >= 0 and hi <= 1:
        notes.append(f"{source}: float pixels in [0, 1] scaled by 255 to uint8 (rounded)")
        return np.rint(x * 255.0).astype(np.uint8)
    if lo >= 0 and hi <= 255:
        notes.append(f"{source}: float pixels in [0, 255] rounded to uint8")
        return np.rint(x).astype(np.uint8)
    raise DataError(f"{source}: float pixel values run from {lo:g} to {hi:g}, expected [0, 1] or "
                    f"[0, 255]; rescale the pixels into one of these ranges")


def labels_from_values(values: np.ndarray, source: str,
                       class_names: tuple[str, ...] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels as int64 ``0..K-1`` and the class names.

    The classes are always the distinct label values that occur, found with :func:`numpy.unique`
    (never a range up to the largest label: one label of 10**12 must not cost 10**12 names), and
    there may be at most :func:`~nnscratch.data.limits.max_classes` of them.

    * Text labels: the classes are their sorted distinct texts. A text that holds a non-printable
      character (a NUL byte, a control character such as a tab or an escape) is refused with the
      text shown escaped: such a label is damage, and would make a class of its own that prints
      like another.
    * Numeric labels, no ``class_names``: whole numbers ``>= 0``; each distinct value is a class
      named by its value, in increasing order (labels 0, 1, 5 make the classes ``"0"``, ``"1"``,
      ``"5"``, and label 5 becomes class index 2).
    * Numeric labels with ``class_names``: class indices ``0..K-1`` for the ``K`` names, which must
      be unique and printable, and every one of the ``K`` classes must occur.

    At least two distinct classes must occur.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise DataError(f"{source}: labels have shape {shape_str(values)}, expected one label "
                        f"per image (1-D)")
    if values.dtype.kind in "US":
        if class_names is not None:
            raise DataError(f"{source}: text labels and class_names both given; give integer "
                            f"labels 0..K-1 with class_names, or text labels alone")
        try:
            names, labels = np.unique(values.astype(str), return_inverse=True)
        except UnicodeDecodeError:
            raise DataError(f"{source}: text labels are bytes that are not ASCII; store them as text") from None
        check_classes(source, len(names))
        class_names = tuple(str(n) for n in names)
        _check_printable(class_names, source, "label")
        labels = labels.astype(np.int64)
    elif values.dtype.kind in "iufb":
        values = values.astype(np.uint8) if values.dtype.kind == "b" else values
        if values.dtype.kind == "f" and not (np.isfinite(values).all()
                                             and (values == np.round(values)).all()):
            raise DataError(f"{source}: labels must be whole numbers 0..K-1 (found values such "
                            f"as {values[np.argmax(~np.isfinite(values) | (values != np.round(values)))]!r}); "
                            f"give integer class indices")
        if values.size and values.min() < 0:
            raise DataError(f"{source}: label {values.min():.0f} is negative; labels must be "
                            f"class indices 0..K-1")
        uniques, labels = np.unique(values, return_inverse=True)
        check_classes(source, len(uniques))
        labels = labels.astype(np.int64)
        if class_names is None:
            class_names = tuple(f"{v:.0f}" if values.dtype.kind == "f" else str(int(v)) for v in uniques)
        else:
            labels = _labels_for_names(uniques, labels, tuple(class_names), source)
    else:
        raise DataError(f"{source}: labels of type {values.dtype}; give integers 0..K-1 or text")
    if len(class_names) < 2 or len(np.unique(labels)) < 2:
        raise DataError(f"{source}: all {len(labels):,} images have the same label; a classifier "
                        f"needs at least two classes")
    return labels, tuple(class_names)


def _labels_for_names(uniques: np.ndarray, inverse: np.ndarray, class_names: tuple[str, ...],
                      source: str) -> np.ndarray:
    """Numeric labels as indices into ``class_names``: unique printable names, one per class that occurs."""
    check_classes(source, len(class_names))
    _check_printable(class_names, source, "class name")
    seen: set[str] = set()
    duplicate = next((n for n in class_names if n in seen or seen.add(n)), None)
    if duplicate is not None:
        raise DataError(f"{source}: the class name {duplicate!r} occurs twice; give each class its own name")
    if uniques.size and uniques[-1] >= len(class_names):
        raise DataError(f"{source}: label {uniques[-1]:.0f} is out of range for the "
                        f"{len(class_names)} class names (0..{len(class_names) - 1}); fix the "
                        f"labels or the class_names")
    if len(uniques) != len(class_names):
        absent = sorted(set(range(len(class_names))) - {int(v) for v in uniques})
        raise DataError(f"{source}: {len(class_names)} class names but only {len(uniques)} classes occur "
                        f"(no image of {', '.join(repr(class_names[k]) for k in absent[:5])}"
                        f"{', ...' if len(absent) > 5 else ''}); give one name per class that has images")
    return uniques.astype(np.int64)[inverse]


def _check_printable(names, source: str, what: str) -> None:
    bad = next((n for n in names if not n.isprintable()), None)
    if bad is not None:
        raise DataError(f"{source}: the {what} {bad!r} holds a non-printable character (shown escaped); "
                        f"fix the {what}s (a NUL byte or a control character is usually damage)")


def _to_gray(images: np.ndarray) -> np.ndarray:
    """RGB -> L with Pillow's integer formula ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16``."""
    rgb = images.astype(np.uint32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., np.newaxis]


def convert_images(images: np.ndarray, image_size, color, source: str) -> np.ndarray:
    """Resize (``image_size=(H, W)``, Pillow bilinear) and/or convert colour of ``(N, H, W, C)``.

    What the result would weigh is checked against :func:`~nnscratch.data.limits.max_input_bytes`
    before anything is allocated.
    """
    channels = images.shape[-1]
    h, w = image_size if image_size is not None else images.shape[1:3]
    out_channels = {"grayscale": 1 if channels == 3 else channels, "rgb": 3 if channels == 1 else channels}
    check_input_bytes(source, len(images) * h * w * out_channels.get(color, channels),
                      f"the {len(images):,} images converted to {h}x{w}")
    if color == "grayscale" and channels == 3:
        images = _to_gray(images)
    elif color == "rgb" and channels == 1:
        images = np.repeat(images, 3, axis=-1)
    elif color is not None and channels not in (1, 3):
        raise DataError(f"{source}: images with {channels} channels cannot be converted to "
                        f"{color}; give 1 (grey) or 3 (RGB) channels")
    if image_size is not None and images.shape[1:3] != tuple(image_size):
        images = _resize_all(images, image_size)
    return images


def _resize_all(images: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = image_size
    channels = images.shape[-1]
    out = np.empty((len(images), h, w, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        if channels == 3:  # one RGB image; otherwise one grey plane at a time
            planes = [np.ascontiguousarray(image)]
        else:
            planes = [np.ascontiguousarray(image[..., c]) for c in range(channels)]
        resized = [np.asarray(Image.fromarray(p).resize((w, h), Image.Resampling.BILINEAR))
                   for p in planes]
        out[i] = resized[0] if channels == 3 else np.stack(resized, axis=-1)
    return out

"""``folder:PATH``: a folder of image files, one sub-folder per class, read with Pillow.

::

    PATH/
        cat/    001.png  002.jpg ...
        dog/    a.bmp    b.gif   ...

* **Classes** are the sub-folders' names, sorted (so label 0 is the first name in sorted order).
  Hidden entries (starting with ``.``), files directly in ``PATH`` and files of other types are
  ignored. Image files: ``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif`` (first frame), any case.
* **Colour.** ``color="grayscale"`` converts every image to one channel (Pillow's ``L``:
  ``L = 0.299 R + 0.587 G + 0.114 B``), ``color="rgb"`` to three (alpha is dropped). Without
  ``color`` the images stay grey (C = 1) when every one of them is grey, in a grey mode or with
  three equal channels; otherwise all become RGB (C = 3).
* **Size.** ``image_size=(H, W)`` resizes every image (Pillow, bilinear). Without it all images
  must share one size; images of mixed sizes are an error that says so.
* **16-bit images** (16-bit grey PNGs, Pillow modes ``I;16*`` and ``I``) become 8 bits by keeping
  the high byte, ``v >> 8`` (``v // 256``): the inverse of the usual 8-to-16-bit widening
  ``v * 257``, and what Pillow itself does to 16-bit colour PNGs. (Pillow's own ``convert("L")``
  clips them at 255 instead, which turns almost every pixel white.)
* **Unreadable images** (corrupt, truncated, not an image) are skipped with one warning giving
  their number and the first of them; with ``strict=True`` the first one is an error instead. An
  image larger than :func:`~nnscratch.data.limits.max_image_side` on a side counts as unreadable
  (checked from its header, before it is decoded; Pillow's ``DecompressionBombWarning`` is never
  shown), and all decoded images together may not exceed
  :func:`~nnscratch.data.limits.max_input_bytes`.

**Cache.** Decoding tens of thousands of files takes a while (a progress bar shows it), so the
result is stored in ``$XDG_CACHE_HOME/nnscratch/folder-cache/<key>.npz`` (plain arrays, no
pickle, written atomically). The key is the SHA-256 of the list of image files (class, name,
size in bytes, modification time in nanoseconds) and of the conversion options, so adding,
removing, replacing or touching a file, or changing ``image_size``, ``color`` or ``strict``,
reads the folder afresh. A damaged cache file is ignored (with a note) and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnscratch.data.common import cache_dir, note, warn
from nnscratch.data.tabular import read_npz_member
from nnscratch.errors import DataError
from nnscratch.files.atomic import atomic_path
from nnscratch.data.limits import InputTooLargeError, check_image_side, check_input_bytes

__all__ = ["IMAGE_EXTENSIONS", "FolderPool", "read_folder"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
CACHE_VERSION = 1
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_WIDE_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}  # 16 bits a pixel (I: 32, holding 16-bit values)
_PROGRESS_FROM = 2_000  # files; fewer decode in a moment
_ADVICE = f"one sub-folder per class, each holding {', '.join(IMAGE_EXTENSIONS)} images"


class FolderPool:
    """The decoded images of a folder: uint8 ``(N, H, W, C)``, int64 labels, class names."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...],
                 skipped: list[tuple[str, str]], from_cache: bool) -> None:
        self.images, self.labels, self.class_names = images, labels, class_names
        self.skipped, self.from_cache = skipped, from_cache


def read_folder(path: str | os.PathLike, *, image_size: tuple[int, int] | None = None,
                color: str | None = None, strict: bool = False, progress: bool = True) -> FolderPool:
    """Read a class-per-sub-folder image folder (module docstring), through the cache.

    Raises
    ------
    DataError
        No such folder; no class sub-folders; fewer than two classes; a class with no images (or
        none readable); an unreadable image with ``strict``; images of mixed sizes without
        ``image_size``.
    """
    root = Path(path).expanduser()
    listing = _list_images(root)
    options = {"image_size": list(image_size) if image_size else None, "color": color,
               "strict": bool(strict)}
    key = _cache_key(listing, options)
    cached = _load_cache(key)
    if cached is not None:
        _report_skipped(root, cached.skipped)
        return cached
    pool = _decode_all(root, listing, image_size, color, strict, progress)
    _save_cache(key, pool)
    return pool


# --- listing -----------------------------------------------------------------------------------


def _list_images(root: Path) -> list[tuple[str, str, int, int]]:
    """``(class, file name, size, mtime_ns)`` of every image file, classes and files sorted."""
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "no such folder"
        raise DataError(f"{root}: {what}; folder:PATH needs a folder with {_ADVICE}")
    classes = sorted(e.name for e in os.scandir(root)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; put each class's images in a sub-folder "
                        f"named after the class (e.g. {root / 'cat' / '001.png'})")
    if len(classes) < 2:
        raise DataError(f"{root}: only one class sub-folder ({classes[0]}); a classifier needs "
                        f"at least two, so add a sub-folder of images per class")
    listing = []
    for name in classes:
        files = sorted((e.name, e.stat()) for e in os.scandir(root / name)
                       if not e.name.startswith(".") and e.is_file()
                       and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{root / name}: class {name!r} has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        listing.extend((name, file, st.st_size, st.st_mtime_ns) for file, st in files)
    return listing


def _cache_key(listing, options: dict) -> str:
    blob = json.dumps({"version": CACHE_VERSION, "options": options, "files": listing},
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --- decoding ----------------------------------------------------------------------------------


def _open_image(path: Path):
    """``Image.open``, its size checked from the header before any pixel is decoded; Pillow's
    ``DecompressionBombWarning`` is silenced (our limit is far below its threshold)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    try:
        check_image_side(str(path), img.size[1], img.size[0])
    except InputTooLargeError as exc:
        img.close()
        raise ValueError(str(exc).removeprefix(f"{path}: ")) from None  # unreadable: skipped, or strict's error
    return img


def to_8_bits(img):
    """A 16-bit grey image (mode ``I;16*``, or ``I`` holding 16-bit values) as mode ``L`` by ``v >> 8``
    (values of an ``I`` image outside 0..65535 are clipped first); any other image as it is."""
    from PIL import Image

    if img.mode not in _WIDE_MODES:
        return img
    wide = np.clip(np.asarray(img).astype(np.int64), 0, 0xFFFF)
    return Image.fromarray((wide >> 8).astype(np.uint8), "L")


def _decode_image(path: Path, image_size: tuple[int, int] | None, color: str | None) -> np.ndarray:
    """One image file -> uint8 ``(H, W, 1)`` or ``(H, W, 3)`` (see the module docstring)."""
    from PIL import Image

    with _open_image(path) as img:
        img.seek(0)
        img = to_8_bits(img)
        if color == "grayscale" or (color is None and img.mode in _GREY_MODES):
            img = img.convert("L")
        else:
            img = img.convert("RGB")
        if image_size is not None and img.size != (image_size[1], image_size[0]):
            img = img.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        return array[..., np.newaxis]
    if color is None and (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all():
        return array[..., :1]  # a grey image stored as colour
    return array


def _decode_all(root: Path, listing, image_size, color, strict: bool, progress: bool) -> FolderPool:
    from PIL import Image

    class_names = tuple(dict.fromkeys(c for c, *_ in listing))
    index = {name: k for k, name in enumerate(class_names)}
    images, labels, skipped = [], [], []
    decoded = 0  # bytes, all images together
    first_size: tuple[Path, tuple[int, ...]] | None = None
    bar = tqdm(listing, desc=f"reading {root.name}", unit="img", leave=False,
               disable=not progress or len(listing) < _PROGRESS_FROM)
    for cls, name, _, _ in bar:
        path = root / cls / name
        try:
            image = _decode_image(path, image_size, color)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if strict:
                raise DataError(f"{path}: cannot read the image ({reason}); replace or delete "
                                f"it, or drop --strict to skip unreadable images") from exc
            skipped.append((str(path), reason))
            continue
        if first_size is None:
            first_size = (path, image.shape[:2])
        elif image.shape[:2] != first_size[1]:
            raise DataError(
                f"{root}: images differ in size: {first_size[0]} is {_hw(first_size[1])}, {path} "
                f"is {_hw(image.shape[:2])} (HxW); pass --image-size HxW to resize them all"
            )
        decoded += image.size
        check_input_bytes(str(root), decoded, "what its images decode to")
        images.append(image)
        labels.append(index[cls])
    bar.close()
    _report_skipped(root, skipped)
    labels = np.asarray(labels, dtype=np.int64)
    for k, name in enumerate(class_names):
        if not (labels == k).any():
            raise DataError(f"{root / name}: none of class {name!r}'s images could be read; "
                            f"replace them with readable {', '.join(IMAGE_EXTENSIONS)} files")
    if any(image.shape[2] == 3 for image in images):
        check_input_bytes(str(root), 3 * decoded // min(i.shape[2] for i in images), "what its images decode to as RGB")
        images = [np.repeat(i, 3, axis=2) if i.shape[2] == 1 else i for i in images]
    return FolderPool(np.stack(images), labels, class_names, skipped, from_cache=False)


def _hw(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def _report_skipped(root: Path, skipped) -> None:
    if skipped:
        path, reason = skipped[0]
        warn(f"skipped {len(skipped):,} unreadable image(s) in {root} (first: {path}: {reason}); "
             f"pass --strict to stop at the first one instead")


# --- the cache ---------------------------------------------------------------------------------


def _cache_file(key: str) -> Path:
    return cache_dir() / "folder-cache" / f"{key[:40]}.npz"


def _load_cache(key: str) -> FolderPool | None:
    """The cached pool for ``key``, or None when there is none or it is damaged."""
    path = _cache_file(key)
    if not path.is_file():
        return None
    try:  # each member's declared size checked before it is read, as for npz:PATH (a lying header
        # in a damaged or planted cache file must not cost more than the input limit)
        with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
            z = {name: read_npz_member(archive, f"{name}.npy", name, path, images=name == "images")
                 for name in ("key", "images", "labels", "class_names", "skipped")}
        if str(z["key"]) != key:
            raise ValueError("key mismatch")
        images, labels = z["images"], z["labels"].astype(np.int64)
        class_names = tuple(str(n) for n in z["class_names"])
        skipped = [tuple(s.split("\t", 1)) for s in z["skipped"].tolist()]
        if (images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels)
                or labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError("inconsistent arrays")
    except Exception as exc:  # any damage at all: the folder itself is the truth, read it again
        note(f"ignoring damaged cache file {path} ({type(exc).__name__}); reading the folder again")
        return None
    return FolderPool(images, labels, class_names, skipped, from_cache=True)


def _save_cache(key: str, pool: FolderPool) -> None:
    path = _cache_file(key)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), images=pool.images, labels=pool.labels,
                     class_names=np.array(pool.class_names, dtype=str),
                     skipped=np.array([f"{p}\t{r}" for p, r in pool.skipped], dtype=str))
    except OSError as exc:
        warn(f"could not write the folder cache {path} ({exc.strerror or exc}); the next run "
             f"reads the images again")

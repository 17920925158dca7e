"""The dataset registry and :func:`load_dataset`, which finds, verifies and splits the files.

Each dataset is four IDX files (see :mod:`nnscratch.data.idx`): training images and labels,
test images and labels. :func:`load_dataset` looks for the folder holding them in this order:

1. the ``data_dir`` argument (the command line's ``--data-dir DIR``): ``DIR`` itself or
   ``DIR/<name>/``. If neither holds the files this is an error; nothing else is tried;
2. ``$NNSCRATCH_DATA_DIR/<name>/``;
3. the user cache, ``$XDG_CACHE_HOME/nnscratch/<name>/`` (by default
   ``~/.cache/nnscratch/<name>/``);
4. if ``download`` is true, the files missing from the cache are downloaded into it from the
   dataset's mirrors (:func:`nnscratch.data.download.fetch`).

A file may be stored gzip-compressed (``train-images-idx3-ubyte.gz``, the usual form) or
decompressed (``train-images-idx3-ubyte``). Wherever it comes from, the SHA-256 of every file's
decompressed content is checked against the registry before use: a wrong file is an error,
never silently used. The training file is split into the first ``N - val_size`` images for
training and the last ``val_size`` (10,000) for validation; the test file is the test set.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnscratch.data.download import DownloadError, fetch
from nnscratch.data.idx import ChecksumError, DimensionError, parse_idx, read_idx_bytes
from nnscratch.errors import DataError, UsageError

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSpec",
    "FileSpec",
    "UnknownDatasetError",
    "cache_dir",
    "get_spec",
    "load_dataset",
]

ENV_DATA_DIR = "NNSCRATCH_DATA_DIR"


class UnknownDatasetError(DataError, UsageError):
    """The dataset name is not in :data:`DATASETS`."""


class DatasetNotFoundError(DataError):
    """The dataset's files are in none of the places looked at, and were not downloaded."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset: its name and the SHA-256 of its decompressed content."""

    filename: str
    sha256: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, download, verify and split one dataset.

    Attributes
    ----------
    name
        Registry key, also the sub-folder name under a data folder or the cache.
    train_images, train_labels, test_images, test_labels
        The four files.
    class_names
        Name of each class, indexed by label.
    image_shape
        (rows, columns) of one image.
    mirrors
        Base URLs to download from, tried in order.
    val_size
        How many of the *last* training images form the validation set.
    """

    name: str
    train_images: FileSpec
    train_labels: FileSpec
    test_images: FileSpec
    test_labels: FileSpec
    class_names: tuple[str, ...]
    image_shape: tuple[int, int] = (28, 28)
    mirrors: tuple[str, ...] = ()
    val_size: int = 10_000

    @property
    def files(self) -> tuple[FileSpec, FileSpec, FileSpec, FileSpec]:
        """The four files, in the order train images, train labels, test images, test labels."""
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


def _mnist_style_files(sums: dict[str, str]) -> dict[str, FileSpec]:
    """The four standard file names (gzip), with their uncompressed SHA-256 from ``sums``."""
    names = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    return {role: FileSpec(f"{stem}.gz", sums[stem]) for role, stem in names.items()}


#: The known datasets. Checksums are those of the decompressed files (SHA256SUMS.uncompressed).
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        **_mnist_style_files(
            {
                "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            }
        ),
        class_names=tuple(str(digit) for digit in range(10)),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        **_mnist_style_files(
            {
                "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            }
        ),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset, split into training, validation and test sets.

    The arrays are read-only (``flags.writeable`` is False): a ``Dataset`` may be shared, for
    instance by a session-wide test fixture, so take a copy before modifying one in place.

    Attributes
    ----------
    name
        Registry name, e.g. ``"mnist"``.
    class_names
        Name of each class, indexed by label.
    image_shape
        (rows, columns) of one image, ``(28, 28)``.
    train_images, train_labels
        uint8 ``(50000, 28, 28)`` and int64 ``(50000,)``: the first 50,000 of the training file.
    val_images, val_labels
        uint8 ``(10000, 28, 28)`` and int64 ``(10000,)``: the *last* 10,000 of the training file.
    test_images, test_labels
        uint8 ``(10000, 28, 28)`` and int64 ``(10000,)``: the test (``t10k``) file.
    source
        The folder the files were read from.
    """

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int]
    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    val_images: np.ndarray = field(repr=False)
    val_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    source: str

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(class_names)``."""
        return len(self.class_names)


def get_spec(name: str) -> DatasetSpec:
    """Return the registry entry for ``name``.

    Raises
    ------
    UnknownDatasetError
        ``name`` is not a known dataset; the message lists the known ones.
    """
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise UnknownDatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None


def cache_dir() -> Path:
    """The user cache folder for nnscratch: ``$XDG_CACHE_HOME/nnscratch`` or ``~/.cache/nnscratch``.

    As the XDG specification says, an unset, empty or relative ``XDG_CACHE_HOME`` is ignored.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "nnscratch"


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Find, verify, load and split a dataset.

    Parameters
    ----------
    name
        A key of :data:`DATASETS`: ``"mnist"`` or ``"fashion-mnist"``.
    data_dir
        Folder holding the four files, or holding a ``<name>/`` folder that holds them. When
        given, nothing else is looked at.
    download
        Download the files missing from the cache when they are found nowhere else.
    progress
        Show a progress bar while downloading.

    Returns
    -------
    Dataset
        Training (first 50,000), validation (last 10,000 of the training file) and test sets.

    Raises
    ------
    UnknownDatasetError
        ``name`` is not in the registry.
    DatasetNotFoundError
        The files are in none of the places looked at (``data_dir``, or the environment variable
        and the cache when download is off).
    DownloadError
        The files had to be downloaded and no mirror delivered them.
    ChecksumError
        A file's decompressed content does not have the expected SHA-256.
    DimensionError
        A file does not hold arrays of the expected shapes, or a label is out of range.
    IDXError
        A file is not a valid IDX file (see :mod:`nnscratch.data.idx`).
    """
    spec = get_spec(name)
    folder = _locate(spec, data_dir, download=download, progress=progress)
    return _load_from(spec, folder)


# --- finding the files ---------------------------------------------------------------------


def _find_file(folder: Path, file: FileSpec) -> Path | None:
    """The path of ``file`` in ``folder``, compressed (``.gz``) or not, or None if absent."""
    for candidate in (file.filename, file.filename.removesuffix(".gz")):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def _missing(folder: Path, spec: DatasetSpec) -> list[FileSpec]:
    """The files of ``spec`` that ``folder`` lacks."""
    return [f for f in spec.files if _find_file(folder, f) is None]


def _describe_missing(folder: Path, spec: DatasetSpec) -> str:
    """Why ``folder`` does not hold the dataset, e.g. ``"/x/mnist (no such folder)"``."""
    if not folder.is_dir():
        return f"{folder} (no such folder)"
    missing = _missing(folder, spec)
    if len(missing) == len(spec.files):
        return f"{folder} (no {spec.name} files)"
    return f"{folder} (missing {', '.join(f.filename for f in missing)})"


def _pointer_hint(spec: DatasetSpec) -> str:
    """How to point the loader at local files."""
    files = ", ".join(f"{spec.name}/{f.filename}" for f in spec.files)
    return f"pass --data-dir DIR or set {ENV_DATA_DIR} to a folder holding {files}"


def _locate(spec: DatasetSpec, data_dir, *, download: bool, progress: bool) -> Path:
    """Return the folder that holds all four files, downloading into the cache if allowed."""
    if data_dir is not None:
        return _locate_explicit(spec, Path(data_dir).expanduser())
    looked: list[str] = []
    env = os.environ.get(ENV_DATA_DIR, "")
    if env:
        folder = Path(env).expanduser() / spec.name
        if not _missing(folder, spec):
            return folder
        looked.append(f"${ENV_DATA_DIR}/{spec.name} = {_describe_missing(folder, spec)}")
    else:
        looked.append(f"${ENV_DATA_DIR}/{spec.name} (variable not set)")
    cache = cache_dir() / spec.name
    if not _missing(cache, spec):
        return cache
    looked.append(f"cache {_describe_missing(cache, spec)}")
    where = "; ".join(looked)
    if not download:
        raise DatasetNotFoundError(
            f"{spec.name} dataset not found: looked in {where}; download is off; "
            f"{_pointer_hint(spec)}"
        )
    _download_missing(spec, cache, where, progress)
    return cache


def _locate_explicit(spec: DatasetSpec, data_dir: Path) -> Path:
    """``data_dir`` itself or ``data_dir/<name>``, whichever holds all files; else raise."""
    candidates = (data_dir, data_dir / spec.name)
    for folder in candidates:
        if not _missing(folder, spec):
            return folder
    looked = " and ".join(_describe_missing(folder, spec) for folder in candidates)
    files = ", ".join(f.filename for f in spec.files)
    raise DatasetNotFoundError(
        f"--data-dir {data_dir} does not hold the {spec.name} dataset: looked in {looked}; "
        f"pass --data-dir a folder holding {files} (or a {spec.name}/ folder holding them)"
    )


def _download_missing(spec: DatasetSpec, cache: Path, where: str, progress: bool) -> None:
    """Download the files missing from ``cache``; on failure raise one :class:`DownloadError`."""
    for file in _missing(cache, spec):
        try:
            fetch(file.filename, file.sha256, cache, spec.mirrors, progress)
        except DownloadError as exc:
            tried = "; ".join(exc.attempts) or str(exc)
            raise DownloadError(
                f"{spec.name} dataset not found: looked in {where}; downloading "
                f"{file.filename} failed: {tried or 'no mirrors'}; {_pointer_hint(spec)}",
                exc.filename,
                exc.attempts,
            ) from exc


# --- loading and checking --------------------------------------------------------------------


def _load_from(spec: DatasetSpec, folder: Path) -> Dataset:
    """Read, verify, check and split the four files in ``folder``."""
    paths = [_find_file(folder, f) for f in spec.files]
    train_images, train_labels, test_images, test_labels = (
        _read_verified(path, file, spec) for path, file in zip(paths, spec.files)
    )
    _check_images(train_images, spec, paths[0])
    _check_labels(train_labels, len(train_images), spec, paths[1])
    _check_images(test_images, spec, paths[2])
    _check_labels(test_labels, len(test_images), spec, paths[3])
    n_train = len(train_images) - spec.val_size
    if n_train <= 0:
        raise DimensionError(
            f"{paths[0]}: {len(train_images):,} training images leave none for training after "
            f"the {spec.val_size:,} validation images; the file is not the {spec.name} training set"
        )
    train_labels = train_labels.astype(np.int64)
    test_labels = test_labels.astype(np.int64)
    return Dataset(
        name=spec.name,
        class_names=spec.class_names,
        image_shape=spec.image_shape,
        train_images=_frozen(train_images[:n_train]),
        train_labels=_frozen(train_labels[:n_train]),
        val_images=_frozen(train_images[n_train:]),
        val_labels=_frozen(train_labels[n_train:]),
        test_images=_frozen(test_images),
        test_labels=_frozen(test_labels),
        source=str(folder),
    )


def _frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``."""
    view = array.view()
    view.flags.writeable = False
    return view


def _read_verified(path: Path, file: FileSpec, spec: DatasetSpec) -> np.ndarray:
    """Decompress once, check the SHA-256 of the content, then parse it."""
    data = read_idx_bytes(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != file.sha256:
        raise ChecksumError(
            f"{path}: SHA-256 of the decompressed content is {actual}, expected {file.sha256}"
            f"{_checksum_advice(actual, spec)}"
        )
    return parse_idx(data, str(path))


def _checksum_advice(sha256: str, wanted: DatasetSpec) -> str:
    """What a wrong checksum means and what to do: a known file of another dataset, or corrupt."""
    for spec in DATASETS.values():
        for file in spec.files:
            if file.sha256 == sha256:
                return (
                    f" (that is {spec.name}'s {file.filename}); point --data-dir or "
                    f"{ENV_DATA_DIR} at the {wanted.name} files"
                )
    return " (corrupt or a different file); delete it and download it again"


def _check_images(images: np.ndarray, spec: DatasetSpec, path: Path) -> None:
    """Images must be uint8 of shape (N, *image_shape)."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != spec.image_shape:
        expected = "N x " + " x ".join(str(d) for d in spec.image_shape)
        raise DimensionError(
            f"{path}: holds {_shape(images)} {images.dtype} values, expected {spec.name} images "
            f"of shape {expected}, uint8; this is not a {spec.name} image file"
        )


def _check_labels(labels: np.ndarray, n_images: int, spec: DatasetSpec, path: Path) -> None:
    """Labels must be 1-D unsigned bytes, one per image, each in ``range(num_classes)``."""
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DimensionError(
            f"{path}: holds {_shape(labels)} {labels.dtype} values, expected a 1-D uint8 array "
            f"of labels; this is not a {spec.name} label file"
        )
    if len(labels) != n_images:
        raise DimensionError(
            f"{path}: holds {len(labels):,} labels for {n_images:,} images; "
            f"the image and label files do not belong together"
        )
    n_classes = len(spec.class_names)
    if labels.size and int(labels.max()) >= n_classes:
        raise DimensionError(
            f"{path}: label {int(labels.max())} is out of range for {n_classes} classes "
            f"(0..{n_classes - 1}); this is not a {spec.name} label file"
        )


def _shape(array: np.ndarray) -> str:
    return " x ".join(f"{d:,}" for d in array.shape) or "scalar"

"""MNIST and Fashion-MNIST: four IDX files each (see :mod:`nnscratch.data.idx`).

Training images and labels, test images and labels, usually gzip-compressed
(``train-images-idx3-ubyte.gz``) but also accepted decompressed. Wherever a file is found, the
SHA-256 of its decompressed content is checked against the registry before use (unless
``verify=False``, which prints a warning): a wrong file is an error, never silently used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnscratch.data.common import FileSpec, Parts, shape_str, warn
from nnscratch.data.download import fetch
from nnscratch.data.idx import DimensionError, read_idx

__all__ = ["FASHION_MNIST", "MNIST", "DatasetSpec", "FileSpec"]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, download, verify and read one IDX dataset.

    Attributes
    ----------
    name
        Registry key, also the sub-folder name under a data folder or the cache.
    train_images, train_labels, test_images, test_labels
        The four files.
    class_names
        Name of each class, indexed by label.
    image_shape
        (rows, columns) of one image in the files (the loaded images get a channel axis).
    mirrors
        Base URLs to download from, tried in order.
    val_size
        How many of the *last* training images form the validation set by default (at most a
        sixth of the training file).
    title
        Display name, e.g. ``"Fashion-MNIST"`` (the name when empty).
    system_dirs
        Folders a system package installs the files into, looked at after the user cache.
    sizes
        (training file, test file) image counts of the real dataset, for ``nnscratch datasets``.
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
    title: str = ""
    system_dirs: tuple[str, ...] = ()
    sizes: tuple[int, int] = (60_000, 10_000)

    @property
    def files(self) -> tuple[FileSpec, FileSpec, FileSpec, FileSpec]:
        """The four files, in the order train images, train labels, test images, test labels."""
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    @property
    def display_name(self) -> str:
        return self.title or self.name

    @property
    def hint_files(self) -> str:
        return ", ".join(f"{self.name}/{f.filename}" for f in self.files)

    @property
    def download_url(self) -> str:
        return self.mirrors[0] if self.mirrors else ""

    def missing(self, folder: Path) -> list[str]:
        """The file names of the dataset that ``folder`` lacks."""
        return [f.filename for f in self.files if _find_file(folder, f) is None]

    def describe_missing(self, folder: Path) -> str:
        """Why ``folder`` does not hold the dataset, e.g. ``"/x/mnist (no such folder)"``."""
        if not folder.is_dir():
            return f"{folder} (no such folder)"
        missing = self.missing(folder)
        if len(missing) == len(self.files):
            return f"{folder} (no {self.name} files)"
        return f"{folder} (missing {', '.join(missing)})"

    def download_missing(self, cache: Path, progress: bool) -> list[str]:
        """Download the files ``cache`` lacks; raises DownloadError naming the file that failed."""
        wanted = [f for f in self.files if _find_file(cache, f) is None]
        for file in wanted:
            fetch(file.filename, file.sha256, cache, self.mirrors, progress)
        return [f.filename for f in wanted]

    def read(self, folder: Path, *, verify: bool, progress: bool = False,
             in_cache: bool = False) -> Parts:
        """Read, verify and check the four files in ``folder``."""
        if not verify:
            warn(f"--no-verify: not checking the SHA-256 of the {self.display_name} files in "
                 f"{folder}; results may not be comparable with the real {self.display_name}")
        paths = [_find_file(folder, f) for f in self.files]
        train_images, train_labels, test_images, test_labels = (
            _read_verified(path, file, verify) for path, file in zip(paths, self.files)
        )
        _check_images(train_images, self, paths[0])
        _check_labels(train_labels, len(train_images), self, paths[1])
        _check_images(test_images, self, paths[2])
        _check_labels(test_labels, len(test_images), self, paths[3])
        return Parts(train_images[..., np.newaxis], train_labels.astype(np.int64),
                     test_images[..., np.newaxis], test_labels.astype(np.int64), self.class_names)


def _mnist_style_files(sums: dict[str, str]) -> dict[str, FileSpec]:
    """The four standard file names (gzip), with their uncompressed SHA-256 from ``sums``."""
    names = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    return {role: FileSpec(f"{stem}.gz", sums[stem]) for role, stem in names.items()}


# Checksums are those of the decompressed files (SHA256SUMS.uncompressed in the shared data).
MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
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
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    **_mnist_style_files(
        {
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        }
    ),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
)


def _find_file(folder: Path, file: FileSpec) -> Path | None:
    """The path of ``file`` in ``folder``, compressed (``.gz``) or not, or None if absent."""
    for candidate in (file.filename, file.filename.removesuffix(".gz")):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def _read_verified(path: Path, file: FileSpec, verify: bool) -> np.ndarray:
    """Decompress once, as a stream, checking the SHA-256 of the content on the way (unless told not to)."""
    return read_idx(path, sha256=file.sha256 if verify else None)


def _check_images(images: np.ndarray, spec: DatasetSpec, path: Path) -> None:
    """Images must be uint8 of shape (N, *image_shape)."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != spec.image_shape:
        expected = "N x " + " x ".join(str(d) for d in spec.image_shape)
        raise DimensionError(
            f"{path}: holds {shape_str(images)} {images.dtype} values, expected {spec.name} images "
            f"of shape {expected}, uint8; this is not a {spec.name} image file"
        )


def _check_labels(labels: np.ndarray, n_images: int, spec: DatasetSpec, path: Path) -> None:
    """Labels must be 1-D unsigned bytes, one per image, each in ``range(num_classes)``."""
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DimensionError(
            f"{path}: holds {shape_str(labels)} {labels.dtype} values, expected a 1-D uint8 array "
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

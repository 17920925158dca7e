"""Datasets: one interface for built-in and your own images, and the one place pixels become features.

:func:`load_dataset` takes a name and returns a :class:`Dataset`: read-only uint8 images
``(N, H, W, C)`` and int64 labels for the training, validation and test sets.

==================  ==========================================================================
name                source
==================  ==========================================================================
``mnist``           MNIST, four IDX files (:mod:`~nnscratch.data.idx`, our own reader)
``fashion-mnist``   Fashion-MNIST, same format (also found in Debian's ``/usr/share/datasets``)
``cifar10``         CIFAR-10, binary version (:mod:`~nnscratch.data.cifar`), never the pickles
``folder:PATH``     one sub-folder of PNG/JPEG/BMP/GIF images per class (:mod:`~.folder`)
``csv:PATH``        a label column and pixel columns (:mod:`~nnscratch.data.tabular`)
``npz:PATH``        arrays ``x`` and ``y`` in a ``numpy.savez`` file (:mod:`~.tabular`)
==================  ==========================================================================

* **Finding built-in files** (:mod:`~nnscratch.data.datasets`): ``--data-dir``, then
  ``$NNSCRATCH_DATA_DIR/<name>/``, the user cache, system folders, then a verified download
  (:func:`fetch`). Files are checked against their known SHA-256 wherever they are found.
* **Splitting** (:mod:`~nnscratch.data.split`): built-ins keep their test file and take the last
  ``val_size`` training images for validation; your own data gets a seeded stratified split.
* **Features** (:mod:`~nnscratch.data.preprocess`): :func:`to_features` flattens ``(H, W, C)``
  in C order and divides by 255; :func:`channel_stats` / :func:`standardize` optionally
  standardise each channel with training-set statistics.

All errors are :class:`~nnscratch.errors.DataError` or :class:`~nnscratch.errors.UsageError`
subclasses with a one-line message that names the file, the problem and the fix.
"""

from __future__ import annotations

from nnscratch.data.archive import UnsafeArchiveError, safe_extract
from nnscratch.data.common import cache_dir, parse_size
from nnscratch.data.datasets import (
    CUSTOM_KINDS,
    DATASETS,
    Dataset,
    DatasetNotFoundError,
    DatasetSpec,
    FileSpec,
    UnknownDatasetError,
    dataset_choices,
    describe_datasets,
    format_datasets_table,
    get_spec,
    load_dataset,
)
from nnscratch.data.download import DownloadError, fetch
from nnscratch.data.idx import (
    BadMagicError,
    ChecksumError,
    DimensionError,
    EmptyFileError,
    IDXError,
    TrailingBytesError,
    TruncatedFileError,
    parse_idx,
    read_idx,
    sha256_of_idx,
)
from nnscratch.data.preprocess import (
    ChannelStats,
    channel_stats,
    scale_pixels,
    standardize,
    to_features,
)

__all__ = [
    "CUSTOM_KINDS",
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "FileSpec",
    "load_dataset",
    "dataset_choices",
    "describe_datasets",
    "format_datasets_table",
    "get_spec",
    "cache_dir",
    "parse_size",
    "ChannelStats",
    "channel_stats",
    "scale_pixels",
    "standardize",
    "to_features",
    "read_idx",
    "parse_idx",
    "sha256_of_idx",
    "fetch",
    "safe_extract",
    "IDXError",
    "EmptyFileError",
    "BadMagicError",
    "TruncatedFileError",
    "TrailingBytesError",
    "DimensionError",
    "ChecksumError",
    "DownloadError",
    "DatasetNotFoundError",
    "UnknownDatasetError",
    "UnsafeArchiveError",
]

"""Datasets: our own IDX reader, a verifying downloader and the MNIST / Fashion-MNIST loader.

**IDX format** (:mod:`nnscratch.data.idx`). A 4-byte magic number (two zero bytes, a data type
code, the number of dimensions ``ndim``), ``ndim`` big-endian uint32 dimension sizes, then the
values in big-endian C order. Type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64. Files are usually gzip-compressed;
:func:`read_idx` detects gzip by its magic bytes, not by the file name.

**Where the files are found** (:func:`load_dataset`), first match wins:

1. ``data_dir`` (``--data-dir DIR``): ``DIR`` or ``DIR/<name>/``; if neither holds the files it is
   an error, nothing else is tried;
2. ``$NNSCRATCH_DATA_DIR/<name>/``;
3. ``$XDG_CACHE_HOME/nnscratch/<name>/`` (default ``~/.cache/nnscratch/<name>/``);
4. with ``download=True``: the missing files are downloaded into that cache folder by
   :func:`fetch`, which tries each mirror in turn and keeps a file only once it is complete and
   verified.

Every file is checked against the SHA-256 of its decompressed content, wherever it comes from.
The training file is split into 50,000 training and the *last* 10,000 validation images.

All errors are :class:`~nnscratch.errors.DataError` subclasses with a one-line message that names
the file, the problem and the fix.
"""

from __future__ import annotations

from nnscratch.data.datasets import (
    DATASETS,
    Dataset,
    DatasetNotFoundError,
    DatasetSpec,
    FileSpec,
    UnknownDatasetError,
    cache_dir,
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

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "FileSpec",
    "load_dataset",
    "cache_dir",
    "read_idx",
    "parse_idx",
    "sha256_of_idx",
    "fetch",
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
]

"""What one input may cost: the limits every reader checks before it allocates or writes.

A small hostile file can declare a huge content: a gzip stream that inflates a thousandfold, a
ZIP or tar member whose header claims gigabytes, an ``.npy`` header with shape ``(10**12, 28,
28)``, a label of ``10**12`` that would make a trillion classes, a safetensors header that claims
more bytes than the file holds. Every reader compares what the input *declares* with these limits
before it allocates anything, and caps what it actually decompresses or extracts while it does
(a declared size can lie). The refusal is one line (a :class:`InputTooLargeError`, a
:class:`~nnscratch.errors.DataError`) naming the file, the figure and the limit.

=============================  ==============  ================================================
environment variable           default         what it bounds
=============================  ==============  ================================================
``NNSCRATCH_MAX_INPUT_BYTES``  4 GiB           the bytes one input may decode to: an IDX file
                                               decompressed, an archive extracted, one NPZ
                                               member, a decoded image set, a model's tensors
``NNSCRATCH_MAX_CLASSES``      10,000          the number of distinct classes in a dataset
``NNSCRATCH_MAX_IMAGE_SIDE``   4,096           the height or width of an image (a file, or
                                               ``image_size`` to resize to)
=============================  ==============  ================================================

Raise a limit for honest large data, e.g. ``NNSCRATCH_MAX_INPUT_BYTES=16G``: sizes take a
whole number of bytes or a binary suffix (``K``, ``M``, ``G``, ``T``, with or without ``iB``).
The limits are read from the environment each time they are checked.
"""

from __future__ import annotations

import os
import re

from nnscratch.errors import DataError, UsageError

__all__ = ["InputTooLargeError", "MAX_INPUT_BYTES_ENV", "MAX_CLASSES_ENV", "MAX_IMAGE_SIDE_ENV",
           "MAX_SAFETENSORS_HEADER", "max_input_bytes", "max_classes", "max_image_side",
           "check_input_bytes", "check_classes", "check_image_side"]

MAX_INPUT_BYTES_ENV = "NNSCRATCH_MAX_INPUT_BYTES"
MAX_CLASSES_ENV = "NNSCRATCH_MAX_CLASSES"
MAX_IMAGE_SIDE_ENV = "NNSCRATCH_MAX_IMAGE_SIDE"

DEFAULT_MAX_INPUT_BYTES = 4 << 30
DEFAULT_MAX_CLASSES = 10_000
DEFAULT_MAX_IMAGE_SIDE = 4096

#: The most bytes a safetensors header (JSON) may claim; the safetensors library's own cap (100 MB)
#: is far above what a model's header needs (a few KB). Fixed: no honest file comes near it.
MAX_SAFETENSORS_HEADER = 16 << 20

#: The most bytes a TOML config may have: ours are a few hundred. Fixed, like the header's cap.
MAX_CONFIG_BYTES = 1 << 20

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class InputTooLargeError(DataError):
    """An input declares (or turned out to hold) more than a limit allows."""


def _env_int(name: str, default: int, *, size: bool) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    match = re.fullmatch(r"(\d+)\s*([kmgt]?)(i?b)?" if size else r"(\d+)()()", text.lower().replace("_", ""))
    if not match or int(match.group(1)) < 1:
        form = "a whole number of bytes, or one with K, M, G or T (e.g. 8G)" if size else "a positive whole number"
        raise UsageError(f"{name}={text!r}: expected {form}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def max_input_bytes() -> int:
    """``$NNSCRATCH_MAX_INPUT_BYTES``, default 4 GiB: the most bytes one input may decode to."""
    return _env_int(MAX_INPUT_BYTES_ENV, DEFAULT_MAX_INPUT_BYTES, size=True)


def max_classes() -> int:
    """``$NNSCRATCH_MAX_CLASSES``, default 10,000: the most distinct classes a dataset may have."""
    return _env_int(MAX_CLASSES_ENV, DEFAULT_MAX_CLASSES, size=False)


def max_image_side() -> int:
    """``$NNSCRATCH_MAX_IMAGE_SIDE``, default 4,096: the largest height or width of an image."""
    return _env_int(MAX_IMAGE_SIDE_ENV, DEFAULT_MAX_IMAGE_SIDE, size=False)


def check_input_bytes(source: str, nbytes: int, what: str = "its content") -> int:
    """Raise :class:`InputTooLargeError` when ``nbytes`` (what ``source`` declares or holds) is above
    :func:`max_input_bytes`; else return the limit (a reader may cap what it decompresses at it).

    The message reads ``"{source}: {what} is {nbytes:,} bytes, above the limit of ..."``.
    """
    limit = max_input_bytes()
    if nbytes > limit:
        raise InputTooLargeError(f"{source}: {what} is {nbytes:,} bytes, above the limit of {limit:,} bytes; "
                                 f"if the data is honest, raise {MAX_INPUT_BYTES_ENV}")
    return limit


def check_classes(source: str, count: int) -> None:
    """Raise :class:`InputTooLargeError` when a dataset has more than :func:`max_classes` classes."""
    limit = max_classes()
    if count > limit:
        raise InputTooLargeError(f"{source}: {count:,} distinct classes, above the limit of {limit:,}; "
                                 f"if the labels are right, raise {MAX_CLASSES_ENV}")


def check_image_side(source: str, height: int, width: int) -> None:
    """Raise :class:`InputTooLargeError` when an image (or a target size) is larger than
    :func:`max_image_side` on either side."""
    limit = max_image_side()
    if max(height, width) > limit:
        raise InputTooLargeError(f"{source}: {height:,}x{width:,} pixels, above the limit of {limit:,} per side; "
                                 f"raise {MAX_IMAGE_SIDE_ENV} for larger images")

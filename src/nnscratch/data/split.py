"""How every dataset is cut into training, validation and test sets.

**Sizes.** The validation set has ``val_size`` images (``--val-size``). By default: 10,000, or
one sixth of the images it is taken from when that is smaller.

**Built-in datasets** (MNIST, Fashion-MNIST, CIFAR-10) ship a training file and a test file. The
test file is the test set. The validation set is the *last* ``val_size`` images of the training
file, the training set the ones before it: no randomness, so the seed does not change it and
the numbers stay comparable with the literature. By default ``val_size`` is the dataset's
10,000 (MNIST and Fashion-MNIST: 50,000 / 10,000 / 10,000; CIFAR-10: 40,000 / 10,000 / 10,000);
only a training file of at most 20,000 images (a small re-packed copy) gets a sixth of it.

**Your own datasets** (``folder:``, ``csv:``, ``npz:``) come as one pool of ``n`` images. The test
set takes ``min(10000, n // 7)`` of them (MNIST's 10,000 of 70,000), the validation set
``val_size`` (default ``min(10000, (n - n_test) // 6)``) and the training set the rest: the
proportions 5 : 1 : 1 of MNIST. The split is **stratified**: each class contributes to the test
and validation sets in proportion to its size (largest-remainder rounding, ties to the lower
class index), so a rare class is not missing from them by bad luck. Which images of a class go
where is decided by one seeded permutation of all ``n`` images: walking through it, an image
goes to the test set while its class's test quota is unfilled, then to validation while that
quota is unfilled, then to training. Each part keeps the permutation's order. The same seed
gives the same split on every machine; another seed gives another split.

The permutation's generator is ``default_rng(SeedSequence(seed, spawn_key=(SPLIT_STREAM,)))``,
a stream of its own: it never coincides with the training loop's ``SeedSequence(seed).spawn()``
children, so changing how the loop draws never changes the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnscratch.errors import DataError, UsageError

__all__ = ["DEFAULT_VAL_SIZE", "SPLIT_STREAM", "Split", "builtin_val_size", "check_val_size",
           "default_val_size", "split_last", "split_rng", "split_stratified"]

DEFAULT_VAL_SIZE = 10_000
#: spawn_key of the split's random stream (far from the loop's children 0, 1, 2, ...).
SPLIT_STREAM = 0x5B117


@dataclass(frozen=True)
class Split:
    """Rows of each part (index arrays, or slices of consecutive rows so that the parts are
    views, not copies), and the rule that produced them (one line, for reports)."""

    train: np.ndarray | slice
    val: np.ndarray | slice
    test: np.ndarray | slice | None
    rule: str


def default_val_size(n: int) -> int:
    """10,000, or a sixth of ``n`` when that is smaller (at least 1)."""
    return max(1, min(DEFAULT_VAL_SIZE, n // 6))


def builtin_val_size(n: int, documented: int = DEFAULT_VAL_SIZE) -> int:
    """A built-in dataset's default: its ``documented`` size, or a sixth of a small file.

    ``documented`` when the file holds more than twice as many images, else ``n // 6`` (at least 1).
    """
    return documented if n > 2 * documented else max(1, n // 6)


def check_val_size(val_size: int | None, n: int, source: str, default: int | None = None) -> int:
    """Return the validation size to use for a pool of ``n`` images, or raise UsageError.

    ``source`` names the data in the message (a path or a dataset name); ``default`` replaces
    :func:`default_val_size` when ``val_size`` is None.
    """
    if val_size is None:
        val_size = default if default is not None else default_val_size(n)
        if n - val_size < 1:
            raise DataError(
                f"{source}: only {n} image(s), too few to split into training and validation "
                f"sets; add images (at least 3 in all)"
            )
        return val_size
    if isinstance(val_size, bool) or not isinstance(val_size, (int, np.integer)) or val_size < 1:
        raise UsageError(f"--val-size {val_size!r}: must be a whole number of at least 1")
    if val_size >= n:
        raise UsageError(
            f"--val-size {val_size:,} leaves no training images: {source} has {n:,} images to "
            f"split into training and validation; pass --val-size below {n:,}"
        )
    return int(val_size)


def split_last(n: int, val_size: int) -> Split:
    """Training = the first ``n - val_size`` rows, validation = the last ``val_size``."""
    cut = n - val_size
    return Split(slice(0, cut), slice(cut, n), None,
                 f"validation = last {val_size:,} of the {n:,} training-file images")


def split_rng(seed: int) -> np.random.Generator:
    """The split's own random stream for ``seed`` (see the module docstring)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"--seed {seed!r}: must be a whole number of at least 0")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLIT_STREAM,)))


def _quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder, ties low)."""
    n = int(counts.sum())
    exact = counts * total / n
    quota = np.floor(exact).astype(np.int64)
    short = total - int(quota.sum())
    order = np.lexsort((np.arange(len(counts)), -(exact - quota)))  # largest remainder first
    quota[order[:short]] += 1
    return quota


def split_stratified(labels: np.ndarray, num_classes: int, val_size: int | None, seed: int,
                     source: str) -> Split:
    """The seeded, stratified three-way split of a pool of labelled images (module docstring)."""
    n = len(labels)
    n_test = max(1, min(DEFAULT_VAL_SIZE, n // 7))
    if n - n_test < 2:
        raise DataError(
            f"{source}: only {n} image(s), too few to split into training, validation and test "
            f"sets; add images (at least 3 in all)"
        )
    val_size = check_val_size(val_size, n - n_test, source)
    counts = np.bincount(labels, minlength=num_classes)
    test_quota = _quotas(counts, n_test)
    val_quota = _quotas(counts - test_quota, val_size) if val_size else np.zeros_like(counts)
    perm = split_rng(seed).permutation(n)
    part = np.empty(n, dtype=np.int8)  # 0 test, 1 val, 2 train, in permutation order
    perm_labels = labels[perm]
    for c in range(num_classes):
        where = np.flatnonzero(perm_labels == c)
        part[where[: test_quota[c]]] = 0
        part[where[test_quota[c]: test_quota[c] + val_quota[c]]] = 1
        part[where[test_quota[c] + val_quota[c]:]] = 2
    rule = (f"seeded stratified split (seed {seed}): {n - n_test - val_size:,} train / "
            f"{val_size:,} validation / {n_test:,} test of {n:,} images")
    return Split(perm[part == 2], perm[part == 1], perm[part == 0], rule)

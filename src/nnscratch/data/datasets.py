"""The dataset registry and :func:`load_dataset`: one interface for every source of images.

Names
-----
``mnist``, ``fashion-mnist``
    Four IDX files each (:mod:`nnscratch.data.idx_datasets`).
``cifar10``
    The binary version of CIFAR-10 (:mod:`nnscratch.data.cifar`).
``folder:PATH``, ``csv:PATH``, ``npz:PATH``
    Your own images (:mod:`nnscratch.data.folder`, :mod:`nnscratch.data.tabular`).

Where the built-in datasets are found, first match wins:

1. the ``data_dir`` argument (the command line's ``--data-dir DIR``): ``DIR`` itself or
   ``DIR/<name>/``. If neither holds the files this is an error; nothing else is tried;
2. ``$NNSCRATCH_DATA_DIR/<name>/``;
3. the user cache, ``$XDG_CACHE_HOME/nnscratch/<name>/`` (by default
   ``~/.cache/nnscratch/<name>/``);
4. a folder a system package installs, e.g. ``/usr/share/datasets/fashion-mnist`` (Debian's
   ``dataset-fashion-mnist``);
5. if ``download`` is true, the files missing from the cache are downloaded into it from the
   dataset's mirrors (:func:`nnscratch.data.download.fetch`), verified, with a progress bar.

Every built-in file is checked against its known SHA-256 wherever it was found, unless
``verify=False``. How each dataset is split is described in :mod:`nnscratch.data.split`; the
images are always uint8 ``(N, H, W, C)``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from nnscratch.data.cifar import CIFAR10, CifarSpec
from nnscratch.data.common import (cache_dir, check_image_options, convert_images, frozen, note,
                                   parse_classes, parse_size)
from nnscratch.data.download import DownloadError
from nnscratch.data.idx import ChecksumError
from nnscratch.data.idx_datasets import FASHION_MNIST, MNIST, DatasetSpec, FileSpec
from nnscratch.data.split import (Split, builtin_val_size, check_val_size, split_last, split_rng,
                                  split_stratified)
from nnscratch.errors import DataError, UsageError

__all__ = [
    "CUSTOM_KINDS",
    "DATASETS",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSpec",
    "FileSpec",
    "UnknownDatasetError",
    "cache_dir",
    "dataset_choices",
    "describe_datasets",
    "format_datasets_table",
    "get_spec",
    "keep_classes",
    "load_dataset",
]

BuiltinSpec = Union[DatasetSpec, CifarSpec]
ENV_DATA_DIR = "NNSCRATCH_DATA_DIR"

#: The built-in datasets, by name.
DATASETS: dict[str, BuiltinSpec] = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST, "cifar10": CIFAR10}

#: Prefixes of your own datasets: ``folder:PATH``, ``csv:PATH``, ``npz:PATH``.
CUSTOM_KINDS = ("folder", "csv", "npz")


class UnknownDatasetError(DataError, UsageError):
    """The dataset name is neither a built-in dataset nor ``folder:``/``csv:``/``npz:PATH``."""


class DatasetNotFoundError(DataError):
    """The dataset's files are in none of the places looked at, and were not downloaded."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset, split into training, validation and test sets.

    The arrays are read-only (``flags.writeable`` is False): a ``Dataset`` may be shared, for
    instance by a session-wide test fixture, so take a copy before modifying one in place.

    Attributes
    ----------
    name
        What :func:`load_dataset` was given, made reloadable: ``"mnist"``, ``"cifar10"``, or
        ``"folder:/abs/path"`` (the path made absolute).
    class_names
        Name of each class, indexed by label.
    image_shape
        ``(H, W, C)`` of one image: ``(28, 28, 1)`` for MNIST, ``(32, 32, 3)`` for CIFAR-10.
    train_images, train_labels
        uint8 ``(N_train, H, W, C)`` and int64 ``(N_train,)``.
    val_images, val_labels
        uint8 ``(N_val, H, W, C)`` and int64 ``(N_val,)``.
    test_images, test_labels
        uint8 ``(N_test, H, W, C)`` and int64 ``(N_test,)``.
    source
        The folder or file the data was read from.
    title
        Display name: ``"MNIST"``, ``"Fashion-MNIST"``, ``"CIFAR-10"``, or the folder's or
        file's name for your own data.
    notes
        What was done to the data on the way (pixel scaling, skipped images), one line each.
    split_rule
        How the three sets were made, one line (see :mod:`nnscratch.data.split`).
    deskewed
        Every image was deskewed when loaded (``load_dataset(..., deskew=True)``).
    """

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    val_images: np.ndarray = field(repr=False)
    val_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    source: str
    title: str = ""
    notes: tuple[str, ...] = ()
    split_rule: str = ""
    deskewed: bool = False

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(class_names)``."""
        return len(self.class_names)


def dataset_choices() -> list[str]:
    """What ``--dataset`` accepts: the built-in names, then ``folder:PATH``, ``csv:PATH``, ``npz:PATH``."""
    return [*DATASETS, *(f"{kind}:PATH" for kind in CUSTOM_KINDS)]


def get_spec(name: str) -> BuiltinSpec:
    """Return the registry entry of a built-in dataset.

    Raises
    ------
    UnknownDatasetError
        ``name`` is not a known dataset; the message lists the choices.
    """
    try:
        return DATASETS[name]
    except KeyError:
        choices = ", ".join(dataset_choices())
        raise UnknownDatasetError(f"unknown dataset {name!r}; choose one of: {choices}") from None


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    verify: bool = True,
    val_size: int | None = None,
    seed: int = 0,
    image_size: tuple[int, int] | str | None = None,
    color: str | None = None,
    strict: bool = False,
    label_column: str | int | None = None,
    image_shape: tuple[int, ...] | str | None = None,
    classes: str | None = None,
    deskew: bool = False,
) -> Dataset:
    """Find, read, check, convert and split a dataset.

    Parameters
    ----------
    name
        ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"folder:PATH"``, ``"csv:PATH"`` or
        ``"npz:PATH"``.
    data_dir
        Built-in datasets: the folder holding the files, or holding a ``<name>/`` folder that
        holds them. When given, nothing else is looked at. Ignored for your own datasets.
    download
        Download a built-in dataset into the cache when it is found nowhere else.
    progress
        Show progress bars (downloads, reading a large image folder).
    verify
        Check built-in files against their known SHA-256 (``--no-verify`` turns it off, with a
        warning, for a copy you re-packed yourself).
    val_size
        Validation images (``--val-size``); default 10,000 or a sixth of the pool it is taken
        from, whichever is smaller (:mod:`nnscratch.data.split`).
    seed
        Seed of the split of your own datasets (built-in splits do not depend on it).
    image_size
        ``(H, W)`` or ``"HxW"``: resize every image (``--image-size``).
    color
        ``"grayscale"`` or ``"rgb"``: convert every image (``--grayscale`` / ``--rgb``).
    strict
        ``folder:`` only: an unreadable image is an error instead of being skipped (``--strict``).
    label_column
        ``csv:`` only: the label column's header name or 0-based index (``--label-column``).
    image_shape
        ``csv:`` only: ``(H, W)`` or ``(H, W, C)`` of the rows' images (``--image-shape``).
    classes
        Keep only these classes, ``"0-4"`` or ``"0,2,5-9"`` (``--classes``; any dataset): in each of
        the three sets, after the split (each set keeps those of its images), relabelled
        ``0..k-1`` in increasing order of the original labels, their class names kept.
    deskew
        Shear every image upright and centre it by its own moments (``--deskew``; greyscale
        images only): the three sets alike (:mod:`~nnscratch.data.deskew`).

    Returns
    -------
    Dataset
        Read-only uint8 ``(N, H, W, C)`` images and int64 labels for each of the three sets.

    Raises
    ------
    UsageError
        An unknown name, a bad option value, or an option that does not apply to the dataset.
    DataError
        The data is missing, corrupt or unusable; the one-line message names the file and the
        fix (subclasses: :class:`DatasetNotFoundError`, :class:`~nnscratch.data.DownloadError`,
        :class:`~nnscratch.data.ChecksumError`, ...).
    """
    image_size, color = check_image_options(image_size, color)
    wanted = parse_classes(classes) if classes is not None else None
    data = _load(name, data_dir, download=download, progress=progress, verify=verify, val_size=val_size, seed=seed,
                 image_size=image_size, color=color, strict=strict, label_column=label_column,
                 image_shape=image_shape)
    data = data if wanted is None else keep_classes(data, wanted, classes)
    return deskewed(data) if deskew else data


def _load(name, data_dir, *, download, progress, verify, val_size, seed, image_size, color, strict, label_column,
          image_shape) -> Dataset:
    """:func:`load_dataset` but for ``classes`` (options already checked)."""
    split_rng(seed)  # validates the seed for every dataset, not only those it splits
    kind, sep, target = name.partition(":")
    if sep and kind in CUSTOM_KINDS:
        if not target:
            raise UsageError(f"dataset {name!r}: give a path after '{kind}:', e.g. {kind}:my-data")
        if kind != "csv":
            _refuse_csv_options(label_column, image_shape, name)
        return _load_custom(kind, Path(target).expanduser(), val_size=val_size, seed=seed,
                            image_size=image_size, color=color, strict=strict, progress=progress,
                            label_column=label_column, image_shape=image_shape)
    spec = get_spec(name)
    _refuse_csv_options(label_column, image_shape, name)
    folder = _locate(spec, data_dir, download=download, progress=progress)
    try:
        parts = spec.read(folder, verify=verify, progress=progress,
                          in_cache=folder == cache_dir() / spec.name)
    except ChecksumError as exc:
        raise _name_known_file(exc, spec) from None
    train_images = convert_images(parts.train_images, image_size, color, str(folder))
    test_images = convert_images(parts.test_images, image_size, color, str(folder))
    n = len(train_images)
    size = check_val_size(val_size, n, f"the {spec.display_name} training file",
                          default=builtin_val_size(n, spec.val_size))
    split = split_last(n, size)
    return _dataset(name, spec.display_name, parts.class_names, train_images, parts.train_labels,
                    split, test_images, parts.test_labels, str(folder), ())


def keep_classes(data: Dataset, classes: tuple[int, ...], text: str) -> Dataset:
    """``data`` with only ``classes`` (sorted indices) in each set, relabelled ``0..k-1`` in that
    order, their names kept; ``text`` is how they were asked for (for messages and the title)."""
    missing = [c for c in classes if c >= data.num_classes]
    if missing:
        raise UsageError(f"--classes {text}: {data.title} has classes 0-{data.num_classes - 1}, "
                         f"not {', '.join(map(str, missing))}")
    if len(classes) < 2:
        raise UsageError(f"--classes {text} keeps one class; a classifier needs at least 2")
    relabel = np.full(data.num_classes, -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))

    def part(images, labels):
        rows = np.flatnonzero(relabel[labels] >= 0)
        return frozen(images[rows]), frozen(relabel[labels[rows]])

    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = (part(data.train_images, data.train_labels),
                                                part(data.val_images, data.val_labels),
                                                part(data.test_images, data.test_labels))
    for what, labels in (("training", tr_y), ("validation", va_y), ("test", te_y)):
        if not len(labels):
            raise DataError(f"--classes {text}: the {data.title} {what} set has no image of those classes")
    kept = f"classes {text} kept, relabelled 0-{len(classes) - 1}"
    return dataclasses.replace(
        data, class_names=tuple(data.class_names[c] for c in classes), train_images=tr_x, train_labels=tr_y,
        val_images=va_x, val_labels=va_y, test_images=te_x, test_labels=te_y, title=f"{data.title} classes {text}",
        notes=(*data.notes, f"{kept}: {len(tr_y):,} train / {len(va_y):,} validation / {len(te_y):,} test images"),
        split_rule=f"{data.split_rule}; then {kept}")


def deskewed(data: Dataset) -> Dataset:
    """``data`` with every image of the three sets deskewed (:func:`nnscratch.data.deskew.deskew`)."""
    from nnscratch.data.deskew import deskew

    if data.image_shape[-1] != 1:
        raise UsageError(f"deskewing (--deskew) takes greyscale images; {data.title} has {data.image_shape[-1]} "
                         "channels: convert them with --grayscale, or do without --deskew")
    if data.deskewed:
        return data
    return dataclasses.replace(
        data, train_images=frozen(deskew(data.train_images)), val_images=frozen(deskew(data.val_images)),
        test_images=frozen(deskew(data.test_images)), deskewed=True,
        notes=(*data.notes, "deskewed: each image sheared upright and centred by its own moments"))


def _name_known_file(exc: ChecksumError, wanted: BuiltinSpec) -> ChecksumError:
    """A wrong checksum that is that of a known file of another dataset says so, and what to do."""
    for spec in DATASETS.values():
        for file in spec.files:
            if file.sha256 == exc.actual:
                return exc.with_advice(f"(that is {spec.name}'s {file.filename}); point --data-dir or "
                                       f"{ENV_DATA_DIR} at the {wanted.name} files")
    return exc


def _refuse_csv_options(label_column, image_shape, name: str) -> None:
    for flag, value in (("--label-column", label_column), ("--image-shape", image_shape)):
        if value is not None:
            raise UsageError(f"{flag} applies to csv:PATH datasets only, not to {name!r}; drop it")


def _dataset(name, title, class_names, images, labels, split: Split, test_images, test_labels,
             source: str, notes) -> Dataset:
    """Assemble the read-only :class:`Dataset` from a pool and the split's indices."""
    def rows(array, index):
        return frozen(array[index])

    if split.test is not None:  # one pool: the test set comes out of it too
        test_images, test_labels = rows(images, split.test), rows(labels, split.test)
    return Dataset(
        name=name, class_names=tuple(class_names), image_shape=tuple(images.shape[1:]),
        train_images=rows(images, split.train), train_labels=rows(labels, split.train),
        val_images=rows(images, split.val), val_labels=rows(labels, split.val),
        test_images=frozen(test_images), test_labels=frozen(np.asarray(test_labels, np.int64)),
        source=source, title=title, notes=tuple(notes), split_rule=split.rule,
    )


# --- your own datasets ---------------------------------------------------------------------------


def _load_custom(kind: str, path: Path, *, val_size, seed, image_size, color, strict, progress,
                 label_column, image_shape) -> Dataset:
    from nnscratch.data.folder import read_folder
    from nnscratch.data.tabular import read_csv, read_npz

    notes: list[str] = []
    if kind == "folder":
        pool = read_folder(path, image_size=image_size, color=color, strict=strict,
                           progress=progress)
        images = pool.images
        if pool.skipped:
            notes.append(f"{path}: skipped {len(pool.skipped):,} unreadable image(s)")
    else:
        if isinstance(image_shape, str):
            image_shape = parse_size(image_shape, "--image-shape", parts=(2, 3))
        pool = read_csv(path, label_column=label_column, image_shape=image_shape) \
            if kind == "csv" else read_npz(path)
        for line in pool.notes:
            note(line)
        notes.extend(pool.notes)
        images = convert_images(pool.images, image_size, color, str(path))
    split = split_stratified(pool.labels, len(pool.class_names), val_size, seed, str(path))
    absolute = path.resolve()
    return _dataset(f"{kind}:{absolute}", path.name, pool.class_names, images, pool.labels,
                    split, None, None, str(absolute), notes)


# --- finding the built-in datasets ----------------------------------------------------------------


def _pointer_hint(spec: BuiltinSpec) -> str:
    """How to point the loader at local files."""
    return f"pass --data-dir DIR or set {ENV_DATA_DIR} to a folder holding {spec.hint_files}"


def _search(spec: BuiltinSpec) -> tuple[Path | None, list[str]]:
    """The first of env folder, cache, system folders that holds the dataset; and what was seen."""
    looked: list[str] = []
    env = os.environ.get(ENV_DATA_DIR, "")
    if env:
        folder = Path(env).expanduser() / spec.name
        if not spec.missing(folder):
            return folder, looked
        looked.append(f"${ENV_DATA_DIR}/{spec.name} = {spec.describe_missing(folder)}")
    else:
        looked.append(f"${ENV_DATA_DIR}/{spec.name} (variable not set)")
    for folder, label in ((cache_dir() / spec.name, "cache "),
                          *((Path(d), "") for d in spec.system_dirs)):
        if not spec.missing(folder):
            return folder, looked
        looked.append(f"{label}{spec.describe_missing(folder)}")
    return None, looked


def _locate(spec: BuiltinSpec, data_dir, *, download: bool, progress: bool) -> Path:
    """Return the folder that holds the dataset, downloading into the cache if allowed."""
    if data_dir is not None:
        return _locate_explicit(spec, Path(data_dir).expanduser())
    found, looked = _search(spec)
    if found is not None:
        return found
    where = "; ".join(looked)
    if not download:
        raise DatasetNotFoundError(
            f"{spec.name} dataset not found: looked in {where}; download is off; "
            f"{_pointer_hint(spec)}"
        )
    cache = cache_dir() / spec.name
    try:
        spec.download_missing(cache, progress)
    except DownloadError as exc:
        tried = "; ".join(exc.attempts) or str(exc)
        raise DownloadError(
            f"{spec.name} dataset not found: looked in {where}; downloading "
            f"{exc.filename} failed: {tried or 'no mirrors'}; {_pointer_hint(spec)}",
            exc.filename,
            exc.attempts,
        ) from exc
    return cache


def _explicit_candidates(spec: BuiltinSpec, data_dir: Path) -> tuple[Path, Path]:
    return (data_dir, data_dir / spec.name)


def _locate_explicit(spec: BuiltinSpec, data_dir: Path) -> Path:
    """``data_dir`` itself or ``data_dir/<name>``, whichever holds the dataset; else raise."""
    candidates = _explicit_candidates(spec, data_dir)
    for folder in candidates:
        if not spec.missing(folder):
            return folder
    looked = " and ".join(spec.describe_missing(folder) for folder in candidates)
    files = spec.hint_files.replace(f"{spec.name}/", "")
    raise DatasetNotFoundError(
        f"--data-dir {data_dir} does not hold the {spec.name} dataset: looked in {looked}; "
        f"pass --data-dir a folder holding {files} (or a {spec.name}/ folder holding them)"
    )


# --- nnscratch datasets ----------------------------------------------------------------------------


def describe_datasets(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per built-in dataset for ``nnscratch datasets``: what it is, where it is, its sizes.

    Nothing is read or downloaded: a dataset counts as found where its files are present (they
    are verified when loaded). Keys of each row: ``name``, ``title``, ``image_shape``,
    ``num_classes``, ``train``, ``val``, ``test`` (default split sizes), ``found`` (bool) and
    ``location`` (the folder, or where it would come from).
    """
    rows = []
    for name, spec in DATASETS.items():
        if data_dir is not None:
            found = next((f for f in _explicit_candidates(spec, Path(data_dir).expanduser())
                          if not spec.missing(f)), None)
        else:
            found, _ = _search(spec)
        if found is not None:
            location = str(found)
        elif data_dir is not None:
            location = f"not in --data-dir {data_dir}"
        else:
            location = f"would be downloaded from {spec.download_url} into {cache_dir() / name}"
        n_train_file, n_test = spec.sizes
        val = builtin_val_size(n_train_file, spec.val_size)
        shape = tuple(spec.image_shape) if len(spec.image_shape) == 3 else (*spec.image_shape, 1)
        rows.append(dict(name=name, title=spec.display_name, image_shape=shape,
                         num_classes=len(spec.class_names), train=n_train_file - val, val=val,
                         test=n_test, found=found is not None, location=location))
    return rows


def format_datasets_table(rows: list[dict]) -> str:
    """The rows of :func:`describe_datasets` as an aligned text table, plus how to use your own."""
    header = ("dataset", "title", "image", "classes", "train / val / test", "where")
    lines = [header] + [
        (r["name"], r["title"], "x".join(map(str, r["image_shape"])), str(r["num_classes"]),
         f"{r['train']:,} / {r['val']:,} / {r['test']:,}", r["location"]) for r in rows
    ]
    widths = [max(len(line[k]) for line in lines) for k in range(len(header) - 1)]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1]
            for line in lines]
    text.append("")
    text.append("your own images: --dataset folder:PATH (one sub-folder per class), csv:PATH "
                "(label + pixel columns) or npz:PATH (arrays x, y)")
    return "\n".join(text)

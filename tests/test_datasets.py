"""load_dataset: the lookup order, checksums, shape checks, the split, and the error messages.

The real-MNIST tests read the shared files through NNSCRATCH_DATA_DIR (skipped when absent,
failed when NNSCRATCH_REQUIRE_DATA=1). The other tests register a tiny synthetic dataset so
that they run in milliseconds and never touch the network or the real cache.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from conftest import _require_data
from helpers import encode_idx, one_line
from nnscratch.data import (
    DATASETS,
    ChecksumError,
    Dataset,
    DatasetNotFoundError,
    DimensionError,
    DownloadError,
    FileSpec,
    UnknownDatasetError,
    load_dataset,
    read_idx,
)
from nnscratch.data.datasets import DatasetSpec, cache_dir
from nnscratch.errors import DataError, UsageError

MNIST_FILES = [f.filename for f in DATASETS["mnist"].files]
pytestmark = pytest.mark.usefixtures("isolated_env")  # conftest.py: no test sees the real cache


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_data() -> Path:
    """The folder holding mnist/ (from NNSCRATCH_DATA_DIR, read before any monkeypatching)."""
    base = os.environ.get("NNSCRATCH_DATA_DIR", "")
    if not base or not all((Path(base) / "mnist" / name).is_file() for name in MNIST_FILES):
        msg = "real MNIST needed: set NNSCRATCH_DATA_DIR to the folder that holds mnist/"
        if _require_data():
            pytest.fail(msg + " (NNSCRATCH_REQUIRE_DATA=1)")
        pytest.skip(msg)
    return Path(base)


def dead_mirror() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# --- a tiny synthetic dataset ------------------------------------------------------------------

TINY_SHAPE = (4, 5)


def tiny_arrays(n_train: int = 30, n_test: int = 8, n_classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "train_images": rng.integers(0, 256, size=(n_train, *TINY_SHAPE), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % n_classes).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, *TINY_SHAPE), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % n_classes).astype(np.uint8),
    }


def write_tiny(folder: Path, arrays: dict[str, np.ndarray] | None = None, *, gz: bool = True,
               mirrors: tuple[str, ...] = ()) -> DatasetSpec:
    """Write the four files into ``folder`` and return a spec whose checksums match them."""
    arrays = arrays if arrays is not None else tiny_arrays()
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for role, array in arrays.items():
        raw = encode_idx(array)
        name = f"{role.replace('_', '-')}-idx{array.ndim}-ubyte.gz"
        (folder / (name if gz else name.removesuffix(".gz"))).write_bytes(
            gzip.compress(raw) if gz else raw
        )
        files[role] = FileSpec(name, hashlib.sha256(raw).hexdigest())
    return DatasetSpec(name="tiny", class_names=("a", "b", "c"), image_shape=TINY_SHAPE,
                       mirrors=mirrors, val_size=10, **files)


@pytest.fixture
def register(monkeypatch):
    """register(spec) makes ``spec`` loadable as load_dataset("tiny")."""
    return lambda spec: monkeypatch.setitem(DATASETS, spec.name, spec)


# --- real MNIST --------------------------------------------------------------------------------


def test_mnist_split_sizes_and_types(mnist):
    assert isinstance(mnist, Dataset)
    assert mnist.name == "mnist"
    assert mnist.class_names == tuple("0123456789") and mnist.num_classes == 10
    assert mnist.image_shape == (28, 28, 1) and mnist.title == "MNIST"
    expected = {"train": 50_000, "val": 10_000, "test": 10_000}
    for split, n in expected.items():
        images, labels = getattr(mnist, f"{split}_images"), getattr(mnist, f"{split}_labels")
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert labels.min() == 0 and labels.max() == 9
        assert not images.flags.writeable and not labels.flags.writeable
    assert Path(mnist.source).name == "mnist"


def test_mnist_validation_is_last_10000_of_training_file(mnist):
    folder = Path(mnist.source)
    all_images = read_idx(folder / "train-images-idx3-ubyte.gz")
    all_labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    assert all_images.shape == (60_000, 28, 28)
    np.testing.assert_array_equal(mnist.val_images[..., 0], all_images[-10_000:])
    np.testing.assert_array_equal(mnist.val_labels, all_labels[-10_000:])
    np.testing.assert_array_equal(mnist.train_images[..., 0], all_images[:50_000])
    np.testing.assert_array_equal(mnist.train_labels, all_labels[:50_000])
    np.testing.assert_array_equal(mnist.test_labels, read_idx(folder / "t10k-labels-idx1-ubyte.gz"))
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_registry_checksums_match_shared_sums(shared_data):
    """The hard-coded SHA-256 values are those of SHA256SUMS.uncompressed in the shared folders."""
    checked = 0
    for name, spec in DATASETS.items():
        if not isinstance(spec, DatasetSpec):
            continue  # CIFAR-10 is not in the shared folder
        sums_file = shared_data / name / "SHA256SUMS.uncompressed"
        if not sums_file.is_file():
            assert name != "mnist", f"{sums_file} missing"
            _missing_fashion(f"{sums_file} missing")  # fails when NNSCRATCH_REQUIRE_DATA=1, as MNIST's does
            continue
        sums = dict(reversed(line.split()) for line in sums_file.read_text().splitlines() if line)
        for f in spec.files:
            assert sums[f.filename.removesuffix(".gz")] == f.sha256, (name, f.filename)
            checked += 1
    assert checked >= 4


@pytest.fixture(scope="module")
def fashion():
    """Fashion-MNIST from $NNSCRATCH_DATA_DIR (skipped when absent, failed when required)."""
    base = os.environ.get("NNSCRATCH_DATA_DIR", "")
    msg = "real Fashion-MNIST needed: set NNSCRATCH_DATA_DIR to the folder that holds fashion-mnist/"
    if not base:
        if _require_data():
            pytest.fail(msg + " (NNSCRATCH_REQUIRE_DATA=1)")
        pytest.skip(msg)
    try:
        return load_dataset("fashion-mnist", base, download=False, progress=False)
    except DataError as exc:
        if _require_data():
            pytest.fail(f"{msg} (NNSCRATCH_REQUIRE_DATA=1): {exc}")
        pytest.skip(str(exc))


def test_fashion_mnist_real(fashion):
    assert fashion.name == "fashion-mnist" and fashion.title == "Fashion-MNIST"
    assert fashion.class_names == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                   "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert fashion.image_shape == (28, 28, 1)
    for split, n in {"train": 50_000, "val": 10_000, "test": 10_000}.items():
        images, labels = getattr(fashion, f"{split}_images"), getattr(fashion, f"{split}_labels")
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        assert labels.dtype == np.int64 and set(np.unique(labels).tolist()) == set(range(10))
    folder = Path(fashion.source)
    assert folder.name == "fashion-mnist"
    all_labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(fashion.val_labels, all_labels[-10_000:])
    np.testing.assert_array_equal(fashion.test_images[..., 0],
                                  read_idx(folder / "t10k-images-idx3-ubyte.gz"))


def test_real_mnist_with_a_smaller_validation_set(mnist):
    ds = load_dataset("mnist", mnist.source, download=False, progress=False, val_size=5_000)
    assert (len(ds.train_labels), len(ds.val_labels), len(ds.test_labels)) == (55_000, 5_000, 10_000)
    np.testing.assert_array_equal(ds.val_images, mnist.val_images[-5_000:])
    np.testing.assert_array_equal(ds.train_images[:50_000], mnist.train_images)


def test_real_mnist_greyscale_to_rgb_and_resized(mnist):
    ds = load_dataset("mnist", mnist.source, download=False, progress=False, color="rgb",
                      image_size=(14, 14))
    assert ds.image_shape == (14, 14, 3) and ds.test_images.shape == (10_000, 14, 14, 3)
    assert (ds.test_images[..., 0] == ds.test_images[..., 2]).all()


def link_fashion(shared_data: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in DATASETS["fashion-mnist"].files:
        (folder / f.filename).symlink_to(shared_data / "fashion-mnist" / f.filename)
    return folder


def _missing_fashion(msg: str) -> None:
    """Fashion-MNIST's files are not in the shared data: a failure when the data is required
    (NNSCRATCH_REQUIRE_DATA=1, as for MNIST), else a skip (or, inside a loop, nothing)."""
    if _require_data():
        pytest.fail(msg + " (NNSCRATCH_REQUIRE_DATA=1)")


def test_fashion_system_folder_comes_after_the_cache(shared_data, tmp_path, monkeypatch):
    if not (shared_data / "fashion-mnist").is_dir():
        _missing_fashion("no fashion-mnist/ in the shared data")
        pytest.skip("no fashion-mnist/ in the shared data")
    system = link_fashion(shared_data, tmp_path / "usr-share-datasets" / "fashion-mnist")
    monkeypatch.setitem(DATASETS, "fashion-mnist",
                        dataclasses.replace(DATASETS["fashion-mnist"], system_dirs=(str(system),)))
    ds = load_dataset("fashion-mnist", download=False, progress=False)
    assert ds.source == str(system)
    cached = link_fashion(shared_data, tmp_path / "xdg-cache" / "nnscratch" / "fashion-mnist")
    assert load_dataset("fashion-mnist", download=False, progress=False).source == str(cached)


def test_fashion_looks_in_debians_folder():
    assert DATASETS["fashion-mnist"].system_dirs == ("/usr/share/datasets/fashion-mnist",)


def link_mnist(shared_data: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in MNIST_FILES:
        (folder / name).symlink_to(shared_data / "mnist" / name)
    return folder


def test_lookup_order_data_dir_then_env_then_cache(shared_data, tmp_path, monkeypatch):
    explicit = link_mnist(shared_data, tmp_path / "explicit")
    env_dir = tmp_path / "env"
    link_mnist(shared_data, env_dir / "mnist")
    cached = link_mnist(shared_data, tmp_path / "xdg-cache" / "nnscratch" / "mnist")
    assert cache_dir() / "mnist" == cached
    monkeypatch.setenv("NNSCRATCH_DATA_DIR", str(env_dir))

    def source(*args) -> str:
        return load_dataset("mnist", *args, download=False, progress=False).source

    assert source(explicit) == str(explicit)
    assert source(str(env_dir)) == str(env_dir / "mnist")  # DIR holding mnist/ also works
    assert source() == str(env_dir / "mnist")
    monkeypatch.delenv("NNSCRATCH_DATA_DIR")
    assert source() == str(cached)


def test_mnist_missing_with_unreachable_mirror(shared_data, tmp_path, monkeypatch):
    dead = dead_mirror()
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=(dead,)))
    monkeypatch.setenv("NNSCRATCH_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DownloadError) as exc_info:
        load_dataset("mnist", progress=False)
    message = one_line(exc_info)
    assert str(tmp_path / "empty" / "mnist") in message
    assert str(tmp_path / "xdg-cache" / "nnscratch" / "mnist") in message
    assert dead + "train-images-idx3-ubyte.gz" in message
    assert "--data-dir DIR" in message and "mnist/train-images-idx3-ubyte.gz" in message
    cache = tmp_path / "xdg-cache" / "nnscratch" / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


# --- lookup and errors with a tiny dataset -----------------------------------------------------


def test_tiny_split(tmp_path, register):
    register(write_tiny(tmp_path / "d"))
    arrays = tiny_arrays()
    ds = load_dataset("tiny", tmp_path / "d", download=False)
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train_images"][:20])
    np.testing.assert_array_equal(ds.val_images[..., 0], arrays["train_images"][20:])
    np.testing.assert_array_equal(ds.val_labels, arrays["train_labels"][20:])
    np.testing.assert_array_equal(ds.test_images[..., 0], arrays["test_images"])
    assert ds.image_shape == (*TINY_SHAPE, 1) and ds.class_names == ("a", "b", "c")
    assert ds.title == "tiny"  # no title given: the name


def test_tiny_val_size_takes_the_last_images(tmp_path, register):
    register(write_tiny(tmp_path / "d"))
    arrays = tiny_arrays()
    ds = load_dataset("tiny", tmp_path / "d", download=False, val_size=4, seed=7)
    np.testing.assert_array_equal(ds.val_images[..., 0], arrays["train_images"][26:])
    assert len(ds.train_labels) == 26 and "last 4" in ds.split_rule


@pytest.mark.parametrize("val_size", [0, -3, 30, 31, 2.5])
def test_bad_val_size_is_a_usage_error_naming_the_flag(tmp_path, register, val_size):
    register(write_tiny(tmp_path / "d"))
    with pytest.raises(UsageError) as exc_info:
        load_dataset("tiny", tmp_path / "d", download=False, val_size=val_size)
    assert "--val-size" in one_line(exc_info)


def test_uncompressed_files_are_accepted(tmp_path, register):
    register(write_tiny(tmp_path / "d", gz=False))
    ds = load_dataset("tiny", tmp_path / "d", download=False)
    assert ds.test_images.shape == (8, *TINY_SHAPE, 1)


def test_env_folder_without_files_falls_through_to_cache(tmp_path, register, monkeypatch):
    cache = tmp_path / "xdg-cache" / "nnscratch" / "tiny"
    register(write_tiny(cache))
    monkeypatch.setenv("NNSCRATCH_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_dataset("tiny", download=False).source == str(cache)


def test_explicit_data_dir_without_files_is_an_error(tmp_path, register, server):
    url, requests, root = server
    spec = write_tiny(root, mirrors=(url,))  # downloading would succeed...
    register(spec)
    write_tiny(tmp_path / "xdg-cache" / "nnscratch" / "tiny")  # ...and the cache has the files
    given = tmp_path / "given"
    (given / "tiny").mkdir(parents=True)
    (given / "tiny" / spec.train_images.filename).write_bytes(b"partial")
    with pytest.raises(DatasetNotFoundError) as exc_info:
        load_dataset("tiny", given, download=True)
    message = one_line(exc_info)
    assert f"{given} (no tiny files)" in message
    assert spec.train_labels.filename in message  # names what is missing in given/tiny
    assert "--data-dir" in message
    assert requests == []


def test_missing_everywhere_without_download(tmp_path, register, monkeypatch):
    register(write_tiny(tmp_path / "unused"))
    monkeypatch.setenv("NNSCRATCH_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DatasetNotFoundError) as exc_info:
        load_dataset("tiny", download=False)
    message = one_line(exc_info)
    assert isinstance(exc_info.value, DataError) and exc_info.value.exit_code == 2
    assert str(tmp_path / "data" / "tiny") in message
    assert str(tmp_path / "xdg-cache" / "nnscratch" / "tiny") in message
    assert "download is off" in message
    assert "--data-dir DIR" in message and "NNSCRATCH_DATA_DIR" in message


def test_missing_env_variable_is_reported(tmp_path, register):
    register(write_tiny(tmp_path / "unused"))
    expected = r"\$NNSCRATCH_DATA_DIR/tiny \(variable not set\)"
    with pytest.raises(DatasetNotFoundError, match=expected):
        load_dataset("tiny", download=False)


def test_download_into_cache(tmp_path, register, server):
    url, requests, root = server
    spec = write_tiny(root, mirrors=(dead_mirror(), url))
    register(spec)
    cache = tmp_path / "xdg-cache" / "nnscratch" / "tiny"
    cache.mkdir(parents=True)
    name = spec.train_images.filename
    (cache / name).write_bytes((root / name).read_bytes())
    ds = load_dataset("tiny", progress=False)
    assert ds.source == str(cache)
    assert sorted(requests) == sorted(f.filename for f in spec.files[1:])  # only what was missing
    assert sorted(p.name for p in cache.iterdir()) == sorted(f.filename for f in spec.files)
    np.testing.assert_array_equal(ds.test_images[..., 0], tiny_arrays()["test_images"])


def test_download_with_unreachable_mirror(tmp_path, register):
    register(write_tiny(tmp_path / "unused", mirrors=(dead_mirror(),)))
    with pytest.raises(DownloadError) as exc_info:
        load_dataset("tiny", progress=False)
    message = one_line(exc_info)
    assert "cannot connect" in message
    assert str(tmp_path / "xdg-cache" / "nnscratch" / "tiny") in message
    assert "NNSCRATCH_DATA_DIR" in message
    assert list((tmp_path / "xdg-cache" / "nnscratch" / "tiny").iterdir()) == []


def test_wrong_checksum(tmp_path, register):
    spec = write_tiny(tmp_path / "d")
    register(dataclasses.replace(spec, test_labels=FileSpec(spec.test_labels.filename, "ab" * 32)))
    with pytest.raises(ChecksumError) as exc_info:
        load_dataset("tiny", tmp_path / "d", download=False)
    message = one_line(exc_info)
    assert str(tmp_path / "d" / spec.test_labels.filename) in message
    assert "ab" * 32 in message and "download it again" in message


def test_checksum_of_another_dataset_is_named(tmp_path, register):
    spec = write_tiny(tmp_path / "d")
    register(dataclasses.replace(spec, name="other"))  # "other" owns these exact files
    register(dataclasses.replace(spec, test_images=FileSpec(spec.test_images.filename, "cd" * 32)))
    with pytest.raises(ChecksumError) as exc_info:
        load_dataset("tiny", tmp_path / "d", download=False)
    message = one_line(exc_info)
    assert f"(that is other's {spec.test_images.filename})" in message
    assert "point --data-dir or NNSCRATCH_DATA_DIR at the tiny files" in message


@pytest.mark.parametrize(
    "change, expected",
    [
        (dict(train_images=np.zeros((30, 5, 4), np.uint8)), "of shape N x 4 x 5"),
        (dict(test_images=np.zeros((8, 20), np.uint8)), "holds 8 x 20 uint8 values"),
        (dict(test_images=np.zeros((8, 4, 5), np.float32)), "float32"),
        (dict(train_labels=np.zeros(29, np.uint8)), "holds 29 labels for 30 images"),
        (dict(test_labels=np.zeros((8, 1), np.uint8)), "expected a 1-D uint8 array"),
        (dict(test_labels=np.full(8, 3, np.uint8)), "label 3 is out of range for 3 classes"),
    ],
    ids=["image-shape", "image-ndim", "image-dtype", "label-count", "label-ndim", "label-range"],
)
def test_shape_checks(tmp_path, register, change, expected):
    register(write_tiny(tmp_path / "d", {**tiny_arrays(), **change}))
    with pytest.raises(DimensionError) as exc_info:
        load_dataset("tiny", tmp_path / "d", download=False)
    message = one_line(exc_info)
    assert expected in message
    assert str(tmp_path / "d") in message


def test_unknown_dataset_name():
    with pytest.raises(UnknownDatasetError) as exc_info:
        load_dataset("cifar100", download=False)
    assert isinstance(exc_info.value, DataError) and isinstance(exc_info.value, UsageError)
    assert one_line(exc_info) == (
        "unknown dataset 'cifar100'; choose one of: mnist, fashion-mnist, cifar10, "
        "folder:PATH, csv:PATH, npz:PATH"
    )


@pytest.mark.parametrize("name", ["folder:", "csv:", "npz:"])
def test_custom_kind_without_path(name):
    with pytest.raises(UsageError, match="give a path after"):
        load_dataset(name)


def test_csv_options_are_refused_for_other_datasets(tmp_path, register):
    register(write_tiny(tmp_path / "d"))
    with pytest.raises(UsageError, match="--label-column applies to csv:PATH"):
        load_dataset("tiny", tmp_path / "d", download=False, label_column=0)
    with pytest.raises(UsageError, match="--image-shape applies to csv:PATH"):
        load_dataset("tiny", tmp_path / "d", download=False, image_shape=(4, 5))


@pytest.mark.parametrize("kwargs, flag", [
    (dict(image_size=(0, 4)), "--image-size"), (dict(image_size="4by5"), "--image-size"),
    (dict(color="sepia"), "--grayscale"), (dict(seed=-1), "--seed"),
])
def test_bad_options_are_usage_errors(tmp_path, register, kwargs, flag):
    register(write_tiny(tmp_path / "d"))
    with pytest.raises(UsageError) as exc_info:
        load_dataset("tiny", tmp_path / "d", download=False, **kwargs)
    assert flag in one_line(exc_info)


def test_no_verify_skips_checksums_with_a_warning(tmp_path, register, capsys):
    spec = write_tiny(tmp_path / "d")
    register(dataclasses.replace(spec, test_labels=FileSpec(spec.test_labels.filename, "ab" * 32)))
    ds = load_dataset("tiny", tmp_path / "d", download=False, verify=False)
    assert len(ds.test_labels) == 8
    err = capsys.readouterr().err
    assert "warning: --no-verify" in err and str(tmp_path / "d") in err


def test_cache_dir_follows_xdg(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "xdg-cache" / "nnscratch"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "nnscratch"

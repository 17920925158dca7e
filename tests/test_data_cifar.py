"""CIFAR-10 (binary version): a generated archive in exactly the real format, through the real code.

Each archive holds ``cifar-10-batches-bin/data_batch_1..5.bin`` and ``test_batch.bin`` of 20
records each (1 label byte + 3,072 channel-planar pixel bytes) and ``batches.meta.txt``. The
tests load it with ``verify=False`` (its checksums are not the real ones), or with a registry
entry whose checksums are those of the generated files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

import nnscratch.data.cifar as cifar
from helpers import one_line
from nnscratch.data import (DATASETS, ChecksumError, DatasetNotFoundError, UnsafeArchiveError,
                            describe_datasets, format_datasets_table, load_dataset)
from nnscratch.data.cifar import CIFAR10, parse_batch
from nnscratch.data.common import FileSpec
from nnscratch.errors import DataError

PER_BATCH = 20
FOLDER = "cifar-10-batches-bin"
NAMES = CIFAR10.class_names


pytestmark = pytest.mark.usefixtures("isolated_env")  # conftest.py: no test sees the real cache


def make_batches(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """file name -> (images (N, 32, 32, 3) in HWC order, labels): what the loader must return."""
    rng = np.random.default_rng(seed)
    batches = {}
    for k, f in enumerate(CIFAR10.files):
        labels = ((np.arange(PER_BATCH) + k) % 10).astype(np.uint8)
        batches[f.filename] = (rng.integers(0, 256, (PER_BATCH, 32, 32, 3), dtype=np.uint8), labels)
    return batches


def encode_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The real record layout: label byte, then the R, G and B planes of 32 x 32 pixels."""
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # channel-planar
    return np.concatenate([labels[:, None], planes], axis=1).astype(np.uint8).tobytes()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_archive(path: Path, batches, *, extra=(), meta: str | None = "\n".join(NAMES) + "\n\n",
                  skip: tuple[str, ...] = ()) -> Path:
    """Write a cifar-10-binary.tar.gz; ``extra`` holds additional TarInfo members (no data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo(FOLDER)
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, (images, labels) in batches.items():
            if name not in skip:
                add_bytes(tar, f"{FOLDER}/{name}", encode_batch(images, labels))
        if meta is not None:
            add_bytes(tar, f"{FOLDER}/batches.meta.txt", meta.encode())
        add_bytes(tar, f"{FOLDER}/readme.html", b"<html></html>")
        for member in extra:
            if member.isfile():
                tar.addfile(member, io.BytesIO(b"x" * member.size))
            else:
                tar.addfile(member)
    return path


def write_folder(folder: Path, batches) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        (folder / name).write_bytes(encode_batch(images, labels))
    (folder / "batches.meta.txt").write_text("\n".join(NAMES) + "\n")
    return folder


def expected(batches):
    train = [batches[f.filename] for f in CIFAR10.train_files]
    images = np.concatenate([b[0] for b in train])
    labels = np.concatenate([b[1] for b in train])
    return images, labels, batches["test_batch.bin"]


def matching_spec(batches, archive: Path | None = None, **changes):
    """CIFAR10 with the checksums of the generated files (so that verify=True passes)."""
    files = {name: FileSpec(name, hashlib.sha256(encode_batch(*b)).hexdigest())
             for name, b in batches.items()}
    arc = CIFAR10.archive
    if archive is not None:
        arc = FileSpec(arc.filename, hashlib.sha256(archive.read_bytes()).hexdigest())
    return dataclasses.replace(CIFAR10, archive=arc, test_file=files["test_batch.bin"],
                               train_files=tuple(files[f.filename] for f in CIFAR10.train_files),
                               **changes)


# --- the record format -------------------------------------------------------------------------


def test_parse_batch_turns_planar_records_into_hwc_images():
    record = np.zeros(3073, np.uint8)
    record[0] = 7
    record[1 + 0 * 1024 + 2 * 32 + 5] = 11  # red,   row 2, column 5
    record[1 + 1 * 1024 + 2 * 32 + 5] = 22  # green, row 2, column 5
    record[1 + 2 * 1024 + 31 * 32 + 0] = 33  # blue,  row 31, column 0
    images, labels = parse_batch(record.tobytes())
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8 and labels.tolist() == [7]
    assert images[0, 2, 5].tolist() == [11, 22, 0]
    assert images[0, 31, 0].tolist() == [0, 0, 33]
    assert int(images.sum()) == 66


@pytest.mark.parametrize("data, expected", [
    (b"", "file is empty"),
    (bytes(3073 + 100), "not a whole number of 3,073-byte records"),
    (bytes([10]) + bytes(3072), "label 10"),
])
def test_parse_batch_errors(data, expected):
    with pytest.raises(DataError) as exc_info:
        parse_batch(data, "/x/data_batch_1.bin")
    message = one_line(exc_info)
    assert expected in message and "/x/data_batch_1.bin" in message


# --- loading from an archive, a folder, a download ----------------------------------------------


def test_archive_loads_with_no_verify(tmp_path, capsys):
    batches = make_batches()
    archive = write_archive(tmp_path / "d" / "cifar-10-binary.tar.gz", batches)
    ds = load_dataset("cifar10", tmp_path / "d", verify=False, progress=False)
    train_images, train_labels, (test_images, test_labels) = expected(batches)
    assert ds.title == "CIFAR-10" and ds.image_shape == (32, 32, 3) and ds.class_names == NAMES
    # 100 training records: the default validation set is a sixth of them, the last ones
    assert (len(ds.train_labels), len(ds.val_labels), len(ds.test_labels)) == (84, 16, 20)
    np.testing.assert_array_equal(ds.train_images, train_images[:84])
    np.testing.assert_array_equal(ds.val_images, train_images[84:])
    np.testing.assert_array_equal(ds.val_labels, train_labels[84:])
    np.testing.assert_array_equal(ds.test_images, test_images)
    np.testing.assert_array_equal(ds.test_labels, test_labels)
    assert not ds.train_images.flags.writeable
    assert ds.source == str(tmp_path / "d")
    err = capsys.readouterr().err
    assert "warning: --no-verify" in err and str(archive) in err
    # an archive outside the cache is extracted into a temporary folder, which is gone
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["cifar-10-binary.tar.gz"]


def test_val_size_takes_the_last_training_records(tmp_path):
    batches = make_batches()
    write_archive(tmp_path / "d" / "cifar10" / "cifar-10-binary.tar.gz", batches)
    ds = load_dataset("cifar10", tmp_path / "d", verify=False, val_size=20)
    np.testing.assert_array_equal(ds.val_images, batches["data_batch_5.bin"][0])


def test_extracted_folder_and_bare_batch_files(tmp_path):
    batches = make_batches(1)
    write_folder(tmp_path / "a" / FOLDER, batches)
    write_folder(tmp_path / "b", batches)
    for root in (tmp_path / "a", tmp_path / "b"):
        ds = load_dataset("cifar10", root, verify=False)
        np.testing.assert_array_equal(ds.test_images, batches["test_batch.bin"][0])


def test_verify_checks_the_real_checksums(tmp_path):
    write_archive(tmp_path / "d" / "cifar-10-binary.tar.gz", make_batches())
    with pytest.raises(ChecksumError) as exc_info:
        load_dataset("cifar10", tmp_path / "d")
    message = one_line(exc_info)
    assert str(tmp_path / "d" / "cifar-10-binary.tar.gz") in message
    assert CIFAR10.archive.sha256 in message and "--no-verify" in message
    write_folder(tmp_path / "e", make_batches())
    with pytest.raises(ChecksumError) as exc_info:
        load_dataset("cifar10", tmp_path / "e")
    assert str(tmp_path / "e" / "data_batch_1.bin") in one_line(exc_info)


def test_matching_checksums_pass_verification(tmp_path, monkeypatch):
    batches = make_batches()
    archive = write_archive(tmp_path / "d" / "cifar-10-binary.tar.gz", batches)
    monkeypatch.setitem(DATASETS, "cifar10", matching_spec(batches, archive))
    ds = load_dataset("cifar10", tmp_path / "d")
    np.testing.assert_array_equal(ds.train_images[:20], batches["data_batch_1.bin"][0])


def test_meta_file_must_name_ten_classes(tmp_path):
    write_archive(tmp_path / "d" / "cifar-10-binary.tar.gz", make_batches(), meta="cat\ndog\n")
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path / "d", verify=False)
    assert "batches.meta.txt: lists 2 class names" in one_line(exc_info)


def test_missing_meta_file_uses_the_known_names(tmp_path):
    write_archive(tmp_path / "d" / "cifar-10-binary.tar.gz", make_batches(), meta=None)
    assert load_dataset("cifar10", tmp_path / "d", verify=False).class_names == NAMES


def test_archive_without_a_batch(tmp_path):
    archive = write_archive(tmp_path / "d" / "cifar-10-binary.tar.gz", make_batches(),
                            skip=("data_batch_3.bin",))
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path / "d", verify=False)
    message = one_line(exc_info)
    assert str(archive) in message and f"lacks {FOLDER}/data_batch_3.bin" in message


def test_truncated_batch_file(tmp_path):
    folder = write_folder(tmp_path / "d", make_batches())
    data = (folder / "data_batch_2.bin").read_bytes()
    (folder / "data_batch_2.bin").write_bytes(data[:-10])
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path / "d", verify=False)
    message = one_line(exc_info)
    assert str(folder / "data_batch_2.bin") in message and "3,073-byte records" in message


def test_corrupt_archive(tmp_path):
    archive = tmp_path / "d" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"\x1f\x8b" + bytes(100))
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", tmp_path / "d", verify=False)
    message = one_line(exc_info)
    assert str(archive) in message and "not a readable tar archive" in message


def test_data_dir_without_cifar(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DatasetNotFoundError) as exc_info:
        load_dataset("cifar10", tmp_path / "d")
    message = one_line(exc_info)
    assert f"{tmp_path / 'd'} (no cifar10 files)" in message
    assert "cifar-10-binary.tar.gz" in message and "--data-dir" in message


# --- unsafe archives ---------------------------------------------------------------------------


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size
    return info


@pytest.mark.parametrize("bad, reason", [
    (member("cifar-10-batches-bin/../../evil.txt", size=4), "path traversal"),
    (member("/tmp/nnscratch-evil.txt", size=4), "absolute path"),
    (member("cifar-10-batches-bin/link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
    (member("cifar-10-batches-bin/hard", tarfile.LNKTYPE, "cifar-10-batches-bin/readme.html"),
     "hard link"),
    (member("cifar-10-batches-bin/dev", tarfile.CHRTYPE), "device file"),
    (member("cifar-10-batches-bin/fifo", tarfile.FIFOTYPE), "FIFO"),
], ids=["traversal", "absolute", "symlink", "hardlink", "device", "fifo"])
def test_unsafe_members_are_refused(tmp_path, bad, reason):
    archive = write_archive(tmp_path / "a" / "b" / "cifar-10-binary.tar.gz", make_batches(),
                            extra=(bad,))
    with pytest.raises(UnsafeArchiveError) as exc_info:
        load_dataset("cifar10", tmp_path / "a" / "b", verify=False)
    message = one_line(exc_info)
    assert isinstance(exc_info.value, DataError) and exc_info.value.exit_code == 2
    assert str(archive) in message and repr(bad.name) in message and reason in message
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "a" / "evil.txt").exists()
    assert not Path("/tmp/nnscratch-evil.txt").exists()


def test_symlinked_batch_is_refused_even_when_it_is_a_wanted_name(tmp_path):
    batches = make_batches()
    link = member(f"{FOLDER}/test_batch.bin", tarfile.SYMTYPE, "/etc/passwd")
    write_archive(tmp_path / "d" / "cifar-10-binary.tar.gz", batches, extra=(link,),
                  skip=("test_batch.bin",))
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        load_dataset("cifar10", tmp_path / "d", verify=False)


# --- download into the cache ---------------------------------------------------------------------


def test_download_verify_extract_into_cache_then_reuse(tmp_path, server, monkeypatch):
    url, requests, root = server
    batches = make_batches(3)
    archive = write_archive(root / "cifar-10-binary.tar.gz", batches)
    monkeypatch.setitem(DATASETS, "cifar10", matching_spec(batches, archive, mirrors=(url,)))
    ds = load_dataset("cifar10", progress=False)
    cache = tmp_path / "xdg-cache" / "nnscratch" / "cifar10"
    assert requests == ["cifar-10-binary.tar.gz"] and ds.source == str(cache)
    assert (cache / "cifar-10-binary.tar.gz").read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in (cache / FOLDER).iterdir()) == sorted(
        [f.filename for f in CIFAR10.files] + ["batches.meta.txt"])
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary left

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again")

    monkeypatch.setattr(cifar, "safe_extract", no_extraction)
    again = load_dataset("cifar10", progress=False)
    np.testing.assert_array_equal(again.train_images, ds.train_images)
    assert requests == ["cifar-10-binary.tar.gz"]


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, server, monkeypatch):
    url, requests, root = server
    write_archive(root / "cifar-10-binary.tar.gz", make_batches())
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(CIFAR10, mirrors=(url,)))
    with pytest.raises(DataError) as exc_info:
        load_dataset("cifar10", progress=False)
    message = one_line(exc_info)
    assert "SHA-256 of the file is" in message and "--data-dir" in message
    cache = tmp_path / "xdg-cache" / "nnscratch" / "cifar10"
    assert not cache.exists() or list(cache.iterdir()) == []


# --- statistics and the datasets table ---------------------------------------------------------------


def test_standardisation_statistics_come_from_the_training_split_only(tmp_path):
    from nnscratch.data import channel_stats

    batches = make_batches()
    write_archive(tmp_path / "a" / "cifar-10-binary.tar.gz", batches)
    changed = dict(batches)
    last = batches["data_batch_5.bin"]  # its records are the validation set (val_size=20)
    changed["data_batch_5.bin"] = (255 - last[0], last[1])
    changed["test_batch.bin"] = (np.zeros_like(batches["test_batch.bin"][0]),
                                 batches["test_batch.bin"][1])
    write_archive(tmp_path / "b" / "cifar-10-binary.tar.gz", changed)
    changed_train = dict(batches)
    changed_train["data_batch_1.bin"] = (255 - batches["data_batch_1.bin"][0],
                                         batches["data_batch_1.bin"][1])
    write_archive(tmp_path / "c" / "cifar-10-binary.tar.gz", changed_train)
    a, b, c = (load_dataset("cifar10", tmp_path / k, verify=False, val_size=20) for k in "abc")
    stats_a, stats_b, stats_c = (channel_stats(d.train_images) for d in (a, b, c))
    assert stats_a.mean.shape == (3,)
    np.testing.assert_array_equal(stats_a.mean, stats_b.mean)
    np.testing.assert_array_equal(stats_a.std, stats_b.std)
    assert not np.allclose(stats_a.mean, stats_c.mean)


def test_describe_datasets(tmp_path):
    rows = {r["name"]: r for r in describe_datasets()}
    assert set(rows) == {"mnist", "fashion-mnist", "cifar10"}
    cifar_row = rows["cifar10"]
    assert not cifar_row["found"] and cifar_row["image_shape"] == (32, 32, 3)
    assert (cifar_row["train"], cifar_row["val"], cifar_row["test"]) == (40_000, 10_000, 10_000)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in cifar_row["location"]
    assert (rows["mnist"]["train"], rows["mnist"]["val"]) == (50_000, 10_000)
    write_archive(tmp_path / "d" / "cifar10" / "cifar-10-binary.tar.gz", make_batches())
    rows = {r["name"]: r for r in describe_datasets(tmp_path / "d")}
    assert rows["cifar10"]["found"] and rows["cifar10"]["location"] == str(tmp_path / "d" / "cifar10")
    assert not rows["mnist"]["found"] and "not in --data-dir" in rows["mnist"]["location"]
    table = format_datasets_table(list(rows.values()))
    assert "CIFAR-10" in table and "32x32x3" in table and "40,000 / 10,000 / 10,000" in table
    assert "folder:PATH" in table

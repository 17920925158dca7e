"""CIFAR-10, binary version: our own reader for its fixed-size records, never the pickle version.

``cifar-10-binary.tar.gz`` (170,052,171 bytes) holds the folder ``cifar-10-batches-bin/`` with
``data_batch_1.bin`` .. ``data_batch_5.bin`` (10,000 training images each), ``test_batch.bin``
(10,000 test images) and ``batches.meta.txt`` (the ten class names, one a line). Each batch is a
plain sequence of 3,073-byte records::

    offset  size    content
    0       1       label, 0..9
    1       1024    red plane, 32 rows of 32 pixels, row-major
    1025    1024    green plane
    2049    1024    blue plane

so a record's pixels are channel-planar ``(3, 32, 32)``; :func:`parse_batch` turns them into
the ``(32, 32, 3)`` layout every other dataset uses.

**Checksums.** The archive's SHA-256 ``c4a38c50...a1dd`` (its MD5, the one the CIFAR page
publishes, is ``c32a1d4ab5d03f1284b67883e8d87530``) and each extracted batch's SHA-256 are
checked wherever the files are found, unless ``verify=False`` (``--no-verify``), which prints a
warning. A folder may hold the archive, the extracted ``cifar-10-batches-bin/`` folder, or the
batch files themselves. An archive found in the user cache (where downloads go) is extracted
there once, safely (:func:`nnscratch.data.archive.safe_extract`); one found elsewhere is
extracted into a temporary folder that is removed after reading.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnscratch.data.archive import safe_extract
from nnscratch.data.common import FileSpec, Parts, warn
from nnscratch.data.download import fetch
from nnscratch.data.idx import verify_sha256
from nnscratch.errors import DataError

__all__ = ["CIFAR10", "CifarSpec", "parse_batch", "read_batch"]

RECORD_BYTES = 1 + 3 * 32 * 32
#: What an extracted member of the archive may declare: a batch is 10,000 records, the class
#: names a few dozen bytes (the real file has 61).
BATCH_BYTES = 10_000 * RECORD_BYTES
META_MAX_BYTES = 4096
#: All the archive's members together: the six batches, the class names and a little more (the
#: real archive also holds a readme.html of 88 bytes).
ARCHIVE_MAX_BYTES = 6 * BATCH_BYTES + (1 << 20)
_REDOWNLOAD = "delete it and download it again"


@dataclass(frozen=True)
class CifarSpec:
    """Everything needed to find, download, verify and read CIFAR-10 (binary version)."""

    name: str = "cifar10"
    title: str = "CIFAR-10"
    class_names: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                    "frog", "horse", "ship", "truck")
    archive: FileSpec = FileSpec(
        "cifar-10-binary.tar.gz", "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd")
    archive_md5: str = "c32a1d4ab5d03f1284b67883e8d87530"
    folder: str = "cifar-10-batches-bin"
    train_files: tuple[FileSpec, ...] = (
        FileSpec("data_batch_1.bin", "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
        FileSpec("data_batch_2.bin", "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
        FileSpec("data_batch_3.bin", "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
        FileSpec("data_batch_4.bin", "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
        FileSpec("data_batch_5.bin", "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
    )
    test_file: FileSpec = FileSpec(
        "test_batch.bin", "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b")
    meta_file: str = "batches.meta.txt"
    mirrors: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)
    system_dirs: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = (32, 32, 3)
    sizes: tuple[int, int] = (50_000, 10_000)
    val_size: int = 10_000

    @property
    def files(self) -> tuple[FileSpec, ...]:
        """The six batch files, training first."""
        return (*self.train_files, self.test_file)

    @property
    def display_name(self) -> str:
        return self.title

    @property
    def hint_files(self) -> str:
        return f"{self.name}/{self.archive.filename} or {self.name}/{self.folder}/"

    @property
    def download_url(self) -> str:
        return self.mirrors[0].rstrip("/") + "/" + self.archive.filename if self.mirrors else ""

    # --- finding ------------------------------------------------------------------------------

    def _batches_dir(self, folder: Path) -> Path | None:
        for candidate in (folder, folder / self.folder):
            if all((candidate / f.filename).is_file() for f in self.files):
                return candidate
        return None

    def missing(self, folder: Path) -> list[str]:
        """What ``folder`` lacks (empty when it holds the batches or the archive)."""
        if self._batches_dir(folder) or (folder / self.archive.filename).is_file():
            return []
        for candidate in (folder / self.folder, folder):
            present = [f for f in self.files if (candidate / f.filename).is_file()]
            if present:
                return [f.filename for f in self.files if f not in present]
        return [self.archive.filename]

    def describe_missing(self, folder: Path) -> str:
        """Why ``folder`` does not hold the dataset, e.g. ``"/x/cifar10 (no such folder)"``."""
        if not folder.is_dir():
            return f"{folder} (no such folder)"
        missing = self.missing(folder)
        if missing == [self.archive.filename]:
            return f"{folder} (no {self.name} files)"
        return f"{folder} (missing {', '.join(missing)})"

    def download_missing(self, cache: Path, progress: bool) -> list[str]:
        """Download the archive into ``cache`` (raises DownloadError); return what was fetched."""
        fetch(self.archive.filename, self.archive.sha256, cache, self.mirrors, progress,
              digest_of="file")
        return [self.archive.filename]

    # --- reading ------------------------------------------------------------------------------

    def read(self, folder: Path, *, verify: bool, progress: bool = False,
             in_cache: bool = False) -> Parts:
        """Read (and check) the batches in ``folder``, extracting the archive first if needed."""
        batches = self._batches_dir(folder)
        if batches is not None:
            if not verify:
                warn(f"--no-verify: not checking the SHA-256 of the {self.title} files in "
                     f"{batches}; results may not be comparable with the real {self.title}")
            return self._read_batches(batches, verify)
        archive = folder / self.archive.filename
        if verify:
            self._verify_archive(archive)
        else:
            warn(f"--no-verify: not checking the SHA-256 of {archive}; results may not be "
                 f"comparable with the real {self.title}")
        if in_cache:
            return self._read_batches(self._extract_into(archive, folder), verify)
        with tempfile.TemporaryDirectory(prefix="nnscratch-cifar10-") as tmp:
            return self._read_batches(self._extract(archive, Path(tmp)), verify)

    def _verify_archive(self, archive: Path) -> None:
        verify_sha256(archive, self.archive.sha256, str(archive), of="the file",
                      advice=f"(corrupt or a different file); {_REDOWNLOAD} from {self.download_url}, "
                             f"or pass --no-verify for a copy you re-packed yourself")

    def _extract(self, archive: Path, dest: Path) -> Path:
        wanted = {f"{self.folder}/{f.filename}" for f in self.files}
        meta = f"{self.folder}/{self.meta_file}"
        safe_extract(archive, dest, wanted, f"{_REDOWNLOAD} from {self.download_url}", optional={meta},
                     max_bytes={**dict.fromkeys(wanted, BATCH_BYTES), meta: META_MAX_BYTES},
                     max_total=ARCHIVE_MAX_BYTES)
        return dest / self.folder

    def _extract_into(self, archive: Path, folder: Path) -> Path:
        """Extract once into ``folder/cifar-10-batches-bin`` via a temporary sibling folder."""
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=folder))
        try:
            extracted = self._extract(archive, tmp)
            final = folder / self.folder
            if final.exists():  # an incomplete earlier extraction: replace it
                shutil.rmtree(final)
            extracted.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def _read_batches(self, batches: Path, verify: bool) -> Parts:
        train = [read_batch(batches / f.filename, f.sha256 if verify else None)
                 for f in self.train_files]
        test_images, test_labels = read_batch(batches / self.test_file.filename,
                                              self.test_file.sha256 if verify else None)
        return Parts(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                     test_images, test_labels, self._class_names(batches, verify))

    def _class_names(self, batches: Path, verify: bool) -> tuple[str, ...]:
        """The names in batches.meta.txt (when present), which must be the ten known ones."""
        meta = batches / self.meta_file
        if not meta.is_file():
            return self.class_names
        try:
            if meta.stat().st_size > META_MAX_BYTES:
                raise DataError(f"{meta}: {meta.stat().st_size:,} bytes, more than the class names can take "
                                f"({META_MAX_BYTES:,}); {_REDOWNLOAD}")
            names = tuple(line.strip() for line in meta.read_text("utf-8").splitlines()
                          if line.strip())
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{meta}: cannot read the class names ({exc}); {_REDOWNLOAD}") from exc
        if len(names) != len(self.class_names) or (verify and names != self.class_names):
            raise DataError(
                f"{meta}: lists {len(names)} class names ({', '.join(names[:12])}), expected the "
                f"10 CIFAR-10 classes ({', '.join(self.class_names)}); {_REDOWNLOAD}"
            )
        return names


def parse_batch(data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, np.ndarray]:
    """Records of a CIFAR-10 binary batch -> (uint8 images ``(N, 32, 32, 3)``, uint8 labels ``(N,)``).

    Raises
    ------
    DataError
        Empty, not a whole number of 3,073-byte records, or a label above 9.
    """
    if not data:
        raise DataError(f"{source}: file is empty (0 bytes); {_REDOWNLOAD}")
    if len(data) % RECORD_BYTES:
        raise DataError(
            f"{source}: {len(data):,} bytes is not a whole number of {RECORD_BYTES:,}-byte records "
            f"(1 label byte + 3,072 pixel bytes): truncated, or not a CIFAR-10 binary batch; "
            f"{_REDOWNLOAD}"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    if int(labels.max()) > 9:
        raise DataError(f"{source}: label {int(labels.max())} in a CIFAR-10 batch (labels are "
                        f"0..9): not a CIFAR-10 binary batch; {_REDOWNLOAD}")
    planes = records[:, 1:].reshape(-1, 3, 32, 32)  # channel-planar R, G, B
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels


def read_batch(path: Path, sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file, checking the SHA-256 of its bytes when ``sha256`` is given; a file larger
    than a batch (:data:`BATCH_BYTES`) is refused before it is read."""
    try:
        size = Path(path).stat().st_size
        if size > BATCH_BYTES:
            raise DataError(f"{path}: {size:,} bytes, more than the {BATCH_BYTES:,} of a CIFAR-10 batch "
                            f"(10,000 records): not a CIFAR-10 binary batch; {_REDOWNLOAD}")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); check the path") from exc
    if sha256 is not None:
        verify_sha256(data, sha256, str(path), of="the file", advice=f"(corrupt or a different file); "
                      f"{_REDOWNLOAD}, or pass --no-verify for a copy you re-packed yourself")
    return parse_batch(data, str(path))


#: The registry entry.
CIFAR10 = CifarSpec()

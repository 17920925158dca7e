"""Small hostile data files: whatever a file declares, a reader refuses it in one line before it
costs memory or disk (each run in a child whose address space is capped at 1 GiB above its
baseline, see ``memcap.py``), and no input becomes silently wrong data."""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
import warnings
import zipfile

import numpy as np
import pytest

from helpers import cli_env, encode_idx, one_line
from memcap import HEADROOM, baseline_vm_size, run_capped
from nnscratch.data.common import labels_from_values
from nnscratch.errors import DataError, UsageError
from nnscratch.data.limits import InputTooLargeError

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


# --- the harness itself ------------------------------------------------------------------------


def test_the_memory_cap_is_real(tmp_path):
    """A child that allocates 1.5 GiB beyond its baseline fails: so the tests below would catch a
    reader that believed a declared size. (The baseline is a few hundred MB of address space.)"""
    baseline = baseline_vm_size("import numpy", tmp_path)
    assert 50 << 20 < baseline < 4 << 30
    code = ("import resource, numpy as np\n"
            "vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:')][0]\n"
            f"resource.setrlimit(resource.RLIMIT_AS, (vm + {HEADROOM}, resource.RLIM_INFINITY))\n"
            "np.ones(3 << 29, dtype=np.uint8)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=cli_env(OPENBLAS_NUM_THREADS="1"), timeout=120)
    assert proc.returncode != 0 and "MemoryError" in proc.stderr


# --- IDX (MNIST) -------------------------------------------------------------------------------


def _idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


def test_an_idx_header_declaring_terabytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx_header(0x0E, (4_000_000_000, 60_000, 28)) + bytes(64)))
    error, message = run_capped(f"read_idx({str(path)!r}, sha256='0' * 64)",
                                "from nnscratch.data.idx import read_idx", tmp_path)
    assert error == "InputTooLargeError", message
    assert str(path) in message and "4000000000 x 60000 x 28 float64" in message
    assert "above the limit of 4,294,967,296 bytes" in message and "NNSCRATCH_MAX_INPUT_BYTES" in message


def _gzip_bomb(path, head: bytes, gib: float) -> None:
    """``head`` then ``gib`` GiB of zeros, as concatenated gzip members (a few MB on disk)."""
    block = gzip.compress(bytes(64 << 20), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        for _ in range(int(gib * 16)):
            f.write(block)


def test_a_gzip_bomb_stops_at_the_cap(tmp_path):
    """An honest header (10 labels) followed by 1.5 GiB of zeros: decompression stops at the limit
    (256 MiB here), streamed, with one line; a reader that inflated it whole would die of the cap."""
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _gzip_bomb(path, _idx_header(0x08, (10,)) + bytes(10), 1.5)
    assert path.stat().st_size < 8 << 20
    env = cli_env(OPENBLAS_NUM_THREADS="1", NNSCRATCH_MAX_INPUT_BYTES="256M")
    for call in (f"read_idx({str(path)!r}, sha256='0' * 64)", f"sha256_of_idx({str(path)!r})"):
        error, message = run_capped(call, "from nnscratch.data.idx import read_idx, sha256_of_idx", tmp_path, env)
        assert error == "InputTooLargeError", message
        assert message.startswith(f"{path}: its decompressed content runs past the limit of 268,435,456 bytes")


def test_a_bomb_in_the_mnist_folder_is_one_line_from_the_cli(tmp_path):
    from memcap import run_cli_capped

    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_FILES:
        (folder / name).write_bytes(gzip.compress(encode_idx(np.zeros((3, 28, 28) if "images" in name else 3,
                                                                      dtype=np.uint8))))
    _gzip_bomb(folder / MNIST_FILES[0], _idx_header(0x08, (60_000, 28, 28)), 1.5)
    env = cli_env(OPENBLAS_NUM_THREADS="1", NNSCRATCH_MAX_INPUT_BYTES="256M")
    proc = run_cli_capped(["compare", "--data-dir", str(folder), "--out", str(tmp_path / "run"), "--quiet"],
                          tmp_path, env)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nnscratch: error: ") and "runs past the limit" in lines[0], \
        proc.stderr
    assert not (tmp_path / "run").exists()


def test_an_honest_idx_file_still_reads_with_its_checksum(tmp_path):
    import hashlib

    from nnscratch.data.idx import read_idx

    data = encode_idx(np.arange(3 * 5 * 7, dtype=np.int16).reshape(3, 5, 7))
    path = tmp_path / "x.idx.gz"
    path.write_bytes(gzip.compress(data))
    array = read_idx(path, sha256=hashlib.sha256(data).hexdigest())
    assert array.dtype == np.int16 and array.flags.writeable
    np.testing.assert_array_equal(array, np.arange(105).reshape(3, 5, 7))


# --- NPZ ---------------------------------------------------------------------------------------


def _npy_bytes(shape, dtype, data: bytes) -> bytes:
    """An ``.npy`` file whose header declares ``shape`` (whatever ``data`` holds)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + data


def _npz(path, members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(name, data)


def _y(n=6):
    return _npy_bytes((n,), np.int64, (np.arange(n) % 2).astype(np.int64).tobytes())


def test_an_npz_x_declaring_a_trillion_images_is_one_line(tmp_path):
    path = tmp_path / "huge.npz"
    _npz(path, {"x.npy": _npy_bytes((10**12, 28, 28), np.uint8, bytes(784)), "y.npy": _y()})
    error, message = run_capped(f"read_npz({str(path)!r})", "from nnscratch.data.tabular import read_npz", tmp_path)
    assert error == "InputTooLargeError", message
    assert str(path) in message and "1,000,000,000,000 x 28 x 28" in message and "above the limit" in message


def test_a_folder_cache_file_declaring_a_billion_images_is_ignored_and_the_folder_read_again(tmp_path):
    """The user cache of ``folder:PATH`` (our own ``.npz``) is read as carefully as ``npz:PATH``: a
    planted or damaged cache file whose ``images`` header declares 10^9 images is a note, not an
    allocation, and the folder itself is read again."""
    from PIL import Image

    for k, name in enumerate(("a", "b")):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 5), 40 * k + i, np.uint8)).save(tmp_path / "d" / name / f"{i}.png")
    env = cli_env(OPENBLAS_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    folder = f"folder:{tmp_path / 'd'}"
    assert run_capped(f"load_dataset({folder!r})", "from nnscratch.data import load_dataset", tmp_path, env) \
        == (None, "")
    (cached,) = (tmp_path / "cache" / "nnscratch" / "folder-cache").glob("*.npz")
    with zipfile.ZipFile(cached) as z:
        members = {name: z.read(name) for name in z.namelist()}
    members["images.npy"] = _npy_bytes((10**9, 6, 5, 1), np.uint8, bytes(30))
    hostile = tmp_path / "hostile.npz"
    _npz(hostile, members)
    cached.write_bytes(hostile.read_bytes())
    error, message = run_capped(f"load_dataset({folder!r})", "from nnscratch.data import load_dataset", tmp_path, env)
    assert error is None, message  # under the memory cap: read from the folder again, no MemoryError
    with np.load(cached, allow_pickle=False) as z:  # and the cache rewritten whole
        assert z["images"].shape == (6, 6, 5, 1)
    cached.write_bytes(hostile.read_bytes())
    code = "import sys; from nnscratch.data import load_dataset; load_dataset(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, folder], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "ignoring damaged cache file" in proc.stderr and "(InputTooLargeError)" in proc.stderr


def test_an_npz_member_that_inflates_beyond_the_limit_is_refused_from_its_declared_size(tmp_path):
    """512 MiB of zeros, deflated to half a MB: its declared uncompressed size is refused (limit 64 MiB)
    before a byte is inflated."""
    path = tmp_path / "bomb.npz"
    _npz(path, {"x.npy": _npy_bytes((1 << 19, 32, 32), np.uint8, bytes(512 << 20)), "y.npy": _y()},
         zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 4 << 20
    env = cli_env(OPENBLAS_NUM_THREADS="1", NNSCRATCH_MAX_INPUT_BYTES="64M")
    error, message = run_capped(f"read_npz({str(path)!r})", "from nnscratch.data.tabular import read_npz",
                                tmp_path, env)
    assert error == "InputTooLargeError", message
    assert "array 'x' (its declared uncompressed size) is 536,871," in message and "67,108,864" in message


@pytest.mark.parametrize("shape, expected", [((6, 0, 8), "every size at least 1"), ((6, 8), "expected images"),
                                             ((6, 100_000, 2), "100,000x2 pixels, above the limit of 4,096")])
def test_npz_shapes_that_cannot_be_images_are_one_line(tmp_path, shape, expected):
    from nnscratch.data.tabular import read_npz

    path = tmp_path / "odd.npz"
    _npz(path, {"x.npy": _npy_bytes(shape, np.uint8, bytes(int(np.prod(shape)))), "y.npy": _y()})
    with pytest.raises(DataError) as exc:
        read_npz(path)
    assert str(path) in one_line(exc) and expected in one_line(exc)


def test_an_npz_header_that_disagrees_with_its_member_is_refused(tmp_path):
    from nnscratch.data.tabular import read_npz

    path = tmp_path / "lies.npz"
    _npz(path, {"x.npy": _npy_bytes((6, 4, 4), np.uint8, bytes(10)), "y.npy": _y()})
    with pytest.raises(DataError, match=r"declares 6 x 4 x 4 uint8 \(96 bytes\) but its member holds 10"):
        read_npz(path)


def test_a_huge_label_costs_one_class_not_a_trillion(tmp_path):
    """The 22 KB NPZ of the report: one label of 10**12. Mapped with np.unique it makes one class more."""
    path = tmp_path / "label.npz"
    y = np.array([0, 1, 10**12, 1, 0, 10**12] * 4, dtype=np.int64)
    np.savez(path, x=np.zeros((24, 4, 4), np.uint8), y=y)
    error, message = run_capped(f"load_dataset('npz:{path}')", "from nnscratch.data import load_dataset", tmp_path)
    assert error is None, message
    labels, names = labels_from_values(y, "y")
    assert names == ("0", "1", "1000000000000")
    np.testing.assert_array_equal(labels, [0, 1, 2, 1, 0, 2] * 4)


def test_labels_are_the_distinct_values_by_hand():
    labels, names = labels_from_values(np.array([5, 0, 5, 2, 0]), "y")
    assert names == ("0", "2", "5") and labels.tolist() == [2, 0, 2, 1, 0]
    labels, names = labels_from_values(np.array([3.0, 1.0, 3.0]), "y")
    assert names == ("1", "3") and labels.tolist() == [1, 0, 1]
    labels, names = labels_from_values(np.array([2, 0, 1, 2]), "y", ("a", "b", "c"))
    assert names == ("a", "b", "c") and labels.tolist() == [2, 0, 1, 2]


def test_too_many_classes_are_refused(monkeypatch):
    monkeypatch.setenv("NNSCRATCH_MAX_CLASSES", "3")
    with pytest.raises(InputTooLargeError, match="4 distinct classes, above the limit of 3; .*NNSCRATCH_MAX_CLASSES"):
        labels_from_values(np.array(["a", "b", "c", "d"]), "y")
    with pytest.raises(InputTooLargeError, match="4 distinct classes"):
        labels_from_values(np.array([0, 1, 2, 10**12]), "y")
    monkeypatch.setenv("NNSCRATCH_MAX_CLASSES", "many")
    with pytest.raises(UsageError, match="NNSCRATCH_MAX_CLASSES='many': expected a positive whole number"):
        labels_from_values(np.array([0, 1]), "y")


@pytest.mark.parametrize("names, expected", [
    (("a", "b", "c", "d"), "4 class names but only 3 classes occur (no image of 'd')"),
    (("a", "b", "a"), "the class name 'a' occurs twice"),
    (("a", "b\x00", "c"), "the class name 'b\\x00' holds a non-printable character"),
])
def test_class_names_must_be_one_unique_name_per_class(names, expected):
    with pytest.raises(DataError) as exc:
        labels_from_values(np.array([0, 1, 2, 1]), "set.npz (y)", names)
    assert expected in one_line(exc)


def test_a_nul_byte_in_a_csv_label_is_one_line_shown_escaped(tmp_path):
    from nnscratch.data.tabular import read_csv

    path = tmp_path / "nul.csv"
    rows = [f"{label},1,2,3,4" for label in ["cat", "dog", "cat\x00", "dog", "cat", "dog"]]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as exc:
        read_csv(path)
    message = one_line(exc)
    assert str(path) in message and "line 3: the label 'cat\\x00' holds a non-printable character" in message


# --- CIFAR-10 ----------------------------------------------------------------------------------


def _tar_gz_declaring(path, members: dict[str, int], payload: int = 1024) -> None:
    """A .tar.gz whose member headers declare ``members`` sizes, followed by ``payload`` bytes only."""
    raw = io.BytesIO()
    for name, size in members.items():
        info = tarfile.TarInfo(name)
        info.size = size
        raw.write(info.tobuf(format=tarfile.GNU_FORMAT))
        raw.write(bytes(payload))
    path.write_bytes(gzip.compress(raw.getvalue()))


def test_a_cifar_member_declaring_4_gib_is_refused_before_extracting(tmp_path):
    folder, scratch = tmp_path / "cifar10", tmp_path / "tmp"
    folder.mkdir()
    scratch.mkdir()
    _tar_gz_declaring(folder / "cifar-10-binary.tar.gz", {"cifar-10-batches-bin/data_batch_1.bin": 4 << 30})
    env = cli_env(OPENBLAS_NUM_THREADS="1", TMPDIR=str(scratch))
    error, message = run_capped(f"load_dataset('cifar10', {str(folder)!r}, verify=False)",
                                "from nnscratch.data import load_dataset", tmp_path, env)
    assert error == "InputTooLargeError", message
    assert "member 'cifar-10-batches-bin/data_batch_1.bin' declares 4,294,967,296 bytes, more than the " \
           "30,730,000 it can have" in message
    assert list(scratch.iterdir()) == []  # nothing was written, and the temp folder is gone


def test_a_cifar_archive_whose_members_declare_too_much_in_all_is_refused(tmp_path):
    from nnscratch.data.archive import safe_extract

    path = tmp_path / "a.tar.gz"
    _tar_gz_declaring(path, {"readme.html": 900 << 20})
    with pytest.raises(InputTooLargeError, match="its members declare more than the 1,000 bytes it can hold"):
        safe_extract(path, tmp_path, set(), "fix it", max_total=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


def test_a_cifar_member_cut_short_leaves_no_file(tmp_path):
    from nnscratch.data.archive import safe_extract

    path, dest = tmp_path / "a.tar.gz", tmp_path / "out"
    dest.mkdir()
    _tar_gz_declaring(path, {"d/a.bin": 5000}, payload=600)
    with pytest.raises(DataError):
        safe_extract(path, dest, {"d/a.bin"}, "fix it")
    assert not (dest / "d" / "a.bin").exists()


# --- images --------------------------------------------------------------------------------------


def _two_class_folder(root, image, name="a.png"):
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        image.save(root / cls / name)


def test_16_bit_pngs_are_scaled_to_8_bits_not_clipped(tmp_path, monkeypatch):
    from PIL import Image

    from nnscratch.data.folder import read_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wide = np.array([[0, 255, 256, 257], [32896, 40000, 65280, 65535]], dtype=np.uint16)
    _two_class_folder(tmp_path / "set", Image.fromarray(wide))
    assert Image.open(tmp_path / "set" / "cat" / "a.png").mode.startswith("I;16")
    pool = read_folder(tmp_path / "set", progress=False)
    expected = np.array([[0, 0, 1, 1], [128, 156, 255, 255]], dtype=np.uint8)  # v >> 8, by hand
    assert pool.images.shape == (2, 2, 4, 1)
    np.testing.assert_array_equal(pool.images[0, ..., 0], expected)
    rgb = read_folder(tmp_path / "set", color="rgb", progress=False)
    np.testing.assert_array_equal(rgb.images[0], np.repeat(expected[..., None], 3, axis=2))


def test_a_huge_image_is_skipped_from_its_header_without_pillows_warning(tmp_path, monkeypatch, capsys):
    """A 10,000 x 10,000 bilevel PNG (10 KB): above our 4,096-pixel side, refused from its header;
    Pillow's DecompressionBombWarning (it is above 89 M pixels) never reaches the user."""
    from PIL import Image

    from nnscratch.data.folder import read_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _two_class_folder(tmp_path / "set", Image.new("L", (4, 4), 9))
    Image.new("1", (10_000, 10_000)).save(tmp_path / "set" / "dog" / "b.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = read_folder(tmp_path / "set", progress=False)
    assert not [w for w in caught if "DecompressionBomb" in type(w.message).__name__], caught
    assert len(pool.images) == 2 and len(pool.skipped) == 1
    assert "10,000x10,000 pixels, above the limit of 4,096 per side" in pool.skipped[0][1]
    assert "skipped 1" in capsys.readouterr().err


def test_a_constant_channel_standardises_without_a_warning():
    from nnscratch.data.preprocess import channel_stats, to_features

    train = np.full((12_345, 2, 2, 1), 254, np.uint8)  # float sums once gave std 1.1e-16 here
    stats = channel_stats(train)
    assert stats.std.tolist() == [1.0] and stats.mean.tolist() == [254 / 255]
    test = np.zeros((3, 2, 2, 1), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = to_features(test, np.float32, stats)
    np.testing.assert_allclose(features, -254 / 255, rtol=1e-6)


def test_image_size_beyond_the_maximum_is_a_usage_error():
    from nnscratch.data.common import check_image_options

    with pytest.raises(UsageError) as exc:
        check_image_options("100000x100000", None)
    assert "--image-size 100000x100000: above the maximum of 4,096 pixels per side" in one_line(exc)


def test_converting_images_checks_what_the_result_would_weigh(monkeypatch):
    from nnscratch.data.common import convert_images

    monkeypatch.setenv("NNSCRATCH_MAX_INPUT_BYTES", "1M")
    with pytest.raises(InputTooLargeError, match="the 100 images converted to 200x200 is 4,000,000 bytes"):
        convert_images(np.zeros((100, 2, 2, 1), np.uint8), (200, 200), None, "src")


def test_a_limit_with_a_suffix_parses(monkeypatch):
    from nnscratch.data.limits import max_input_bytes

    for text, value in (("8G", 8 << 30), ("512MiB", 512 << 20), ("1000", 1000), ("4 gb", 4 << 30)):
        monkeypatch.setenv("NNSCRATCH_MAX_INPUT_BYTES", text)
        assert max_input_bytes() == value
    monkeypatch.setenv("NNSCRATCH_MAX_INPUT_BYTES", "-1")
    with pytest.raises(UsageError, match="NNSCRATCH_MAX_INPUT_BYTES='-1'"):
        max_input_bytes()


"""folder:PATH: class sub-folders of PNG/JPEG/BMP/GIF files, colour and size options, bad input,
the seeded split and the cache in $XDG_CACHE_HOME/nnscratch/folder-cache."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

import nnscratch.data.folder as folder_mod
from helpers import one_line
from nnscratch.data import load_dataset
from nnscratch.errors import DataError


pytestmark = pytest.mark.usefixtures("isolated_env")  # conftest.py: no test sees the real cache


def grey(seed: int, shape=(6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def make_folder(root, counts=None, shape=(6, 5), mode="L", ext="png"):
    """Write ``counts[class]`` images per class; return {path: pixels} of what was written."""
    counts = counts or {"cat": 12, "dog": 9, "emu": 7}
    written = {}
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = grey(100 * k + i, shape if mode == "L" else (*shape, 3))
            path = root / name / f"{i:03d}.{ext}"
            Image.fromarray(pixels).save(path)
            written[path] = pixels
    return written


def all_images(ds) -> np.ndarray:
    return np.concatenate([ds.train_images, ds.val_images, ds.test_images])


def all_labels(ds) -> np.ndarray:
    return np.concatenate([ds.train_labels, ds.val_labels, ds.test_labels])


# --- reading --------------------------------------------------------------------------------


def test_grey_png_folder(tmp_path):
    written = make_folder(tmp_path / "pets")
    ds = load_dataset(f"folder:{tmp_path / 'pets'}", progress=False)
    assert ds.class_names == ("cat", "dog", "emu") and ds.image_shape == (6, 5, 1)
    assert ds.title == "pets" and ds.name == f"folder:{tmp_path / 'pets'}"
    assert ds.source == str(tmp_path / "pets")
    assert len(all_labels(ds)) == 28 and np.bincount(all_labels(ds)).tolist() == [12, 9, 7]
    # every image is one of the files, under its class's label
    by_bytes = {pixels.tobytes(): path.parent.name for path, pixels in written.items()}
    for image, label in zip(all_images(ds), all_labels(ds)):
        assert by_bytes[image[..., 0].tobytes()] == ds.class_names[label]
    assert not ds.train_images.flags.writeable and ds.train_labels.dtype == np.int64
    assert "seeded stratified split" in ds.split_rule


@pytest.mark.parametrize("ext", ["bmp", "gif", "jpg", "jpeg", "PNG"])
def test_other_formats(tmp_path, ext):
    make_folder(tmp_path / "d", {"a": 4, "b": 4}, ext=ext)
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert ds.image_shape == (6, 5, 1) and len(all_labels(ds)) == 8


def test_colour_images_and_conversions(tmp_path):
    written = make_folder(tmp_path / "d", {"a": 5, "b": 5}, mode="RGB")
    name = f"folder:{tmp_path / 'd'}"
    rgb = load_dataset(name)
    assert rgb.image_shape == (6, 5, 3)
    expected = {p.tobytes() for p in written.values()}
    assert {image.tobytes() for image in all_images(rgb)} == expected
    grey_ds = load_dataset(name, color="grayscale")
    assert grey_ds.image_shape == (6, 5, 1)
    pillow_l = {np.asarray(Image.fromarray(p).convert("L")).tobytes() for p in written.values()}
    assert {image[..., 0].tobytes() for image in all_images(grey_ds)} == pillow_l


def test_grey_to_rgb_and_mixed_modes(tmp_path):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    Image.fromarray(grey(1, (6, 5, 3))).save(tmp_path / "d" / "b" / "colour.png")
    mixed = load_dataset(f"folder:{tmp_path / 'd'}")
    assert mixed.image_shape == (6, 5, 3)  # one colour image makes all of them RGB
    forced = load_dataset(f"folder:{tmp_path / 'd'}", color="rgb")
    assert forced.image_shape == (6, 5, 3)
    for image in all_images(load_dataset(f"folder:{tmp_path / 'd'}", color="rgb", seed=3)):
        if (image[..., 0] == image[..., 1]).all():
            assert (image[..., 1] == image[..., 2]).all()


def test_grey_image_stored_as_rgb_stays_grey(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    for k in range(6):
        g = grey(k)
        Image.fromarray(np.stack([g, g, g], axis=-1)).save(tmp_path / "d" / "ab"[k % 2] / f"{k}.png")
    assert load_dataset(f"folder:{tmp_path / 'd'}").image_shape == (6, 5, 1)


def test_image_size_resizes_and_mixed_sizes_need_it(tmp_path):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    odd = tmp_path / "d" / "b" / "big.png"
    Image.fromarray(grey(7, (9, 11))).save(odd)
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"folder:{tmp_path / 'd'}")
    message = one_line(exc_info)
    assert "images differ in size" in message and str(odd) in message
    assert "9x11" in message and "6x5" in message and "--image-size" in message
    ds = load_dataset(f"folder:{tmp_path / 'd'}", image_size=(8, 7))
    assert ds.image_shape == (8, 7, 1)
    assert load_dataset(f"folder:{tmp_path / 'd'}", image_size="4x4").image_shape == (4, 4, 1)


# --- bad folders ------------------------------------------------------------------------------


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"folder:{tmp_path / 'nope'}")
    assert f"{tmp_path / 'nope'}: no such folder" in one_line(exc_info)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"folder:{tmp_path / 'empty'}")
    message = one_line(exc_info)
    assert str(tmp_path / "empty") in message and "no class sub-folders" in message
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_dataset(f"folder:{tmp_path / 'file.png'}")


def test_one_class_is_not_enough(tmp_path):
    make_folder(tmp_path / "d", {"only": 5})
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"folder:{tmp_path / 'd'}")
    message = one_line(exc_info)
    assert str(tmp_path / "d") in message and "at least two" in message


def test_class_without_images(tmp_path):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    (tmp_path / "d" / "c").mkdir()
    (tmp_path / "d" / "c" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"folder:{tmp_path / 'd'}")
    message = one_line(exc_info)
    assert f"{tmp_path / 'd' / 'c'}: class 'c' has no images" in message


def test_hidden_entries_and_stray_files_are_ignored(tmp_path):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    (tmp_path / "d" / ".thumbs").mkdir()
    (tmp_path / "d" / "README.txt").write_text("hi")
    (tmp_path / "d" / "a" / ".hidden.png").write_bytes(b"junk")
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert ds.class_names == ("a", "b") and len(all_labels(ds)) == 8


def test_corrupt_image_skipped_with_warning_or_error_when_strict(tmp_path, capsys):
    make_folder(tmp_path / "d", {"a": 5, "b": 5})
    bad = tmp_path / "d" / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert len(all_labels(ds)) == 10
    err = capsys.readouterr().err
    assert "warning: skipped 1 unreadable image(s)" in err and str(bad) in err
    assert "--strict" in err
    assert any("skipped 1 unreadable" in n for n in ds.notes)
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"folder:{tmp_path / 'd'}", strict=True)
    message = one_line(exc_info)
    assert str(bad) in message and "cannot read the image" in message and "--strict" in message


def test_truncated_image_is_unreadable(tmp_path, capsys):
    make_folder(tmp_path / "d", {"a": 5, "b": 5})
    victim = tmp_path / "d" / "b" / "002.png"
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(DataError, match="002.png: cannot read the image"):
        load_dataset(f"folder:{tmp_path / 'd'}", strict=True)


def test_class_whose_images_are_all_unreadable(tmp_path):
    make_folder(tmp_path / "d", {"a": 5, "b": 5})
    (tmp_path / "d" / "c").mkdir()
    (tmp_path / "d" / "c" / "x.jpg").write_bytes(b"nope")
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"folder:{tmp_path / 'd'}")
    assert f"{tmp_path / 'd' / 'c'}: none of class 'c'" in one_line(exc_info)


# --- the split ----------------------------------------------------------------------------------


def test_split_is_seeded_and_stratified(tmp_path):
    make_folder(tmp_path / "d", {"a": 30, "b": 20, "c": 13})
    name = f"folder:{tmp_path / 'd'}"
    first, same, other = (load_dataset(name, seed=s) for s in (5, 5, 6))
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, f"{part}_images"), getattr(same, f"{part}_images"))
    assert not np.array_equal(first.val_images, other.val_images)
    # 63 images: test 9 (63 // 7), validation 9 ((63 - 9) // 6), training 45
    assert (len(first.train_labels), len(first.val_labels), len(first.test_labels)) == (45, 9, 9)
    for labels in (first.val_labels, first.test_labels):
        assert sorted(np.bincount(labels, minlength=3).tolist()) == [2, 3, 4]
    # the three parts are disjoint and hold every image once
    keys = sorted(image.tobytes() for image in all_images(first))
    assert len(set(keys)) == 63
    custom = load_dataset(name, val_size=20)
    assert len(custom.val_labels) == 20 and len(custom.test_labels) == 9


# --- the cache ------------------------------------------------------------------------------------


def cache_files(tmp_path):
    folder = tmp_path / "xdg-cache" / "nnscratch" / "folder-cache"
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    make_folder(tmp_path / "d")
    first = load_dataset(f"folder:{tmp_path / 'd'}")
    assert len(cache_files(tmp_path)) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an image although the cache holds them")

    monkeypatch.setattr(folder_mod, "_decode_image", no_decoding)
    second = load_dataset(f"folder:{tmp_path / 'd'}")
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, f"{part}_images"), getattr(second, f"{part}_images"))
        np.testing.assert_array_equal(getattr(first, f"{part}_labels"), getattr(second, f"{part}_labels"))
    assert second.class_names == first.class_names


def test_cache_is_rebuilt_when_a_file_or_an_option_changes(tmp_path, monkeypatch):
    written = make_folder(tmp_path / "d", {"a": 4, "b": 4}, ext="bmp")  # BMP: size never changes
    load_dataset(f"folder:{tmp_path / 'd'}")
    calls = []
    real = folder_mod._decode_image
    monkeypatch.setattr(folder_mod, "_decode_image",
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    path = next(iter(written))
    size = path.stat().st_size
    Image.fromarray(255 - written[path]).save(path)  # same file size, new pixels, new mtime
    assert path.stat().st_size == size
    stamp = time.time() + 5
    os.utime(path, (stamp, stamp))
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert len(calls) == 8
    assert any((image[..., 0] == 255 - written[path]).all() for image in all_images(ds))
    calls.clear()
    load_dataset(f"folder:{tmp_path / 'd'}", image_size=(3, 3))
    assert len(calls) == 8 and len(cache_files(tmp_path)) == 3
    calls.clear()
    load_dataset(f"folder:{tmp_path / 'd'}", image_size=(3, 3))
    assert calls == []


def test_damaged_cache_file_is_ignored_and_rewritten(tmp_path, capsys):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    first = load_dataset(f"folder:{tmp_path / 'd'}")
    (cached,) = cache_files(tmp_path)
    cached.write_bytes(cached.read_bytes()[:100])
    second = load_dataset(f"folder:{tmp_path / 'd'}")
    np.testing.assert_array_equal(first.train_images, second.train_images)
    assert "ignoring damaged cache file" in capsys.readouterr().err
    with np.load(cached, allow_pickle=False) as z:  # rewritten whole
        assert z["images"].shape == (8, 6, 5, 1)


def test_skipped_images_are_reported_again_from_the_cache(tmp_path, capsys):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    (tmp_path / "d" / "a" / "bad.gif").write_bytes(b"GIF89a broken")
    load_dataset(f"folder:{tmp_path / 'd'}")
    capsys.readouterr()
    ds = load_dataset(f"folder:{tmp_path / 'd'}")
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err
    assert len(all_labels(ds)) == 8


def test_progress_bar_for_large_folders(tmp_path, monkeypatch, capsys):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    monkeypatch.setattr(folder_mod, "_PROGRESS_FROM", 1)
    load_dataset(f"folder:{tmp_path / 'd'}", progress=True)
    assert "reading d" in capsys.readouterr().err


def test_reload_by_the_returned_name(tmp_path, monkeypatch):
    make_folder(tmp_path / "d", {"a": 4, "b": 4})
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("folder:d")
    assert ds.name == f"folder:{tmp_path / 'd'}"
    monkeypatch.chdir(tmp_path / "d")
    np.testing.assert_array_equal(load_dataset(ds.name).test_images, ds.test_images)

"""csv:PATH and npz:PATH: formats, pixel ranges, labels, and every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import one_line
from nnscratch.data import load_dataset
from nnscratch.errors import DataError, UsageError


pytestmark = pytest.mark.usefixtures("isolated_env")  # conftest.py: no test sees the real cache


def everything(ds):
    images = np.concatenate([ds.train_images, ds.val_images, ds.test_images])
    labels = np.concatenate([ds.train_labels, ds.val_labels, ds.test_labels])
    return images, labels


def pixel_rows(n=21, d=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, d))


def write_csv(path, labels, pixels, header=None, label_last=False, fmt="{}"):
    lines = [",".join(header)] if header else []
    for label, row in zip(labels, pixels):
        cells = [fmt.format(v) for v in row]
        cells = cells + [str(label)] if label_last else [str(label)] + cells
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_same_pool(ds, labels, pixels, shape):
    """Every (image, label) of ``ds`` is one of the rows, and all rows are there."""
    images, got = everything(ds)
    rows = {(int(label), tuple(np.asarray(p).reshape(-1).tolist())) for label, p in zip(labels, pixels)}
    seen = {(int(k), tuple(image.reshape(-1).tolist())) for image, k in zip(images, got)}
    assert seen == rows and images.shape[1:] == shape


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_without_header(tmp_path):
    labels, pixels = np.arange(21) % 3, pixel_rows()
    path = write_csv(tmp_path / "digits.csv", labels, pixels)
    ds = load_dataset(f"csv:{path}")
    assert ds.image_shape == (4, 4, 1) and ds.class_names == ("0", "1", "2")
    assert ds.title == "digits.csv" and ds.source == str(path)
    assert_same_pool(ds, labels, pixels, (4, 4, 1))


def test_csv_with_header_and_named_label_column_last(tmp_path):
    labels, pixels = np.arange(21) % 3, pixel_rows()
    header = [f"p{k}" for k in range(16)] + ["digit"]
    path = write_csv(tmp_path / "h.csv", labels, pixels, header=header, label_last=True)
    assert_same_pool(load_dataset(f"csv:{path}", label_column="digit"), labels, pixels, (4, 4, 1))
    assert_same_pool(load_dataset(f"csv:{path}", label_column=-1), labels, pixels, (4, 4, 1))
    assert_same_pool(load_dataset(f"csv:{path}", label_column="16"), labels, pixels, (4, 4, 1))


def test_csv_header_of_numbers_after_a_label_name(tmp_path):
    labels, pixels = np.arange(21) % 3, pixel_rows()
    path = write_csv(tmp_path / "h.csv", labels, pixels, header=["label", *map(str, range(16))])
    assert_same_pool(load_dataset(f"csv:{path}"), labels, pixels, (4, 4, 1))


def test_csv_text_labels(tmp_path):
    names = np.array(["zebra", "ant", "moth"])[np.arange(21) % 3]
    pixels = pixel_rows()
    path = write_csv(tmp_path / "t.csv", names, pixels)
    ds = load_dataset(f"csv:{path}")
    assert ds.class_names == ("ant", "moth", "zebra")
    images, labels = everything(ds)
    for image, label in zip(images, labels):
        row = next(i for i, p in enumerate(pixels) if (p == image.reshape(-1)).all())
        assert ds.class_names[label] == names[row]


def test_csv_image_shape(tmp_path):
    labels, pixels = np.arange(21) % 3, pixel_rows(d=24)
    path = write_csv(tmp_path / "c.csv", labels, pixels)
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"csv:{path}")
    message = one_line(exc_info)
    assert str(path) in message and "24 pixel columns" in message and "--image-shape" in message
    assert_same_pool(load_dataset(f"csv:{path}", image_shape=(2, 4, 3)), labels, pixels, (2, 4, 3))
    assert load_dataset(f"csv:{path}", image_shape="4x6").image_shape == (4, 6, 1)
    with pytest.raises(UsageError) as exc_info:
        load_dataset(f"csv:{path}", image_shape=(5, 5))
    message = one_line(exc_info)
    assert "--image-shape 5x5x1 needs 25 pixel columns" in message and str(path) in message


def test_csv_float_pixels_in_unit_range_are_scaled_with_a_note(tmp_path, capsys):
    labels, pixels = np.arange(21) % 3, pixel_rows()
    path = write_csv(tmp_path / "f.csv", labels, pixels / 255.0, fmt="{:.6f}")
    ds = load_dataset(f"csv:{path}")
    assert_same_pool(ds, labels, pixels, (4, 4, 1))
    assert "scaled by 255" in capsys.readouterr().err and ds.notes


@pytest.mark.parametrize("mutate, expected", [
    (lambda lines: lines.__setitem__(3, lines[3] + ",7"), "line 4 has 18 values, expected 17"),
    (lambda lines: lines.__setitem__(2, lines[2].replace(",", ",x", 1)),
     "line 3, column 2: 'x"),
    (lambda lines: lines.__setitem__(5, lines[5].rsplit(",", 1)[0] + ",nan"), "NaN or infinite"),
    (lambda lines: lines.__setitem__(5, lines[5].rsplit(",", 1)[0] + ",inf"), "NaN or infinite"),
    (lambda lines: lines.__setitem__(1, lines[1].rsplit(",", 1)[0] + ",256"),
     "pixel values run from 0 to 256"),
    (lambda lines: lines.__setitem__(1, "-1" + lines[1][1:]), "label -1 is negative"),
    (lambda lines: lines.__setitem__(1, "1.5" + lines[1][1:]), "whole numbers"),
    (lambda lines: lines.__setitem__(slice(None), ["0" + line[1:] for line in lines]),
     "same label"),
    (lambda lines: lines.__setitem__(slice(None), []), "holds no lines"),
], ids=["row-length", "not-a-number", "nan", "inf", "pixel-range", "negative-label",
        "fractional-label", "one-class", "empty"])
def test_csv_errors_name_the_file(tmp_path, mutate, expected):
    path = write_csv(tmp_path / "bad.csv", np.arange(21) % 3, pixel_rows())
    lines = path.read_text().splitlines()
    mutate(lines)
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"csv:{path}")
    message = one_line(exc_info)
    assert str(path) in message and expected in message


def test_csv_header_only_and_unknown_label_column(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("label,a,b,c,d\n")
    with pytest.raises(DataError, match="only a header line"):
        load_dataset(f"csv:{path}")
    write_csv(path, np.arange(21) % 3, pixel_rows(), header=["y", *map("p{}".format, range(16))])
    with pytest.raises(UsageError) as exc_info:
        load_dataset(f"csv:{path}", label_column="digit")
    message = one_line(exc_info)
    assert "--label-column 'digit'" in message and str(path) in message
    with pytest.raises(UsageError, match="--label-column 40"):
        load_dataset(f"csv:{path}", label_column=40)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"csv:{tmp_path / 'none.csv'}")
    assert f"{tmp_path / 'none.csv'}: no such file" in one_line(exc_info)


# --- NPZ -----------------------------------------------------------------------------------------


def images(n=21, shape=(5, 4), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_npz_uint8_greyscale_and_class_names(tmp_path):
    x, y = images(), np.arange(21) % 3
    path = tmp_path / "set.npz"
    np.savez(path, x=x, y=y, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(f"npz:{path}")
    assert ds.class_names == ("a", "b", "c") and ds.title == "set.npz"
    assert_same_pool(ds, y, x, (5, 4, 1))


def test_npz_rgb_and_conversions(tmp_path):
    x, y = images(shape=(5, 4, 3)), np.arange(21) % 3
    path = tmp_path / "rgb.npz"
    np.savez(path, x=x, y=y)
    assert load_dataset(f"npz:{path}").image_shape == (5, 4, 3)
    grey = load_dataset(f"npz:{path}", color="grayscale")
    assert grey.image_shape == (5, 4, 1)
    from PIL import Image
    expected = {np.asarray(Image.fromarray(i).convert("L")).tobytes() for i in x}
    got = {image[..., 0].tobytes() for image in everything(grey)[0]}
    assert got == expected  # our RGB -> grey formula is Pillow's, bit for bit
    assert load_dataset(f"npz:{path}", image_size=(10, 8)).image_shape == (10, 8, 3)


@pytest.mark.parametrize("scale, note", [(1 / 255, "scaled by 255"), (1.0, "rounded")])
def test_npz_float_pixels(tmp_path, capsys, scale, note):
    x, y = images(), np.arange(21) % 3
    path = tmp_path / "f.npz"
    np.savez(path, x=(x * scale).astype(np.float32), y=y)
    ds = load_dataset(f"npz:{path}")
    assert_same_pool(ds, y, x, (5, 4, 1))
    err = capsys.readouterr().err
    assert note in err and str(path) in err


@pytest.mark.parametrize("arrays, expected", [
    (dict(x=images(), z=np.arange(21)), "lacks 'y'"),
    (dict(y=np.arange(21)), "lacks 'x'"),
    (dict(x=images(), y=np.arange(20) % 3), "x holds 21 images but y has shape 20"),
    (dict(x=images().astype(np.float64) * 2, y=np.arange(21) % 3), "expected [0, 1] or [0, 255]"),
    (dict(x=np.where(images() > 200, np.nan, 0.5), y=np.arange(21) % 3), "NaN or infinite"),
    (dict(x=images().astype(np.int16) - 5, y=np.arange(21) % 3), "expected 0..255"),
    (dict(x=images(), y=np.arange(21) % 3, class_names=np.array(["a", "b"])),
     "label 2 is out of range for the 2 class names"),
    (dict(x=images(), y=np.zeros(21, int)), "same label"),
    (dict(x=images(), y=np.arange(21) % 3 - 1), "label -1 is negative"),
    (dict(x=np.zeros((21, 4)), y=np.arange(21) % 3), "x has shape 21 x 4"),
], ids=["no-y", "no-x", "lengths", "float-range", "nan", "int-range", "label-range",
        "one-class", "negative-label", "x-shape"])
def test_npz_errors_name_the_file(tmp_path, arrays, expected):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"npz:{path}")
    message = one_line(exc_info)
    assert str(path) in message and expected in message


def test_npz_object_array_needs_pickle_and_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    x = np.empty(21, dtype=object)
    for k in range(21):
        x[k] = images(1)[0]
    np.savez(path, x=x, y=np.arange(21) % 3)
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"npz:{path}")
    message = one_line(exc_info)
    assert str(path) in message and "object array" in message and "allow_pickle=False" in message


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"npz:{path}")
    assert str(path) in one_line(exc_info) and "not a readable .npz" in one_line(exc_info)
    npy = tmp_path / "single.npy"
    np.save(npy, images())
    with pytest.raises(DataError, match="single array"):
        load_dataset(f"npz:{npy}")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_npz_text_labels_and_seeded_split(tmp_path):
    x, names = images(70), np.array(["cat", "dog"])[np.arange(70) % 2]
    path = tmp_path / "t.npz"
    np.savez(path, x=x, y=names)
    a, b, c = (load_dataset(f"npz:{path}", seed=s) for s in (1, 1, 2))
    assert a.class_names == ("cat", "dog")
    np.testing.assert_array_equal(a.test_images, b.test_images)
    assert not np.array_equal(a.test_images, c.test_images)
    assert (len(a.train_labels), len(a.val_labels), len(a.test_labels)) == (50, 10, 10)


def test_too_few_images_to_split(tmp_path):
    path = tmp_path / "two.npz"
    np.savez(path, x=images(2), y=np.array([0, 1]))
    with pytest.raises(DataError) as exc_info:
        load_dataset(f"npz:{path}")
    message = one_line(exc_info)
    assert str(path) in message and "too few" in message

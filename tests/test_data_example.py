"""examples/digits_folder.py: scikit-learn's 1,797 digits as a folder of PNGs, loaded back exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnscratch.data import load_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_folder.py"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def test_digits_folder_example(tmp_path):
    from sklearn.datasets import load_digits

    out = tmp_path / "digits"
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 1,797 images" in proc.stdout
    assert f"nnscratch compare --dataset folder:{out} --image-size 8x8" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [str(d) for d in range(10)]

    ds = load_dataset(f"folder:{out}", image_size=(8, 8), progress=False)
    assert ds.class_names == tuple(str(d) for d in range(10)) and ds.image_shape == (8, 8, 1)
    assert (len(ds.train_labels), len(ds.val_labels), len(ds.test_labels)) == (1285, 256, 256)
    digits = load_digits()
    expected = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    got = np.concatenate([ds.train_images, ds.val_images, ds.test_images])[..., 0]
    labels = np.concatenate([ds.train_labels, ds.val_labels, ds.test_labels])
    key = lambda images, ys: sorted((int(y), im.tobytes()) for im, y in zip(images, ys))  # noqa: E731
    assert key(got, labels) == key(expected, digits.target)
    assert expected.max() == 255 and expected.min() == 0

    again = subprocess.run([sys.executable, str(EXAMPLE), str(out)], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 2 and "is not empty" in again.stderr

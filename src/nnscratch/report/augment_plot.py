"""The figures of ``nnscratch augment-preview``: what an augmentation does to a dataset's images.

* :func:`plot_augment_grid`: one row per class, each training image (framed) followed by a few
  augmented versions of it;
* :func:`plot_augment_transforms`: one row per transform of the spec, alone at its strength,
  then all of them together, on the same image: what each one does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnscratch.report.plots import _image_axes, ink_on_paper, save_figure, short_labels  # noqa: E402

_FRAME = "#1565c0"  # the originals' frame


def _framed(ax: plt.Axes) -> None:
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(_FRAME)
        spine.set_linewidth(2.2)


def plot_augment_grid(originals: np.ndarray, augmented: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                      *, title: str) -> Path:
    """``originals`` ``(classes, per_class, H, W[, C])`` uint8 and ``augmented`` ``(classes, per_class,
    versions, H, W[, C])``: a row per class, each original (framed in blue) followed by its versions."""
    n_classes, per_class, versions = augmented.shape[:3]
    cols = per_class * (versions + 1)
    size = 0.78
    fig, axes = plt.subplots(n_classes, cols, squeeze=False,
                             figsize=(size * cols + 1.5, size * n_classes + 0.9))
    invert = ink_on_paper(originals.reshape(-1, *originals.shape[2:]))
    names = short_labels(list(class_names), 14)
    for c in range(n_classes):
        for k in range(per_class):
            base = k * (versions + 1)
            _image_axes(axes[c, base], originals[c, k], invert)
            _framed(axes[c, base])
            for v in range(versions):
                _image_axes(axes[c, base + 1 + v], augmented[c, k, v], invert)
        axes[c, 0].text(-0.12, 0.5, names[c], transform=axes[c, 0].transAxes, ha="right", va="center", fontsize=9)
    for k in range(per_class):
        axes[0, k * (versions + 1)].set_title("original", fontsize=8, color=_FRAME, pad=3)
        axes[0, k * (versions + 1) + 1].set_title("augmented ->", fontsize=8, loc="left", pad=3)
    fig.suptitle(title, fontsize=11)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=1.4 / width, right=0.995, bottom=0.01, top=1 - 0.75 / height, wspace=0.06, hspace=0.06)
    return save_figure(fig, path)


def plot_augment_transforms(original: np.ndarray, rows: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike,
                            *, title: str) -> Path:
    """``rows``: ``(label, versions (V, H, W[, C]))`` per transform; each row starts with ``original``."""
    versions = max(len(v) for _, v in rows)
    size = 0.95
    fig, axes = plt.subplots(len(rows), versions + 1, squeeze=False,
                             figsize=(size * (versions + 1) + 2.1, size * len(rows) + 0.8))
    invert = ink_on_paper(original[None])
    for r, (label, images) in enumerate(rows):
        _image_axes(axes[r, 0], original, invert)
        _framed(axes[r, 0])
        for v in range(versions):
            if v < len(images):
                _image_axes(axes[r, v + 1], images[v], invert)
            else:
                axes[r, v + 1].axis("off")
        axes[r, 0].text(-0.12, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=9)
    axes[0, 0].set_title("original", fontsize=8, color=_FRAME, pad=3)
    fig.suptitle(title, fontsize=11)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=2.0 / width, right=0.995, bottom=0.01, top=1 - 0.65 / height, wspace=0.06, hspace=0.08)
    return save_figure(fig, path)

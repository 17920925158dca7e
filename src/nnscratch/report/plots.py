"""The report's figures, drawn with matplotlib's Agg backend and written atomically.

Every function takes plain data (lists, NumPy arrays, the dicts of ``metrics.json``) and a
destination path, draws one figure, writes it through :func:`nnscratch.files.atomic.atomic_path` and closes
it. :func:`write_figures` draws the whole set for one ``compare``/``train`` run.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, PowerNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nnscratch.files.atomic import atomic_path  # noqa: E402
from nnscratch.report.display_names import engine_label  # noqa: E402
from nnscratch.report.context import DatasetView, dataset_view, lr_varies, step_lrs  # noqa: E402

DPI = 110
#: Differences of exactly zero cannot sit on a log axis; they are drawn at this floor instead.
ZERO_FLOOR = 1e-18
#: The sample grid shows at most this many classes (the first ones, said so in its title).
MAX_SAMPLE_CLASSES = 20
_SAMPLE_COLUMNS = 10
#: Class names longer than this are cut with an ellipsis in figures (tables keep them whole).
LABEL_CHARS = 14
#: Above this many classes the confusion matrix is drawn without a count in each cell.
MAX_ANNOTATED_CLASSES = 20
ENGINE_COLOURS = {"numpy": "tab:blue", "torch": "tab:orange"}
_MISTAKE_RED = "#c62828"
_CORRECT_GREEN = "#1b5e20"


def _short(class_names: Sequence[str]) -> bool:
    """Whether every class name is short (digits), so titles fit on one line."""
    return max((len(str(c)) for c in class_names), default=0) <= 3


def short_label(name: Any, limit: int = LABEL_CHARS, *, middle: bool = False) -> str:
    """``name`` as a string, cut to ``limit`` characters with an ellipsis when longer.

    The ellipsis ends the text, or with ``middle=True`` replaces its middle, keeping both ends
    (``"a very…ber one"``).
    """
    text = str(name)
    if len(text) <= limit:
        return text
    if not middle:
        return text[: limit - 1].rstrip() + "…"
    tail = (limit - 1) // 2
    return text[: limit - 1 - tail].rstrip() + "…" + text[len(text) - tail:].lstrip()


def short_labels(names: Sequence[Any], limit: int = LABEL_CHARS) -> list[str]:
    """Every name cut to ``limit`` characters, still telling the classes apart.

    The end is cut first; if that makes two names equal (``"a very long class name one"``,
    ``"... two"``) the middle is cut instead; if that fails too, each keeps its label number.
    """
    for middle in (False, True):
        labels = [short_label(n, limit, middle=middle) for n in names]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{k}: " + short_label(n, max(limit - len(str(k)) - 2, 4)) for k, n in enumerate(names)]


def _on(dataset: str | None) -> str:
    """`` on CIFAR-10`` for figure titles, or nothing when the dataset is not named."""
    return f" on {dataset}" if dataset else ""


def save_figure(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically, close it and return the path."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------- images


def _pixels(image: np.ndarray) -> np.ndarray:
    """One image as ``imshow`` wants it: ``(H, W)`` for greyscale, ``(H, W, 3|4)`` for colour.

    Accepts ``(H, W)``, ``(H, W, 1)`` (squeezed), ``(H, W, 3)`` and ``(H, W, 4)``; any other
    channel count shows its first channel in grey.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        image = image[:, :, 0]
    return image


def ink_on_paper(images: np.ndarray) -> bool:
    """Whether greyscale images have a dark background (MNIST-style: bright strokes on black).

    Such images are drawn inverted, dark ink on white paper, as MNIST is usually shown; others
    (a photo turned grey) are drawn as they are. Decided from the mean of the outermost pixels.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[3] in (3, 4):
        return False
    if images.size == 0 or images.ndim < 3:
        return True
    border = np.concatenate([images[:, 0, :].ravel(), images[:, -1, :].ravel(),
                             images[:, :, 0].ravel(), images[:, :, -1].ravel()])
    return float(border.mean()) < 64


def _image_axes(ax: plt.Axes, image: np.ndarray, invert: bool = True) -> None:
    """Show one uint8 image (grey or colour, any size) without ticks or frame."""
    pixels = _pixels(image)
    cmap = None if pixels.ndim == 3 else ("gray_r" if invert else "gray")
    ax.imshow(pixels, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# --------------------------------------------------------------------------- samples


def _first_per_class(labels: np.ndarray, classes: Sequence[int], per_class: int) -> list[list[int]]:
    """Indices of the first ``per_class`` examples of each of ``classes``, in dataset order."""
    return [[int(i) for i in np.flatnonzero(labels == cls)[:per_class]] for cls in classes]


def plot_samples(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    per_class: int | None = None,
    title: str = "Training samples",
    max_classes: int = MAX_SAMPLE_CLASSES,
) -> Path:
    """Draw examples of every class, the first of each in dataset order.

    Six classes or more: one column per class, each image titled with its class (2 per class by
    default), in bands of at most ten columns. Up to five: one row per class, named on the left
    (more per class by default). With more than ``max_classes`` classes only the first
    ``max_classes`` are drawn, and the title says so.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W) or (N, H, W, C)
        C = 1 is drawn in grey, C = 3 in colour.
    labels : ndarray of int, shape (N,)
    class_names : sequence of str
        Display names indexed by label.
    path : path-like
        Destination PNG.
    """
    labels = np.asarray(labels)
    n_classes = len(class_names)
    shown = list(range(min(n_classes, max_classes)))
    names = short_labels([class_names[c] for c in shown], 12)
    by_row = len(shown) <= 5
    if per_class is None:
        per_class = max(4, min(10, 20 // max(len(shown), 1))) if by_row else 2
    picks = _first_per_class(labels, shown, per_class)
    band = len(shown) if by_row else min(len(shown), _SAMPLE_COLUMNS)
    bands = -(-len(shown) // band)
    rows, cols = (len(shown), per_class) if by_row else (per_class * bands, band)
    margin = 1.4 if by_row else 0.0                          # inches for the row names
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(max(1.0 * cols + margin, 4.5), 1.15 * rows + 0.6))
    invert = ink_on_paper(images)
    fontsize = 10 if _short(class_names) else 8
    for ax in axes.flat:                          # frames off; cells left empty stay blank
        ax.axis("off")
    for c, indices in enumerate(picks):
        for k, index in enumerate(indices):
            ax = axes[c, k] if by_row else axes[c // band * per_class + k, c % band]
            _image_axes(ax, images[index], invert)
            if not by_row:
                ax.set_title(names[c], fontsize=fontsize, pad=2)
        if by_row:
            axes[c, 0].text(-0.1, 0.5, names[c], transform=axes[c, 0].transAxes, ha="right",
                            va="center", fontsize=10)
    if len(shown) < n_classes:
        title += f" (the first {len(shown)} of {n_classes} classes)"
    fig.suptitle(title, fontsize=12)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=max(margin / width, 0.01), right=0.99, bottom=0.02,
                        top=1 - 0.5 / height, wspace=0.08, hspace=0.35)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- training curves


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; the first ``window - 1`` points average what exists so far."""
    window = max(1, min(window, len(values)))
    csum = np.cumsum(np.insert(values, 0, 0.0))
    out = (csum[window:] - csum[:-window]) / window
    head = csum[1:window] / np.arange(1, window)
    return np.concatenate([head, out])


def _steps_per_epoch(n_steps: int, n_epochs: int) -> float:
    """Optimisation steps per epoch (at least 1) from the lengths of the step and epoch logs."""
    return max(n_steps / n_epochs, 1.0) if n_epochs else float(max(n_steps, 1))


def _history_column(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """One per-epoch field as a float array (NaN where missing)."""
    return np.array([np.nan if h.get(key) is None else h[key] for h in history], dtype=float)


def plot_loss_curve(
    step_loss: Sequence[float],
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    engine: str,
    *,
    dataset: str | None = None,
    penalty: bool = False,
) -> Path:
    """Draw the per-step training loss (raw and smoothed) with per-epoch train/val loss markers.

    The x axis is in epochs (step / steps per epoch). Train loss is the mean over an epoch, so
    it is drawn at the epoch's middle; validation loss is measured at its end. ``penalty``: the
    training loss includes an L1/L2 weight penalty (the axis says so).
    """
    loss = np.asarray(step_loss, dtype=float)
    spe = _steps_per_epoch(len(loss), len(history))
    x = np.arange(1, len(loss) + 1) / spe
    epochs = np.arange(1, len(history) + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    colour = ENGINE_COLOURS.get(engine, "tab:blue")
    ax.plot(x, loss, color=colour, alpha=0.25, lw=0.5, label="per-step loss")
    window = max(1, int(round(spe / 10)))
    ax.plot(x, _moving_average(loss, window), color=colour, lw=1.5,
            label=f"moving average ({window} steps)")
    ax.plot(epochs - 0.5, _history_column(history, "train_loss"), "o", color="black", ms=5,
            label="train loss (epoch mean)")
    ax.plot(epochs, _history_column(history, "val_loss"), "s", color="tab:red", ms=5,
            label="validation loss (epoch end)")
    if loss.size and np.nanmin(loss) > 0 and np.nanmax(loss) / np.nanmin(loss) > 20:
        ax.set_yscale("log")
    ax.set_xlim(0, 1.015 * max(len(history), x[-1] if len(x) else 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy + weight penalty" if penalty else "cross-entropy loss")
    ax.set_title(f"{engine_label(engine)}{_on(dataset)}: training loss ({len(loss):,} steps)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gradient_flow(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    engine: str,
    *,
    dataset: str | None = None,
) -> Path:
    """Draw the per-layer gradient flow over the epochs (:mod:`nnscratch.report.gradient_flow_plot`)."""
    from nnscratch.report.gradient_flow_plot import gradient_flow_figure

    return save_figure(gradient_flow_figure(history, engine, dataset=dataset), path)


def plot_metrics(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    engine: str,
    *,
    dataset: str | None = None,
) -> Path:
    """Draw per-epoch accuracy / validation F1 (left) and train / validation loss (right)."""
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    series = (("train_accuracy", "train accuracy", "tab:blue", "o"),
              ("val_accuracy", "validation accuracy", "tab:red", "s"),
              ("val_f1", "validation F1 (weighted)", "tab:green", "^"))
    for key, label, colour, marker in series:
        ax_acc.plot(epochs, _history_column(history, key), marker=marker, color=colour,
                    ms=4, lw=1.3, label=label)
    ax_acc.set_title("accuracy and F1")
    ax_acc.set_ylabel("score")
    ax_acc.legend(loc="lower right", fontsize=9)
    for key, label, colour, marker in (("train_loss", "train loss", "tab:blue", "o"),
                                       ("val_loss", "validation loss", "tab:red", "s")):
        ax_loss.plot(epochs, _history_column(history, key), marker=marker, color=colour,
                     ms=4, lw=1.3, label=label)
    ax_loss.set_title("loss")
    ax_loss.set_ylabel("cross-entropy loss")
    ax_loss.legend(loc="upper right", fontsize=9)
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{engine_label(engine)}{_on(dataset)}: per-epoch metrics", fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- confusion matrix


def _cell_fontsize(n: int) -> int:
    """Font size of the counts (and class labels) of an ``n`` x ``n`` confusion matrix."""
    return 9 if n <= 10 else 8 if n <= 14 else 7


def _annotate_cells(ax: plt.Axes, cm: np.ndarray, off_max: float) -> None:
    """Write every non-zero count in its cell, white on dark cells and black elsewhere."""
    n = cm.shape[0]
    fontsize = _cell_fontsize(n) if n <= 14 else 6
    for i in range(n):
        for j in range(n):
            value = int(cm[i, j])
            if value == 0 and i != j:
                continue
            dark = i == j or (off_max > 0 and (value / off_max) ** 0.5 > 0.6)
            ax.text(j, i, f"{value:d}", ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black",
                    fontweight="bold" if i == j else "normal")


def _class_ticks(ax: plt.Axes, class_names: Sequence[str], n: int) -> None:
    """Label both axes with the class names, cut to :data:`LABEL_CHARS`, slanted when long.

    With many classes only every k-th class is labelled, so the labels never overlap.
    """
    step = max(1, -(-n // 40))
    ticks = np.arange(0, n, step)
    names = short_labels([class_names[i] if i < len(class_names) else str(i) for i in range(n)])
    labels = [names[i] for i in ticks]
    size = _cell_fontsize(n)
    ax.set_xticks(ticks, labels, fontsize=size)
    ax.set_yticks(ticks, labels, fontsize=size)
    if not _short(labels):
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    engine: str,
    *,
    dataset: str | None = None,
    noun: str = "class",
) -> Path:
    """Draw an annotated confusion matrix (rows = true class, columns = predicted class).

    The diagonal (correct predictions) is drawn in one flat colour and the errors on their own
    square-root colour scale, so that a handful of mistakes is not washed out by the thousand
    correct predictions beside them. Zero off-diagonal cells are left blank. The figure grows
    with the number of classes; long class names are cut (see :func:`short_label`) and slanted;
    beyond :data:`MAX_ANNOTATED_CLASSES` classes the cells carry no counts.
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    diag = np.eye(n, dtype=bool)
    off = np.ma.masked_array(cm, mask=diag)
    off_max = float(off.max()) if off.count() and off.max() > 0 else 1.0
    side = min(max(6.2, 0.42 * n + 2.8), 14.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(off, cmap="Reds", norm=PowerNorm(gamma=0.5, vmin=0, vmax=off_max))
    ax.imshow(np.ma.masked_array(np.ones_like(cm), mask=~diag),
              cmap=ListedColormap(["#2e7d32"]), vmin=0, vmax=1)
    if n <= MAX_ANNOTATED_CLASSES:
        _annotate_cells(ax, cm, off_max)
    _class_ticks(ax, class_names, n)
    ax.set_xlabel(f"predicted {noun}")
    ax.set_ylabel(f"true {noun}")
    ax.tick_params(which="both", length=0)
    if n <= 60:
        ticks = np.arange(n)
        ax.set_xticks(ticks[:-1] + 0.5, minor=True)
        ax.set_yticks(ticks[:-1] + 0.5, minor=True)
        ax.grid(which="minor", color="white", lw=1 if n <= 20 else 0.5)
    errors, total = int(cm.sum() - np.trace(cm)), int(cm.sum())
    where = f"the {dataset} test set" if dataset else "the test set"
    ax.set_title(f"{engine_label(engine)}: confusion matrix on {where}\n"
                 f"{errors:,} errors in {total:,} images (diagonal in green = correct)",
                 fontsize=11)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("misclassified images (off-diagonal, sqrt scale)")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- prediction grids


def select_predictions(
    labels: np.ndarray, probs: np.ndarray, correct: bool, n: int = 20
) -> np.ndarray:
    """Pick ``n`` test images to show, deterministically.

    Correct: the first correct predictions of each class in turn (round robin over the classes,
    in test-set order), so every class appears. Incorrect: the most confident mistakes, most
    confident first (ties broken by test-set index).
    """
    labels = np.asarray(labels)
    preds = np.argmax(probs, axis=1)
    if not correct:
        wrong = np.flatnonzero(preds != labels)
        confidence = probs[wrong, preds[wrong]]
        order = np.lexsort((wrong, -confidence))
        return wrong[order][:n]
    right = preds == labels
    per_class = [np.flatnonzero(right & (labels == c)) for c in range(probs.shape[1])]
    chosen: list[int] = []
    for rank in range(max((len(p) for p in per_class), default=0)):
        chosen.extend(int(p[rank]) for p in per_class if rank < len(p))
        if len(chosen) >= n:
            break
    return np.array(sorted(chosen[:n], key=lambda i: (labels[i], i)), dtype=np.int64)


def plot_predictions(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    engine: str,
    correct: bool,
    n: int = 20,
    *,
    dataset: str | None = None,
    noun: str = "class",
) -> Path:
    """Draw a grid of test images titled ``"pred cat (98.1%)"`` over ``"true dog"``.

    ``correct=True`` shows correct predictions (some of every class, in dark green);
    ``correct=False`` the ``n`` most confident mistakes, in red. See :func:`select_predictions`.
    Images may be ``(N, H, W)`` or ``(N, H, W, C)``; colour images are drawn in colour.
    """
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels)
    chosen = select_predictions(labels, probs, correct, n)
    names = short_labels(class_names)
    cols, sep = 5, " / " if _short(class_names) else "\n"
    rows = max(1, -(-max(len(chosen), 1) // cols))
    invert = ink_on_paper(images)
    fig, axes = plt.subplots(rows, cols, figsize=(9.5, 2.05 * rows + 0.7), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(chosen):
            ax.axis("off")
            continue
        i = int(chosen[k])
        pred = int(np.argmax(probs[i]))
        _image_axes(ax, images[i], invert)
        ax.set_title(f"pred {names[pred]} ({100 * probs[i, pred]:.1f}%){sep}"
                     f"true {names[int(labels[i])]}", fontsize=9,
                     color=_CORRECT_GREEN if pred == labels[i] else _MISTAKE_RED)
    n_wrong = int(np.sum(np.argmax(probs, axis=1) != labels))
    who = f"{engine_label(engine)}{_on(dataset)}"
    if correct:
        title = f"{who}: correct test predictions (each {noun} in turn)"
    else:
        title = (f"{who}: the {len(chosen)} most confident mistakes "
                 f"(of {n_wrong:,} errors on {len(labels):,} test images)")
    if not len(chosen):
        axes[0, 0].text(0, 0.5, "none to show", fontsize=12, transform=axes[0, 0].transAxes)
    fig.suptitle(title, fontsize=12)
    head = 0.75 if sep == " / " else 0.95                   # inches above the first row
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - head / fig.get_figheight(),
                        wspace=0.15, hspace=0.3 if sep == " / " else 0.4)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- learning rate


def plot_lr_schedule(
    step_lr: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    epochs: int | None = None,
    dataset: str | None = None,
) -> Path:
    """Draw the learning rate of every optimisation step, one line per engine.

    When every engine used the same rates (the twins normally do) one line is drawn and the
    legend says so. With ``epochs`` the x axis is in epochs, else in steps.

    Parameters
    ----------
    step_lr : mapping of engine -> sequence of float
        The learning rate each step used (``metrics["engines"][e]["step_lr"]``).
    path : path-like
        Destination PNG.
    """
    series = {e: np.asarray(v, dtype=float) for e, v in step_lr.items() if len(v)}
    first = next(iter(series.values()), np.zeros(0))
    same = all(np.array_equal(v, first) for v in series.values())
    lines = ({" and ".join(map(engine_label, series)) + (" (identical)" if len(series) > 1 else ""):
              ("black", first)} if same else
             {engine_label(e): (ENGINE_COLOURS.get(e, "tab:grey"), v) for e, v in series.items()})
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for k, (label, (colour, lrs)) in enumerate(lines.items()):
        x = np.arange(1, len(lrs) + 1) * (epochs / len(lrs) if epochs else 1.0)
        ax.plot(x, lrs, color=colour, lw=1.6, ls="-" if k == 0 else "--", label=label)
    ax.set_xlabel("epoch" if epochs else "optimisation step")
    if epochs:
        ax.set_xlim(0, epochs)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.set_ylabel("learning rate")
    if len(first):
        ax.set_title(f"Learning rate per step{_on(dataset)}: {first[0]:.3g} at the first step, "
                     f"peak {first.max():.3g}, {first[-1]:.3g} at the last ({len(first):,} steps)",
                     fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- twin divergence


def _loss_differences(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step absolute and relative differences ``|a-b|`` and ``|a-b| / max(|a|, |b|)``."""
    absdiff = np.abs(a - b)
    scale = np.maximum(np.abs(a), np.abs(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(scale > 0, absdiff / np.where(scale > 0, scale, 1.0), 0.0)
    return absdiff, rel


def _epoch_max(values: np.ndarray, epochs: int) -> np.ndarray:
    """The maximum of ``values`` within each of ``epochs`` equal runs of steps."""
    starts = np.unique(np.round(np.arange(epochs) * len(values) / epochs).astype(np.int64))
    starts = starts[starts < len(values)]
    return np.maximum.reduceat(values, starts) if len(starts) else np.zeros(0)


def _divergence_panel(
    ax: plt.Axes, x: np.ndarray, values: np.ndarray, epochs: int | None, what: str, colour: str
) -> None:
    """One log-scale panel: per-step points (zeros at the floor) and the per-epoch maximum."""
    zeros = int(np.sum(values <= 0))
    label = f"per step ({zeros:,} exact zeros drawn at {ZERO_FLOOR:.0e})" if zeros else "per step"
    dense = len(values) > 2000
    ax.plot(x, np.maximum(values, ZERO_FLOOR), ".", ms=2 if dense else 5,
            alpha=0.35 if dense else 0.8, color=colour, label=label, zorder=3, rasterized=True)
    if epochs:
        peak = np.maximum(_epoch_max(values, epochs), ZERO_FLOOR)
        ax.stairs(peak, np.arange(len(peak) + 1), color="black", lw=1.4, baseline=None,
                  label="maximum within each epoch", zorder=2)
        if epochs <= 60:
            for boundary in range(1, epochs):
                ax.axvline(boundary, color="grey", lw=0.6, ls=":", alpha=0.8)
    if zeros:
        ax.axhline(ZERO_FLOOR, color="grey", lw=0.8, ls="--")
        ax.text(1.0, ZERO_FLOOR, " exactly\n equal (0)", color="dimgrey", fontsize=8,
                transform=ax.get_yaxis_transform(), va="center", ha="left")
    shown = np.maximum(values, ZERO_FLOOR)
    if len(shown) and shown.min() == shown.max():  # identical twins: one value, a decade either side
        ax.set_ylim(shown.min() / 10, shown.max() * 10)
    ax.set_yscale("log")
    ax.set_ylabel(what)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, fontsize=8, frameon=False,
              markerscale=4 if dense else 1.5, borderaxespad=0.2)


def plot_twin_divergence(
    step_loss_numpy: Sequence[float],
    step_loss_torch: Sequence[float],
    path: str | os.PathLike,
    dtype: str,
    *,
    epochs: int | None = None,
    dataset: str | None = None,
) -> Path:
    """Draw how far the NumPy engine and its PyTorch twin drift apart, step by step.

    Both engines start from the same weights and see the same batches, so in exact arithmetic
    their losses would be equal; what is drawn is floating-point rounding. Top: both loss curves
    (a running mean over about 1/100 of the run), so that one sees they follow the same curve
    even where rounding has grown; middle: ``|loss_numpy - loss_torch|``; bottom: the relative
    difference with the dtype's machine epsilon for scale. The two lower panels on log axes,
    exact zeros clipped to :data:`ZERO_FLOOR` (said so in the legend).

    Parameters
    ----------
    step_loss_numpy, step_loss_torch : sequence of float
        Per-step training losses; compared over their common length.
    path : path-like
        Destination PNG.
    dtype : str
        The float dtype both engines trained in, e.g. ``"float32"``.
    epochs : int, optional
        Number of epochs the steps span: the x axis is then in epochs, with epoch boundaries.
    dataset : str, optional
        The dataset's title, for the figure's title.
    """
    a = np.asarray(step_loss_numpy, dtype=np.float64)
    b = np.asarray(step_loss_torch, dtype=np.float64)
    m = min(len(a), len(b))
    absdiff, rel = _loss_differences(a[:m], b[:m])
    x = np.arange(1, m + 1) * (epochs / m if epochs and m else 1.0)
    fig, (ax_loss, ax_abs, ax_rel) = plt.subplots(3, 1, figsize=(9.5, 10.5), sharex=True,
                                                  gridspec_kw={"height_ratios": [0.8, 1, 1]})
    _twin_curves(ax_loss, x, a[:m], b[:m])
    _divergence_panel(ax_abs, x, absdiff, epochs, "|loss NumPy − loss PyTorch|", "tab:purple")
    _divergence_panel(ax_rel, x, rel, epochs, "relative difference", "tab:cyan")
    eps = _machine_epsilon(dtype)
    if eps is not None:
        ax_rel.axhline(eps, color="tab:red", ls="--", lw=1.2, zorder=3)
        ax_rel.text(1.0, eps, f" {dtype}\n machine\n epsilon\n {eps:.1e}", color="tab:red",
                    fontsize=8, va="center", ha="left", transform=ax_rel.get_yaxis_transform())
    if m and not absdiff.any():
        ax_abs.text(0.5, 0.7, "bit-identical losses on every step", ha="center", fontsize=13,
                    color="tab:green", transform=ax_abs.transAxes)
    ax_rel.set_xlabel("epoch" if epochs else "optimisation step")
    if epochs:
        ax_rel.set_xlim(0, epochs)
        ax_rel.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(_divergence_title(absdiff, rel, dtype, len(a), len(b), dataset), fontsize=11)
    # fixed margins (tight_layout gives up on the epsilon label when a panel's range is tiny)
    fig.subplots_adjust(left=0.1, right=0.88, top=0.91, bottom=0.06, hspace=0.32)
    return save_figure(fig, path)


def _twin_curves(ax: plt.Axes, x: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Both engines' training loss, each a running mean over about 1/100 of the steps."""
    if not len(a):
        return
    window = max(1, len(a) // 100)
    kernel = np.ones(window) / window
    for loss, engine, style in ((a, "numpy", "-"), (b, "torch", "--")):
        smooth = np.convolve(loss, kernel, mode="valid")
        ax.plot(x[window - 1:], smooth, style, color=ENGINE_COLOURS.get(engine), lw=1.4,
                label=f"{engine_label(engine)} (mean of {window} steps)" if window > 1 else engine_label(engine))
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8, loc="upper right", frameon=False)
    ax.grid(alpha=0.3)


def _machine_epsilon(dtype: str) -> float | None:
    """``np.finfo(dtype).eps``, or ``None`` when ``dtype`` is not a float type name."""
    try:
        return float(np.finfo(np.dtype(dtype)).eps)
    except (TypeError, ValueError):
        return None


def _divergence_title(
    absdiff: np.ndarray, rel: np.ndarray, dtype: str, n_numpy: int, n_torch: int,
    dataset: str | None = None,
) -> str:
    """Title of the twin figure: the largest differences, the dtype and the step count."""
    m = len(absdiff)
    if m == 0:
        headline = "no steps to compare"
    elif not absdiff.any():
        headline = f"identical losses on all {m:,} steps"
    else:
        headline = (f"max |Δ loss| = {absdiff.max():.2e}, max relative = {rel.max():.2e} "
                    f"over {m:,} steps")
    if n_numpy != n_torch:
        headline += f" (logs differ in length: {n_numpy:,} vs {n_torch:,})"
    return (f"{engine_label('numpy')} vs {engine_label('torch')} twin{_on(dataset)} in {dtype}: "
            f"{headline}\n"
            "same initial weights, same batches, same dropout masks — every difference is floating-point rounding")


# --------------------------------------------------------------------------- the whole set


def write_figures(
    out_dir: str | os.PathLike,
    metrics: Mapping[str, Any],
    *,
    test_images: np.ndarray | None,
    test_labels: np.ndarray | None,
    probabilities: Mapping[str, np.ndarray] | None,
    class_names: Sequence[str] | None = None,
    train_images: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
) -> list[Path]:
    """Draw every figure of a run into ``out_dir`` and return their paths, in report order.

    Writes ``{slug}_samples.png`` (when training images are given; ``slug`` from
    :func:`nnscratch.report.display_names.dataset_slug`, e.g. ``mnist``, ``cifar10``), ``lr_schedule.png``
    (when some engine's ``step_lr`` is not constant), then for each engine in
    ``metrics["engines"]``: ``{engine}_loss_curve.png``, ``{engine}_metrics.png``,
    ``{engine}_confusion_matrix.png``, ``{engine}_gradient_flow.png`` (when its history has the
    gradient flow) and, when its test probabilities are given,
    ``{engine}_correct_predictions.png`` and ``{engine}_incorrect_predictions.png``; finally
    ``twin_divergence.png`` when both ``numpy`` and ``torch`` ran.

    Images are uint8 ``(N, H, W, C)`` (or ``(N, H, W)``): greyscale drawn in grey, colour in
    colour. The dataset's title and class names come from ``metrics["dataset"]``; ``class_names``
    overrides the latter (see :func:`nnscratch.report.context.dataset_view`).
    """
    out = Path(out_dir)
    engines: Mapping[str, Any] = metrics.get("engines", {})
    view = _with_class_names(dataset_view(metrics, class_names), engines, train_labels)
    epochs = max((len(r.get("history") or []) for r in engines.values()), default=0) or None
    written: list[Path] = []
    if train_images is not None and train_labels is not None:
        written.append(plot_samples(train_images, train_labels, view.class_names,
                                    out / f"{view.slug}_samples.png",
                                    title=f"{view.title} training samples"))
    if lr_varies(metrics):
        written.append(plot_lr_schedule(step_lrs(metrics), out / "lr_schedule.png",
                                        epochs=epochs, dataset=view.title))
    for engine, result in engines.items():
        written += _engine_figures(out, engine, result, view, test_images, test_labels,
                                   (probabilities or {}).get(engine))
    if "numpy" in engines and "torch" in engines:
        # compared over the epochs both ran (early stopping may end the twins apart)
        common = min(len(engines[e].get("history") or []) for e in ("numpy", "torch"))
        written.append(plot_twin_divergence(
            engines["numpy"].get("step_loss", []), engines["torch"].get("step_loss", []),
            out / "twin_divergence.png", str(metrics.get("config", {}).get("dtype", "float32")),
            epochs=common or None, dataset=view.title))
    return written


def _with_class_names(
    view: DatasetView, engines: Mapping[str, Any], labels: np.ndarray | None
) -> DatasetView:
    """``view``, with the labels ``"0"``, ``"1"``, ... as class names when none are recorded."""
    if view.class_names:
        return view
    sizes = [len(r.get("test", {}).get("confusion_matrix") or []) for r in engines.values()]
    if labels is not None and len(labels):
        sizes.append(int(np.max(labels)) + 1)
    return replace(view, class_names=tuple(str(i) for i in range(max(sizes, default=0))))


def _engine_figures(
    out: Path,
    engine: str,
    result: Mapping[str, Any],
    view: DatasetView,
    test_images: np.ndarray | None,
    test_labels: np.ndarray | None,
    probs: np.ndarray | None,
) -> list[Path]:
    """The figures of one engine (the two prediction grids only when data is given, the gradient
    flow only when the run recorded it)."""
    history = result.get("history") or []
    names, about = view.class_names, {"dataset": view.title}
    written = [
        plot_loss_curve(result.get("step_loss", []), history,
                        out / f"{engine}_loss_curve.png", engine,
                        penalty=bool(result.get("loss_includes_penalty")), **about),
        plot_metrics(history, out / f"{engine}_metrics.png", engine, **about),
        plot_confusion_matrix(result["test"]["confusion_matrix"], names,
                              out / f"{engine}_confusion_matrix.png", engine, noun=view.noun,
                              **about),
    ]
    if any(h.get("gradient_flow") for h in history):
        written.append(plot_gradient_flow(history, out / f"{engine}_gradient_flow.png", engine, **about))
    if test_images is not None and test_labels is not None and probs is not None:
        for correct, name in ((True, "correct"), (False, "incorrect")):
            written.append(plot_predictions(
                test_images, test_labels, probs, names,
                out / f"{engine}_{name}_predictions.png", engine, correct, noun=view.noun,
                **about))
    return written

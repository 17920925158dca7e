"""The report's figures, drawn with matplotlib's Agg backend and written atomically.

Every function takes plain data (lists, NumPy arrays, the dicts of ``metrics.json``) and a
destination path, draws one figure, writes it through :func:`nnscratch.io.atomic_path` and closes
it. :func:`write_figures` draws the whole set for one ``compare``/``train`` run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap, PowerNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from nnscratch.io import atomic_path  # noqa: E402

DPI = 110
#: Differences of exactly zero cannot sit on a log axis; they are drawn at this floor instead.
ZERO_FLOOR = 1e-18
ENGINE_NAMES = {"numpy": "NumPy", "torch": "PyTorch"}
ENGINE_COLOURS = {"numpy": "tab:blue", "torch": "tab:orange"}
_MISTAKE_RED = "#c62828"
_CORRECT_GREEN = "#1b5e20"


def _short(class_names: Sequence[str]) -> bool:
    """Whether every class name is short (digits), so titles fit on one line."""
    return max((len(str(c)) for c in class_names), default=0) <= 3


def dataset_label(name: str) -> str:
    """``"mnist"`` -> ``"MNIST"``, ``"fashion-mnist"`` -> ``"Fashion-MNIST"``; others as given."""
    return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(name.lower(), name)


def engine_label(engine: str) -> str:
    """Display name of an engine key: ``"numpy"`` -> ``"NumPy"``, ``"torch"`` -> ``"PyTorch"``."""
    return ENGINE_NAMES.get(engine, engine)


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically, close it and return the path."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return Path(path)


def _image_axes(ax: plt.Axes, image: np.ndarray) -> None:
    """Show a 28x28 grey image without ticks or frame."""
    ax.imshow(image, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# --------------------------------------------------------------------------- samples


def _first_per_class(labels: np.ndarray, n_classes: int, per_class: int) -> list[list[int]]:
    """Indices of the first ``per_class`` examples of each class, in dataset order."""
    picks: list[list[int]] = []
    for cls in range(n_classes):
        picks.append([int(i) for i in np.flatnonzero(labels == cls)[:per_class]])
    return picks


def plot_samples(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    per_class: int = 2,
    title: str = "Training samples",
) -> Path:
    """Draw ``per_class`` examples of every class: one column per class, labelled.

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W)
    labels : ndarray of int, shape (N,)
    class_names : sequence of str
        Display names indexed by label.
    path : path-like
        Destination PNG.
    """
    labels = np.asarray(labels)
    n_classes = len(class_names)
    picks = _first_per_class(labels, n_classes, per_class)
    fig, axes = plt.subplots(
        per_class, n_classes, figsize=(1.0 * n_classes, 1.15 * per_class + 0.5), squeeze=False
    )
    for col, indices in enumerate(picks):
        for row in range(per_class):
            ax = axes[row, col]
            if row < len(indices):
                _image_axes(ax, images[indices[row]])
                ax.set_title(str(class_names[col]), fontsize=10 if _short(class_names) else 8,
                             pad=2)
            else:
                ax.axis("off")
    fig.suptitle(title, fontsize=12)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.8, wspace=0.08, hspace=0.35)
    return _save(fig, path)


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
) -> Path:
    """Draw the per-step training loss (raw and smoothed) with per-epoch train/val loss markers.

    The x axis is in epochs (step / steps per epoch). Train loss is the mean over an epoch, so
    it is drawn at the epoch's middle; validation loss is measured at its end.
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
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(f"{engine_label(engine)}: training loss ({len(loss):,} steps)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_metrics(
    history: Sequence[Mapping[str, Any]], path: str | os.PathLike, engine: str
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
    fig.suptitle(f"{engine_label(engine)}: per-epoch metrics", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- confusion matrix


def _annotate_cells(ax: plt.Axes, cm: np.ndarray, off_max: float) -> None:
    """Write every non-zero count in its cell, white on dark cells and black elsewhere."""
    n = cm.shape[0]
    fontsize = 9 if n <= 10 else 7
    for i in range(n):
        for j in range(n):
            value = int(cm[i, j])
            if value == 0 and i != j:
                continue
            dark = i == j or (off_max > 0 and (value / off_max) ** 0.5 > 0.6)
            ax.text(j, i, f"{value:d}", ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black",
                    fontweight="bold" if i == j else "normal")


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    engine: str,
) -> Path:
    """Draw an annotated confusion matrix (rows = true class, columns = predicted class).

    The diagonal (correct predictions) is drawn in one flat colour and the errors on their own
    square-root colour scale, so that a handful of mistakes is not washed out by the thousand
    correct predictions beside them. Zero off-diagonal cells are left blank.
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    diag = np.eye(n, dtype=bool)
    off = np.ma.masked_array(cm, mask=diag)
    off_max = float(off.max()) if off.count() and off.max() > 0 else 1.0
    fig, ax = plt.subplots(figsize=(7.2, 6.2))
    image = ax.imshow(off, cmap="Reds", norm=PowerNorm(gamma=0.5, vmin=0, vmax=off_max))
    ax.imshow(np.ma.masked_array(np.ones_like(cm), mask=~diag),
              cmap=ListedColormap(["#2e7d32"]), vmin=0, vmax=1)
    _annotate_cells(ax, cm, off_max)
    ticks = np.arange(n)
    ax.set_xticks(ticks, [str(c) for c in class_names])
    ax.set_yticks(ticks, [str(c) for c in class_names])
    if not _short(class_names):
        plt.setp(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.tick_params(length=0)
    ax.set_xticks(ticks[:-1] + 0.5, minor=True)
    ax.set_yticks(ticks[:-1] + 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1)
    errors, total = int(cm.sum() - np.trace(cm)), int(cm.sum())
    ax.set_title(f"{engine_label(engine)}: confusion matrix on the test set\n"
                 f"{errors:,} errors in {total:,} images (diagonal in green = correct)",
                 fontsize=11)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label("misclassified images (off-diagonal, sqrt scale)")
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- prediction grids


def select_predictions(
    labels: np.ndarray, probs: np.ndarray, correct: bool, n: int = 20
) -> np.ndarray:
    """Pick ``n`` test images to show, deterministically.

    Correct: the first correct predictions of each class in turn (round robin over the classes,
    in test-set order), so every digit appears. Incorrect: the most confident mistakes, most
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
) -> Path:
    """Draw a grid of test images titled ``"pred 7 (98.1%) / true 7"``.

    ``correct=True`` shows correct predictions (some of every digit, in dark green);
    ``correct=False`` the ``n`` most confident mistakes, in red. See :func:`select_predictions`.
    """
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels)
    chosen = select_predictions(labels, probs, correct, n)
    cols, sep = 5, " / " if _short(class_names) else "\n"
    rows = max(1, -(-max(len(chosen), 1) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(9.5, 2.05 * rows + 0.7), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(chosen):
            ax.axis("off")
            continue
        i = int(chosen[k])
        pred = int(np.argmax(probs[i]))
        _image_axes(ax, images[i])
        ax.set_title(f"pred {class_names[pred]} ({100 * probs[i, pred]:.1f}%){sep}"
                     f"true {class_names[int(labels[i])]}", fontsize=9,
                     color=_CORRECT_GREEN if pred == labels[i] else _MISTAKE_RED)
    n_wrong = int(np.sum(np.argmax(probs, axis=1) != labels))
    if correct:
        kind = "digit" if _short(class_names) else "class"
        title = f"{engine_label(engine)}: correct test predictions (each {kind} in turn)"
    else:
        title = (f"{engine_label(engine)}: the {len(chosen)} most confident mistakes "
                 f"(of {n_wrong:,} errors on {len(labels):,} test images)")
    if not len(chosen):
        axes[0, 0].text(0, 0.5, "none to show", fontsize=12, transform=axes[0, 0].transAxes)
    fig.suptitle(title, fontsize=12)
    head = 0.75 if sep == " / " else 0.95                   # inches above the first row
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - head / fig.get_figheight(),
                        wspace=0.15, hspace=0.3 if sep == " / " else 0.4)
    return _save(fig, path)


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
) -> Path:
    """Draw how far the NumPy engine and its PyTorch twin drift apart, step by step.

    Both engines start from the same weights and see the same batches, so in exact arithmetic
    their losses would be equal; what is drawn is floating-point rounding. Top: ``|loss_numpy -
    loss_torch|``; bottom: the relative difference with the dtype's machine epsilon for scale.
    Both on log axes, exact zeros clipped to :data:`ZERO_FLOOR` (said so in the legend).

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
    """
    a = np.asarray(step_loss_numpy, dtype=np.float64)
    b = np.asarray(step_loss_torch, dtype=np.float64)
    m = min(len(a), len(b))
    absdiff, rel = _loss_differences(a[:m], b[:m])
    x = np.arange(1, m + 1) * (epochs / m if epochs and m else 1.0)
    fig, (ax_abs, ax_rel) = plt.subplots(2, 1, figsize=(9.5, 7), sharex=True)
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
    fig.suptitle(_divergence_title(absdiff, rel, dtype, len(a), len(b)), fontsize=11)
    fig.tight_layout(h_pad=2.5)
    return _save(fig, path)


def _machine_epsilon(dtype: str) -> float | None:
    """``np.finfo(dtype).eps``, or ``None`` when ``dtype`` is not a float type name."""
    try:
        return float(np.finfo(np.dtype(dtype)).eps)
    except (TypeError, ValueError):
        return None


def _divergence_title(
    absdiff: np.ndarray, rel: np.ndarray, dtype: str, n_numpy: int, n_torch: int
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
    return (f"NumPy vs PyTorch twin in {dtype}: {headline}\n"
            "same initial weights, same batches — every difference is floating-point rounding")


# --------------------------------------------------------------------------- the whole set


def write_figures(
    out_dir: str | os.PathLike,
    metrics: Mapping[str, Any],
    *,
    test_images: np.ndarray | None,
    test_labels: np.ndarray | None,
    probabilities: Mapping[str, np.ndarray] | None,
    class_names: Sequence[str],
    train_images: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
) -> list[Path]:
    """Draw every figure of a run into ``out_dir`` and return their paths, in report order.

    Writes ``{dataset}_samples.png`` (when training images are given), then for each engine in
    ``metrics["engines"]``: ``{engine}_loss_curve.png``, ``{engine}_metrics.png``,
    ``{engine}_confusion_matrix.png`` and, when its test probabilities are given,
    ``{engine}_correct_predictions.png`` and ``{engine}_incorrect_predictions.png``; finally
    ``twin_divergence.png`` when both ``numpy`` and ``torch`` ran.
    """
    out = Path(out_dir)
    engines: Mapping[str, Any] = metrics.get("engines", {})
    dataset = str(metrics.get("dataset", {}).get("name", "dataset"))
    written: list[Path] = []
    if train_images is not None and train_labels is not None:
        written.append(plot_samples(train_images, train_labels, class_names,
                                    out / f"{dataset}_samples.png",
                                    title=f"{dataset_label(dataset)} training samples"))
    for engine, result in engines.items():
        written += _engine_figures(out, engine, result, class_names, test_images, test_labels,
                                   (probabilities or {}).get(engine))
    if "numpy" in engines and "torch" in engines:
        history = engines["numpy"].get("history") or []
        written.append(plot_twin_divergence(
            engines["numpy"].get("step_loss", []), engines["torch"].get("step_loss", []),
            out / "twin_divergence.png", str(metrics.get("config", {}).get("dtype", "float32")),
            epochs=len(history) or None))
    return written


def _engine_figures(
    out: Path,
    engine: str,
    result: Mapping[str, Any],
    class_names: Sequence[str],
    test_images: np.ndarray | None,
    test_labels: np.ndarray | None,
    probs: np.ndarray | None,
) -> list[Path]:
    """The five figures of one engine (the two prediction grids only when data is given)."""
    history = result.get("history") or []
    written = [
        plot_loss_curve(result.get("step_loss", []), history,
                        out / f"{engine}_loss_curve.png", engine),
        plot_metrics(history, out / f"{engine}_metrics.png", engine),
        plot_confusion_matrix(result["test"]["confusion_matrix"], class_names,
                              out / f"{engine}_confusion_matrix.png", engine),
    ]
    if test_images is not None and test_labels is not None and probs is not None:
        for correct, name in ((True, "correct"), (False, "incorrect")):
            written.append(plot_predictions(
                test_images, test_labels, probs, class_names,
                out / f"{engine}_{name}_predictions.png", engine, correct))
    return written

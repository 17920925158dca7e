"""The figures of ``nnscratch inspect`` (the numbers are :mod:`nnscratch.analysis.inspect`'s).

Weights and saliency maps are signed: they are drawn with a diverging colour map centred at 0
(red: positive, blue: negative, white: 0), each image scaled to its own largest magnitude (the
titles say so); a colour image's weights are drawn as an RGB image, ``0.5 + w / (2 max|w|)``
(grey is 0). Greyscale images with bright ink on a dark background (MNIST) are drawn as dark ink
on white paper, as the run reports draw them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from nnscratch.report.plots import _CORRECT_GREEN, _MISTAKE_RED, _image_axes, ink_on_paper, save_figure, \
    short_labels  # noqa: E402

#: The diverging map of every signed image, and the sequential one of non-negative activations.
SIGNED, UNSIGNED = "RdBu_r", "viridis"
#: Saliency maps are scaled to this percentile of |S| (one bright pixel must not wash the rest out).
SALIENCY_PERCENTILE = 99.0
#: The outline over a greyscale image's saliency map: this fraction of the way from its darkest to its brightest.
OUTLINE_LEVEL = 0.3
#: class_units.png shows at most this many classes (the first ones, said so in its title).
MAX_CLASS_ROWS = 20
#: The colour of weights that never act (pixels the same in every test image), and what the legend says.
UNUSED = (0.8, 0.8, 0.8, 1.0)
UNUSED_NOTE = "\ngrey: pixels the same in every test image (their weights never act)"


def _off(ax: plt.Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def signed_tile(values: np.ndarray, image_shape: tuple[int, int, int], unused: np.ndarray | None = None,
                scale: float | None = None) -> np.ndarray:
    """The signed vector ``values (H*W*C,)`` as an RGBA image ``(H, W, 4)``, centred at 0 and
    scaled to ``scale`` (default: its own ``max |values|``): greyscale through :data:`SIGNED`,
    colour as RGB ``0.5 + values / (2 scale)`` (clipped). Pixels where ``unused (H, W)`` is True
    are drawn grey (and left out of the maximum)."""
    return signed_tiles(np.asarray(values)[None], image_shape, unused, scale)[0]


def signed_tiles(values: np.ndarray, image_shape: tuple[int, int, int], unused: np.ndarray | None = None,
                 scale: float | None = None) -> np.ndarray:
    """:func:`signed_tile` of every row of ``values (n, H*W*C)`` at once, each scaled to its own
    maximum (or all to ``scale``): ``(n, H, W, 4)``, one colour-map call for all of them (64
    calls of one tile each took 40 ms)."""
    h, w, c = image_shape
    v = np.asarray(values, dtype=np.float64).reshape(-1, h, w, c)
    if scale is None:
        used = v if unused is None or unused.all() else v[:, ~unused]
        scale = np.max(np.abs(used.reshape(len(v), -1)), axis=1, initial=0.0)
    scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(v),))
    scales = np.where(scales > 0, scales, 1.0)[:, None, None, None]
    shifted = np.clip(0.5 + v / (2 * scales), 0, 1)
    if c == 3:
        rgba = np.concatenate([shifted, np.ones((len(v), h, w, 1))], axis=3)
    else:
        rgba = plt.get_cmap(SIGNED)(shifted[..., 0])
    if unused is not None:
        rgba[:, unused] = UNUSED
    return rgba


def _mosaic(tiles: Sequence[np.ndarray | None], cols: int, gap: int, head: int) -> np.ndarray:
    """RGBA tiles ``(h, w, 4)`` (None: blank) in a grid of ``cols`` columns on white, ``gap``
    pixels apart and ``head`` pixels above each row (for its captions): one image, drawn at once
    (a grid of 64 axes takes matplotlib seconds)."""
    h, w = next(t for t in tiles if t is not None).shape[:2]
    rows = -(-len(tiles) // cols)
    out = np.ones((rows * (h + head + gap), cols * (w + gap) - gap, 4))
    for k, tile in enumerate(tiles):
        if tile is not None:
            r, c = divmod(k, cols)
            top, left = r * (h + head + gap) + head, c * (w + gap)
            out[top:top + h, left:left + w] = tile
    return out


def weight_grid(weights: np.ndarray, image_shape: tuple[int, int, int], cols: int = 8) -> np.ndarray:
    """The rows of ``weights (n, H*W*C)`` (a dense layer's incoming weights, one unit a row) as one
    uint8 RGB picture ``(rows * (H + gap), cols * (W + gap) - gap, 3)`` on white: each unit's
    weights a :func:`signed_tile` (scaled to its own largest magnitude), in a grid of ``cols``
    columns (fewer when there are fewer units), without captions. What ``plot_first_layer`` draws,
    as an image for TensorBoard."""
    h, w, _ = image_shape
    tiles = list(signed_tiles(weights, image_shape))
    mosaic = _mosaic(tiles, max(1, min(cols, len(tiles))), max(1, w // 10), 0)
    return np.round(mosaic[:, :, :3] * 255).astype(np.uint8)


def _caption_tiles(ax: plt.Axes, captions: Sequence[str], cols: int, h: int, w: int, gap: int, head: int,
                   fontsize: float = 7, colours: Sequence[str] | None = None) -> None:
    """Each caption centred in the head space above its tile of a :func:`_mosaic`."""
    for k, text in enumerate(captions):
        r, c = divmod(k, cols)
        ax.text(c * (w + gap) + (w - 1) / 2, r * (h + head + gap) + head - 1.5, text, ha="center", va="bottom",
                fontsize=fontsize, color=colours[k] if colours else "black")


def _signed_legend(fig: plt.Figure, rect: Sequence[float], text: str, colour: bool) -> None:
    """A colour bar in ``rect`` (figure fractions) from ``-max`` to ``+max`` (greyscale), or a line
    saying how colour images map (RGB weights have no single colour bar)."""
    if colour:
        fig.text(rect[0] + rect[2] / 2, rect[1], text + "; grey = 0, each channel 0.5 + w / (2 max|w|)",
                 ha="center", fontsize=9)
        return
    bar = fig.colorbar(ScalarMappable(Normalize(-1, 1), SIGNED), cax=fig.add_axes(rect), orientation="horizontal")
    bar.set_ticks([-1, 0, 1], labels=["-max", "0", "+max"])
    bar.ax.tick_params(labelsize=8)
    bar.set_label(text, fontsize=9)


def plot_first_layer(weights: np.ndarray, units: Sequence[int], image_shape: tuple[int, int, int],
                     path: str | os.PathLike, *, title: str, labels: Sequence[str] | None = None,
                     unused: np.ndarray | None = None) -> Path:
    """The first dense layer's incoming weights, one image per unit (``weights (n, D)``, unit
    indices ``units``; ``labels`` replace the ``unit u`` captions, e.g. class names for a network
    without a hidden layer), in a grid of at most 8 columns; pixels where ``unused (H, W)`` is True
    (the same in every test image: their weights never act) are grey."""
    n, (h, w, c) = len(units), image_shape
    cols = min(8, max(1, int(np.ceil(np.sqrt(n)))))
    gap, head = max(1, w // 10), max(3, h // 5)
    mosaic = _mosaic(list(signed_tiles(weights[:n], image_shape, unused)), cols, gap, head)
    width = 1.3 * cols + 0.4
    height = 0.96 * width * mosaic.shape[0] / mosaic.shape[1] + 1.75
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes([0.02, 1.1 / height, 0.96, 1 - 1.75 / height])
    ax.imshow(mosaic, interpolation="nearest")
    _caption_tiles(ax, [labels[k] if labels is not None else f"unit {units[k]}" for k in range(n)], cols, h, w, gap,
                   head, fontsize=8)
    _off(ax)
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / height, va="top")
    _signed_legend(fig, [0.2, 0.6 / height, 0.6, 0.13 / height], _weight_legend(unused), c == 3)
    return save_figure(fig, path)


def plot_class_units(top: np.ndarray, scores: np.ndarray, weights: np.ndarray, class_means: np.ndarray,
                     class_names: Sequence[str], image_shape: tuple[int, int, int], path: str | os.PathLike, *,
                     title: str, unused: np.ndarray | None = None) -> Path:
    """One row per class: the class's mean test image, then its top units (``top (C, k)``, from
    :func:`~nnscratch.analysis.inspect.top_units`), each drawn as its incoming weights
    (``weights (U, D)``, the whole first layer) and captioned with its score (``scores (C, U)``)."""
    shown, k = min(len(top), MAX_CLASS_ROWS), top.shape[1]
    (h, w, c), names = image_shape, short_labels(class_names)
    gap, head = max(1, w // 10), max(3, h // 5)
    tiles = [signed_tile(weights[u], image_shape, unused) for row in top[:shown] for u in row]
    units = _mosaic(tiles, k, gap, head)
    means = _mosaic([_uint8_tile(class_means[r], ink_on_paper(class_means)) for r in range(shown)], 1, gap, head)
    inch = 1.2 / (w + gap)                        # inches per pixel of both mosaics, so that their rows line up
    left_in = 0.25 + 0.075 * max(len(nm) for nm in names[:shown])
    width = left_in + inch * (w + 3 * gap) + inch * units.shape[1] + 0.15
    height = inch * units.shape[0] + 1.95
    fig = plt.figure(figsize=(width, height))
    bottom, rows_h = 1.0 / height, inch * units.shape[0] / height
    left = left_in / width
    ax_means = fig.add_axes([left, bottom, inch * w / width, rows_h])
    ax_units = fig.add_axes([left + inch * (w + 3 * gap) / width, bottom, inch * units.shape[1] / width, rows_h])
    ax_means.imshow(means, interpolation="nearest")
    ax_units.imshow(units, interpolation="nearest")
    for ax in (ax_means, ax_units):
        ax.set_anchor("N")
        _off(ax)
    _caption_tiles(ax_means, ["class mean"] + [""] * (shown - 1), 1, h, w, gap, head)
    for r in range(shown):
        ax_means.text(-2, r * (h + head + gap) + head + h / 2, names[r], ha="right", va="center", fontsize=9)
    _caption_tiles(ax_units, [f"unit {u}: {scores[r, u]:+.2g}" for r, row in enumerate(top[:shown]) for u in row],
                   k, h, w, gap, head)
    if shown < len(top):
        title += f" (the first {shown} of {len(top)} classes)"
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    _signed_legend(fig, [left + 0.2 * (1 - left), 0.6 / height, 0.6 * (1 - left), 0.13 / height],
                   _weight_legend(unused), c == 3)
    return save_figure(fig, path)


def _weight_legend(unused: np.ndarray | None) -> str:
    text = "incoming weight (each image scaled to its own max |w|)"
    return text + UNUSED_NOTE if unused is not None and unused.any() else text


def _uint8_tile(image: np.ndarray, invert: bool) -> np.ndarray:
    """A uint8 image ``(H, W, C)`` as an RGBA tile, greyscale inverted when ``invert`` (ink on paper)."""
    v = np.asarray(image, dtype=np.float64) / 255.0
    if v.shape[2] == 1:
        v = np.repeat(1.0 - v if invert else v, 3, axis=2)
    return np.concatenate([v[:, :, :3], np.ones(v.shape[:2] + (1,))], axis=2)


def _grid(values: np.ndarray) -> np.ndarray:
    """A vector of ``U`` unit activations as a near-square ``(rows, cols)`` grid, row by row,
    NaN past the last unit (drawn blank)."""
    u = len(values)
    cols = int(np.ceil(np.sqrt(u)))
    rows = -(-u // cols)
    out = np.full(rows * cols, np.nan)
    out[:u] = values
    return out.reshape(rows, cols)


def _probability_bars(ax: plt.Axes, probs: np.ndarray, true: int, names: Sequence[str], top: int = 10) -> None:
    """Horizontal bars of the class probabilities (the ``top`` most probable when there are more
    classes, the true class always among them), the predicted class in green when right and red
    when wrong, the true class in bold."""
    order = np.argsort(-probs, kind="stable")[:top] if len(probs) > top else np.arange(len(probs))
    if true not in order:
        order[-1] = true
    pred = int(np.argmax(probs))
    colours = ["0.7"] * len(order)
    for j, c in enumerate(order):
        if c == pred:
            colours[j] = _CORRECT_GREEN if pred == true else _MISTAKE_RED
    ax.barh(np.arange(len(order)), probs[order], color=colours)
    j, p = int(np.flatnonzero(order == pred)[0]), float(probs[pred])
    inside = p > 0.6  # the value inside a long bar, in white; beside a short one
    ax.text(p - 0.02 if inside else p + 0.02, j, f"{100 * p:.1f}%", va="center", ha="right" if inside else "left",
            fontsize=7, color="white" if inside else "black")
    ax.set_yticks(np.arange(len(order)), [names[c] for c in order], fontsize=7)
    for tick, c in zip(ax.get_yticklabels(), order):
        if c == true:
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.5, 1])
    ax.tick_params(axis="x", labelsize=7)


def _axes_grid(rows: int, widths: Sequence[float], height: float, *, left: float, right: float, top: float,
               bottom: float, wgap: float, hgap: float) -> tuple[plt.Figure, np.ndarray, tuple[float, float]]:
    """A figure with a ``rows x len(widths)`` grid of axes, every size in inches (column widths
    ``widths``, row ``height``, margins and gaps), placed by hand: matplotlib's automatic layouts
    take seconds on grids this size. Returns the figure, the axes ``(rows, cols)`` and its size."""
    W = left + sum(widths) + wgap * (len(widths) - 1) + right
    H = top + rows * height + hgap * (rows - 1) + bottom
    fig = plt.figure(figsize=(W, H))
    axes = np.empty((rows, len(widths)), dtype=object)
    for r in range(rows):
        y = H - top - (r + 1) * height - r * hgap
        for c, w in enumerate(widths):
            x = left + sum(widths[:c]) + c * wgap
            axes[r, c] = fig.add_axes([x / W, y / H, w / W, height / H])
    return fig, axes, (W, H)


def _bar_axes(fig: plt.Figure, size: tuple[float, float], x: float, width: float, y: float = 0.45) -> plt.Axes:
    """An axes for a horizontal colour bar, ``width`` inches wide from ``x``, ``y`` inches up."""
    W, H = size
    return fig.add_axes([x / W, y / H, width / W, 0.13 / H])


def _activation_scale(values: np.ndarray) -> tuple[Normalize, str, str]:
    """One layer's colour scale, up to the 99th percentile of ``|values|`` (a few large units must
    not wash out the rest; the colour bar's arrows say when values lie beyond): :data:`UNSIGNED`
    from 0 for non-negative outputs (ReLU, sigmoid), else :data:`SIGNED`, symmetric about 0 (equal
    magnitudes, equal colours: GELU's small negative part stays pale, as small as it is)."""
    bound = float(np.percentile(np.abs(values), 99)) or float(np.max(np.abs(values))) or 1.0
    low, high = float(np.min(values)), float(np.max(values))
    if low >= 0:
        return Normalize(0, bound), UNSIGNED, "max" if high > bound else "neither"
    extend = {(True, True): "both", (True, False): "min", (False, True): "max"}.get((low < -bound, high > bound),
                                                                                 "neither")
    return Normalize(-bound, bound), SIGNED, extend


def plot_activations(images: np.ndarray, indices: Sequence[int], labels: np.ndarray, outputs: list[np.ndarray],
                     layer_names: Sequence[str], probs: np.ndarray, class_names: Sequence[str],
                     path: str | os.PathLike, *, title: str) -> Path:
    """One row per chosen test image: the image, each hidden block's output (``outputs[l] (n, U_l)``)
    as a near-square grid of its units (row by row; one colour scale per layer, shared by the
    images so that they compare), and the output probabilities (``probs (n, C)``) as bars."""
    n, layers = len(indices), len(outputs)
    names = short_labels(class_names)
    label_width = 0.25 + 0.065 * max(len(nm) for nm in names)
    widths = [1.3] + [1.5] * layers + [1.5]
    fig, axes, size = _axes_grid(n, widths, 1.3, left=max(1.0, 0.2 + 0.075 * (5 + max(len(nm) for nm in names))),
                                 right=0.2, top=1.1, bottom=0.95, wgap=max(0.35, label_width), hgap=0.2)
    invert = ink_on_paper(images)
    for r, i in enumerate(indices):
        _image_axes(axes[r, 0], images[r], invert)
        axes[r, 0].set_ylabel(f"test #{i}\ntrue {names[labels[r]]}", fontsize=8, rotation=0, ha="right",
                              va="center")
        _probability_bars(axes[r, -1], probs[r], int(labels[r]), names)
    for l, out in enumerate(outputs):
        norm, cmap, extend = _activation_scale(out)
        for r in range(n):
            axes[r, l + 1].imshow(_grid(out[r]), cmap=cmap, norm=norm, interpolation="nearest")
            _off(axes[r, l + 1])
        axes[0, l + 1].set_title(layer_names[l], fontsize=8)
        x = axes[0, l + 1].get_position().x0 * size[0]
        bar = fig.colorbar(ScalarMappable(norm, cmap), cax=_bar_axes(fig, size, x + 0.1, widths[l + 1] - 0.2),
                           orientation="horizontal", extend=extend)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("activation", fontsize=7)
    axes[0, 0].set_title("input", fontsize=8)
    axes[0, -1].set_title("output probabilities\n(true class in bold)", fontsize=8)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / size[1], va="top")
    return save_figure(fig, path)


def _saliency_axes(ax: plt.Axes, values: np.ndarray, image: np.ndarray, image_shape: tuple[int, int, int]) -> None:
    """One saliency map scaled to its own :data:`SALIENCY_PERCENTILE` of ``|S|`` (greyscale:
    :data:`SIGNED`, with the image's outline over it; colour: each channel's gradient as RGB,
    grey where all three are 0), as :func:`signed_tile` draws weights."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    scale = float(np.percentile(v, SALIENCY_PERCENTILE)) or float(np.max(v)) or 1.0
    ax.imshow(signed_tile(values, image_shape, scale=scale), interpolation="nearest")
    c = image_shape[2]
    if c == 1 and np.ptp(image) > 0:  # the object's outline: a level of the lightly blurred image (no texture)
        from scipy.ndimage import gaussian_filter

        soft = gaussian_filter(np.asarray(image, dtype=float)[:, :, 0], 0.8)
        ax.contour(soft, levels=[float(soft.min() + OUTLINE_LEVEL * np.ptp(soft))], colors="0.15", linewidths=0.7,
                   alpha=0.7)
    _off(ax)


def plot_saliency(images: np.ndarray, indices: Sequence[int], labels: np.ndarray, predicted: np.ndarray,
                  confidence: np.ndarray, maps: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str],
                  image_shape: tuple[int, int, int], path: str | os.PathLike, *, title: str) -> Path:
    """One row per chosen test image: the image, then each saliency map of ``maps`` (``(column
    title, (n, D) array)``: the plain gradient, SmoothGrad), red where raising the pixel raises the
    class score, blue where it lowers it."""
    n, cols = len(indices), 1 + len(maps)
    names = short_labels(class_names)
    left = 0.35 + 0.065 * max(len(nm) for nm in names) + 0.4
    fig, axes, size = _axes_grid(n, [1.9] * cols, 1.9, left=left, right=0.2, top=1.15, bottom=0.95,
                                 wgap=0.15, hgap=0.15)
    invert = ink_on_paper(images)
    for r, i in enumerate(indices):
        _image_axes(axes[r, 0], images[r], invert)
        wrong = predicted[r] != labels[r]
        axes[r, 0].set_ylabel(f"test #{i}\ntrue {names[labels[r]]}\npred {names[predicted[r]]}\n"
                              f"({100 * confidence[r]:.1f}%)", fontsize=8, rotation=0, ha="right", va="center",
                              color=_MISTAKE_RED if wrong else "black")
        for j, (_, values) in enumerate(maps):
            _saliency_axes(axes[r, j + 1], values[r], images[r], image_shape)
    axes[0, 0].set_title("input", fontsize=9)
    for j, (name, _) in enumerate(maps):
        axes[0, j + 1].set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / size[1], va="top")
    span = size[0] - left - 0.2
    if image_shape[2] == 3:
        fig.text((left + span / 2) / size[0], 0.5 / size[1], "d score / d pixel of each channel as RGB: "
                 f"0.5 + S / (2 s), s = the map's {SALIENCY_PERCENTILE:g}th percentile of |S|; grey: 0",
                 ha="center", fontsize=8)
        return save_figure(fig, path)
    bar = fig.colorbar(ScalarMappable(Normalize(-1, 1), SIGNED),
                       cax=_bar_axes(fig, size, left + 0.15 * span, 0.7 * span), orientation="horizontal")
    bar.set_ticks([-1, 0, 1], labels=["lowers the score", "0", "raises it"])
    bar.ax.tick_params(labelsize=8)
    bar.set_label(f"d score / d pixel (each map scaled to its own {SALIENCY_PERCENTILE:g}th percentile of |S|)",
                  fontsize=8)
    return save_figure(fig, path)


def plot_top_losses(images: np.ndarray, top: dict, class_names: Sequence[str], path: str | os.PathLike, *,
                    title: str) -> Path:
    """The test images of highest loss (``top``: :func:`~nnscratch.analysis.inspect.top_losses`),
    highest first, each captioned with its index, true and predicted class, confidence and loss."""
    n = len(top["index"])
    cols = min(8, max(n, 1))
    rows = max(1, -(-n // cols))
    names = short_labels(class_names)
    fig, axes, size = _axes_grid(rows, [1.45] * cols, 1.45, left=0.2, right=0.2, top=0.9, bottom=0.1, wgap=0.2,
                                 hgap=0.65)
    invert = ink_on_paper(images)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        _image_axes(ax, images[k], invert)
        true, pred = int(top["true"][k]), int(top["predicted"][k])
        ax.set_title(f"#{top['index'][k]}  loss {top['loss'][k]:.2f}\ntrue {names[true]}\n"
                     f"pred {names[pred]} ({100 * top['confidence'][k]:.1f}%)", fontsize=8, pad=3,
                     color=_CORRECT_GREEN if true == pred else _MISTAKE_RED)
    fig.suptitle(title, fontsize=11, y=1 - 0.08 / size[1], va="top")
    return save_figure(fig, path)

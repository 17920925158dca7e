"""The gradient-flow figure (``{engine}_gradient_flow.png``): per-layer lines over the epochs.

Four panels, one line per layer, coloured from the input side (dark) to the output side (light):
the gradient norm of each dense layer's weight and its update-to-weight ratio (log scales, where
vanishing and exploding gradients show as lines orders of magnitude apart or running away), the
standard deviation of each activation's output, and the dead fraction of the ReLU-family layers
(their output mean when the network has none). The numbers are ``metrics.json``'s
``history[i]["gradient_flow"]`` (:mod:`nnscratch.training.gradient_flow`). The figure is drawn
here and written by :func:`nnscratch.report.plots.plot_gradient_flow`, with the other figures.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

from nnscratch.report.display_names import engine_label  # noqa: E402

#: A healthy update-to-weight ratio is often said to be near this (drawn as a guide, not a rule).
UPDATE_RATIO_GUIDE = 1e-3


def _activation_kinds() -> set[str]:
    from nnscratch.model.registry import ACTIVATIONS

    return {kind for kind, _ in ACTIVATIONS.values()}


def _series(history: Sequence[Mapping[str, Any]], part: str, name: str, stat: str) -> np.ndarray:
    """``history[e]["gradient_flow"][part][name][stat]`` for every epoch (NaN where missing)."""
    values = []
    for h in history:
        v = ((h.get("gradient_flow") or {}).get(part) or {}).get(name, {}).get(stat)
        values.append(np.nan if v is None else float(v))
    return np.array(values, dtype=float)


def _lines(ax, epochs, history, part: str, names: list[str], labels: list[str], stat: str) -> None:
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, max(len(names), 1)))
    for name, label, colour in zip(names, labels, colours):
        ax.plot(epochs, _series(history, part, name, stat), marker="o", ms=3.5, lw=1.6, color=colour, label=label)


def _log_axis(ax, series: list) -> None:
    """A log y axis spanning the positive finite values of ``series`` with a margin (set by hand:
    matplotlib warns when all the values are one number, e.g. a one-epoch run). The margin is
    reckoned in decades, and the limits kept within 1e-200..1e200 (matplotlib's log ticks overflow
    beyond), so norms from 1e-300 to 1e300 still make an axis (the most extreme clipped); with no positive finite value at all (a diverged run: every gradient
    NaN or infinite) the axis stays linear and says so."""
    values = np.concatenate([np.asarray(v, dtype=float) for v in series])
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        ax.text(0.5, 0.5, "no finite value to draw\n(the run diverged: NaN or infinite)", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color="0.35")
        ax.set_yticks([])
        return
    lo, hi = np.log10(values.min()), np.log10(values.max())  # the limits first: they turn off the
    pad = max(0.06 * (hi - lo), np.log10(1.5))                # autoscaling that set_yscale would run
    ax.set_ylim(10.0 ** max(lo - pad, -200.0), 10.0 ** min(hi + pad, 200.0))
    ax.set_yscale("log")


def gradient_flow_figure(history: Sequence[Mapping[str, Any]], engine: str, *,
                         dataset: str | None = None) -> plt.Figure:
    """The gradient-flow figure of one engine's run (its ``metrics.json`` history; the epochs
    that recorded it)."""
    recorded = [h for h in history if h.get("gradient_flow")]
    last = recorded[-1]["gradient_flow"]
    epochs = np.array([h.get("epoch", k + 1) for k, h in enumerate(recorded)], dtype=float)
    kinds = {name: entry.get("kind", "") for name, entry in last["layers"].items()}
    weights = [p for p in last["params"] if p.endswith(".weight") and kinds.get(p.rsplit(".", 1)[0]) == "dense"]
    weight_labels = [f"{p} (dense {k + 1} of {len(weights)})" for k, p in enumerate(weights)]
    acts = [n for n, kind in kinds.items() if kind in _activation_kinds()] or \
        [n for n, kind in kinds.items() if kind == "dense"]
    act_labels = [f"layer {n} ({kinds[n]})" for n in acts]
    dead = [n for n, entry in last["layers"].items() if "dead_fraction" in entry]

    fig, axes = plt.subplots(2, 2, figsize=(13, 7.6), sharex=True)
    (ax_g, ax_u), (ax_s, ax_d) = axes
    _lines(ax_g, epochs, recorded, "params", weights, weight_labels, "grad_norm")
    ax_g.set_title("gradient norm ||dL/dW|| of each dense layer", fontsize=10)
    _lines(ax_u, epochs, recorded, "params", weights, weight_labels, "update_ratio")
    ax_u.axhline(UPDATE_RATIO_GUIDE, color="0.5", ls=":", lw=1, label="1e-3 (a common rule of thumb)")
    ax_u.set_title("update-to-weight ratio ||ΔW|| / ||W||", fontsize=10)
    _log_axis(ax_g, [_series(recorded, "params", p, "grad_norm") for p in weights])
    _log_axis(ax_u, [_series(recorded, "params", p, "update_ratio") for p in weights] + [[UPDATE_RATIO_GUIDE]])
    _lines(ax_s, epochs, recorded, "layers", acts, act_labels, "std")
    ax_s.set_title("activation std (each activation's output)", fontsize=10)
    if dead:
        _lines(ax_d, epochs, recorded, "layers", dead, [f"layer {n} ({kinds[n]})" for n in dead], "dead_fraction")
        fractions = np.concatenate([_series(recorded, "layers", n, "dead_fraction") for n in dead])
        top = max(0.1, 1.15 * (np.nanmax(fractions) if np.isfinite(fractions).any() else 0.0))
        ax_d.set_ylim(-0.01 * top, top)
        ax_d.set_title("dead units (input <= 0 for the whole batch)", fontsize=10)
        ax_d.yaxis.set_major_formatter(PercentFormatter(1.0))
    else:
        _lines(ax_d, epochs, recorded, "layers", acts, act_labels, "mean")
        ax_d.set_title("activation mean (no ReLU-family layers: no dead units)", fontsize=10)
    for ax in axes.flat:
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlim(epochs.min() - 0.3, epochs.max() + 0.3)  # whole epochs, also for a single one
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 1]:  # one legend per row, outside: the lines stay visible
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    samples = len(last.get("steps") or [])
    on = f" on {dataset}" if dataset else ""
    fig.suptitle(f"{engine_label(engine)}{on}: gradient flow per layer (mean of {samples} sampled steps per epoch; "
                 "dark = input side)", fontsize=11)
    fig.tight_layout()
    return fig

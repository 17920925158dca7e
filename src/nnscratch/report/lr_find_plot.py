"""The learning-rate range test's figure (``nnscratch lr-find``): raw and smoothed loss against the
learning rate on a log axis, both suggested rates marked and labelled."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnscratch.report.plots import save_figure  # noqa: E402

_MARKS = (("steepest", "tab:red", "steepest descent"), ("min_over_10", "tab:green", "minimum / 10"))


def plot_lr_find(sweep: dict, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw a sweep of :func:`nnscratch.analysis.lr_find.lr_sweep` (its ``lrs``, ``losses``,
    ``smoothed``, ``suggestions``, ``stop_reason``) into the PNG ``path``.

    The y axis is cut at a little above the first smoothed loss (twice the best, at least), so the
    divergence at the end does not flatten the part that matters."""
    lrs, raw, smoothed = (np.asarray(sweep[k], dtype=float) for k in ("lrs", "losses", "smoothed"))
    fig, ax = plt.subplots(figsize=(8, 4.6))
    ax.plot(lrs, raw, color="tab:blue", lw=0.8, alpha=0.35, label="loss of each step")
    ax.plot(lrs, smoothed, color="tab:blue", lw=2, label="smoothed (EMA, beta 0.98, bias-corrected)")
    ax.set_xscale("log")
    for key, colour, name in _MARKS:
        lr = sweep["suggestions"].get(key)
        if lr is None:
            continue
        y = float(np.interp(np.log10(lr), np.log10(lrs), smoothed)) if len(lrs) else 0.0
        ax.axvline(lr, color=colour, ls="--", lw=1.2)
        ax.plot([lr], [y], "o", color=colour, ms=7, label=f"{name}: --lr {lr:.3g}")
    if len(smoothed):
        top = max(1.15 * smoothed[0], 2 * float(np.min(smoothed)))
        ax.set_ylim(bottom=max(0.0, float(np.min(raw)) * 0.9 if len(raw) else 0.0), top=top)
        ax.set_xlim(lrs[0], lrs[-1] if len(lrs) > 1 else lrs[0] * 10)
    ended = {"nan": "stopped: the loss became NaN or infinite", "diverged":
             f"stopped: smoothed loss above {sweep.get('diverge_factor', 4):g}x the best"}.get(sweep.get("stop_reason"),
                                                                                         "ran to the last rate")
    ax.set_title(title or "Learning-rate range test", fontsize=11)
    ax.text(0.01, 0.02, f"{len(lrs)} steps, lr {sweep['start_lr']:.0e} to {sweep['end_lr']:.0e}; {ended}",
            transform=ax.transAxes, fontsize=8, color="0.35")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)

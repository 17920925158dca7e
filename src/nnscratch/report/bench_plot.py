"""The benchmark figure (``nnscratch bench --plot``): seconds per epoch per engine and configuration,
with the physical limit."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nnscratch.report.plots import save_figure  # noqa: E402

COLORS = {"numpy-float32": "#1f77b4", "numpy-float64": "#9ecae1", "numpy-float32-jit": "#17becf",
          "torch-eager": "#d62728", "torch-compile": "#ff9896", "jax-jit": "#2ca02c", "sklearn": "#7f7f7f",
          "numpy-float32+augment": "#ff7f0e"}


def plot_benchmark(result: dict, path: str) -> None:
    """Grouped bars (one group per architecture and batch size), the float32 limit as a black line."""
    rows = [r for r in result["rows"] if r["s_per_epoch"]]
    groups = list(dict.fromkeys((r["arch"], r["batch_size"]) for r in rows))
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    width = 0.8 / max(len(engines), 1)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for j, engine in enumerate(engines):
        xs, ys = [], []
        for i, g in enumerate(groups):
            match = [r for r in rows if (r["arch"], r["batch_size"]) == g and r["engine"] == engine]
            if match:
                xs.append(i - 0.4 + (j + 0.5) * width)
                ys.append(match[0]["s_per_epoch"])
        ax.bar(xs, ys, width, label=engine, color=COLORS.get(engine))
    for i, (arch, _) in enumerate(groups):
        limit = result["limit_s_per_epoch"][f"{arch} float32"]
        ax.hlines(limit, i - 0.45, i + 0.45, colors="black", linewidth=2,
                  label="float32 limit (all FLOPs at GEMM peak)" if i == 0 else None)
    # a config's row names its file and network: wrap it so that neighbouring labels do not overlap
    ax.set_xticks(np.arange(len(groups)), [textwrap.fill(a.replace(": ", ":\n", 1), 22) + f"\nbatch {b}"
                                           for a, b in groups], fontsize=9)
    ax.set_ylabel(f"seconds per epoch ({result.get('train_images', 50_000):,} images, lower is better)")
    peak = result["peak_gflops"]["float32"]["peak"]
    ax.set_title(f"Training speed per engine, {result.get('threads', '?')} threads "
                 f"(float32 GEMM peak {peak:.0f} GFLOP/s)")
    ax.legend(fontsize=8, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)

"""Everything a run writes besides the model: figures, ``report.md`` and the machine block.

Typical use after training::

    figures = write_figures(out_dir, metrics, test_images=..., test_labels=..., probabilities=...,
                            class_names=..., train_images=..., train_labels=...)
    write_report(out_dir / "report.md", metrics, [f.name for f in figures])

Both read the dataset's title, class names and image shape from ``metrics["dataset"]`` (see
:mod:`nnscratch.report.context`); images are uint8 ``(N, H, W, C)``, drawn in grey or in colour.
The benchmark's figure lives here too (:mod:`nnscratch.report.bench_plot`).
"""

from __future__ import annotations

from nnscratch.report.machine import machine_info
from nnscratch.report.markdown import render_report, write_report
from nnscratch.report.plots import write_figures

__all__ = ["machine_info", "render_report", "write_figures", "write_report"]

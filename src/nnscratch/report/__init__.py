"""Everything a run writes besides the model: figures, ``report.md`` and the machine block.

Typical use after training::

    figures = write_figures(out_dir, metrics, test_images=..., test_labels=..., probabilities=...,
                            class_names=..., train_images=..., train_labels=...)
    write_report(out_dir / "report.md", metrics, figures)
"""

from __future__ import annotations

from nnscratch.report.machine import machine_info
from nnscratch.report.markdown import render_report, write_report
from nnscratch.report.plots import write_figures

__all__ = ["machine_info", "render_report", "write_figures", "write_report"]

"""The JSON the page asks for: the list of runs, and one run's charts (:class:`Dashboard`).

A run's view holds, per engine, its step losses (raw and smoothed with the debiased EMA, both
downsampled to the page's width: :mod:`nnscratch.dashboard.series`), its rates, its per-epoch
accuracies (each at the global step that ended its epoch, so that losses and accuracies share
one step axis), its gradient norms per parameter per epoch; the twins' divergence
``|loss_numpy - loss_torch|`` per step; the figures written so far; and the warnings of its log.
Views are cached per ``(log version, points, smoothing)``, so many open tabs asking every second
cost one read of what was appended, not one per tab.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from nnscratch.dashboard.runlog import RunLog
from nnscratch.dashboard.runs import RunFolderInfo, figures, folder_status, scan
from nnscratch.dashboard.series import debiased_ema, downsample_minmax

#: How many runs' logs are kept in memory at least (the least recently viewed go first); the list
#: keeps every listed run's, and drops those of runs that are gone.
MAX_LOGS = 64
DEFAULT_POINTS, MAX_POINTS = 2000, 20000


class Dashboard:
    """The runs of ``runs_dir`` and their views."""

    def __init__(self, runs_dir: str | os.PathLike) -> None:
        self.runs_dir = Path(runs_dir)
        self.root = Path(os.path.realpath(self.runs_dir))
        self._logs: OrderedDict[str, RunLog] = OrderedDict()
        self._views: dict[str, tuple[tuple, dict]] = {}
        self._lock = threading.Lock()
        self._capacity = MAX_LOGS

    def _log(self, run: RunFolderInfo) -> RunLog:
        key = str(run.path)
        with self._lock:
            log = self._logs.pop(key, None) or RunLog(run.log)
            self._logs[key] = log
            while len(self._logs) > self._capacity:
                old, _ = self._logs.popitem(last=False)
                self._views.pop(old, None)
        log.update()
        return log

    def find(self, run_id: str) -> RunFolderInfo | None:
        return scan(self.runs_dir).get(run_id)

    # -- the list ------------------------------------------------------------------------------

    def run_list(self) -> dict:
        """``{"runs": [...]}``: each run's id, name, dataset, config summary, status, best validation
        accuracy, engines and warning count; the newest first."""
        rows, runs = [], scan(self.runs_dir)
        listed = {str(run.path) for run in runs.values()}
        with self._lock:
            self._capacity = max(MAX_LOGS, len(runs) + 8)
            for gone in [key for key in self._logs if key not in listed]:
                del self._logs[gone]
                self._views.pop(gone, None)
        for run in runs.values():
            log = self._log(run)
            rows.append(self._summary(run, log))
        rows.sort(key=lambda r: (r["updated"] or 0, r["id"]), reverse=True)
        return {"runs_dir": self.runs_dir.name or str(self.runs_dir), "runs": rows}

    def _summary(self, run: RunFolderInfo, log: RunLog) -> dict:
        best = [row.get("val_accuracy") for s in log.engines.values() for row in s.epochs.values()]
        best = [b for b in best if b is not None and math.isfinite(b)]
        try:
            updated = os.stat(run.log).st_mtime if log.events else os.stat(run.path).st_mtime
        except OSError:
            updated = None
        return {"id": run.id, "name": run.name, "dataset": str(log.config.get("dataset", "?")),
                "summary": config_summary(log.config),
                "status": folder_status(run, {e: s.ended for e, s in log.engines.items()}),
                "best_accuracy": max(best) if best else None, "engines": sorted(log.engines),
                "warnings": log.warning_count, "updated": updated}

    # -- one run -------------------------------------------------------------------------------

    def run_view(self, run_id: str, points: int = DEFAULT_POINTS, smoothing: float = 0.6,
                 since: int | None = None) -> dict | None:
        """One run's charts (None: no such run); ``{"unchanged": true}`` when its log's version is
        still ``since`` (the page then keeps what it has)."""
        run = self.find(run_id)
        if run is None:
            return None
        log = self._log(run)
        status = folder_status(run, {e: s.ended for e, s in log.engines.items()})
        shown = figures(run, self.root)
        version = f"{log.version}-{status}-{len(shown)}"
        if since is not None and str(since) == version:
            return {"unchanged": True, "version": version}
        points = max(10, min(int(points), MAX_POINTS))
        key = (version, points, smoothing)
        with log.lock:
            cached = self._views.get(str(run.path))
            if cached is not None and cached[0] == key:
                return cached[1]
            view = self._build(run, log, status, points, smoothing)
        view.update(version=version, figures=shown)
        self._views[str(run.path)] = (key, view)
        return view

    def _build(self, run: RunFolderInfo, log: RunLog, status: str, points: int, smoothing: float) -> dict:
        engines, losses = {}, {}
        for name, series in sorted(log.engines.items()):
            steps, loss, lr = series.step_arrays()
            losses[name] = (steps, loss)
            spe = series.steps_per_epoch
            epochs = sorted(series.epochs)
            at = [e * spe if spe else e for e in epochs]
            engines[name] = {
                "loss": _xy(*downsample_minmax(steps, loss, points)),
                "smoothed": _xy(*downsample_minmax(steps, debiased_ema(loss, smoothing), points)),
                "lr": _xy(*downsample_minmax(steps, lr, points)),
                "val_accuracy": {"x": at, "epoch": epochs,
                                 "y": [_json(series.epochs[e].get("val_accuracy")) for e in epochs]},
                "train_accuracy": {"x": at, "epoch": epochs,
                                   "y": [_json(series.epochs[e].get("train_accuracy")) for e in epochs]},
                "gradient_norms": {p: {"x": sorted(v), "y": [_json(v[e]) for e in sorted(v)]}
                                   for p, v in series.gradient_norms.items()},
                "steps": int(len(steps)), "steps_per_epoch": spe, "epochs_planned": series.epochs_planned,
                "ended": series.ended}
        view = {"id": run.id, "name": run.name, "status": status, "missing": log.missing,
                "dataset": str(log.config.get("dataset", "?")), "summary": config_summary(log.config),
                "engines": engines, "warnings": list(log.warnings), "warning_count": log.warning_count,
                "points": points, "smoothing": smoothing}
        if "numpy" in losses and "torch" in losses:
            view["divergence"] = _xy(*downsample_minmax(*twin_divergence(losses["numpy"], losses["torch"]), points))
        return view


def twin_divergence(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, |loss_a - loss_b|)`` over the steps both engines have logged (ascending)."""
    steps, ia, ib = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    return steps, np.abs(a[1][ia] - b[1][ib])


def config_summary(config: dict) -> str:
    """A run's configuration in a line, such as ``hidden 128 64 relu, sgd lr 0.01, batch 64, 5 epochs``."""
    if not config:
        return ""
    parts = []
    hidden = config.get("hidden")
    if hidden:
        parts.append("hidden " + " ".join(str(h) for h in hidden) + f" {config.get('activation', '')}".rstrip())
    if config.get("optimizer"):
        parts.append(f"{config['optimizer']} lr {config.get('lr')}")
    if config.get("lr_schedule") not in (None, "none"):
        parts.append(f"{config['lr_schedule']} schedule")
    for key, label in (("dropout", "dropout"), ("l2", "l2")):
        if config.get(key):
            parts.append(f"{label} {config[key]}")
    if config.get("batch_norm"):
        parts.append("batch norm")
    if config.get("augment") not in (None, "none"):
        parts.append(f"augment {config['augment']}")
    parts.append(f"batch {config.get('batch_size')}, {config.get('epochs')} epochs")
    if config.get("train_subset"):
        parts.append(f"{config['train_subset']:,} training images")
    return ", ".join(parts)


def _xy(x: np.ndarray, y: np.ndarray) -> dict:
    return {"x": np.asarray(x).tolist(), "y": [_json(v) for v in np.asarray(y, dtype=np.float64).tolist()]}


def _json(value):
    """A float for JSON: None (null) for NaN and infinities, which strict JSON has not."""
    return value if value is not None and math.isfinite(value) else None

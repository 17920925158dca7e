"""One run's ``metrics.jsonl``, followed: :class:`RunLog`.

Each :meth:`RunLog.update` reads only what was appended since the last one (by byte offset,
:func:`~nnscratch.training.sinks.read_jsonl_chunk`), so a run of 100,000 steps is read once, not
once per page refresh. A half-written last line waits for the next call; a line that is not
JSON is skipped and named in :attr:`RunLog.warnings`; a file that shrank or was replaced (a run
written again into the same folder) is read again from its start; a file that disappeared
leaves what was read and sets :attr:`RunLog.missing`.

What it keeps, per engine (:class:`EngineSeries`): the step losses and rates, the per-epoch
figures (validation accuracy and loss, training accuracy and loss), the gradient norms per
parameter per epoch, and how the engine's run ended.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnscratch.training.sinks import read_jsonl_chunk

#: At most this many warnings are kept per run (the count goes on).
MAX_WARNINGS = 20


@dataclass
class EngineSeries:
    """What one engine's events said so far."""

    steps: list = field(default_factory=list)      # global step (1-based)
    loss: list = field(default_factory=list)       # its training loss (NaN: not finite)
    lr: list = field(default_factory=list)
    epochs: dict = field(default_factory=dict)     # epoch -> {"val_accuracy", "val_loss", "train_accuracy", ...}
    gradient_norms: dict = field(default_factory=dict)  # parameter ("0.weight") -> {epoch: |g|}
    steps_per_epoch: int | None = None
    epochs_planned: int | None = None
    ended: str | None = None                       # RunEnd's reason, once it came

    def step_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, loss, lr)`` ascending by step; a step logged twice (a resumed run that went
        back to its checkpoint) counts with its last value."""
        steps = np.asarray(self.steps, dtype=np.int64)
        loss = np.asarray(self.loss, dtype=np.float64)
        lr = np.asarray(self.lr, dtype=np.float64)
        if steps.size and np.any(np.diff(steps) <= 0):
            last = len(steps) - 1 - np.unique(steps[::-1], return_index=True)[1]
            steps, loss, lr = steps[last], loss[last], lr[last]
        return steps, loss, lr


class RunLog:
    """Follows ``path`` (a ``metrics.jsonl``); thread-safe (:meth:`update` holds a lock)."""

    def __init__(self, path: str | Path, chunk_bytes: int = 16 << 20) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.offset = 0
        self.identity: tuple | None = None   # (device, inode) of the file being read
        self.engines: dict[str, EngineSeries] = {}
        self.config: dict = {}
        self.warnings: list[str] = []
        self.warning_count = 0
        self.events = 0
        self.version = 0                      # grows with every change: clients ask "since version V"
        self.missing = False
        self.last_time: float | None = None   # the newest event's "time"

    def update(self) -> bool:
        """Read what was appended since the last call; return whether anything changed."""
        with self.lock:
            try:
                st = os.stat(self.path)
            except OSError:
                changed = not self.missing
                self.missing = True
                if changed:
                    self.version += 1
                return changed
            changed = self.missing
            self.missing = False
            identity = (st.st_dev, st.st_ino)
            if self.identity is not None and (identity != self.identity or st.st_size < self.offset):
                self._reset()
                self._warn("the log was replaced or cut short; read again from its start")
                changed = True
            self.identity = identity
            while self.offset < st.st_size:
                try:
                    events, offset, problems = read_jsonl_chunk(self.path, self.offset, self.chunk_bytes)
                except OSError:
                    self.missing, changed = True, True
                    break
                if offset == self.offset:
                    break  # only a line still being written is left
                self.offset = offset
                for problem in problems:
                    self._warn(f"metrics.jsonl {problem}: skipped")
                for event in events:
                    self._take(event)
                changed = True
            if changed:
                self.version += 1
            return changed

    def _warn(self, message: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def _engine(self, event: dict) -> EngineSeries | None:
        name = event.get("engine")
        if not isinstance(name, str):
            return None
        return self.engines.setdefault(name, EngineSeries())

    def _take(self, event: dict) -> None:
        """One event into the series (an event missing what it should hold is a warning)."""
        self.events += 1
        if isinstance(event.get("time"), (int, float)):
            self.last_time = float(event["time"])
        series = self._engine(event)
        if series is None:
            self._warn(f"an event without an engine ({str(event.get('kind'))[:20]}): skipped")
            return
        try:
            kind = event.get("kind")
            if kind == "steps":
                first = int(event["first_step"])
                loss, lr = [_number(v) for v in event["loss"]], [_number(v) for v in event["lr"]]
                if len(lr) != len(loss):
                    raise ValueError("loss and lr differ in length")
                series.steps.extend(range(first, first + len(loss)))  # all three, or none
                series.loss.extend(loss)
                series.lr.extend(lr)
            elif kind == "run_start":
                self.config = self.config or dict(event.get("config") or {})
                series.steps_per_epoch = int(event["steps_per_epoch"])
                series.epochs_planned = int(event["epochs"])
                series.ended = None
            elif kind == "evaluation" and event.get("split", "val") == "val":
                row = series.epochs.setdefault(int(event["epoch"]), {})
                row.update(val_accuracy=_number(event["accuracy"]), val_loss=_number(event["loss"]))
            elif kind == "epoch_end":
                record = event["record"]
                row = series.epochs.setdefault(int(record["epoch"]), {})
                row.update(train_accuracy=_number(record.get("train_accuracy")),
                           train_loss=_number(record.get("train_loss")),
                           val_accuracy=_number(record.get("val_accuracy")), val_loss=_number(record.get("val_loss")))
            elif kind == "gradient_flow":
                epoch = int(event["epoch"])
                for name, stats in dict(event["params"]).items():
                    series.gradient_norms.setdefault(str(name), {})[epoch] = _number(stats.get("grad_norm"))
            elif kind == "run_end":
                series.ended = str(event["reason"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._warn(f"a {str(event.get('kind'))[:20]} event that cannot be read ({type(exc).__name__}): skipped")


def _number(value) -> float:
    """A JSON number as a float (``null``, written for a non-finite number, is NaN)."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("not a number")
    return float(value)

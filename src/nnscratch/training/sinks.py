"""Sinks: what listens to a trainer's events (:mod:`nnscratch.training.events`).

* :class:`ProgressBar`: a tqdm bar per epoch, shown only when stderr is a terminal (a run piped
  to a log file gets no carriage-return residue);
* :class:`EpochLines`: calls a function with each epoch's record (the command line prints them);
* :class:`JsonlWriter`: ``metrics.jsonl``, one JSON object per event (step losses batched per
  line), flushed within a second, so that another process can follow a run;
  :func:`follow_jsonl` reads what was added since the last call, leaving out a half-written line
  (:func:`read_jsonl_chunk` also says which lines it skipped: the dashboard).

The :class:`~nnscratch.training.loop.History` is a sink too, and so is early stopping's
:class:`~nnscratch.training.trainer.RestoreBest`; TensorBoard's is
:class:`~nnscratch.training.tensorboard_sink.TensorBoardWriter` (``--tensorboard DIR``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from nnscratch.files.atomic import finite_json
from nnscratch.files.json_text import parse_json


class ProgressBar:
    """A tqdm progress bar over each epoch's steps (``disable``: never; None: when stderr is not a terminal)."""

    def __init__(self, disable: bool | None = None) -> None:
        self.disable = (not _is_terminal(sys.stderr)) if disable is None else disable
        self._bar = None
        self._epochs = 0
        self._steps_per_epoch = 0

    def __call__(self, event) -> None:
        if self.disable:
            return
        kind = event.kind
        if kind == "run_start":
            self._epochs, self._steps_per_epoch = event.epochs, event.steps_per_epoch
        elif kind == "step_end":
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self._steps_per_epoch, unit="step", leave=False, mininterval=0.5,
                                 desc=f"{event.engine:>5} epoch {event.epoch}/{self._epochs}",
                                 initial=(event.step - 1) % self._steps_per_epoch)
            self._bar.update(1)
        elif kind in ("epoch_end", "run_end") and self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class EpochLines:
    """Calls ``write(engine, record)`` after every epoch (``record``: the EpochRecord as a dict)."""

    def __init__(self, write: Callable[[str, dict], None]) -> None:
        self.write = write

    def __call__(self, event) -> None:
        if event.kind == "epoch_end":
            self.write(event.engine, event.record)


class JsonlWriter:
    """Appends the events to ``path`` as JSON lines, each written within ``flush_s`` seconds of the
    next event (so within a second and a block of steps of happening), every non-step event at once.

    ``StepEnd`` events are gathered and written as one line per block:
    ``{"kind": "steps", "engine": ..., "first_step": k, "epoch": [...], "loss": [...], "lr": [...]}``;
    every other event is one line, its dataclass fields (``kind`` included). Non-finite numbers are
    written as ``null`` (the file is strict JSON). Every line also has ``"time"`` (Unix seconds).
    """

    def __init__(self, path: str | Path, flush_s: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self.flush_s = flush_s
        self._last_flush = time.monotonic()
        self._steps: list = []

    def __call__(self, event) -> None:
        if event.kind == "step_end":
            self._steps.append(event)
            if time.monotonic() - self._last_flush >= self.flush_s:
                self._write_steps()
                self._flush()
            return
        self._write_steps()
        self._write(asdict(event))
        self._flush()
        if event.kind == "run_end":
            self.close()

    def _write_steps(self) -> None:
        if not self._steps:
            return
        s, self._steps = self._steps, []
        self._write({"kind": "steps", "engine": s[0].engine, "first_step": s[0].step,
                     "epoch": [e.epoch for e in s], "loss": [e.loss for e in s], "lr": [e.lr for e in s],
                     "batch_size": [e.batch_size for e in s]})

    def _write(self, obj: dict) -> None:
        if self._file.closed:
            self._file = open(self.path, "a", encoding="utf-8")
        obj = {**obj, "time": round(time.time(), 3)}
        self._file.write(json.dumps(finite_json(obj), allow_nan=False) + "\n")

    def _flush(self) -> None:
        self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self._write_steps()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Every complete event of a ``metrics.jsonl`` that may still be growing, from the start.

    A last line without its newline (the writer is mid-line) is left out; so is a line that is not
    a JSON object (a file cut by a crash). To follow a run, use :func:`follow_jsonl`.
    """
    yield from follow_jsonl(path)[0]


def follow_jsonl(path: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """``(events, next_offset)``: the complete events written after byte ``offset``, and where the
    next call should start (just after the last complete line). Call it again with ``next_offset``
    to get only what was written since; a line still being written is read once it is whole.
    Lines that are not JSON objects are left out (:func:`read_jsonl_chunk` names them)."""
    events, next_offset, _ = read_jsonl_chunk(path, offset, max_bytes=None)
    return events, next_offset


def read_jsonl_chunk(path: str | Path, offset: int = 0,
                     max_bytes: int | None = 16 << 20) -> tuple[list[dict], int, list[str]]:
    """The events written after byte ``offset``, for a reader that must say what it skipped (the
    dashboard): ``(events, next_offset, problems)``, reading at most ``max_bytes`` (None: all).

    ``problems`` names each complete line that is not a JSON object (``"byte 1234: not JSON"``).
    A last line without its newline is left for the next call, unless it alone fills
    ``max_bytes``: then it is skipped (a problem too) and the next call starts inside it."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(-1 if max_bytes is None else max_bytes)
    end = data.rfind(b"\n") + 1  # what follows the last newline is unfinished
    problems: list[str] = []
    if end == 0 and max_bytes is not None and len(data) >= max_bytes:
        return [], offset + len(data), [f"byte {offset}: a line longer than {max_bytes:,} bytes, skipped"]
    events, at = [], offset
    for line in data[:end].split(b"\n")[:-1]:
        start, at = at, at + len(line) + 1
        if not line.strip():
            continue
        try:
            obj = parse_json(line)
        except ValueError:  # not JSON, not UTF-8, nested too deep
            problems.append(f"byte {start}: not JSON ({line[:40].decode('utf-8', 'replace')!r})")
            continue
        if isinstance(obj, dict):
            events.append(obj)
        else:
            problems.append(f"byte {start}: not a JSON object")
    return events, offset + end, problems

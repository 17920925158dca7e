"""The pieces of the training loop, written once for both engines: what an epoch records
(:class:`EpochRecord`), the run's record (:class:`History`, a sink of the trainer's events), the
schedule cursor, batch gathering and evaluation; and the one-call loop :func:`~nnscratch.training.trainer.fit`.

The loop itself is :class:`nnscratch.training.trainer.Trainer`; the random streams it draws from
are :mod:`nnscratch.training.streams`. Nothing here prints or plots; progress bars and epoch lines
are sinks (:mod:`nnscratch.training.sinks`). The loop knows engines only through
:class:`nnscratch.engines.Engine`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from nnscratch.data.preprocess import scale_pixels
from nnscratch.training.metrics import cross_entropy, weighted_f1


@dataclass
class EpochRecord:
    """One epoch's figures. ``train_*`` are averages over the epoch's mini-batches as they were
    trained (as Keras reports them); ``val_*`` are measured after the epoch; ``time_s`` is the
    wall time of the epoch's optimisation steps. ``gradient_flow`` is what the epoch's
    :class:`~nnscratch.training.events.GradientFlow` said (``steps``, ``params``, ``layers``), or
    None when the run does not record it (then :func:`record_dict` leaves the key out; a record
    written before the field existed loads as None). ``loss_scale`` and ``skipped_steps``: under
    mixed precision (``--precision fp16|bf16``) the loss scale at the epoch's end and the steps
    skipped in it for a gradient that was not finite (bf16: 1.0 and 0); None, and left out, in fp32."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_f1: float
    time_s: float
    gradient_flow: dict | None = None
    loss_scale: float | None = None
    skipped_steps: int | None = None


def record_dict(record: EpochRecord) -> dict:
    """``record`` as a plain dict, without ``gradient_flow`` when it has none (the form of
    ``metrics.json``'s history and of :class:`~nnscratch.training.events.EpochEnd`'s record)."""
    return {k: v for k, v in asdict(record).items()
            if not (k in ("gradient_flow", "loss_scale", "skipped_steps") and v is None)}


@dataclass
class History:
    engine: str
    step_loss: list[float] = field(default_factory=list)
    step_lr: list[float] = field(default_factory=list)     # the learning rate of every step
    epochs: list[EpochRecord] = field(default_factory=list)
    train_time_s: float = 0.0   # optimisation steps only (sum of the epochs' time_s)
    wall_time_s: float = 0.0    # with per-epoch validation
    early_stopping: dict | None = None  # where and why training stopped, when early stopping was on

    def records(self) -> list[dict]:
        """The epochs' records as dicts (``gradient_flow`` only where it was recorded)."""
        return [record_dict(e) for e in self.epochs]

    def __call__(self, event) -> None:
        """As a sink of the trainer's events: every step's loss and rate, every epoch's record,
        the early-stopping outcome at the end."""
        kind = event.kind
        if kind == "step_end":
            self.step_loss.append(event.loss)
            self.step_lr.append(event.lr)
        elif kind == "epoch_end":
            record = EpochRecord(**event.record)
            self.epochs.append(record)
            self.train_time_s += record.time_s
        elif kind == "run_end" and "early_stopping" in event.detail:
            self.early_stopping = event.detail["early_stopping"]


class ScheduleCursor:
    """Where the run is in its learning-rate schedule (:mod:`nnscratch.training.schedules`):
    which rate each step gets, read per batch or per epoch.

    ``unit="step"``: global step ``k`` (0-based) uses ``schedule.lr(k)``; ``unit="epoch"``: every
    step of epoch ``e`` (0-based) uses ``schedule.lr(e)``, and :meth:`end_epoch` moves on after
    the epoch, as torch users call ``scheduler.step()``. A plateau schedule also hears each epoch's
    validation loss there (``scheduler.step(val_loss)``). One cursor per engine, so the twins see
    the same rates; :meth:`state` goes into checkpoints.
    """

    def __init__(self, schedule, unit: str = "step") -> None:
        if unit not in ("step", "epoch"):
            raise ValueError(f"unit must be 'step' or 'epoch', got {unit!r}")
        self.schedule, self.unit = schedule, unit
        self.epochs_done = 0

    @classmethod
    def constant(cls, lr: float) -> "ScheduleCursor":
        from nnscratch.training.schedules import Constant

        return cls(Constant(lr), "step")

    def at(self, step: int) -> float:
        """The learning rate of global step ``step`` (0-based)."""
        return self.schedule.lr(step if self.unit == "step" else self.epochs_done)

    def end_epoch(self, val_loss: float) -> None:
        self.epochs_done += 1
        self.schedule.observe(val_loss)

    def state(self) -> dict[str, np.ndarray]:
        """``epochs_done`` and the schedule's own state (plateau's counters), as named arrays."""
        return {"epochs_done": np.array(self.epochs_done, dtype=np.int64),
                **{f"schedule.{k}": v for k, v in self.schedule.state().items()}}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if "epochs_done" not in state:
            raise ValueError(f"schedule state needs epochs_done, got {sorted(state)}")
        self.epochs_done = int(np.asarray(state["epochs_done"]).reshape(()))
        self.schedule.load_state({k[len("schedule."):]: v for k, v in state.items() if k.startswith("schedule.")})


class BatchGatherer:
    """Copies the rows of each batch into one reused array (``np.take`` with ``out=``, no allocation).

    ``x`` is either the model inputs (float rows) or, with ``dtype`` given, the raw ``uint8`` pixels
    ``(N, D)``: then each batch is gathered as bytes and scaled to ``[0, 1]`` on the way
    (:func:`scale_pixels`, the very numbers a float copy of the whole set would hold). The random rows
    are the one memory-bound part of a step, and bytes are 4x fewer to fetch than float32 (measured
    on MNIST, batch 64, inside the training loop: 0.044 -> 0.036 s per epoch). ``transform``, if
    given, is applied in place to the scaled rows (the run's standardisation).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, dtype=None,
                 transform: Callable[[np.ndarray], object] | None = None) -> None:
        self.x, self.y, self.transform = x, y, transform
        batch_size = max(1, min(batch_size, len(x)))  # a batch is never larger than the data
        if x.dtype == np.uint8:
            if dtype is None:
                raise ValueError("uint8 pixels need the dtype of the model inputs (dtype=np.float32 ...)")
            self._pixels = np.empty((batch_size, x.shape[1]), dtype=np.uint8)
        else:
            dtype, self._pixels = x.dtype, None
        self._rows = np.empty((batch_size, x.shape[1]), dtype=dtype)
        self._labels = np.empty(batch_size, dtype=y.dtype)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x[idx], y[idx])`` as views of the reused arrays: valid until the next call."""
        if self._pixels is None:
            rows, labels = self._rows[:len(idx)], self._labels[:len(idx)]
            np.take(self.x, idx, axis=0, out=rows)
            np.take(self.y, idx, out=labels)
            return rows, labels
        pixels = self._pixels[:len(idx)]
        np.take(self.x, idx, axis=0, out=pixels)
        return self.prepared(pixels, idx)

    def prepared(self, pixels: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scaled pixels, y[idx])`` for pixel rows ``(b, D)`` uint8 gathered (and perhaps
        augmented) elsewhere, as views of the reused arrays: valid until the next call."""
        rows, labels = self._rows[:len(idx)], self._labels[:len(idx)]
        scale_pixels(pixels, rows)
        if self.transform is not None:  # e.g. per-channel standardisation, in place
            self.transform(rows)
        np.take(self.y, idx, out=labels)
        return rows, labels


def evaluate(engine, x: np.ndarray, y: np.ndarray, num_classes: int, label_smoothing: float = 0.0) -> dict:
    """Loss (the training criterion), accuracy and weighted F1 of ``engine`` on ``(x, y)``, in
    evaluation mode; the engine is left in the mode it was in."""
    mode = engine.training
    engine.eval()
    logits = engine.predict_logits(x)
    engine.train(mode)
    pred = logits.argmax(axis=1)
    return {"loss": cross_entropy(logits, y, label_smoothing), "accuracy": float(np.mean(pred == y)),
            "f1": weighted_f1(y, pred, num_classes)}

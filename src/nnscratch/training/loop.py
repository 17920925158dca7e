"""The training loop, written once for both engines. It returns data and never prints or plots.

The loop owns every random stream (:func:`random_streams`): one ``SeedSequence`` spawns the
generators of the initial weights, the batch order and the dropout masks. ``batch_orders`` draws
every epoch's permutation up front and both engines are handed the same list; the dropout masks
are drawn step by step from a fresh generator of the same seed for each engine. So the twins see
the same batches in the same order and drop the same units. Progress bars (tqdm) are the one
side channel. The loop knows engines only through :class:`nnscratch.engines.Engine`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from nnscratch.data.preprocess import scale_pixels
from nnscratch.training.metrics import cross_entropy, weighted_f1


@dataclass
class EpochRecord:
    """One epoch's figures. ``train_*`` are averages over the epoch's mini-batches as they were
    trained (as Keras reports them); ``val_*`` are measured after the epoch; ``time_s`` is the
    wall time of the epoch's optimisation steps."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_f1: float
    time_s: float


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
        return [asdict(e) for e in self.epochs]


class LearningRate:
    """The learning rate of every step: a schedule (:mod:`nnscratch.training.schedules`) read per batch or per epoch.

    ``unit="step"``: step ``k`` of the run uses ``schedule.lr(k)``; ``unit="epoch"``: every step of
    epoch ``e`` (0-based) uses ``schedule.lr(e)``. A plateau schedule also hears each epoch's
    validation loss through :meth:`end_epoch`. A fresh :class:`LearningRate` per engine, so the
    twins see the same rates.
    """

    def __init__(self, schedule, unit: str = "step") -> None:
        if unit not in ("step", "epoch"):
            raise ValueError(f"unit must be 'step' or 'epoch', got {unit!r}")
        self.schedule, self.unit = schedule, unit
        self._epochs_done = 0

    def at(self, step: int) -> float:
        return self.schedule.lr(step if self.unit == "step" else self._epochs_done)

    def end_epoch(self, val_loss: float) -> None:
        self._epochs_done += 1
        self.schedule.observe(val_loss)


class _Constant:
    def __init__(self, lr: float) -> None:
        self.value = float(lr)

    def lr(self, step: int) -> float:
        return self.value

    def observe(self, metric: float) -> None:
        pass


def random_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.SeedSequence]:
    """The run's random streams from one seed: ``(initial weights, batch order, dropout)``.

    The first two are generators; the dropout stream is returned as its ``SeedSequence`` so that
    :func:`fit` can start a fresh, identical generator for each engine it trains.
    """
    init_seq, order_seq, dropout_seq = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(init_seq), np.random.default_rng(order_seq), dropout_seq


def dropout_keeps(rng: np.random.Generator, layers: list[tuple[int, int, float]], n: int) -> dict[int, np.ndarray]:
    """One step's ``keep`` masks: ``{layer index: bool (n, width)}``, each unit kept with probability 1 - p."""
    return {i: rng.random((n, width)) >= p for i, width, p in layers}


def batch_orders(rng: np.random.Generator, n: int, epochs: int) -> list[np.ndarray]:
    """Every epoch's shuffled sample order, drawn from ``rng``: the one source of batch order."""
    return [rng.permutation(n) for _ in range(epochs)]


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
        rows, labels = self._rows[:len(idx)], self._labels[:len(idx)]
        if self._pixels is None:
            np.take(self.x, idx, axis=0, out=rows)
        else:
            pixels = self._pixels[:len(idx)]
            np.take(self.x, idx, axis=0, out=pixels)
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


def fit(engine, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None,
        orders: list[np.ndarray], batch_size: int, num_classes: int, *, lr: float | LearningRate,
        early_stopping=None,
        dropout: list[tuple[int, int, float]] | None = None, dropout_seed: np.random.SeedSequence | None = None,
        label_smoothing: float = 0.0, progress: bool = True,
        on_epoch: Callable[[EpochRecord], None] | None = None, dtype=None,
        transform: Callable[[np.ndarray], object] | None = None) -> History:
    """Train ``engine`` for ``len(orders)`` epochs on ``train`` and return its :class:`History`.

    ``train = (x, y)``: ``x`` holds the model inputs, or the ``uint8`` pixels with ``dtype`` the
    engine's float type (see :class:`BatchGatherer`); ``val`` holds model inputs.
    ``lr`` is the learning rate, or a :class:`LearningRate` (a schedule). ``early_stopping`` is an
    :class:`~nnscratch.training.early_stopping.EarlyStopping` watching the validation loss: training stops
    when it says so, and the engine gets back the state of the best epoch (``History.early_stopping``
    says where and why).
    ``dropout`` lists ``(layer index, width, p)`` of the model's dropout layers
    (:func:`nnscratch.model.registry.dropout_layers`); their masks are drawn from ``dropout_seed``.
    """
    x, y = train
    gather = BatchGatherer(x, y, batch_size, dtype, transform)
    rate = lr if isinstance(lr, LearningRate) else LearningRate(_Constant(lr))
    if early_stopping is not None and val is None:
        raise ValueError("early stopping needs a validation set")
    best_state = None
    mask_rng = np.random.default_rng(dropout_seed) if dropout else None
    history = History(engine.name)
    engine.train()
    start_all = time.perf_counter()
    for epoch, order in enumerate(orders, start=1):
        starts = range(0, len(order), batch_size)
        bar = tqdm(starts, desc=f"{engine.name:>5} epoch {epoch}/{len(orders)}", unit="step",
                   disable=not progress, leave=False, mininterval=0.5)
        lr_at, record_lr, step = rate.at, history.step_lr.append, engine.train_step
        t0 = time.perf_counter()
        for s in bar:
            xb, yb = gather.batch(order[s:s + batch_size])
            masks = dropout_keeps(mask_rng, dropout, len(yb)) if dropout else None
            step_lr = lr_at(engine.steps)
            record_lr(step_lr)
            step(xb, yb, step_lr, masks)
        losses, correct = engine.take_epoch_stats()
        dt = time.perf_counter() - t0
        bar.close()
        val_stats = evaluate(engine, *val, num_classes, label_smoothing) if val is not None else \
            {"loss": float("nan"), "accuracy": float("nan"), "f1": float("nan")}
        weights = np.diff(np.r_[list(starts), len(order)])  # batch sizes: the last one may be short
        record = EpochRecord(epoch, float(np.average(losses, weights=weights)), correct / len(order),
                             val_stats["loss"], val_stats["accuracy"], val_stats["f1"], dt)
        history.step_loss.extend(losses.tolist())
        history.epochs.append(record)
        history.train_time_s += dt
        rate.end_epoch(record.val_loss)
        if on_epoch is not None:
            on_epoch(record)
        if early_stopping is not None:
            stop = early_stopping.update(epoch, record.val_loss)
            if early_stopping.best_epoch == epoch:
                best_state = engine.state()  # copies: what to go back to
            if stop:
                break
    if early_stopping is not None:
        history.early_stopping = _restore_best(engine, early_stopping, best_state, len(history.epochs))
    history.wall_time_s = time.perf_counter() - start_all
    return history


def _restore_best(engine, stopper, best_state, epochs_run: int) -> dict:
    """Put the best epoch's state back into ``engine``; what happened, for the report."""
    restored = best_state is not None and stopper.best_epoch != epochs_run
    if restored:
        engine.load_state(best_state)
    return {"stopped_epoch": stopper.stopped_epoch, "best_epoch": stopper.best_epoch,
            "best_val_loss": stopper.best_loss if np.isfinite(stopper.best_loss) else None, "restored_best": restored,
            "reason": stopper.reason + (f"; weights of epoch {stopper.best_epoch} restored" if restored else "")}

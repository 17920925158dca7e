"""The training loop as an object that owns the run: :class:`Trainer`.

A trainer holds one engine and everything around its steps: the batch source (gathered rows, the
epoch orders, the keyed dropout masks: :mod:`~nnscratch.training.streams`), the schedule cursor,
early stopping, and the position (epoch, step within it). It emits events
(:mod:`~nnscratch.training.events`) to sinks: the :class:`~nnscratch.training.loop.History`,
the progress bar, ``metrics.jsonl``, the command line's epoch lines, restore-best. It prints
nothing itself.

Because the trainer owns all of the run's state, ``trainer.state()`` (its own position, schedule,
early-stopping and history state plus ``engine.state()``) is a checkpoint, and a trainer built
the same way and handed that state with :meth:`Trainer.load_state` continues bit for bit: same
batches (orders are a function of ``(seed, epoch)``), same masks (``(seed, epoch, step)``), same
rates, same weights. One epoch, in order::

    for each batch s of epoch e:   rows <- gather(order(e)[s*B:(s+1)*B]) (augmented, ahead: keys(e, s))
                                   masks <- keys(e, s)
                                   lr <- cursor.at(step); engine.train_step(rows, labels, lr, masks)
                                   (a sampled step: engine.train_step_recorded, the same step measured)
                                   every `loss_block` steps: drain the losses -> StepEnd events
                                   every `every_steps` steps: checkpoint (mid-epoch)
    the sampled steps' mean -> GradientFlow (when on)
    weights, the last sampled step's gradients and outputs -> EpochArrays (to sinks that want arrays)
    evaluate on the validation set -> Evaluation;  cursor.end_epoch(val loss)
    early stopping -> EpochEnd(best, stop);  checkpoints (last, best, epoch-K)

:meth:`Trainer.run` is :meth:`~Trainer.start`, :meth:`~Trainer.advance` (one epoch) until none
is left, :meth:`~Trainer.finish`; :func:`run_in_lockstep` drives several trainers epoch by epoch
in turn with the same three (every comparison: both engines' curves grow together, and an
augmented epoch is computed once for both).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from nnscratch.errors import RunInterrupted
from nnscratch.training.events import (CheckpointWritten, EpochArrays, EpochEnd, Evaluation, GradientFlow, RunEnd,
                                       RunStart, StepEnd)
from nnscratch.training.gradient_flow import mean_of_samples, sampled_positions
from nnscratch.training.loop import BatchGatherer, EpochRecord, History, ScheduleCursor, evaluate, record_dict
from nnscratch.training.streams import EpochOrders, dropout_keeps

#: Format of the trainer's part of a checkpoint (:meth:`Trainer.state`).
TRAINER_STATE_VERSION = 1


class RestoreBest:
    """Early stopping's restore-best, as an observer: keeps a copy of the engine's state at every
    epoch that early stopping counts as the best, and puts it back when the run ends after a later
    epoch (finished or stopped early; never when interrupted, since the run goes on later)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.best_state: dict[str, np.ndarray] | None = None

    def __call__(self, event) -> None:
        if isinstance(event, EpochEnd) and event.best:
            self.best_state = self.engine.state()
        elif isinstance(event, RunEnd) and event.reason in ("finished", "early_stop"):
            info = event.detail.get("early_stopping") or {}
            if info.get("restored_best") and self.best_state is not None:
                self.engine.load_state(self.best_state)


class Trainer:
    """Train ``engine`` for ``epochs`` epochs on ``train = (x, y)`` and emit events to ``sinks``.

    Parameters
    ----------
    engine : an :class:`~nnscratch.engines.Engine`
    train : ``(x, y)``: model inputs, or ``uint8`` pixels with ``dtype`` the engine's float type
        (see :class:`~nnscratch.training.loop.BatchGatherer`); ``transform`` is applied to each batch
    val : ``(x, y)`` model inputs, or None (then no validation figures, no early stopping)
    seed : the run's seed: batch orders and dropout masks are keyed by it
    schedule : a :class:`~nnscratch.training.loop.ScheduleCursor`, or a constant learning rate
    early_stopping : an :class:`~nnscratch.training.early_stopping.EarlyStopping` or None
    dropout : ``(layer index, width, p)`` of the model's dropout layers (masks drawn per step)
    orders : where epoch orders come from (default: :class:`~nnscratch.training.streams.EpochOrders`
        of ``seed``); anything with ``.order(epoch) -> permutation``
    checkpoints : a :class:`~nnscratch.files.checkpoint.CheckpointWriter` (or None): the trainer
        writes through it every ``checkpoints.every_steps`` steps and after every epoch (the names
        it gives), and on an interruption
    loss_block : how many steps' losses are drained at once (one host sync per block on torch)
    gradient_flow : steps sampled per epoch for the gradient-flow statistics
        (:mod:`~nnscratch.training.gradient_flow`; 0: none). A sampled step runs
        ``engine.train_step_recorded`` (the same step, measured); an engine without that method
        records none. A sink with ``wants_arrays = True`` (the TensorBoard writer) also hears
        :class:`~nnscratch.training.events.EpochArrays` after every epoch: the last sampled step
        of each epoch is then recorded with ``arrays=True`` (copies of its gradients and layer
        outputs), and the weights are read at the epoch's end
    augment : an :class:`~nnscratch.training.augmented.AugmentedBatches` of the same ``uint8``
        training pixels, or None: each batch is then augmented (keyed by ``(seed, epoch, step)``,
        prepared ahead in a thread) before it is scaled
    """

    def __init__(self, engine, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None, *,
                 seed: int, epochs: int, batch_size: int, num_classes: int, schedule: ScheduleCursor | float,
                 early_stopping=None, dropout: list[tuple[int, int, float]] | None = None,
                 label_smoothing: float = 0.0, dtype=None, transform: Callable | None = None,
                 sinks: Iterable[Callable] = (), orders=None, checkpoints=None, config: dict | None = None,
                 loss_block: int = 64, gradient_flow: int = 0, augment=None) -> None:
        if early_stopping is not None and val is None:
            raise ValueError("early stopping needs a validation set")
        x, y = train
        self.engine, self.val, self.seed, self.epochs = engine, val, int(seed), int(epochs)
        self.batch_size = max(1, min(int(batch_size), len(y)))
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.gather = BatchGatherer(x, y, self.batch_size, dtype, transform)
        if augment is not None and (augment.pixels is not x or augment.batch_size != self.batch_size):
            raise ValueError("augment must be the AugmentedBatches of these training pixels and this batch size")
        self.augment = augment
        self.n_train = len(y)
        self.steps_per_epoch = -(-self.n_train // self.batch_size)
        self.cursor = schedule if isinstance(schedule, ScheduleCursor) else ScheduleCursor.constant(schedule)
        self.early_stopping, self.dropout = early_stopping, list(dropout or [])
        self.orders = orders if orders is not None else EpochOrders(self.seed, self.n_train)
        self.checkpoints, self.config, self.loss_block = checkpoints, dict(config or {}), max(1, int(loss_block))
        self.history = History(engine.name)
        recorded = getattr(engine, "train_step_recorded", None)
        self._sampled = sampled_positions(self.steps_per_epoch, int(gradient_flow)) if recorded else frozenset()
        self._flow: list[dict] = []  # the sampled steps of the epoch in flight: {"step", "params", "layers"}
        self.restore_best = RestoreBest(engine) if early_stopping is not None else None
        self.sinks: list[Callable] = [self.history, *([self.restore_best] if self.restore_best else []), *sinks]
        # the sinks that hear EpochArrays, and the step of each epoch whose arrays they get
        self._array_sinks = [sink for sink in self.sinks if getattr(sink, "wants_arrays", False)]
        self._array_position = max(self._sampled) if self._array_sinks and self._sampled else None
        self._arrays: dict | None = None  # {"step", "gradients", "outputs"} of the epoch in flight
        # the position: epoch (0-based) and steps done in it; the partial epoch's figures
        self.epoch, self.step_in_epoch = 0, 0
        self.finished: str | None = None        # why the run ended, once it has
        self._epoch_correct, self._epoch_time = 0, 0.0
        self._pending: list[tuple[int, int, float, int]] = []  # (step, epoch, lr, batch size) not drained yet
        self._stop_signal: int | None = None
        self._checkpointed: tuple | None = None  # (step, finished) of the last checkpoint written
        self._run_start: float | None = None  # while the trainer trains: when this stretch started
        self._started = False                 # RunStart emitted
        self.last_checkpoint: str | None = None  # the path of the newest checkpoint written

    # -- the run ---------------------------------------------------------------------------------

    @property
    def step(self) -> int:
        """Global steps done (the engine's count)."""
        return self.engine.steps

    def request_stop(self, signum: int) -> None:
        """Ask the run to stop after the step in flight (called from a signal handler)."""
        self._stop_signal = signum

    @property
    def done(self) -> bool:
        """Whether the run has nothing left to train (planned epochs done, or early stopping)."""
        return self.finished is not None or self.epoch >= self.epochs

    def run(self) -> History:
        """Train until the planned epochs are done, early stopping says stop, or an interruption
        (:meth:`request_stop`) arrives: then raise :class:`RunInterrupted` after checkpointing.
        The same as :meth:`start`, :meth:`advance` until it returns False, :meth:`finish`."""
        self.start()
        while self.advance():
            pass
        return self.finish()

    def start(self) -> None:
        """Announce the run (``RunStart``) and put the engine in training mode."""
        self._emit(RunStart(self.engine.name, self.config, self.epochs, self.steps_per_epoch, self.batch_size,
                            self.n_train, self.epoch, self.step))
        self._started = True
        self.engine.train()

    def advance(self) -> bool:
        """Train one epoch (the rest of the one in flight), unless there is none left; return
        whether another one follows. A stop asked before or during it raises :class:`RunInterrupted`
        after the checkpoint (:meth:`interrupt`); any other exception emits ``RunEnd("error")``."""
        if self.done:
            return False
        self._run_start = time.perf_counter()
        try:
            if self._stop_signal is not None:
                raise _Stop(self._stop_signal)
            self._run_epoch()
        except _Stop as stop:
            raise RunInterrupted(stop.signum, self.engine.name, self.interrupt(stop.signum)) from None
        except BaseException:
            self.fail()
            raise
        self._clock()
        return not self.done

    def finish(self) -> History:
        """End a run that has nothing left to train: the last checkpoint (unless the last epoch's
        says all of it), ``RunEnd``; returns the history."""
        self._run_start = time.perf_counter()
        self.finished = self.finished or "finished"
        if self.checkpoints is not None and self._checkpointed != (self.step, self.finished):
            self._write_checkpoint(("last",))
        self._clock()
        detail = {"early_stopping": self._early_stopping_outcome()} if self.early_stopping is not None else {}
        self._emit(RunEnd(self.engine.name, self.finished, len(self.history.epochs), self.step, detail))
        return self.history

    def interrupt(self, signum: int, *, rewrite: bool = True) -> str | None:
        """End the run here (between steps) on signal ``signum``: write the ``last`` checkpoint
        (with ``rewrite=False``, not if the newest one is of this very position), emit
        ``RunEnd("interrupted")``; return the checkpoint's path (None: checkpoints are off)."""
        if self._run_start is None:
            self._run_start = time.perf_counter()
        path = self.last_checkpoint
        if self.checkpoints is not None and (rewrite or path is None or self._checkpointed != (self.step, self.finished)):
            path = self._write_checkpoint(("last",))
        self._clock()
        self._emit(RunEnd(self.engine.name, "interrupted", len(self.history.epochs), self.step, {"checkpoint": path}))
        return path

    def fail(self) -> None:
        """The last word after an exception: ``RunEnd("error")`` to every sink (one failing again is ignored)."""
        self._clock()
        self._emit_quietly(RunEnd(self.engine.name, "error", len(self.history.epochs), self.step))

    def _clock(self) -> None:
        """Add the stretch since ``_run_start`` to the wall time."""
        if self._run_start is not None:
            self.history.wall_time_s += time.perf_counter() - self._run_start
            self._run_start = None

    def _run_epoch(self) -> None:
        e, B, engine = self.epoch, self.batch_size, self.engine
        order = self.orders.order(e)
        step, at, gather, layers = engine.train_step, self.cursor.at, self.gather.batch, self.dropout
        every = self.checkpoints.every_steps if self.checkpoints is not None else None
        sampled = self._sampled
        with self._batches(e, order) as batch:  # (a comparison's augmented epoch may be made here: untimed)
            t0 = time.perf_counter()
            for s in range(self.step_in_epoch, self.steps_per_epoch):
                xb, yb = batch(s) if batch is not None else gather(order[s * B:(s + 1) * B])
                lr = at(engine.steps)
                masks = dropout_keeps(self.seed, e, s, layers, len(yb)) if layers else None
                if s in sampled:  # the same step, measured (bit for bit the same weights after it)
                    self._record_step(s, xb, yb, lr, masks)
                else:
                    step(xb, yb, lr, masks)
                self.step_in_epoch = s + 1
                self._pending.append((engine.steps, e + 1, lr, len(yb)))
                if len(self._pending) >= self.loss_block:
                    self._drain()
                # inside the epoch only: a stop asked at its last step is honoured once the epoch is done
                if s + 1 < self.steps_per_epoch and (self._stop_signal is not None or
                                                     (every and engine.steps % every == 0)):
                    self._epoch_time += time.perf_counter() - t0
                    self._drain()
                    if self._stop_signal is not None:
                        raise _Stop(self._stop_signal)
                    self._write_checkpoint((f"step-{engine.steps}",))
                    t0 = time.perf_counter()
        self._epoch_time += time.perf_counter() - t0
        self._drain()
        self._end_epoch()

    def _record_step(self, s: int, xb, yb, lr: float, masks) -> None:
        """Step ``s`` of the epoch, a sampled one: its gradient flow into ``_flow`` and, at the
        epoch's arrays position (:attr:`_array_position`), its gradients and outputs into ``_arrays``."""
        step = self.engine.steps + 1
        if s != self._array_position:
            self._flow.append({"step": step, **self.engine.train_step_recorded(xb, yb, lr, masks)})
            return
        record = self.engine.train_step_recorded(xb, yb, lr, masks, arrays=True)
        arrays = record.pop("arrays")
        self._arrays = {"step": step, "gradients": arrays["gradients"], "outputs": arrays["outputs"]}
        self._flow.append({"step": step, **record})

    def _emit_arrays(self, epoch: int) -> None:
        """:class:`EpochArrays` of the epoch just trained, to the sinks that want arrays only."""
        arrays, self._arrays = self._arrays or {"step": None, "gradients": {}, "outputs": {}}, None
        event = EpochArrays(self.engine.name, epoch, arrays["step"], self.engine.state_dict(),
                            arrays["gradients"], arrays["outputs"])
        for sink in self._array_sinks:
            sink(event)

    @contextlib.contextmanager
    def _batches(self, epoch: int, order: np.ndarray):
        """With augmentation: ``batch(s) -> (rows, labels)`` of step ``s``, augmented by the batch
        source (ahead by its thread, stopped when the block ends, or here); without: None
        (gathered in the loop)."""
        if self.augment is None:
            yield None
            return
        B, prepared = self.batch_size, self.gather.prepared
        with self.augment.epoch(epoch, order, self.step_in_epoch) as pixels:
            yield lambda s: prepared(pixels(s), order[s * B:(s + 1) * B])

    def _drain(self) -> None:
        """Hand the losses of the steps not drained yet to the sinks (one engine read)."""
        if not self._pending:
            return
        losses, correct = self.engine.take_epoch_stats()
        self._epoch_correct += correct
        pending, self._pending = self._pending, []
        for (k, epoch, lr, n), loss in zip(pending, losses.tolist()):
            self._emit(StepEnd(self.engine.name, k, epoch, loss, lr, n))

    def _end_epoch(self) -> None:
        epoch = self.epoch + 1
        losses = np.asarray(self.history.step_loss[len(self.history.step_loss) - self.steps_per_epoch:])
        sizes = np.full(self.steps_per_epoch, self.batch_size, dtype=np.float64)
        sizes[-1] = self.n_train - self.batch_size * (self.steps_per_epoch - 1)  # the last batch may be short
        flow = mean_of_samples(self._flow) if self._flow else None
        if flow is not None:
            self._emit(GradientFlow(self.engine.name, epoch, **flow))
            self._flow = []
        if self._array_sinks:
            self._emit_arrays(epoch)
        if self.val is not None:
            stats = evaluate(self.engine, *self.val, self.num_classes, self.label_smoothing)
            self._emit(Evaluation(self.engine.name, epoch, "val", stats["loss"], stats["accuracy"], stats["f1"]))
        else:
            stats = {"loss": math.nan, "accuracy": math.nan, "f1": math.nan}
        take_precision = getattr(self.engine, "take_precision_stats", None)  # optional in the Engine contract
        precision = (take_precision() if take_precision else None) or {}
        record = EpochRecord(epoch, float(np.average(losses, weights=sizes)), self._epoch_correct / self.n_train,
                             stats["loss"], stats["accuracy"], stats["f1"], self._epoch_time, flow, **precision)
        self.cursor.end_epoch(record.val_loss)
        best, stop = None, False
        if self.early_stopping is not None:
            stop = self.early_stopping.update(epoch, record.val_loss)
            best = self.early_stopping.best_epoch == epoch
        self.epoch, self.step_in_epoch, self._epoch_correct, self._epoch_time = epoch, 0, 0, 0.0
        if stop:
            self.finished = "early_stop"
        elif self.epoch == self.epochs:
            self.finished = "finished"  # said in this epoch's checkpoint, which is then the run's last
        self._emit(EpochEnd(self.engine.name, record_dict(record), best, stop))
        if self.checkpoints is not None:
            names = self.checkpoints.names_after_epoch(epoch, self.step, best=bool(best))
            if names:
                self._write_checkpoint(names)

    def _early_stopping_outcome(self) -> dict:
        """Where and why training stopped, for the report (``History.early_stopping``)."""
        stopper, epochs_run = self.early_stopping, len(self.history.epochs)
        restored = (self.restore_best is not None and self.restore_best.best_state is not None
                    and stopper.best_epoch != epochs_run)
        return {"stopped_epoch": stopper.stopped_epoch, "best_epoch": stopper.best_epoch,
                "best_val_loss": stopper.best_loss if np.isfinite(stopper.best_loss) else None,
                "restored_best": restored,
                "reason": stopper.reason + (f"; weights of epoch {stopper.best_epoch} restored" if restored else "")}

    # -- events ----------------------------------------------------------------------------------

    def _emit(self, event) -> None:
        for sink in self.sinks:
            sink(event)

    def _emit_quietly(self, event) -> None:
        """The last word after a failure: every sink hears it; a sink failing again is ignored."""
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - the first failure is the one that propagates
                pass

    def _write_checkpoint(self, names: tuple[str, ...]) -> str:
        tensors, meta = self.state()
        self._checkpointed = (self.step, self.finished)
        path = self.checkpoints.write(self.engine.name, tensors, meta, names, step=self.step, epoch=self.epoch)
        self.last_checkpoint = str(path)
        self._emit(CheckpointWritten(self.engine.name, str(path), tuple(names), self.step, self.epoch))
        return str(path)

    # -- state -----------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """``(tensors, trainer)``: the engine's ``state()`` plus ``trainer.*`` arrays (the step losses
        and rates so far, the best epoch's state under ``best.*`` with early stopping), and the
        trainer's position and counters as a JSON-able dict. Drain first: call between steps."""
        self._drain()
        tensors = dict(self.engine.state())
        tensors["trainer.step_loss"] = np.asarray(self.history.step_loss, dtype=np.float64)
        tensors["trainer.step_lr"] = np.asarray(self.history.step_lr, dtype=np.float64)
        for k, v in self.cursor.state().items():
            tensors[f"trainer.schedule.{k}"] = np.asarray(v)
        if self.early_stopping is not None:
            for k, v in self.early_stopping.state().items():
                tensors[f"trainer.early_stopping.{k}"] = np.asarray(v)
            if self.restore_best.best_state is not None:
                tensors.update({f"best.{k}": v for k, v in self.restore_best.best_state.items()})
        trainer = {"version": TRAINER_STATE_VERSION, "engine": self.engine.name, "epoch": self.epoch,
                   "step_in_epoch": self.step_in_epoch, "step": self.step, "epochs": self.epochs,
                   "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
                   "train_size": self.n_train, "epoch_correct": self._epoch_correct,
                   "epoch_time_s": self._epoch_time, "finished": self.finished,
                   "gradient_flow": self._flow,
                   "history": {"epochs": self.history.records(), "train_time_s": self.history.train_time_s,
                               "wall_time_s": self.history.wall_time_s + self._running_s()}}
        return tensors, trainer

    def _running_s(self) -> float:
        """Wall time of the run in flight so far (0 between runs: then it is in the history)."""
        return time.perf_counter() - self._run_start if self._run_start is not None else 0.0

    def load_state(self, tensors: dict[str, np.ndarray], trainer: dict) -> None:
        """Continue from :meth:`state`: the engine's state, the position, the history so far."""
        if trainer.get("version") != TRAINER_STATE_VERSION:
            raise ValueError(f"trainer state version {trainer.get('version')!r} is not {TRAINER_STATE_VERSION}")
        for key, mine in (("train_size", self.n_train), ("batch_size", self.batch_size)):
            if trainer[key] != mine:
                raise ValueError(f"the checkpoint was trained with {key} {trainer[key]}, this run has {mine}")
        engine = {k: v for k, v in tensors.items() if not k.startswith(("trainer.", "best."))}
        self.engine.load_state(engine)
        if int(trainer["step"]) != self.engine.steps:
            raise ValueError(f"trainer step {trainer['step']} does not match the engine's {self.engine.steps}")
        self.cursor.load_state(_prefixed(tensors, "trainer.schedule."))
        if self.early_stopping is not None:
            self.early_stopping.load_state(_prefixed(tensors, "trainer.early_stopping."))
            best = _prefixed(tensors, "best.")
            self.restore_best.best_state = best or None
        self.epoch, self.step_in_epoch = int(trainer["epoch"]), int(trainer["step_in_epoch"])
        self._epoch_correct, self._epoch_time = int(trainer["epoch_correct"]), float(trainer["epoch_time_s"])
        self._flow = list(trainer.get("gradient_flow") or [])  # the sampled steps of the epoch in flight
        self.finished = trainer.get("finished")
        if self.finished == "finished" and self.epoch < self.epochs:
            self.finished = None  # a finished run extended with more epochs goes on
        h = self.history
        h.step_loss = [float(v) for v in tensors["trainer.step_loss"]]
        h.step_lr = [float(v) for v in tensors["trainer.step_lr"]]
        h.epochs = [EpochRecord(**r) for r in trainer["history"]["epochs"]]
        h.train_time_s = float(trainer["history"]["train_time_s"])
        h.wall_time_s = float(trainer["history"]["wall_time_s"])


def fit(engine, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None,
        *, seed: int = 0, epochs: int = 1, batch_size: int, num_classes: int, lr: "float | ScheduleCursor",
        orders=None, early_stopping=None, dropout: list[tuple[int, int, float]] | None = None,
        label_smoothing: float = 0.0, progress: bool = False, sinks=(), dtype=None,
        transform: Callable[[np.ndarray], object] | None = None, gradient_flow: int = 0, augment=None) -> History:
    """Train ``engine`` for ``epochs`` epochs and return its :class:`History`: a
    :class:`~nnscratch.training.trainer.Trainer` run in one call (see there for the arguments).

    ``orders`` may be a list of per-epoch permutations (then ``epochs`` is its length) instead of
    the keyed orders of ``seed``; ``progress`` adds a progress bar (shown on a terminal only);
    ``gradient_flow`` samples that many steps per epoch for the gradient-flow statistics (0: off;
    the command line and :mod:`nnscratch.api` record 4 by default).
    """
    from nnscratch.training.sinks import ProgressBar

    if isinstance(orders, (list, tuple)):
        epochs, orders = len(orders), FixedOrders(orders)
    sinks = [*sinks, *([ProgressBar()] if progress else [])]
    trainer = Trainer(engine, train, val, seed=seed, epochs=epochs, batch_size=batch_size, num_classes=num_classes,
                      schedule=lr, early_stopping=early_stopping, dropout=dropout, label_smoothing=label_smoothing,
                      dtype=dtype, transform=transform, sinks=sinks, orders=orders, gradient_flow=gradient_flow,
                      augment=augment)
    return trainer.run()


def run_in_lockstep(trainers: Sequence[Trainer], stop=None) -> list[History]:
    """Train several trainers epoch by epoch in turn: a comparison's twins, so that their curves
    (and the divergence between them) grow together in ``metrics.jsonl``, and so that they can
    share what an epoch needs (augmented batches, computed once: :mod:`nnscratch.training.augmented`).
    Each trainer's clock runs only while it trains (:meth:`Trainer.advance`), so each engine's
    times are its own.

    Next is always the trainer furthest behind (the fewest epochs done; on a tie, the first
    given), so a run that starts together goes ``numpy 1, torch 1, numpy 2, torch 2, ...``, and a
    resumed one first brings the engine that is behind up to the other. Each trainer's events,
    checkpoints and history are the ones its own :meth:`Trainer.run` would give; only their
    order in time differs.

    ``stop`` (an :class:`~nnscratch.training.interrupts.StopRequest`) is pointed at the trainer
    training. When it is interrupted, the others that had started end too, at the epoch each had
    finished (their ``last`` checkpoint, ``RunEnd("interrupted")``), and the
    :class:`RunInterrupted` goes on; a stop asked while none was training interrupts the next one
    (before its first step, if it had not started: the interruption is then named after the
    trainer that had just trained, with its checkpoint). After an exception the others hear
    ``RunEnd("error")``.
    """
    trainers = list(trainers)
    ended: set[int] = set()  # indices of the trainers that are done and finished
    current = None
    try:
        while len(ended) < len(trainers):
            k = min((i for i in range(len(trainers)) if i not in ended), key=lambda i: trainers[i].epoch)
            current = trainers[k]
            if stop is not None:
                if stop.signum is not None and not current._started:
                    # asked as the previous trainer's epoch ended: named after it, as it was training
                    last = stop.trainer if stop.trainer is not None else current
                    raise RunInterrupted(stop.signum, last.engine.name, last.last_checkpoint)
                stop.trainer = current
                if stop.signum is not None:
                    current.request_stop(stop.signum)
            if not current._started:
                current.start()
            if not current.advance():
                current.finish()
                ended.add(k)
    except RunInterrupted as exc:
        for i, other in enumerate(trainers):
            if other is not current and other._started and i not in ended:
                other.interrupt(exc.signum, rewrite=False)
        raise
    except BaseException:
        for i, other in enumerate(trainers):
            if other is not current and other._started and i not in ended:
                other.fail()
        raise
    if stop is not None and stop.signum is not None:  # asked once the last step was done: honoured all the same
        raise RunInterrupted(stop.signum, trainers[-1].engine.name, trainers[-1].last_checkpoint)
    return [t.history for t in trainers]


class FixedOrders:
    """Epoch orders given as a list (tests and benchmarks): ``order(e)`` is ``orders[e]``."""

    def __init__(self, orders) -> None:
        self.orders = list(orders)

    def order(self, epoch: int) -> np.ndarray:
        return self.orders[epoch]


class _Stop(Exception):
    """Internal: an interruption was requested; the step in flight is done."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _prefixed(tensors: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

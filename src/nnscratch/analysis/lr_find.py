"""The learning-rate range test (Leslie Smith 2015, as fastai's ``lr_find`` runs it).

Method: train a throwaway engine from a fresh model for ``steps`` mini-batches while the
learning rate grows exponentially from ``start_lr`` to ``end_lr``::

    lr_k = start_lr * (end_lr / start_lr) ** (k / (steps - 1)),   k = 0 .. steps - 1

Each step's loss (of its batch, before that step's update) is smoothed with an exponential moving
average with bias correction (``beta`` = 0.98, fastai's)::

    avg_k = beta * avg_{k-1} + (1 - beta) * loss_k,   smoothed_k = avg_k / (1 - beta ** (k + 1))

The sweep stops early when the loss diverges: a NaN or infinite loss (not recorded: it never
enters a suggestion) or a smoothed loss above ``diverge_factor`` (4) times the best so far
(recorded, then the sweep stops). :func:`suggest` reads two rates off the smoothed curve: the
steepest descent (the most negative ``d smoothed / d log10(lr)``, central differences, from the
11th point to the minimum) and the rate of the minimum divided by 10.

The engine is trained in place: pass one built for the sweep from a copy of the run's initial
state (as ``nnscratch lr-find`` does), never the engine a run goes on to train.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np

from nnscratch.errors import ParameterError

#: fastai's smoothing of the loss and its divergence rule (smoothed loss > 4x the best).
BETA = 0.98
DIVERGE_FACTOR = 4.0
#: fastai's ``skip_start``: the steepest descent is not looked for among the first 10 points.
SKIP_START = 10


def check_sweep(start_lr: float, end_lr: float, steps: int) -> None:
    """A :class:`ParameterError` unless ``0 < start_lr < end_lr`` (finite) and ``steps >= 2``."""
    if not (isinstance(start_lr, (int, float)) and math.isfinite(start_lr) and start_lr > 0):
        raise ParameterError("start_lr", f"must be a finite number > 0, got {start_lr}")
    if not (isinstance(end_lr, (int, float)) and math.isfinite(end_lr) and end_lr > start_lr):
        raise ParameterError("end_lr", f"must be a finite number above start_lr ({start_lr:g}), got {end_lr}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ParameterError("steps", f"must be an integer >= 2 (a sweep has a first and a last rate), got {steps}")


def sweep_lrs(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """The ``steps`` rates of the sweep, evenly spaced on a log axis from ``start_lr`` to ``end_lr``."""
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))


def smooth(losses: Iterable[float], beta: float = BETA) -> np.ndarray:
    """The bias-corrected exponential moving average of ``losses`` (the module docstring's formula)."""
    out, avg = [], 0.0
    for k, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * float(loss)
        out.append(avg / (1 - beta ** (k + 1)))
    return np.asarray(out, dtype=np.float64)


def suggest(lrs, smoothed, skip_start: int = SKIP_START) -> dict:
    """The suggested rates of a smoothed curve: ``steepest`` (the most negative gradient of the
    smoothed loss against ``log10(lr)``, central differences as :func:`numpy.gradient` takes
    them) and ``min_over_10`` (the rate of the lowest smoothed loss, divided by 10).

    Points where the rate or the loss is NaN or infinite are dropped first. The steepest descent
    is looked for from the ``skip_start``-th point (fastai's 10: the first smoothed values rest on
    a handful of losses) up to the minimum (past it the curve climbs); with too few points for
    the skip, from the first. With fewer than two points left every suggestion is None
    (``minimum`` too, the rate of the lowest loss).
    """
    lrs, smoothed = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    keep = np.isfinite(lrs) & np.isfinite(smoothed) & (lrs > 0)
    lrs, smoothed = lrs[keep], smoothed[keep]
    if len(lrs) < 2:
        return {"steepest": None, "min_over_10": None, "minimum": None}
    slope = np.gradient(smoothed, np.log10(lrs))
    best = int(np.argmin(smoothed))
    first = skip_start if best >= skip_start + 1 else 0
    steepest = first + int(np.argmin(slope[first:best + 1]))
    return {"steepest": float(lrs[steepest]), "min_over_10": float(lrs[best] / 10), "minimum": float(lrs[best])}


def lr_sweep(engine, batches: Iterable[tuple], start_lr: float, end_lr: float, steps: int, *,
             beta: float = BETA, diverge_factor: float = DIVERGE_FACTOR) -> dict:
    """Run the range test on ``engine`` (trained in place) and return what it measured.

    ``batches`` yields ``(x, y, masks)`` (``masks``: the dropout keeps, or None), at least
    ``steps`` of them. Returns ``lrs``, ``losses`` and ``smoothed`` (lists, one entry per step
    recorded), ``stopped_at`` (the 0-based step the sweep stopped at, None when it ran to the
    end), ``stop_reason`` (``"nan"``, ``"diverged"`` or None), ``best`` (the lowest smoothed
    loss) and ``suggestions`` (:func:`suggest`).
    """
    check_sweep(start_lr, end_lr, steps)
    rates, losses, avg, best = sweep_lrs(start_lr, end_lr, steps), [], 0.0, math.inf
    smoothed: list[float] = []
    stopped_at, reason = None, None
    batches = iter(batches)
    for k, lr in enumerate(rates):
        x, y, masks = next(batches)
        engine.train_step(x, y, float(lr), masks)
        loss = float(engine.take_epoch_stats()[0][-1])
        if not math.isfinite(loss):
            stopped_at, reason = k, "nan"
            break
        avg = beta * avg + (1 - beta) * loss
        value = avg / (1 - beta ** (k + 1))
        losses.append(loss)
        smoothed.append(value)
        if k > 0 and value > diverge_factor * best:
            stopped_at, reason = k, "diverged"
            break
        best = min(best, value)
    lrs = [float(r) for r in rates[:len(losses)]]
    return {"start_lr": float(start_lr), "end_lr": float(end_lr), "steps": int(steps), "beta": beta,
            "diverge_factor": diverge_factor, "lrs": lrs, "losses": losses, "smoothed": smoothed,
            "stopped_at": stopped_at, "stop_reason": reason, "best": None if best == math.inf else best,
            "suggestions": suggest(lrs, smoothed)}


def training_batches(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int, dropout=(), dtype=np.float32,
                     transform=None, augment=None) -> Iterator[tuple]:
    """The run's own batches, as the trainer draws them: epoch after epoch of
    :class:`~nnscratch.training.streams.EpochOrders` (keyed by ``seed``), gathered and scaled by a
    :class:`~nnscratch.training.loop.BatchGatherer`, with step ``(e, s)``'s dropout masks
    (``dropout``: the model's ``(index, width, p)``) and, with ``augment`` (the run's
    :class:`~nnscratch.training.augmented.AugmentedBatches` of ``x``), step ``(e, s)``'s augmented
    pixels. Yields ``(x, y, masks)`` without end; each batch is a copy (the gatherer reuses its arrays)."""
    from nnscratch.training.loop import BatchGatherer
    from nnscratch.training.streams import EpochOrders, dropout_keeps

    gather = BatchGatherer(x, y, batch_size, dtype, transform)
    orders, n = EpochOrders(seed, len(y)), len(y)
    size = max(1, min(batch_size, n))
    epoch = 0
    while True:
        order = orders.order(epoch)
        for s in range(-(-n // size)):
            idx = order[s * size:(s + 1) * size]
            if augment is None:
                xb, yb = gather.batch(idx)
            else:
                xb, yb = gather.prepared(augment.batch(epoch, s, idx), idx)
            yield xb.copy(), yb.copy(), dropout_keeps(seed, epoch, s, list(dropout), len(yb)) if dropout else None
        epoch += 1


"""Early stopping on the validation loss (engine-neutral).

The rule, checked after every epoch::

    improved  = val_loss < best_loss - min_delta      (NaN never improves)
    if improved: best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
    else:        bad_epochs += 1
    stop      = bad_epochs >= patience

So with ``patience=3`` training stops after the third epoch in a row that failed to beat the best
loss by more than ``min_delta``. Restoring the best epoch's weights is the training loop's job.
"""

from __future__ import annotations

import math

import numpy as np

from nnscratch.errors import ParameterError


class EarlyStopping:
    """Decide after each epoch whether to stop; remember the best epoch.

    Parameters
    ----------
    patience : int >= 1
        How many epochs in a row without improvement stop training.
    min_delta : float >= 0
        An epoch improves only if it beats the best loss by *more* than this.

    Attributes
    ----------
    best_loss : float            the lowest validation loss so far (``inf`` before any finite one)
    best_epoch : int or None     the epoch that reached it
    stopped_epoch : int or None  the epoch after which :meth:`update` first returned True
    bad_epochs : int             epochs since the last improvement
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1:
            raise ParameterError("patience", f"must be an integer >= 1, got {patience!r}")
        if not 0.0 <= min_delta < math.inf:
            raise ParameterError("min_delta", f"must be a finite number >= 0, got {min_delta!r}")
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.bad_epochs = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record epoch ``epoch``'s validation loss; return True when training should stop."""
        val_loss = float(val_loss)
        if val_loss < self.best_loss - self.min_delta:  # False for NaN
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
        else:
            self.bad_epochs += 1
        stop = self.bad_epochs >= self.patience
        if stop and self.stopped_epoch is None:
            self.stopped_epoch = epoch
        return stop

    @property
    def reason(self) -> str:
        """One line for the report, e.g. ``stopped after epoch 12: validation loss did not improve
        by more than 0 for 3 epochs; best 0.0712 at epoch 9``."""
        best = ("no finite validation loss yet" if self.best_epoch is None
                else f"best {self.best_loss:.4g} at epoch {self.best_epoch}")
        if self.stopped_epoch is None:
            return f"did not stop early; {best}"
        return (f"stopped after epoch {self.stopped_epoch}: validation loss did not improve by more "
                f"than {self.min_delta:g} for {self.patience} epochs; {best}")

    def state(self) -> dict[str, np.ndarray]:
        """The counters as 0-d float64 arrays (epochs ``-1`` for None), for checkpoints."""
        values = {"best_loss": self.best_loss, "bad_epochs": self.bad_epochs,
                  "best_epoch": -1 if self.best_epoch is None else self.best_epoch,
                  "stopped_epoch": -1 if self.stopped_epoch is None else self.stopped_epoch}
        return {key: np.array(value, dtype=np.float64) for key, value in values.items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` (``ValueError`` naming the entries when they do not match)."""
        expected = {"best_loss", "bad_epochs", "best_epoch", "stopped_epoch"}
        if set(state) != expected:
            raise ValueError(f"early-stopping state must have {sorted(expected)}, got {sorted(state)}")
        value = {key: float(np.asarray(state[key]).reshape(())) for key in expected}
        self.best_loss, self.bad_epochs = value["best_loss"], int(value["bad_epochs"])
        self.best_epoch = None if value["best_epoch"] < 0 else int(value["best_epoch"])
        self.stopped_epoch = None if value["stopped_epoch"] < 0 else int(value["stopped_epoch"])

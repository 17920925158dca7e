"""Optimizers of the NumPy engine: they see explicit gradients and keep named state."""

from __future__ import annotations

import numpy as np

from nnscratch.errors import UsageError


class SGD:
    """Plain mini-batch stochastic gradient descent (``torch.optim.SGD`` without momentum).

    For every parameter ``p`` with gradient ``g``::

        p <- p - lr * g

    Plain SGD has no state besides ``lr``. :meth:`Model.train_step` can also fuse this very update
    into the weight-gradient products (see ``Dense.backward``); :attr:`fusable` says when it may.
    """

    def __init__(self, lr: float) -> None:
        if not (lr > 0 and np.isfinite(lr)):
            raise UsageError(f"--lr must be a positive number, got {lr}")
        self.lr = float(lr)

    fusable = True

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Update every array in ``params`` in place from the same-named array in ``grads``."""
        for name, p in params.items():
            p -= self.lr * grads[name]

    def state_dict(self) -> dict:
        return {"lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])

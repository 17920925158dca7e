"""PyTorch at its best on a run's work: a plain training loop, timed beside the twin (issue 25).

The twin in ``compare`` is trained by the :class:`~nnscratch.training.trainer.Trainer`, as the
NumPy engine is: NumPy batches handed over, the loop's dropout masks (so that both engines drop the
same units), the loss and correct count of every step kept for the history, events to the sinks.
That harness costs time that a user's own PyTorch loop would not spend, so the report shows, beside
the twin's training time, what the loop of PyTorch's tutorials takes for the same work
(:func:`time_plain_loop`)::

    x, y = the training rows as tensors, scaled once, up front
    for idx in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])       # nn.Dropout draws its own masks
        loss.backward()
        optimizer.step()
        total += loss.detach()                       # read once, at the end

The same network, initial weights, optimizer and hyperparameters, loss (label smoothing), penalty,
clipping, max-norm, frozen layers and precision as the twin: the model, optimizer and loss are
those of a :class:`~nnscratch.torch_engine.model.TorchEngine` built with the run's options, only
with torch's own dropout (``shared_masks=False``), fresh from the initial state (the trained twin is
not touched). The learning rate stays at ``lr`` (a schedule changes no step's cost).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from nnscratch.torch_engine.model import TorchEngine

#: At most this many seconds of steps are measured (after the warm-up), so that a comparison of a
#: large network pays a few seconds for the figure, not an epoch.
BUDGET_S = 1.5
#: Steps run first and not measured (the allocator and BLAS buffers settle, lazy set-up happens).
WARMUP_STEPS = 5
#: The most steps measured (a burst of about a second at most: :data:`BUDGET_S`).
MAX_STEPS = 1000


class PlainLoop:
    """The plain loop's model, optimizer and data: :meth:`step` is one step of it on rows ``idx``.

    ``rows`` ``(N, D)`` are model inputs (already scaled), ``labels`` ``(N,)``; both are put on
    the device once, as tensors. ``engine_options`` as :func:`time_plain_loop` takes them.
    """

    def __init__(self, spec, initial: dict[str, np.ndarray], rows: np.ndarray, labels: np.ndarray, *,
                 lr: float, dtype=np.float32, **engine_options) -> None:
        self.engine = engine = TorchEngine(spec, initial, dtype, shared_masks=False, **engine_options)
        engine.train()
        for group in engine.optimizer.param_groups:
            group["lr"] = lr
        # contiguous and writable (torch wants both; a copy only where the arrays are not)
        self.x = torch.from_numpy(np.require(rows, requirements=("C", "W"))).to(device=engine.device,
                                                                              dtype=engine.dtype)
        self.y = torch.from_numpy(np.require(labels, np.int64, ("C", "W"))).to(engine.device)
        self.total = torch.zeros((), dtype=torch.float64, device=engine.device)
        self._scaler = engine.scaler  # fp16: torch's GradScaler, as the twin has it (None otherwise)
        self._autocast = ((lambda: torch.autocast(engine.device.type, dtype=engine._autocast))
                          if engine._autocast is not None else contextlib.nullcontext)

    def step(self, idx: torch.Tensor) -> None:
        """One optimisation step on rows ``idx``, written as a PyTorch user writes it (the loss
        added to :attr:`total` on the device, never read here)."""
        engine, optimizer, scaler = self.engine, self.engine.optimizer, self._scaler
        trainable = engine._trainable
        optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = engine.loss_fn(engine.model(self.x[idx]), self.y[idx])
        if engine.l1:
            loss = loss + engine.l1 * sum(p.abs().sum() for p in trainable)
        if engine.l2:
            loss = loss + engine.l2 * sum(p.pow(2).sum() for p in trainable)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        if engine.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, engine.clip_grad_norm)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        if engine.max_norm is not None:
            with torch.no_grad():
                for weight in engine._max_norm_weights:
                    weight.renorm_(2, 0, engine.max_norm)
        self.total += loss.detach()


def time_plain_loop(spec, initial: dict[str, np.ndarray], rows: np.ndarray, labels: np.ndarray, *,
                    batch_size: int, lr: float, dtype=np.float32, max_steps: int = MAX_STEPS,
                    budget_s: float = BUDGET_S, seed: int = 0, **engine_options) -> dict:
    """Seconds per step of the plain loop on ``rows`` ``(N, D)`` (model inputs, already scaled)
    and ``labels``, in full batches of ``batch_size`` in a random order (``seed``).

    ``engine_options`` are the twin's (:class:`~nnscratch.torch_engine.model.TorchEngine`'s
    ``optimizer``, ``optimizer_options``, ``label_smoothing``, ``l1``, ``l2``, ``clip_grad_norm``,
    ``freeze``, ``max_norm``, ``precision``, ``device``). Runs :data:`WARMUP_STEPS` (fewer once they
    have taken a third of ``budget_s``), then steps until ``max_steps`` or ``budget_s`` seconds,
    whichever comes first (at least one). Returns
    ``{"step_s", "steps", "batch_size"}``: the mean over the measured steps.
    """
    loop = PlainLoop(spec, initial, rows, labels, lr=lr, dtype=dtype, **engine_options)
    n = len(loop.y)
    batch_size = max(1, min(int(batch_size), n))
    rng = np.random.default_rng(seed)

    def batches():
        while True:
            order = torch.from_numpy(rng.permutation(n)).to(loop.engine.device)
            for start in range(0, n - batch_size + 1, batch_size):  # full batches: each step the same work
                yield order[start:start + batch_size]

    source = batches()
    start = time.perf_counter()
    for _ in range(WARMUP_STEPS):  # a large network's slow steps: fewer of them, within a third of the budget
        loop.step(next(source))
        float(loop.total)  # waits for the step (a GPU runs asynchronously)
        if time.perf_counter() - start >= budget_s / 3:
            break
    steps, start = 0, time.perf_counter()
    while steps < max(1, max_steps):
        loop.step(next(source))
        steps += 1
        if time.perf_counter() - start >= budget_s:
            break
    float(loop.total)  # the loss read once, as the plain loop does; on a GPU, waits for the last step
    return {"step_s": (time.perf_counter() - start) / steps, "steps": steps, "batch_size": batch_size}

"""What a :class:`~nnscratch.training.trainer.Trainer` tells its sinks, in the order it happens.

One run of one engine emits::

    RunStart
    ( StepEnd ... [CheckpointWritten] ... [GradientFlow] [EpochArrays] Evaluation EpochEnd [CheckpointWritten ...] )
        per epoch
    RunEnd

A sink is any callable taking one event (``sink(event)``). Sinks observe: they print, record,
plot or write files, and never change the run (the trainer owns it). A sink that raises stops the
run: the step in flight is finished, the other sinks hear :class:`RunEnd` with reason ``"error"``,
and the exception goes on to the caller.

Step losses are *drained* in blocks (``StepEnd`` for steps ``k .. k+B-1`` arrive together, at the
latest at the end of the epoch or before a checkpoint): an engine that keeps its losses on the
device (torch, later a GPU engine) syncs with the host once per block, not once per step.
Every event is a frozen dataclass of plain Python values (``dataclasses.asdict`` gives JSON),
but one: :class:`EpochArrays` carries NumPy arrays (weights, a step's gradients and layer outputs)
and goes only to the sinks that ask for it with an attribute ``wants_arrays = True`` (the
TensorBoard writer); every other sink never sees it, and without such a sink it is never made.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunStart:
    """Training of ``engine`` starts (or resumes, when ``start_step > 0``)."""

    engine: str
    config: dict                      # the resolved run configuration (RunConfig.to_dict())
    epochs: int                       # epochs planned in all
    steps_per_epoch: int
    batch_size: int
    train_size: int
    start_epoch: int = 0              # 0-based epoch the run (re)starts in
    start_step: int = 0               # global steps already done (a resumed run)
    kind: str = "run_start"


@dataclass(frozen=True)
class StepEnd:
    """The loss of global step ``step`` (1-based) is known; ``epoch`` is 1-based."""

    engine: str
    step: int
    epoch: int
    loss: float
    lr: float
    batch_size: int
    kind: str = "step_end"


@dataclass(frozen=True)
class Evaluation:
    """The model was measured on ``split`` after epoch ``epoch`` (1-based)."""

    engine: str
    epoch: int
    split: str
    loss: float
    accuracy: float
    f1: float
    kind: str = "evaluation"


@dataclass(frozen=True)
class GradientFlow:
    """Epoch ``epoch``'s (1-based) gradient flow, measured on its sampled global steps ``steps``
    (:mod:`~nnscratch.training.gradient_flow`): per trainable parameter (``"0.weight"``) its
    gradient's norm, mean and max ``|g|``, weight norm and update-to-weight ratio; per layer
    (``"0"``, ``"1"``...) its kind, output mean and std, and the dead fraction of ReLU-family
    layers; each the mean over the sampled steps. Emitted after the epoch's steps, before its
    evaluation (only when gradient flow is on)."""

    engine: str
    epoch: int
    steps: list
    params: dict
    layers: dict
    kind: str = "gradient_flow"


@dataclass(frozen=True)
class EpochArrays:
    """The arrays behind epoch ``epoch``'s (1-based) histograms, for the sinks with
    ``wants_arrays = True`` only (see the module docstring); emitted after its
    :class:`GradientFlow`, before its evaluation.

    ``weights``: the engine's ``state_dict()`` after the epoch's last step (parameters and
    buffers, torch's names). ``gradients`` (``"0.weight"`` -> the gradient of the training loss,
    before clipping) and ``outputs`` (``"0"``, ``"1"``... -> that layer's output on the batch,
    ``(N, D)``) are those of the epoch's last gradient-flow step, global step ``step``; both are
    empty (and ``step`` None) when gradient flow is off, or when a resumed epoch had passed that
    step before the interruption. Copies: a sink may keep them."""

    engine: str
    epoch: int
    step: int | None
    weights: dict
    gradients: dict
    outputs: dict
    kind: str = "epoch_arrays"


@dataclass(frozen=True)
class EpochEnd:
    """Epoch ``record["epoch"]`` is done; ``record`` is its :class:`~nnscratch.training.loop.EpochRecord`
    as a dict (with the epoch's ``gradient_flow`` when it was recorded). ``best``: early stopping
    counts it as the best epoch so far (None without early stopping); ``stop``: early stopping ends
    the run after it."""

    engine: str
    record: dict
    best: bool | None = None
    stop: bool = False
    kind: str = "epoch_end"


@dataclass(frozen=True)
class CheckpointWritten:
    """A checkpoint file was written (``names``: ``last``, ``best``, ``epoch-K``, ``step-N``; one
    file, linked or copied under each name) at global step ``step``."""

    engine: str
    path: str
    names: tuple[str, ...]
    step: int
    epoch: int
    kind: str = "checkpoint"


@dataclass(frozen=True)
class RunEnd:
    """Training of ``engine`` ended: ``reason`` is ``finished``, ``early_stop``, ``interrupted``
    (Ctrl-C or SIGTERM: the step in flight was finished) or ``error`` (a sink raised)."""

    engine: str
    reason: str
    epochs_run: int
    steps: int
    detail: dict = field(default_factory=dict)
    kind: str = "run_end"


EVENT_TYPES = (RunStart, StepEnd, GradientFlow, EpochArrays, Evaluation, EpochEnd, CheckpointWritten, RunEnd)

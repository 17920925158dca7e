"""The two engines behind one contract, and the one place that builds them.

:class:`Engine` is the contract the training loop, the benchmark and the checkpoints rely on;
``numpy`` (:class:`nnscratch.numpy_engine.NumpyEngine`, every gradient by hand) and ``torch``
(:class:`nnscratch.torch_engine.TorchEngine`, torch's own modules and autograd) both meet it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from nnscratch.errors import INSTALL_NUMBA, INSTALL_TORCH, UsageError
from nnscratch.model.spec import ModelSpec

ENGINES = ("numpy", "torch")


@runtime_checkable
class Engine(Protocol):
    """What every engine does. Arrays in and out are NumPy; state is named as torch names it.

    * ``train_step(x, y, lr, masks)``: one optimisation step on ``x (N, D)``, ``y (N,)`` with the
      step's learning rate ``lr``; ``masks`` maps each dropout layer's index to its ``keep``
      array ``(N, D)`` (drawn by the loop, so both twins drop the same units). Needs training mode.
    * ``train(mode=True)`` / ``eval()`` and ``training``: the mode, as ``torch.nn.Module`` has it.
    * ``take_epoch_stats()``: ``(float64 losses of the steps since the last call, correct count)``.
    * ``predict_logits(x)``: logits ``(N, C)`` in evaluation mode (running statistics, no dropout).
    * ``state_dict()``: parameters and buffers (what a model file holds).
    * ``state()`` / ``load_state(state)``: everything needed to resume exactly: parameters,
      buffers, ``optimizer.<param>.<torch state name>`` and ``engine.steps``.

    Optional: ``train_step_recorded(x, y, lr, masks, arrays=False) -> dict``, the same step (bit
    for bit the same weights after it) that also returns its gradient-flow statistics
    (:mod:`nnscratch.training.gradient_flow`), and with ``arrays=True`` copies of the gradients
    and layer outputs they were taken of (asked only for a sink that wants arrays: TensorBoard's
    histograms); the trainer records none for an engine without it. ``take_precision_stats() ->
    dict | None``: under ``--precision fp16|bf16`` ``{"loss_scale", "skipped_steps"}`` since the
    last call (the trainer puts them in each epoch's record), None in fp32.
    """

    name: str
    training: bool
    steps: int

    def train_step(self, x: np.ndarray, y: np.ndarray, lr: float,
                   masks: dict[int, np.ndarray] | None = None) -> None: ...

    def train(self, mode: bool = True) -> "Engine": ...

    def eval(self) -> "Engine": ...

    def take_epoch_stats(self) -> tuple[np.ndarray, int]: ...

    def predict_logits(self, x: np.ndarray) -> np.ndarray: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def state(self) -> dict[str, np.ndarray]: ...

    def load_state(self, state: dict[str, np.ndarray]) -> None: ...


def no_cuda_device() -> bool:
    """True when this machine surely has no CUDA GPU: Linux without the NVIDIA driver's device
    files. Cheap (no torch import); False means "ask torch"."""
    import os
    import sys

    return sys.platform.startswith("linux") and not (os.path.exists("/dev/nvidiactl")
                                                      or os.path.exists("/proc/driver/nvidia"))


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def require_torch() -> None:
    """A :class:`UsageError` with the install line unless PyTorch can be imported."""
    if not torch_available():
        raise UsageError(f"the torch engine needs PyTorch: {INSTALL_TORCH}")


def require_numba() -> None:
    """A :class:`UsageError` with the install line unless Numba (``--jit``) can be imported."""
    try:
        import numba  # noqa: F401
    except ImportError:
        raise UsageError(f"--jit needs numba: {INSTALL_NUMBA} (or run without --jit)") from None


def make_engine(name: str, spec: ModelSpec, initial: dict[str, np.ndarray], dtype=np.float32,
                device: str = "auto", **options) -> Engine:
    """Build engine ``name`` from ``spec``, starting from the parameters and buffers ``initial``.

    ``options`` go to the engine's constructor (``optimizer``, ``optimizer_options``,
    ``label_smoothing``, ``precision``; NumPy: ``jit``, ``fuse``; torch: ``compile``, ``shared_masks``).
    ``device``: ``auto``, ``cpu`` or ``cuda``; the NumPy engine takes ``auto`` as the CPU and
    ``cuda`` as CuPy (:mod:`nnscratch.numpy_engine.backend`).
    ``communicator`` (a :class:`~nnscratch.training.distributed.Communicator`, or None): build
    the engine as one rank of a data-parallel run (docs/distributed.md).
    """
    communicator = options.pop("communicator", None)
    if name == "numpy":
        if options.get("jit"):
            require_numba()
        if communicator is not None:
            from nnscratch.numpy_engine.data_parallel import DataParallelNumpyEngine

            return DataParallelNumpyEngine(spec, initial, dtype=dtype, communicator=communicator, **options)
        from nnscratch.numpy_engine.model import NumpyEngine

        return NumpyEngine(spec, initial, dtype=dtype, device=device, **options)
    if name == "torch":
        require_torch()
        if communicator is not None:
            from nnscratch.torch_engine.data_parallel import DataParallelTorchEngine

            return DataParallelTorchEngine(spec, initial, dtype=dtype, device=device, communicator=communicator,
                                           **options)
        from nnscratch.torch_engine import TorchEngine

        return TorchEngine(spec, initial, dtype=dtype, device=device, **options)
    raise UsageError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")

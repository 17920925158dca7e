"""The two engines behind one contract, and the one place that builds them.

An engine has: ``name``, ``train_step(x, y)``, ``take_epoch_stats() -> (step losses, correct count)``,
``predict_logits(x)`` and ``state_dict()`` (numpy arrays named as torch's ``state_dict()``).
"""

from __future__ import annotations

import numpy as np

from nnscratch.errors import UsageError
from nnscratch.numpy_engine import NumpyEngine
from nnscratch.spec import ModelSpec

ENGINES = ("numpy", "torch")


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_engine(name: str, spec: ModelSpec, initial: dict[str, np.ndarray], lr: float, dtype,
                device: str = "auto", **options):
    """Build engine ``name`` from ``spec``, starting from the weights ``initial``."""
    if name == "numpy":
        if options.get("jit"):
            try:
                import numba  # noqa: F401
            except ImportError:
                raise UsageError("--jit needs numba: pip install 'nnscratch[bench]' (or run without --jit)") from None
        return NumpyEngine(spec, initial, lr, dtype=dtype, **options)
    if name == "torch":
        if not torch_available():
            raise UsageError("the torch engine needs PyTorch: pip install torch==2.13.0 "
                             "then pip install 'nnscratch[torch]'")
        from nnscratch.torch_engine import TorchEngine

        return TorchEngine(spec, initial, lr, dtype=dtype, device=device, **options)
    raise UsageError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")

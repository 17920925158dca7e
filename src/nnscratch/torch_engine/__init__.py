"""The PyTorch twin: torch's own layers, loss and optimizer, built from the same spec.

Importing this package needs torch (``pip install 'nnscratch[torch]'``); the NumPy engine never does.
"""

from nnscratch.torch_engine.model import TorchEngine, build_twin, resolve_device

__all__ = ["TorchEngine", "build_twin", "resolve_device"]

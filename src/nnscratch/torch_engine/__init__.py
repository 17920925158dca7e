"""The PyTorch twin: torch's own layers, loss and optimizer, built from the same spec.

Importing this package needs torch (``pip install 'nnscratch[torch]'``); the NumPy engine never does.
"""

from nnscratch.threads import sync_torch_threads
from nnscratch.torch_engine.model import TorchEngine, build_twin, resolve_device

sync_torch_threads()  # the run's thread count (nnscratch.threads.set_threads), now that torch is imported

__all__ = ["TorchEngine", "build_twin", "resolve_device"]

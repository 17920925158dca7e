"""The twin: the same spec as an ``nn.Sequential``, trained with torch's own autograd and SGD.

Nothing here is hand-written math: the point of the twin is that torch computes everything
itself, from the same initial weights and the same batches as the NumPy engine.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nnscratch.errors import UsageError
from nnscratch.spec import ModelSpec

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}

# spec layer kind -> torch module (the one mapping from our layers to torch's)
TWIN_LAYERS = {
    "dense": lambda layer: nn.Linear(layer.in_features, layer.out_features),
    "relu": lambda layer: nn.ReLU(),
}


def build_twin(spec: ModelSpec) -> nn.Sequential:
    """``nn.Sequential`` of torch's own modules for ``spec``; parameter names match the NumPy model's."""
    return nn.Sequential(*[TWIN_LAYERS[layer.kind](layer) for layer in spec.layers()])


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is a usage error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


class TorchEngine:
    """The twin behind the common engine contract (see :class:`nnscratch.numpy_engine.NumpyEngine`).

    Given its best shot on the CPU: losses and correct counts are accumulated on the device and
    read once per epoch (no per-step ``.item()``), evaluation runs under ``torch.inference_mode``,
    SGD uses torch's ``foreach`` implementation.
    """

    name = "torch"

    def __init__(self, spec: ModelSpec, initial: dict[str, np.ndarray], lr: float, dtype=np.float32,
                 device: str = "cpu", compile: bool = False) -> None:
        self.device = resolve_device(device)
        self.dtype = _TORCH_DTYPES[np.dtype(dtype)]
        self.model = build_twin(spec).to(device=self.device, dtype=self.dtype)
        self.model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in initial.items()})
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, foreach=True)
        self._forward = torch.compile(self.model) if compile else self.model
        self._losses: list[torch.Tensor] = []
        self._correct = torch.zeros((), dtype=torch.int64, device=self.device)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device, non_blocking=True)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> None:
        xb, yb = self._tensor(x), self._tensor(y)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self._forward(xb)
        loss = self.loss_fn(logits, yb)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self._losses.append(loss.detach())
            self._correct += (logits.argmax(dim=1) == yb).sum()

    def take_epoch_stats(self) -> tuple[np.ndarray, int]:
        losses = torch.stack(self._losses).double().cpu().numpy() if self._losses else np.zeros(0)
        correct = int(self._correct.item())
        self._losses = []
        self._correct.zero_()
        return losses, correct

    @torch.inference_mode()
    def predict_logits(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        self.model.eval()
        chunks = [self.model(self._tensor(x[s:s + batch_size])).cpu() for s in range(0, len(x), batch_size)]
        self.model.train()
        return torch.cat(chunks).numpy()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

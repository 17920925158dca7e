"""The NumPy model: a list of layers, its forward and backward passes, and one training step."""

from __future__ import annotations

import numpy as np

from nnscratch.numpy_engine.layers import LAYERS, Dense, ReLU
from nnscratch.numpy_engine.losses import SoftmaxCrossEntropy
from nnscratch.numpy_engine.optim import SGD
from nnscratch.spec import ModelSpec


class Sequential:
    """Layers applied in order, numbered and named as ``torch.nn.Sequential`` does.

    ``forward`` runs the layers first to last; ``backward`` runs their ``backward`` last to first,
    each turning ``dL/d(output)`` into ``dL/d(input)`` (the chain rule, one layer at a time).
    """

    def __init__(self, spec: ModelSpec, dtype=np.float32) -> None:
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.layers = []
        for layer in spec.layers():
            if layer.kind == "dense":
                self.layers.append(Dense(layer.in_features, layer.out_features, dtype=self.dtype))
            else:
                self.layers.append(LAYERS[layer.kind](dtype=self.dtype))

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Logits ``(N, C)`` for inputs ``x (N, D)`` (a reused buffer: valid until the next call)."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dlogits: np.ndarray, sgd_lr: float | None = None) -> None:
        """Fill every layer's ``grads`` (or, with ``sgd_lr``, apply the SGD step in place)."""
        dout = dlogits
        for i in range(len(self.layers) - 1, -1, -1):
            dout = self.layers[i].backward(dout, need_dx=i > 0, sgd_lr=sgd_lr)

    def named_params(self) -> dict[str, np.ndarray]:
        """The live parameter arrays, ``{"0.weight": ..., "0.bias": ..., "2.weight": ...}``."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()}

    def named_grads(self) -> dict[str, np.ndarray]:
        """The gradient arrays filled by the last :meth:`backward` without ``sgd_lr``."""
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the parameters (cast to this model's dtype); names and shapes must match."""
        params = self.named_params()
        missing, unexpected = set(params) - set(state), set(state) - set(params)
        if missing or unexpected:
            raise ValueError(f"state does not fit {self.spec.describe()}: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"{name}: shape {value.shape} does not fit {p.shape}")
            p[...] = value

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, named as torch's ``state_dict()``."""
        return {name: p.copy() for name, p in self.named_params().items()}


class NumpyEngine:
    """The hand-written engine behind the common engine contract (see :mod:`nnscratch.engines`).

    ``train_step(x, y)`` does one mini-batch SGD step and records its loss; ``take_epoch_stats()``
    hands the recorded losses and the count of correct training predictions to the training loop.
    """

    name = "numpy"

    def __init__(self, spec: ModelSpec, initial: dict[str, np.ndarray], lr: float, dtype=np.float32,
                 fuse_sgd: bool = True, jit: bool = False) -> None:
        self.model = Sequential(spec, dtype)
        self.model.load_state_dict(initial)
        self.loss = SoftmaxCrossEntropy(dtype)
        if jit:  # the Numba experiment (see numpy_engine/jit.py): same math, compiled element-wise loops
            from nnscratch.numpy_engine.jit import JitReLU, JitSoftmaxCrossEntropy

            self.model.layers = [JitReLU(dtype) if isinstance(l, ReLU) else l for l in self.model.layers]
            self.loss = JitSoftmaxCrossEntropy(dtype)
        self.optimizer = SGD(lr)
        self.fuse_sgd = fuse_sgd and self.optimizer.fusable
        self._losses: list[float] = []
        self._correct = 0

    def train_step(self, x: np.ndarray, y: np.ndarray) -> None:
        """One optimisation step on the batch ``x (N, D)``, ``y (N,)``."""
        logits = self.model.forward(x, train=True)
        self._correct += int(np.count_nonzero(logits.argmax(axis=1) == y))
        loss, dlogits = self.loss.forward_backward(logits, y)
        if self.fuse_sgd:
            self.model.backward(dlogits, sgd_lr=self.optimizer.lr)
        else:
            self.model.backward(dlogits)
            self.optimizer.step(self.model.named_params(), self.model.named_grads())
        self._losses.append(loss)

    def take_epoch_stats(self) -> tuple[np.ndarray, int]:
        """``(losses of the steps since the last call, correct training predictions among them)``."""
        losses, correct = np.array(self._losses, dtype=np.float64), self._correct
        self._losses, self._correct = [], 0
        return losses, correct

    def predict_logits(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Logits for every row of ``x``, computed in large batches without keeping anything for backward."""
        out = np.empty((x.shape[0], self.model.spec.num_classes), dtype=self.model.dtype)
        for start in range(0, x.shape[0], batch_size):
            out[start:start + batch_size] = self.model.forward(x[start:start + batch_size], train=False)
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        return self.model.state_dict()

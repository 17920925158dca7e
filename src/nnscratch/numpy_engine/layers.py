"""Layers of the NumPy engine: each forward and its hand-written backward, side by side.

Conventions (as in cs231n and PyTorch):

* ``N`` is the batch size, ``D_in``/``D_out`` feature sizes.
* ``params`` and ``grads`` are dicts with the same keys, named as torch names them
  (``weight`` of shape ``(D_out, D_in)``, ``bias``), so weights move between the twins as is.
* ``forward(x, train)`` keeps what ``backward`` needs (only when ``train``);
  ``backward(dout)`` returns ``dx = dL/dx`` and fills ``grads``.
* Output arrays are reused buffers (see :mod:`buffers`): a layer's output is valid until its
  next ``forward``. Use the result, or copy it, before calling again.
"""

from __future__ import annotations

import numpy as np

from nnscratch.numpy_engine.blas import gemm
from nnscratch.numpy_engine.buffers import Buffers


class Dense:
    """Fully connected layer ``y = x @ W.T + b`` (``torch.nn.Linear``).

    Shapes: ``x (N, D_in)``, ``weight W (D_out, D_in)``, ``bias b (D_out,)``, ``y (N, D_out)``.

    Forward::

        y = x @ W.T + b

    Backward, given ``dout = dL/dy (N, D_out)``::

        dW = dout.T @ x      (D_out, D_in)   each weight sees its input times the output's gradient
        db = dout.sum(0)     (D_out,)        the bias is added to every row, so its gradient sums them
        dx = dout @ W        (N, D_in)       the chain rule back through the product

    With ``sgd_lr`` the plain-SGD update ``W -= lr * dW; b -= lr * db`` is done inside the
    gradient products themselves (BLAS ``C = alpha*A@B + beta*C`` with ``alpha=-lr, beta=1``),
    so ``dW`` and ``db`` are never stored; same math, one pass over ``W`` fewer.
    """

    def __init__(self, in_features: int, out_features: int, dtype=np.float32) -> None:
        self.in_features, self.out_features = in_features, out_features
        self.params = {"weight": np.zeros((out_features, in_features), dtype=dtype),
                       "bias": np.zeros(out_features, dtype=dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self._buffers = Buffers(dtype)
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        W, b = self.params["weight"], self.params["bias"]
        y = self._buffers.get("y", (x.shape[0], self.out_features))
        y[...] = b                       # every row starts as the bias ...
        gemm(x, W.T, out=y, beta=1.0)    # ... and BLAS adds x @ W.T to it (torch's addmm does the same)
        self._x = x if train else None
        return y

    def backward(self, dout: np.ndarray, need_dx: bool = True, sgd_lr: float | None = None) -> np.ndarray | None:
        x, W, b = self._x, self.params["weight"], self.params["bias"]
        dx = None
        if need_dx:  # first, while W still holds the weights the forward pass used
            dx = self._buffers.get("dx", x.shape)
            gemm(dout, W, out=dx)
        ones = self._buffers.ones(dout.shape[0])  # ones @ dout = dout.sum(0)
        if sgd_lr is None:
            gemm(dout.T, x, out=self.grads["weight"])
            gemm(ones, dout, out=self.grads["bias"][None, :])
        else:  # fused SGD step: W += -lr * dout.T @ x, b += -lr * dout.sum(0)
            gemm(dout.T, x, out=W, alpha=-sgd_lr, beta=1.0)
            gemm(ones, dout, out=b[None, :], alpha=-sgd_lr, beta=1.0)
        return dx


class ReLU:
    """Rectified linear unit ``y = max(x, 0)``, element-wise (``torch.nn.ReLU``).

    Shapes: ``x`` and ``y`` are ``(N, D)``.

    Forward::      y = x * (x > 0)
    Backward::     dx = dout * (x > 0)     (the slope is 1 where x > 0, else 0; at x == 0 we take 0, as torch)

    Both work in place on their input (the Dense output before it is not needed again), and the
    mask ``x > 0`` computed in forward is what backward reuses. The mask is kept as 0.0/1.0 in
    the layer's float type: multiplying by it gives exactly the same numbers as multiplying by a
    boolean mask, but float-by-float needs no per-element type conversion (measured, batch 64,
    533 units: 12 us per step for forward + backward against 17 us with a boolean mask).
    """

    def __init__(self, dtype=np.float32) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._buffers = Buffers(dtype)
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        positive = self._buffers.get("positive", x.shape, dtype=bool)
        mask = self._buffers.get("mask", x.shape)
        np.greater(x, 0, out=positive)
        np.copyto(mask, positive)        # True/False -> 1.0/0.0
        np.multiply(x, mask, out=x)
        self._mask = mask if train else None
        return x

    def backward(self, dout: np.ndarray, need_dx: bool = True, sgd_lr: float | None = None) -> np.ndarray:
        np.multiply(dout, self._mask, out=dout)
        return dout


LAYERS = {"dense": Dense, "relu": ReLU}

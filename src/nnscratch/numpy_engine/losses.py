"""Softmax + categorical cross-entropy, computed stably, with its fused gradient."""

from __future__ import annotations

from nnscratch.numpy_engine.backend import NUMPY, Backend, np
from nnscratch.numpy_engine.buffers import Buffers


class SoftmaxCrossEntropy:
    """Mean cross-entropy of ``softmax(z)`` against integer labels (``torch.nn.CrossEntropyLoss``),
    optionally with label smoothing ``eps`` (``CrossEntropyLoss(label_smoothing=eps)``).

    Shapes: logits ``z (N, C)``, labels ``y (N,)`` integers in ``[0, C)``; the loss is a scalar.

    Forward, stable through log-sum-exp (``exp`` never sees a positive number, so never overflows)::

        m_i   = max_j z_ij
        lse_i = m_i + log sum_j exp(z_ij - m_i)          = log sum_j exp(z_ij)
        L     = (1/N) sum_i (lse_i - z_{i, y_i})        = mean of -log softmax(z)_{i, y_i}

    Backward, the fused gradient::

        dL/dz = (softmax(z) - onehot(y)) / N

    With label smoothing the target is ``(1 - eps) * onehot(y) + eps / C`` instead of ``onehot(y)``
    (Szegedy et al. 2016, torch's definition), so::

        L     = (1/N) sum_i (lse_i - (1 - eps) z_{i, y_i} - (eps / C) sum_j z_ij)
        dL/dz = (softmax(z) - (1 - eps) onehot(y) - eps / C) / N

    Why so simple: ``d lse_i / d z_ij = softmax_ij`` and ``d z_{i,y_i} / d z_ij = [j == y_i]``;
    computing softmax and the log separately would need the full ``C x C`` softmax Jacobian and
    lose precision in ``log`` of a tiny probability. The logits are left untouched.
    """

    def __init__(self, dtype=np.float32, label_smoothing: float = 0.0, backend: Backend = NUMPY) -> None:
        self.backend = backend
        self._scratch = Buffers(dtype, backend)
        self.label_smoothing = float(label_smoothing)

    def forward_backward(self, z, y) -> tuple[float, object]:
        """Return ``(loss, dL/dz)``; ``dL/dz`` is a reused buffer of the shape of ``z``.

        The loss is a float64 scalar *of the backend*: on the CPU a ``numpy.float64`` (a Python
        float), on the GPU a 0-d CuPy array that stays on the device (reading it would wait for
        the GPU every step; the engine collects them and reads them once per epoch)."""
        xp = self.backend.xp
        n = z.shape[0]
        rows = xp.arange(n)
        p = self._scratch.get("dz", z.shape)
        xp.subtract(z, z.max(axis=1, keepdims=True), out=p)  # z - m
        eps = self.label_smoothing
        picked = p[rows, y]                                   # z_{i,y_i} - m_i
        if eps:                                               # (1 - eps) z_{i,y_i} + eps mean_j z_ij, less m_i
            picked = (1.0 - eps) * picked + eps * p.mean(axis=1)
        xp.exp(p, out=p)
        sums = p.sum(axis=1, keepdims=True)                   # sum_j exp(z_ij - m_i)
        loss = (xp.log(sums).sum() - picked.sum()).astype(np.float64) / n  # mean_i (lse_i - z_{i,y_i})
        sums *= n
        p /= sums                                             # softmax(z) / N
        p[rows, y] -= (1.0 - eps) / n                         # - (1 - eps) onehot(y) / N
        if eps:
            p -= eps / (z.shape[1] * n)                       # - eps / (C N)
        return loss, p

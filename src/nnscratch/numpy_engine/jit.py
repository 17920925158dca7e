"""Optional Numba-compiled element-wise kernels (``nnscratch bench --jit``), an experiment.

The reference project's roadmap lists "Numba/JIT compilation for the NumPy model". The matrix
products are already BLAS, so only the element-wise parts can gain: the ReLU mask and its
backward, and the softmax-cross-entropy gradient, each done in one compiled loop instead of
several NumPy passes. The math is exactly that of :class:`~nnscratch.numpy_engine.layers.ReLU`
and :class:`~nnscratch.numpy_engine.losses.SoftmaxCrossEntropy`; ``benchmarks/engines.py``
measures whether it wins (see the README's Performance section for the figure).

Needs ``numba`` (``pip install 'nnscratch[bench]'``).
"""

from __future__ import annotations

import math

import numpy as np

from nnscratch.numpy_engine.layers import ReLU
from nnscratch.numpy_engine.losses import SoftmaxCrossEntropy

try:
    import numba
except ImportError as exc:  # pragma: no cover - exercised where numba is absent
    raise ImportError("the --jit kernels need numba: pip install 'nnscratch[bench]'") from exc


@numba.njit(cache=True, fastmath=False)
def _relu_forward(x, mask):  # x, mask: 1-D views of the same memory layout
    for i in range(x.size):
        positive = x[i] > 0
        mask[i] = positive
        if not positive:
            x[i] = 0.0


@numba.njit(cache=True, fastmath=False)
def _relu_backward(dout, mask):
    for i in range(dout.size):
        if not mask[i]:
            dout[i] = 0.0


@numba.njit(cache=True, fastmath=False)
def _softmax_xent(z, y, p):  # z, p: (N, C); returns the mean loss and leaves dL/dz in p
    n, c = z.shape
    total = 0.0
    for i in range(n):
        m = z[i, 0]
        for j in range(1, c):
            m = max(m, z[i, j])
        s = 0.0
        for j in range(c):
            e = math.exp(z[i, j] - m)
            p[i, j] = e
            s += e
        total += math.log(s) - (z[i, y[i]] - m)
        for j in range(c):
            p[i, j] = p[i, j] / s / n
        p[i, y[i]] -= 1.0 / n
    return total / n


def _flat(a: np.ndarray) -> np.ndarray:
    return a.ravel(order="K")  # a view for C- or Fortran-contiguous arrays


class JitReLU(ReLU):
    """:class:`ReLU` with its two element-wise passes compiled by Numba."""

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        mask = self._buffers.get("mask", x.shape, dtype=bool)
        _relu_forward(_flat(x), _flat(mask))
        self._mask = mask if train else None
        return x

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray:
        _relu_backward(_flat(dout), _flat(self._mask))
        return dout


class JitSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """:class:`SoftmaxCrossEntropy` in one compiled loop (same formulas; loss accumulated in float64)."""

    def forward_backward(self, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        p = self._buffers.get("dz", z.shape)
        return float(_softmax_xent(z, y, p)), p

"""Weight penalties and gradient clipping, engine-neutral NumPy.

Penalty convention (Keras's ``l1_l2`` regulariser; no 1/2 in front of the square)::

    penalty(θ)    = l1 * Σ |θ_i|  +  l2 * Σ θ_i²           over every parameter array given
    ∂penalty/∂θ_i = l1 * sign(θ_i) + 2 * l2 * θ_i          (sign(0) = 0: the subgradient torch uses)

The penalty is added to the data loss; its gradient to the data gradient, before the optimizer
step. Note L2 here is not the optimizers' ``weight_decay``: SGD's ``weight_decay=λ`` adds
``λ θ`` to the gradient, i.e. equals ``l2 = λ / 2``; AdamW's decay is not a penalty at all.

Gradient clipping is ``torch.nn.utils.clip_grad_norm_`` with ``norm_type=2``.

None of these functions touches BLAS (sums go through NumPy's own loops, squares through
``einsum``), so they never wake a second BLAS thread pool (see ``numpy_engine/blas.py``).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from nnscratch.errors import ParameterError


def _arrays(params: dict[str, np.ndarray] | Iterable[np.ndarray]) -> list[np.ndarray]:
    return list(params.values()) if isinstance(params, dict) else list(params)


def _check_coefficients(l1: float, l2: float) -> None:
    if not 0.0 <= l1 < math.inf:
        raise ParameterError("l1", f"must be a finite number >= 0, got {l1}")
    if not 0.0 <= l2 < math.inf:
        raise ParameterError("l2", f"must be a finite number >= 0, got {l2}")


def _sum_of_squares(a: np.ndarray) -> float:
    """``Σ a_i²`` accumulated in float64 (einsum casts chunk by chunk: no float64 copy of ``a``)."""
    flat = a.reshape(-1)
    return float(np.einsum("i,i->", flat, flat, dtype=np.float64))


def penalty(params: dict[str, np.ndarray] | Iterable[np.ndarray], l1: float, l2: float) -> float:
    """``l1 * Σ|θ| + l2 * Σθ²`` over every array in ``params`` (a dict or a list), in float64.

    Zero coefficients cost nothing. Raises :class:`~nnscratch.errors.ParameterError` (naming ``l1`` or ``l2``) for negative coefficients.
    """
    _check_coefficients(l1, l2)
    total = 0.0
    for p in _arrays(params):
        if l1:
            total += l1 * float(np.abs(p).sum(dtype=np.float64))
        if l2:
            total += l2 * _sum_of_squares(p)
    return total


def add_penalty_gradient(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], l1: float, l2: float) -> None:
    """``grads[k] += l1 * sign(params[k]) + 2 * l2 * params[k]`` in place, for every key of ``params``.

    ``grads`` must hold an array of the same shape for each key of ``params``; other entries are
    left alone (e.g. to exempt biases, pass only the weights in ``params``).
    """
    _check_coefficients(l1, l2)
    if not (l1 or l2):
        return
    for name, p in params.items():
        g = grads[name]
        work = np.empty_like(g)
        if l1:
            np.sign(p, out=work)
            work *= l1
            g += work
        if l2:
            np.multiply(p, 2.0 * l2, out=work)
            g += work


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so that their joint 2-norm is at most ``max_norm``;
    return the norm before clipping (``torch.nn.utils.clip_grad_norm_``, ``norm_type=2``)::

        total_norm = sqrt(Σ_arrays Σ_i g_i²)             (all gradients as one long vector)
        clip_coef  = min(max_norm / (total_norm + 1e-6), 1)
        g         <- g * clip_coef                        (skipped when clip_coef == 1: a no-op)

    The ``1e-6`` keeps the clipped norm just below ``max_norm``. A NaN or inf norm gives NaN or
    zero coefficients, as in torch (``error_if_nonfinite=False``). The norm is accumulated in
    float64 (torch: in the gradients' dtype), so float32 results agree with torch to float32 rounding.
    """
    if not 0.0 < max_norm < math.inf:
        raise ParameterError("max_norm", f"must be a finite number > 0, got {max_norm}")
    total_norm = math.sqrt(sum(_sum_of_squares(g) for g in grads.values()))
    clip_coef = min(max_norm / (total_norm + 1e-6), 1.0)  # min(nan, 1.0) is nan, like torch.clamp
    if clip_coef != 1.0:
        for g in grads.values():
            g *= clip_coef
    return total_norm

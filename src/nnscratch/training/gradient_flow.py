"""Gradient-flow statistics: how large each layer's gradients, updates and outputs are, per epoch.

A few steps of every epoch are *sampled* (:func:`sampled_positions`); on those the engine runs
``train_step_recorded`` instead of ``train_step``: the very same step (same weights afterwards,
bit for bit), which also measures, in float64,

for every trainable parameter ``θ`` (named as the state dict names it, ``0.weight``), with ``g``
the gradient of the training loss (L1/L2 penalty included, before gradient clipping) and ``n``
its number of entries (sums in the parameter's dtype, NumPy's pairwise summation: about 1e-6
relative in float32, which is plenty for a diagnostic, and a fraction of the cost of float64)::

    grad_norm      = ||g||_2 = sqrt(Σ g_i²)
    grad_mean_abs  = (1/n) Σ |g_i|
    grad_max_abs   = max_i |g_i|
    weight_norm    = ||θ_{t-1}||_2                       (before the step)
    update_ratio   = ||θ_t - θ_{t-1}||_2 / ||θ_{t-1}||_2 (the update the optimizer really applied:
                                                          momentum, Adam, weight decay, clipping...)

and for every layer ``i`` (named ``"0"``, ``"1"``... as ``nn.Sequential`` numbers its modules),
with ``y`` its output ``(N, D)`` on the batch and ``x`` its input::

    mean           = (1/(N D)) Σ y_nj                    (in float64)
    std            = sqrt((1/(N D)) Σ (y_nj - mean)²)    (population std over every entry)
    dead_fraction  = (1/D) #{j : x_nj <= 0 for every n}  (ReLU-family layers only: the units
                                                          whose input is never positive in the batch)

The epoch's figure is the mean of each number over the epoch's sampled steps
(:func:`mean_of_samples`). Everything here is engine-neutral NumPy: the NumPy engine hands it
its own arrays, the torch twin its ``.grad`` tensors and its modules' outputs (as NumPy), so the
two are compared number for number (``tests/test_gradient_flow.py``).
"""

from __future__ import annotations

import numpy as np

#: The statistics of each parameter, in the order they are recorded.
PARAMETER_STATS = ("grad_norm", "grad_mean_abs", "grad_max_abs", "weight_norm", "update_ratio")
#: The statistics of each layer's output (``dead_fraction`` only for the ReLU family).
LAYER_STATS = ("mean", "std", "dead_fraction")
#: Steps sampled per epoch unless the run says otherwise (``gradient_flow_samples``).
DEFAULT_SAMPLES = 4


def sampled_positions(steps_per_epoch: int, samples: int) -> frozenset[int]:
    """The steps of an epoch (0-based positions in it) that record their gradient flow.

    ``samples`` steps, each in the middle of one of ``samples`` equal parts of the epoch:
    ``p_j = floor((2 j + 1) S / (2 k))`` for ``j = 0 .. k-1`` (``S`` steps per epoch, ``k``
    samples), so the first is well past the epoch's start and the last before its end; every
    step when ``S <= k``; none when ``k`` is 0. A function of the position only: a resumed run
    samples the same steps.
    """
    if samples <= 0:
        return frozenset()
    if steps_per_epoch <= samples:
        return frozenset(range(steps_per_epoch))
    return frozenset((2 * j + 1) * steps_per_epoch // (2 * samples) for j in range(samples))


def gradient_stats(grad: np.ndarray, work: np.ndarray | None = None) -> dict[str, float]:
    """``grad_norm``, ``grad_mean_abs``, ``grad_max_abs`` of one parameter's gradient.

    ``work``: a scratch array of ``grad``'s shape and dtype (overwritten; default: a new one).
    Measured on the seed network's 784x533 float32 weight: 0.3 ms (float64 sums took 0.6 ms).
    """
    work = np.abs(grad, out=np.empty_like(grad) if work is None else work)
    largest, total = float(work.max()), float(work.sum())
    np.multiply(work, work, out=work)
    return {"grad_norm": float(np.sqrt(work.sum())), "grad_mean_abs": total / work.size, "grad_max_abs": largest}


def update_stats(before: np.ndarray, after: np.ndarray, work: np.ndarray | None = None) -> dict[str, float]:
    """``weight_norm`` (of ``before``) and ``update_ratio`` ``||after - before|| / ||before||``
    (0 when neither moved from 0, inf when a zero parameter moved); ``work`` as in :func:`gradient_stats`."""
    work = np.multiply(before, before, out=np.empty_like(before) if work is None else work)
    weight = float(np.sqrt(work.sum()))
    np.subtract(after, before, out=work)   # exact in the dtype while |after| and |before| are within 2x
    np.multiply(work, work, out=work)
    update = float(np.sqrt(work.sum()))
    ratio = update / weight if weight > 0 else (0.0 if update == 0 else float("inf"))
    return {"weight_norm": weight, "update_ratio": ratio}


def dead_fraction(pre: np.ndarray) -> float:
    """The share of units (columns of ``pre (N, D)``, a ReLU-family layer's input) that are
    ``<= 0`` for every sample of the batch: units whose ReLU passes nothing (and gets no
    gradient) on this batch."""
    alive = np.count_nonzero((pre > 0).any(axis=0))
    return 1.0 - alive / pre.shape[1]


def layer_stats(kind: str, out: np.ndarray, dead: float | None = None) -> dict:
    """``kind``, ``mean`` and ``std`` of a layer's output ``out (N, D)`` (float64), with
    ``dead_fraction`` when ``dead`` is given (:func:`dead_fraction` of its input)."""
    stats = {"kind": kind, "mean": float(out.mean(dtype=np.float64)), "std": float(out.std(dtype=np.float64))}
    if dead is not None:
        stats["dead_fraction"] = float(dead)
    return stats


def mean_of_samples(samples: list[dict]) -> dict:
    """The epoch's gradient flow from its sampled steps ``[{"step", "params", "layers"}, ...]``:
    ``{"steps": [...], "params": {name: {stat: mean}}, "layers": {name: {"kind", stat: mean}}}``,
    each number the plain mean over the samples (summed in sample order: a resumed epoch gives
    the same floats)."""
    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    first = samples[0]
    params = {name: {stat: mean([s["params"][name][stat] for s in samples]) for stat in first["params"][name]}
              for name in first["params"]}
    layers = {name: {"kind": entry["kind"],
                     **{stat: mean([s["layers"][name][stat] for s in samples]) for stat in entry if stat != "kind"}}
              for name, entry in first["layers"].items()}
    return {"steps": [int(s["step"]) for s in samples], "params": params, "layers": layers}

"""What the dashboard does to a series before drawing it: smoothing and downsampling.

* :func:`debiased_ema`: TensorBoard-style exponential smoothing without its bias toward the
  first values;
* :func:`downsample_minmax`: at most ``max_points`` points for display, every bucket's minimum
  and maximum kept, so that a spike or a dip never disappears from a zoomed-out chart.

Both take and return NumPy arrays and never change their input.
"""

from __future__ import annotations

import numpy as np


def debiased_ema(y: np.ndarray, beta: float) -> np.ndarray:
    """The exponential moving average of ``y``, divided by its weight so far::

        s_0 = 0,   s_t = beta * s_{t-1} + (1 - beta) * y_t,   smoothed_t = s_t / (1 - beta**t)

    (t = 1, 2, ... counts the finite values seen so far). The plain EMA ``s_t`` starts at 0 and
    so reads too low for the first ~1/(1-beta) values; dividing by ``1 - beta**t`` (the sum of
    the weights, as in Adam's bias correction) makes it a true weighted mean of the values so
    far: ``smoothed_1 = y_1``. A non-finite value (a diverged step) is left out of the average
    and comes out as NaN at its place. ``beta`` = 0 returns ``y`` itself (non-finite values as NaN); ``beta`` must be in [0, 1).
    """
    y = np.asarray(y, dtype=np.float64)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {beta}")
    finite = np.isfinite(y)
    out = np.full_like(y, np.nan)
    values = y[finite]
    if beta == 0.0:
        out[finite] = values
    elif values.size:
        s, alpha, ema = 0.0, 1.0 - beta, []
        for v in values.tolist():  # the recursion as written (100,000 values: ~20 ms)
            s = beta * s + alpha * v
            ema.append(s)
        t = np.arange(1, values.size + 1, dtype=np.float64)
        out[finite] = np.asarray(ema) / -np.expm1(t * np.log(beta))  # 1 - beta**t, exact for beta near 1 too
    return out


def downsample_minmax(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of the points ``(x, y)`` (``x`` ascending), chosen so that the
    chart's envelope stays: the points are cut into ``max_points // 2`` buckets of consecutive
    indices (``bucket k`` = indices ``[k*n/b, (k+1)*n/b)``), and of each bucket the point with
    the smallest and the one with the largest ``y`` are kept, in their order (one point when
    they are the same). Non-finite ``y`` never wins a bucket; a bucket of only non-finite values
    keeps its first point (so that the gap shows). Fewer points than ``max_points``: returned whole.
    """
    x, y = np.asarray(x), np.asarray(y, dtype=np.float64)
    n = len(y)
    if n <= max_points:
        return x.copy(), y.copy()
    buckets = max(1, max_points // 2)
    edges = (np.arange(buckets + 1) * n) // buckets
    finite = np.isfinite(y)
    low = np.where(finite, y, np.inf)
    high = np.where(finite, y, -np.inf)
    starts = edges[:-1]
    # the position of each bucket's min and max: reduceat over the buckets, then argmin within
    mins = np.minimum.reduceat(low, starts)
    maxs = np.maximum.reduceat(high, starts)
    bucket_of = np.repeat(np.arange(buckets), np.diff(edges))
    is_min = low == mins[bucket_of]
    is_max = high == maxs[bucket_of]
    first_min = _first_true_per_bucket(is_min, bucket_of, starts, buckets)
    first_max = _first_true_per_bucket(is_max, bucket_of, starts, buckets)
    keep = np.unique(np.concatenate([first_min, first_max]))
    return x[keep], y[keep]


def _first_true_per_bucket(flags: np.ndarray, bucket_of: np.ndarray, starts: np.ndarray, buckets: int) -> np.ndarray:
    """Per bucket, the first index where ``flags`` holds (the bucket's start when none does)."""
    first = np.array(starts, copy=True)
    hits = np.flatnonzero(flags)
    hit_buckets = bucket_of[hits]
    # the first hit of each bucket: where the bucket number changes along the sorted hits
    new = np.ones(len(hits), dtype=bool)
    new[1:] = hit_buckets[1:] != hit_buckets[:-1]
    first[hit_buckets[new]] = hits[new]
    return first

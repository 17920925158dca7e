"""CPU thread control: how many cores this process may use, and the same thread count for every engine."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """How many cores this process may run on (CPU affinity), falling back to ``os.cpu_count``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    """Use ``threads`` (default: every usable core) in every BLAS pool and in torch; return the count."""
    n = threads or usable_cores()
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass
    return n

"""CPU thread control: how many cores this process may use, and the same thread count for every engine."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


def usable_cores() -> int:
    """How many cores this process may run on (CPU affinity), falling back to ``os.cpu_count``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_count(threads: int | None) -> int:
    """The threads a run uses for ``threads``: every usable core when None, and never more than
    those. More threads than cores only wait on each other, and BLAS libraries given a huge count
    (a million) crash the process: such a request is capped, with one line on stderr saying so."""
    cores = usable_cores()
    if threads is None:
        return cores
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        from nnscratch.errors import UsageError

        raise UsageError(f"threads must be a whole number >= 1, got {threads!r}")
    if threads > cores:
        print(f"nnscratch: warning: {threads:,} threads asked for, but this process may use "
              f"{cores} core{'s' if cores != 1 else ''}; using {cores}", file=sys.stderr, flush=True)
        return cores
    return threads


_torch_threads: int | None = None   # the count of the last set_threads, for torch once it is imported


def set_threads(threads: int | None) -> int:
    """Use ``threads`` (default: every usable core; at most those, see :func:`thread_count`) in
    every BLAS pool and in torch; return the count.

    Torch is not imported for it (3 s of a NumPy-only run's start): if it is not imported yet,
    :func:`sync_torch_threads` gives it the count when :mod:`nnscratch.torch_engine` imports it."""
    global _torch_threads
    n = thread_count(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    _torch_threads = n
    sync_torch_threads()
    return n


def sync_torch_threads() -> None:
    """Torch's thread count set to the last :func:`set_threads` count, if torch is imported and a
    count was set (else nothing)."""
    torch = sys.modules.get("torch")
    if torch is not None and _torch_threads is not None:
        torch.set_num_threads(_torch_threads)


@contextlib.contextmanager
def limited_threads(n: int | None) -> Iterator[None]:
    """Inside the block, every BLAS pool (and torch, if imported) uses at most ``n`` threads;
    after it, what they had. ``None``: nothing changes. (An augmented epoch leaves a core to the
    thread that prepares its batches: :mod:`nnscratch.training.augmented`.)"""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(n):
        if torch is not None:
            torch.set_num_threads(min(n, before))
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)

"""Data-parallel training's communicator: what one process of a run needs to hear from the others.

A data-parallel run is ``W`` processes (ranks ``0 .. W-1``) that all hold the same model, see the
same global batches in the same order (:mod:`nnscratch.training.streams`) and each compute on a
disjoint, contiguous shard of every batch (:func:`shard_rows`). After the backward pass the
gradients are summed over the ranks, each weighted by its share of the global batch::

    L = (1/N) sum over the N rows of the global batch of loss(row)
      = sum_r (n_r / N) L_r,          L_r the mean loss over rank r's n_r rows
    dL/dtheta = sum_r (n_r / N) dL_r/dtheta            (one all-reduce of the weighted gradients)

which is the single-process gradient up to the order of the sums, also for an uneven last batch.

:class:`Communicator` wraps ``torch.distributed`` (gloo on the CPU, NCCL on a GPU); the engines
get it from outside (the NumPy engine package never imports torch, it only calls
:meth:`~Communicator.allreduce_sum` on its own arrays). Any collective that fails (a rank died,
or one hung past the timeout) raises :class:`DistributedError`: one line for the command line.
"""

from __future__ import annotations

import time

import numpy as np

from nnscratch.errors import NNScratchError, UsageError


class DistributedError(NNScratchError):
    """A collective of a data-parallel run failed: another rank died, hung past the timeout, or
    could not be reached. Exit status 1; the run wrote nothing."""


def shard_rows(n: int, rank: int, world_size: int) -> slice:
    """The rows of a global batch of ``n`` that ``rank`` takes: a contiguous block, the blocks of
    ``0 .. world_size-1`` in order, their sizes differing by at most one."""
    return slice(n * rank // world_size, n * (rank + 1) // world_size)


def check_shards(n_train: int, batch_size: int, world_size: int) -> None:
    """A :class:`UsageError` unless every batch of the run (the last, short one included) gives
    every rank at least one row."""
    batch_size = max(1, min(batch_size, n_train))
    last = n_train - batch_size * ((n_train - 1) // batch_size)
    if min(batch_size, last) < world_size:
        raise UsageError(f"--distributed with {world_size} processes needs at least {world_size} images per "
                         f"batch, but {n_train:,} training images in batches of {batch_size} leave a last batch "
                         f"of {last}: change --batch-size or --train-subset")


class Communicator:
    """This process's place in a data-parallel run and the collectives it uses.

    ``rank``/``world_size`` as ``torch.distributed`` numbers them (``local_world_size``: the
    processes on this machine); ``timeout_s`` is how long a
    collective waits for the others before :class:`DistributedError`. Made by
    :func:`nnscratch.training.launch.start_data_parallel` (after ``init_process_group``).
    """

    def __init__(self, rank: int, world_size: int, timeout_s: float, backend: str = "gloo",
                 local_world_size: int | None = None) -> None:
        self.rank, self.world_size, self.timeout_s, self.backend = rank, world_size, float(timeout_s), backend
        self.local_world_size = world_size if local_world_size is None else local_world_size  # on this machine
        self.reductions = 0   # all-reduce calls made (what the benchmark and the tests count)
        self.reduce_s = 0.0   # seconds spent in them (waiting for the others included)

    def rows(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n`` (:func:`shard_rows`)."""
        return shard_rows(n, self.rank, self.world_size)

    def allreduce_sum(self, array: np.ndarray) -> None:
        """``array`` (a contiguous NumPy array) becomes the sum of every rank's, in place. The
        array is handed to torch with ``torch.from_numpy``: the same memory, no copy."""
        import torch

        if not array.flags.c_contiguous:
            raise ValueError("allreduce_sum needs a C-contiguous array (a flat buffer)")
        self.allreduce_tensor(torch.from_numpy(array))

    def allreduce_tensor(self, tensor) -> None:
        """A torch tensor becomes the sum of every rank's, in place."""
        import torch.distributed as dist

        self.reductions += 1
        start = time.perf_counter()
        try:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        except (RuntimeError, dist.DistError) as exc:
            raise self.lost(exc) from None
        self.reduce_s += time.perf_counter() - start

    def lost(self, exc: BaseException) -> DistributedError:
        """The one line for a failed collective (``exc``: what torch raised)."""
        detail = " ".join(str(exc).split())
        if len(detail) > 160:
            detail = detail[:157] + "..."
        return DistributedError(
            f"data-parallel run stopped: rank {self.rank} of {self.world_size} lost contact with the other "
            f"process(es) (one died, or did not answer within --dist-timeout {self.timeout_s:g} s); nothing was "
            f"written; see its own error, then rerun [{self.backend}: {detail}]")

    def close(self) -> None:
        """Leave the process group (at the end of the run)."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


_active: Communicator | None = None


def set_active(communicator: Communicator | None) -> None:
    """Make ``communicator`` the one this process's engines are built with (None: a plain run).
    A process belongs to at most one data-parallel run, as to one ``torch.distributed`` group."""
    global _active
    _active = communicator


def active() -> Communicator | None:
    """The communicator of the data-parallel run this process belongs to, or None."""
    return _active

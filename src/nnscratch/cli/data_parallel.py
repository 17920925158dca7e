"""``--distributed``: ``nnscratch train|compare|finetune`` as one process of a data-parallel run.

Launched by torchrun (docs/distributed.md)::

    torchrun --nproc-per-node 2 -m nnscratch train --distributed --engine numpy ...

Every process joins the run (:func:`nnscratch.training.launch.start_data_parallel`), resolves
the same settings and trains the same engines on its shard of every batch. Rank 0 is the run as
the command line always does it: its checks, lines, progress, outputs and checkpoints. Every
other rank trains quietly and writes nothing (:func:`run_replica`).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable

DEFAULT_TIMEOUT_S = 120.0


def add_distributed_flags(group) -> None:
    """``--distributed`` and ``--dist-timeout`` into a parser's argument group."""
    group.add_argument("--distributed", action="store_true",
                       help="data-parallel training, one process of a run started by torchrun "
                            "(torchrun --nproc-per-node N -m nnscratch ...; see docs/distributed.md)")
    group.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                       help="with --distributed: how long a process waits for the others before it stops with "
                            f"an error (default: {DEFAULT_TIMEOUT_S:g})")


def with_data_parallel(args: argparse.Namespace, run: Callable[[], int]) -> int:
    """``run()`` inside the data-parallel run when ``--distributed`` is given (left at the end)."""
    if not getattr(args, "distributed", False):
        return run()
    from nnscratch.training.launch import start_data_parallel, stop_data_parallel

    communicator = start_data_parallel(args.dist_timeout, backend_for(args))
    try:
        return run()
    finally:
        stop_data_parallel(communicator)


def backend_for(args: argparse.Namespace) -> str:
    """NCCL for the torch twin alone on a GPU (``train --engine torch --device cuda``); gloo
    otherwise (the NumPy engine's buffers are in host memory, and gloo is what a CPU run has)."""
    if args.verb == "train" and args.engine == "torch" and args.device == "cuda":
        return "nccl"
    return "gloo"


def per_process_config(cfg):
    """``cfg`` with the threads of one process of the active run (the machine's cores shared
    among the processes on it, unless ``--threads`` is given); ``cfg`` itself in a plain run."""
    from nnscratch.training import distributed
    from nnscratch.training.launch import threads_per_process

    comm = distributed.active()
    if comm is None:
        return cfg
    if "numpy" in cfg.engines and cfg.device == "cuda":
        from nnscratch.errors import UsageError

        raise UsageError("--distributed trains the NumPy engine on the CPU only (its data-parallel buffers are "
                         "host memory): use --device cpu, or --engine torch --device cuda")
    return dataclasses.replace(cfg, threads=threads_per_process(cfg.threads, comm.local_world_size))


def describe() -> str:
    """The header line's part about the run's processes (empty in a plain run)."""
    from nnscratch.training import distributed

    comm = distributed.active()
    if comm is None:
        return ""
    return (f", data-parallel: {comm.world_size} processes ({comm.backend}), each its share of every batch; "
            f"rank 0 writes")


def is_replica() -> bool:
    """Whether this process is a rank other than 0 of a data-parallel run (it writes nothing)."""
    from nnscratch.training import distributed

    comm = distributed.active()
    return comm is not None and comm.rank != 0


def run_replica(cfg, engines: tuple[str, ...], checkpoints) -> int:
    """A rank other than 0: the same training, no output folder, no TensorBoard logs, no lines, no progress."""
    from nnscratch import api

    cfg = dataclasses.replace(cfg, tensorboard=None)  # rank 0 writes the logs
    kwargs: dict = {"out": None, "progress": False}
    base = cfg
    if checkpoints is not None:  # as _run in cli/main.py: the checkpoint's settings and the resumable ones
        from nnscratch.run.config import RESUMABLE_KEYS

        base = None
        kwargs.update(resume=checkpoints, **{k: getattr(cfg, k) for k in RESUMABLE_KEYS})
    if len(engines) == 2:
        api.compare(base, **kwargs)
    else:
        api.train(base, engine=engines[0], **kwargs)
    return 0

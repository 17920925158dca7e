"""Joining a data-parallel run started by ``torchrun`` (``--distributed``).

``torchrun --nproc-per-node N`` (on each machine: ``--nnodes``, ``--node-rank``,
``--master-addr``, ``--master-port``) starts the processes and gives each, in its environment::

    RANK        this process's number among all of them (0 .. WORLD_SIZE-1)
    WORLD_SIZE  how many processes the run has, on every machine together
    LOCAL_RANK  its number on this machine; LOCAL_WORLD_SIZE: how many run on this machine
    MASTER_ADDR, MASTER_PORT   where rank 0 listens for the others

:func:`start_data_parallel` reads them, joins the process group (gloo on the CPU, NCCL when the
run trains on a GPU) with a timeout, and returns the :class:`~nnscratch.training.distributed.Communicator`.
Every failure is one line: not started by torchrun, the others never came, a bad timeout.
"""

from __future__ import annotations

import os
from datetime import timedelta

from nnscratch.errors import INSTALL_TORCH, UsageError
from nnscratch.training.distributed import Communicator, DistributedError, set_active

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launch_env(environ=os.environ) -> dict[str, int | str]:
    """``rank``, ``world_size``, ``local_rank``, ``local_world_size``, ``master`` from torchrun's
    variables; a :class:`UsageError` saying how to launch when they are missing or wrong."""
    missing = [v for v in ENV_VARS if not environ.get(v)]
    if missing:
        raise UsageError(f"--distributed needs to be started by torchrun ({', '.join(missing)} not set): run "
                         "torchrun --nproc-per-node 2 -m nnscratch train --distributed ... (docs/distributed.md)")
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
        local_world = int(environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise UsageError("--distributed: RANK, WORLD_SIZE, LOCAL_RANK must be whole numbers "
                         "(as torchrun sets them)") from None
    if not 0 <= rank < world:
        raise UsageError(f"--distributed: RANK {rank} is not in 0..{world - 1} (WORLD_SIZE {world})")
    return {"rank": rank, "world_size": world, "local_rank": local_rank, "local_world_size": local_world,
            "master": f"{environ['MASTER_ADDR']}:{environ['MASTER_PORT']}"}


def check_timeout(timeout_s: float) -> float:
    """``--dist-timeout`` is a number of seconds > 0."""
    if not (timeout_s > 0 and timeout_s < float("inf")):
        raise UsageError(f"--dist-timeout must be a number of seconds > 0, got {timeout_s}")
    return float(timeout_s)


def threads_per_process(threads: int | None, local_world_size: int) -> int | None:
    """The default thread count of one process: this machine's usable cores shared among the
    processes running on it (two processes on 2 cores: 1 thread each). ``threads`` given: it."""
    if threads is not None:
        return threads
    from nnscratch.threads import usable_cores

    return max(1, usable_cores() // max(1, local_world_size))


def start_data_parallel(timeout_s: float, backend: str = "gloo", environ=os.environ) -> Communicator:
    """Join the run torchrun started (see the module docstring); the communicator is also made
    this process's active one (:func:`nnscratch.training.distributed.active`)."""
    timeout_s = check_timeout(timeout_s)
    env = launch_env(environ)
    try:
        import torch.distributed as dist
    except ImportError:
        raise UsageError(f"--distributed needs PyTorch (torch.distributed): {INSTALL_TORCH}") from None
    from nnscratch.threads import sync_torch_threads

    sync_torch_threads()  # torch may be imported only now: the run's thread count (set_threads)
    if not dist.is_available():
        raise UsageError("--distributed: this PyTorch build has no torch.distributed")
    if backend == "nccl":  # one GPU per process: the LOCAL_RANK-th of this machine
        import torch

        if not torch.cuda.is_available() or torch.cuda.device_count() <= env["local_rank"]:
            raise UsageError(f"--distributed on the GPU needs a GPU per process: LOCAL_RANK {env['local_rank']}, "
                             f"but torch sees {torch.cuda.device_count()} GPU(s); start fewer processes per machine")
        torch.cuda.set_device(env["local_rank"])
    try:
        dist.init_process_group(backend, init_method="env://", rank=env["rank"], world_size=env["world_size"],
                                timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError, dist.DistError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise DistributedError(f"data-parallel run could not start: rank {env['rank']} of {env['world_size']} did "
                               f"not meet the others at {env['master']} within --dist-timeout {timeout_s:g} s "
                               f"[{detail}]") from None
    communicator = Communicator(env["rank"], env["world_size"], timeout_s, backend, env["local_world_size"])
    set_active(communicator)
    return communicator


def stop_data_parallel(communicator: Communicator | None) -> None:
    """Leave the process group (if any) and forget the active communicator."""
    set_active(None)
    if communicator is not None:
        communicator.close()

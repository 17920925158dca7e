"""The twin, data-parallel: torch's own ``DistributedDataParallel`` around the same ``nn.Sequential``.

Each rank takes its rows of the global batch (``communicator.rows(N)``, the NumPy engine's
shard) and runs the step through ``DistributedDataParallel``, which all-reduces the gradients
during the backward pass and divides them by the world size ``W``. The loss is the mean over
the rank's ``n_r`` rows, so to get the global batch's gradient each rank's loss is scaled by
``W * n_r / N`` first::

    (1/W) sum_r W (n_r / N) dL_r/dtheta = sum_r (n_r / N) dL_r/dtheta = dL/dtheta

The gradients sit in one bucket (``bucket_cap_mb`` fitted to the model), so one all-reduce per
step; the step's loss and correct count follow in one small all-reduce of their own, so that
every rank records the global batch's figures.

Batch norm runs over the global batch (:class:`GlobalBatchNorm1d`): torch's ``SyncBatchNorm``
is written for CUDA only, so this module computes the same statistics with a differentiable
all-reduce (:func:`sum_over_ranks`: its backward pass is the all-reduce of the gradient, as the
chain rule through a sum over ranks asks). Buffers need no broadcast: they
are the same on every rank by construction.

Gradient-flow recording is not offered here (``train_step_recorded`` is None: the recorded step
runs the modules one by one, outside DDP's forward).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nnscratch.torch_engine.model import TorchEngine


class _SumOverRanks(torch.autograd.Function):
    """``y = sum over ranks of x`` (an all-reduce), differentiable: every rank's ``y`` is the same
    sum, so ``dL/dx`` on each rank is the sum over ranks of ``dL/dy`` (the all-reduce again)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:
        dx = dy.clone()
        dist.all_reduce(dx)
        return dx


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks of the run, through which autograd differentiates."""
    return _SumOverRanks.apply(x)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics are those of the global batch (as
    ``SyncBatchNorm``, on the CPU too): with ``N = sum_r n_r``::

        mu  = sum_over_ranks(x.sum(0)) / N,     var = sum_over_ranks(((x - mu)^2).sum(0)) / N
        y   = (x - mu) / sqrt(var + eps) * weight + bias

    and the running statistics updated as ``nn.BatchNorm1d`` does (unbiased ``var * N / (N - 1)``).
    Evaluation: ``nn.BatchNorm1d``'s own forward. Autograd differentiates through the all-reduces.
    """

    @classmethod
    def taking_over(cls, module: nn.BatchNorm1d) -> "GlobalBatchNorm1d":
        """A global batch norm holding ``module``'s very parameters and buffers (the optimizer's)."""
        new = cls(module.num_features, eps=module.eps, momentum=module.momentum)
        new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        count = torch.tensor([float(x.shape[0])], dtype=x.dtype, device=x.device)
        dist.all_reduce(count)
        n = int(count.item())
        mean = sum_over_ranks(x.sum(0)) / n
        centred = x - mean
        var = sum_over_ranks((centred * centred).sum(0)) / n
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
            self.num_batches_tracked.add_(1)
        return centred / torch.sqrt(var + self.eps) * self.weight + self.bias


class DataParallelTorchEngine(TorchEngine):
    """:class:`TorchEngine` as one rank of a data-parallel run (see the module docstring); the
    same options, and ``communicator`` (:class:`nnscratch.training.distributed.Communicator`)."""

    train_step_recorded = None  # no gradient-flow statistics under DDP (see the module docstring)

    def __init__(self, spec, initial: dict[str, np.ndarray], dtype=np.float32, *, communicator, **options) -> None:
        if options.get("compile"):
            options["compile"] = False  # DDP wraps the plain module here
        super().__init__(spec, initial, dtype, **options)
        self.communicator = communicator
        for i, module in enumerate(self.model):
            if type(module) is nn.BatchNorm1d and module.weight.requires_grad:
                self.model[i] = GlobalBatchNorm1d.taking_over(module)
        size_mb = sum(p.numel() * p.element_size() for p in self._trainable) / 2 ** 20
        try:
            on_gpu = self.device.type == "cuda"  # the process's own GPU (launch.py set it from LOCAL_RANK)
            self.ddp = DistributedDataParallel(self.model, device_ids=[torch.cuda.current_device()] if on_gpu else None,
                                               bucket_cap_mb=size_mb + 1.0, forward_sync_buffers=False)
        except (RuntimeError, dist.DistError) as exc:
            raise communicator.lost(exc) from None
        self._forward = self.ddp
        self._base_loss = self.loss_fn
        self._scale = 1.0
        self.loss_fn = self._scaled_loss

    def _scaled_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The rank's mean loss times ``W * n_r / N`` (DDP's average then gives the global gradient)."""
        return self._base_loss(logits, labels) * self._scale

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float, masks, record) -> None:
        """TorchEngine's step on this rank's rows, then the global loss and correct count."""
        comm = self.communicator
        rows = comm.rows(len(y))
        self._scale = comm.world_size * (rows.stop - rows.start) / len(y)
        if masks:
            masks = {i: keep[rows] for i, keep in masks.items()}
        before = self._correct.clone()
        try:
            super()._step(x[rows], y[rows], lr, masks, record)
        except (RuntimeError, dist.DistError) as exc:
            if "gloo" in str(exc).lower() or "nccl" in str(exc).lower() or isinstance(exc, dist.DistError):
                raise comm.lost(exc) from None
            raise
        stats = torch.stack([self._losses[-1].double(), (self._correct - before).double()])
        comm.allreduce_tensor(stats)
        self._losses[-1] = stats[0] / comm.world_size      # sum_r W (n_r / N) L_r / W = L
        self._correct.copy_(before + stats[1].round().long())

"""The NumPy engine, data-parallel: one process's part of a run over several processes.

Every process (rank) holds the whole model and receives the whole global batch of every step
from the trainer (the same rows, masks and rate on every rank); it computes on its own rows only
(``communicator.rows(N)``: a contiguous block of ``n_r`` of the ``N``) and then, between the
backward pass and the update (:meth:`NumpyEngine.reduce_gradients`), makes the gradient the
global batch's::

    g  <-  sum over ranks r of (n_r / N) * g_r        g_r = dL_r/dtheta, L_r the mean loss over rank r's rows

in ONE all-reduce per step: every trainable gradient is a view of one flat buffer
(:func:`flat_gradients`), which the communicator hands to ``torch.distributed`` zero-copy. So the
optimizer, the L1/L2 penalty, clipping and max-norm see exactly what one process would, up to
the order of the sums. Plain SGD's fused update (the update inside the backward products) is
off: the gradient must be summed before anyone may step.

Batch norm uses the statistics of the *global* batch, as torch's ``SyncBatchNorm`` does
(:class:`GlobalBatchNorm1d`): two small all-reduces in its forward pass (the sums of ``x`` and of
``(x - mu)^2``) and one in its backward pass (the sums of ``g`` and ``g * xhat``), so the
running statistics, too, are those of one process.

This package never imports torch: ``communicator`` comes from outside
(:class:`nnscratch.training.distributed.Communicator`); all this module asks of it is ``rows(n)``
and ``allreduce_sum(array)`` (in place, the sum over the ranks).
"""

from __future__ import annotations

from nnscratch.numpy_engine.backend import np  # host arrays: the ranks talk through torch.distributed

from nnscratch.numpy_engine.layers import BatchNorm1d, Layer
from nnscratch.numpy_engine.model import NumpyEngine


def flat_gradients(layers: list[Layer], skip: frozenset[int] = frozenset(), dtype=np.float32,
                   extra: int = 0) -> np.ndarray:
    """Lay the gradients of ``layers`` (all but the indices in ``skip``) out as views of one new
    flat buffer, in layer order, and return it (with ``extra`` more elements at its end, free for
    the caller): each layer's ``grads[name]`` becomes
    ``flat[offset:offset + size].reshape(shape)`` (C order, so every BLAS product still writes
    into it directly). The layers' sinks keep pointing at their ``grads`` dicts."""
    sizes = [g.size for i, layer in enumerate(layers) if i not in skip for g in layer.grads.values()]
    flat = np.zeros(sum(sizes) + extra, dtype=dtype)
    offset = 0
    for i, layer in enumerate(layers):
        if i in skip:
            continue
        for name, g in layer.grads.items():
            layer.grads[name] = flat[offset:offset + g.size].reshape(g.shape)
            offset += g.size
    return flat


class GlobalBatchNorm1d(BatchNorm1d):
    """:class:`BatchNorm1d` over the global batch of a data-parallel run (torch's ``SyncBatchNorm``).

    Rank ``r`` holds ``n_r`` of the ``N`` rows, ``share = n_r / N``. Forward in training::

        N     = sum_r n_r,        mu  = (sum_r sum_rows x) / N
        var   = (sum_r sum_rows (x - mu)^2) / N                    (then as BatchNorm1d, with N)

    Backward: this rank's ``dout`` is ``dL_r/dy`` (its own mean loss), ``dL/dy = share * dout``.
    With ``g = dout * gamma``, the global sums ``G = sum_r share_r sum_rows g`` and
    ``Gx = sum_r share_r sum_rows g * xhat`` (one all-reduce), BatchNorm1d's ``dx`` of the
    global loss, divided by ``share`` to stay in this rank's units, is::

        dx = (N * g - (G + xhat * Gx) / share) / (N * sqrt(var + eps))

    (one rank: ``share = 1`` and the sums are the local ones, BatchNorm1d's formula). ``dgamma``
    and ``dbeta`` are this rank's, weighted with the other gradients by the engine. ``share`` is
    set by the engine before every step.
    """

    def __init__(self, in_features: int, dtype=np.float32, *, communicator, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__(in_features, dtype, eps=eps, momentum=momentum)
        self.communicator = communicator
        self.share = 1.0

    @classmethod
    def taking_over(cls, layer: BatchNorm1d, communicator) -> "GlobalBatchNorm1d":
        """A global batch norm with ``layer``'s very arrays (parameters, gradients, buffers, sink):
        the optimizer, which holds those arrays, goes on updating the same memory."""
        new = cls(layer.in_features, layer.dtype, communicator=communicator, eps=layer.eps, momentum=layer.momentum)
        new.params, new.grads, new.buffers, new.sink = layer.params, layer.grads, layer.buffers, layer.sink
        return new

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        self._batch_stats = train
        if not train:
            return super().forward(x, train, keep)
        d = x.shape[1]
        sums = self._scratch.get("sums", (d + 1,), order="C")
        np.sum(x, axis=0, out=sums[:d])
        sums[d] = x.shape[0]
        self.communicator.allreduce_sum(sums)
        n = int(round(float(sums[d])))
        if n < 2:
            raise ValueError(f"batch norm needs at least 2 samples per batch in training (got a batch of {n})")
        mean = sums[:d] / n
        xhat = self._scratch.get("xhat", x.shape)
        np.subtract(x, mean, out=xhat)
        squares = self._scratch.get("squares", (d,), order="C")
        np.einsum("ij,ij->j", xhat, xhat, out=squares)
        self.communicator.allreduce_sum(squares)
        var = squares / n                                            # biased variance of the global batch
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat *= inv_std
        self._track(mean, var, n)
        self._inv_std, self._n = inv_std, n
        y = self._scratch.get("y", x.shape)
        np.multiply(xhat, self.params["weight"], out=y)
        y += self.params["bias"]
        return y

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if not (need_dx and self._batch_stats):
            return super().backward(dout, need_dx)
        xhat, n, d = self._scratch.get("xhat", dout.shape), self._n, dout.shape[1]
        g = self._scratch.get("dx", dout.shape)
        np.multiply(dout, self.params["weight"], out=g)   # first, while gamma is the forward pass's
        sums = self._scratch.get("grad_sums", (2, d), order="C")
        np.sum(g, axis=0, out=sums[0])
        np.einsum("ij,ij->j", g, xhat, out=sums[1])
        sums *= self.share
        self.communicator.allreduce_sum(sums)
        g *= n
        g -= sums[0] / self.share
        g -= xhat * (sums[1] / self.share)
        g *= self._inv_std / n
        self.sink.put("weight", np.einsum("ij,ij->j", dout, xhat))
        self.sink.put("bias", dout.sum(axis=0))
        return g


class DataParallelNumpyEngine(NumpyEngine):
    """:class:`NumpyEngine` as one rank of a data-parallel run (see the module docstring).

    It meets the same engine contract and takes the same options (``fuse`` is always off); the
    trainer hands it the global batch as to any engine. The step's loss and correct count ride
    in the same all-reduce as the gradients (two more numbers at the end of the flat buffer), so
    every rank records the global batch's figures, as one process would, and
    ``take_epoch_stats`` needs no communication.
    """

    def __init__(self, spec, initial: dict[str, np.ndarray], dtype=np.float32, *, communicator, **options) -> None:
        options["fuse"] = False  # the gradient is summed over the ranks before the update
        super().__init__(spec, initial, dtype, **options)
        self.communicator = communicator
        layers = self.model.layers
        self._global_norms = []
        for i, layer in enumerate(layers):
            if isinstance(layer, BatchNorm1d) and i not in self.model.frozen:  # the compiled twin too
                layers[i] = GlobalBatchNorm1d.taking_over(layer, communicator)
                self._global_norms.append(layers[i])
        # [every trainable gradient..., share * loss, correct]: what one all-reduce per step sums
        self.reduced = flat_gradients(layers, self.model.frozen, self.model.dtype, extra=2)
        self.flat_grad = self.reduced[:-2]
        self._grads = self.model.trainable_grads()  # the views of the flat buffer
        self._share = 1.0

    def _step(self, x: np.ndarray, y: np.ndarray, lr: float, masks, record: dict | None) -> None:
        """NumpyEngine's step on this rank's rows of the global batch (and of its dropout masks)."""
        rows = self.communicator.rows(len(y))
        self._share = (rows.stop - rows.start) / len(y)
        for norm in self._global_norms:
            norm.share = self._share
        if masks:
            masks = {i: keep[rows] for i, keep in masks.items()}
        super()._step(x[rows], y[rows], lr, masks, record)

    def reduce_gradients(self, loss: float) -> float:
        """``g <- sum_r (n_r / N) g_r``, and the same for the loss; the correct counts summed:
        this rank's share weighs its part, then one all-reduce of the flat buffer."""
        reduced = self.reduced
        self.flat_grad *= self._share
        reduced[-2] = self._share * loss
        reduced[-1] = self._correct[-1]                      # this step's correct count (NumpyEngine._step)
        self.communicator.allreduce_sum(reduced)
        self._correct[-1] = int(round(float(reduced[-1])))
        return float(reduced[-2])

"""Layers of the NumPy engine: each forward and its hand-written backward, side by side.

Conventions (as in cs231n and PyTorch):

* ``N`` is the batch size, ``D``/``D_in``/``D_out`` feature sizes.
* Every layer meets the contract of :class:`Layer` (below): it is built as
  ``Layer(in_features, dtype=..., **args)`` from its registry entry (:mod:`nnscratch.model.registry`),
  and has ``params``, ``grads`` and ``buffers`` dicts named as torch names them (``weight`` of shape
  ``(D_out, D_in)``, ``bias``, ``running_mean``...), so weights move between the twins as they are.
* ``forward(x, train)`` keeps what ``backward`` needs (only when ``train``, or when asked with
  ``keep=True``: an evaluation-mode pass that a backward pass follows, as a saliency map needs);
  ``backward(dout, need_dx)`` returns ``dx = dL/dx`` and hands each parameter's gradient to the
  layer's :class:`GradientSink`. A layer never sees a learning rate.
* Element-wise layers work in place on the array they are given and return it; the layer before
  them never needs its output again. Whatever a backward pass needs is kept in the layer's own
  buffers (the local slope ``dy/dx`` for activations), never as a reference to an output that a
  later layer may overwrite.
* Output arrays are reused scratch arrays (``self._scratch``, see :mod:`buffers`): a layer's output is valid until its
  next ``forward``. Use the result, or copy it, before calling again.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from nnscratch.numpy_engine.backend import NUMPY, Backend, np, xp_of
from nnscratch.numpy_engine.buffers import Buffers


class GradientSink:
    """Where a layer's parameter gradients go: ``target[name] = alpha * grad + beta * target[name]``.

    The default sink is the layer's own ``grads`` with ``alpha = 1, beta = 0``: the plain gradient,
    for an optimizer to use. This is the one hook through which an optimizer may take the update
    into the gradient computation itself: plain SGD points the sink at the *parameters* with
    ``alpha = -lr, beta = 1``, so ``W <- W - lr * dW`` happens inside the BLAS product that computes
    ``dW`` (``C = alpha * A @ B + beta * C``), and ``dW`` is never stored (see ``NumpyEngine``).

    ``keep``: None, or a dict like ``target`` (the layer's ``grads``) that also receives the plain
    gradient ``dL/dparam``. The fused path sets it on the few steps that record their gradient
    flow (:mod:`nnscratch.training.gradient_flow`): the update happens exactly as always, and the
    gradient it never stores is kept as well.
    """

    def __init__(self, target: dict[str, np.ndarray], alpha: float = 1.0, beta: float = 0.0) -> None:
        self.target, self.alpha, self.beta = target, alpha, beta
        self.keep: dict[str, np.ndarray] | None = None

    def put(self, name: str, grad: np.ndarray) -> None:
        """Hand over ``grad`` (a scratch array that may be overwritten) for parameter ``name``."""
        xp = xp_of(grad)
        if self.keep is not None:
            xp.copyto(self.keep[name], grad)
        out = self.target[name]
        if self.beta == 0.0:
            xp.multiply(grad, self.alpha, out=out)
            return
        if self.beta != 1.0:
            out *= self.beta
        if self.alpha != 1.0:
            grad *= self.alpha
        out += grad


class Layer(ABC):
    """The layer contract: what :class:`~nnscratch.numpy_engine.model.Sequential`, the engine and
    the model files rely on. Every built-in layer below meets it (``tests/test_layers.py`` checks
    each), and a layer of your own that subclasses it plugs into the engine through
    :func:`nnscratch.model.registry.register_layer` (docs/your-own-layer.md).

    Shapes: ``N`` the batch size, ``D_in`` the layer's input width (``in_features``), ``D_out`` its
    output width (``D_in`` for element-wise layers).

    Construction: ``Layer(in_features, dtype=np.float32, **args)``, ``args`` the layer's arguments
    as its registry entry gives them (``Dense(784, out_features=533)``).

    Attributes
    ----------
    params : dict[str, numpy.ndarray]
        The trainable arrays, of the layer's ``dtype``, named and shaped as torch's
        ``state_dict()`` names them (``weight (D_out, D_in)``, ``bias (D_out,)``); ``{}`` when none.
        The optimizer updates these very arrays in place: never rebind them.
    grads : dict[str, numpy.ndarray]
        The same keys and shapes as ``params``: ``dL/dparam`` after :meth:`backward` (with the
        default sink).
    buffers : dict[str, numpy.ndarray]
        State that is saved but not trained (batch norm's ``running_mean``...), torch's names.
    sink : GradientSink
        Where :meth:`backward` hands every parameter gradient: ``self.sink.put(name, grad)``, never
        ``self.grads[name] = ...`` (plain SGD points the sink at the parameters themselves).

    Methods
    -------
    forward(x, train, keep=None) -> y
        ``x (N, D_in)`` -> ``y (N, D_out)``. ``train=True``: training mode; ``False``: evaluation
        (running statistics, no dropout). ``keep`` (default: ``train``): keep what :meth:`backward`
        needs. ``train=False, keep=True`` is an evaluation pass that a backward pass follows (the
        gradient of the evaluation-mode function, as ``nnscratch inspect``'s saliency maps need it);
        a layer of your own may leave ``keep`` out, and then only lacks that. It may overwrite
        ``x`` (the layer before never needs its output again) and may return a reused scratch
        array, valid until the next ``forward``.
    to(backend) -> self
        Moves the arrays to a :class:`~nnscratch.numpy_engine.backend.Backend` (the base class
        does it for ``params``, ``grads``, ``buffers`` and the scratch arrays). Write the layer's
        math with ``xp = self.xp`` (``numpy`` or ``cupy``) and its products with
        ``self.backend.gemm`` and it runs on either.
    backward(dout, need_dx) -> dx
        ``dout = dL/dy (N, D_out)`` of the last ``forward`` that kept -> ``dx = dL/dx (N, D_in)``; with
        ``need_dx=False`` (the first layer) it may skip ``dx`` and return None. Hands ``dL/dparam`` of every parameter to
        :attr:`sink`. It may overwrite ``dout``.
    """

    def __init__(self, in_features: int, dtype=np.float32) -> None:
        self.in_features = in_features
        self.dtype = np.dtype(dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.sink = GradientSink(self.grads)
        self.backend: Backend = NUMPY    # where the arrays live and what computes on them (backend.py)
        self._scratch = Buffers(dtype)  # reused work arrays (see buffers.py); not state, never saved

    @property
    def xp(self):
        """The array module of this layer's arrays (``numpy``, or ``cupy`` on a GPU)."""
        return self.backend.xp

    def to(self, backend: Backend) -> "Layer":
        """Move ``params``, ``grads`` and ``buffers`` to ``backend`` (the same dicts, new arrays)
        and start fresh scratch arrays there. Layers are built on the host and moved once, before
        an optimizer takes their arrays."""
        for arrays in (self.params, self.grads, self.buffers):
            for name, a in arrays.items():
                arrays[name] = backend.to_device(a)
        self.backend = backend
        self._scratch = Buffers(self.dtype, backend)
        return self

    @abstractmethod
    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        """``x (N, D_in)`` -> ``y (N, D_out)``; see the class docstring."""

    @abstractmethod
    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        """``dL/dy (N, D_out)`` -> ``dL/dx (N, D_in)`` (or None); parameter gradients to :attr:`sink`."""


class Dense(Layer):
    """Fully connected layer ``y = x @ W.T + b`` (``torch.nn.Linear``).

    Shapes: ``x (N, D_in)``, ``weight W (D_out, D_in)``, ``bias b (D_out,)``, ``y (N, D_out)``.

    Forward::

        y = x @ W.T + b

    Backward, given ``dout = dL/dy (N, D_out)``::

        dW = dout.T @ x      (D_out, D_in)   each weight sees its input times the output's gradient
        db = dout.sum(0)     (D_out,)        the bias is added to every row, so its gradient sums them
        dx = dout @ W        (N, D_in)       the chain rule back through the product

    ``dW`` and ``db`` are computed by BLAS straight into the sink's target with the sink's
    ``alpha``/``beta`` (``C = alpha * A @ B + beta * C``): with plain SGD's sink that *is* the
    update ``W -= lr * dW`` (one pass over ``W`` fewer than storing ``dW`` first). When the sink
    also keeps the plain gradient (``sink.keep``: a step that records its gradient flow), ``dW``
    and ``db`` are computed into it as well, by the same products with ``alpha = 1, beta = 0``.

    Every product goes through ``self.backend.gemm`` (:mod:`.backend`): BLAS on the CPU, cuBLAS on
    a GPU, and under ``--precision fp16|bf16`` a gemm that rounds its operands and result to that
    format (:class:`~nnscratch.numpy_engine.precision.LowPrecisionProducts`).
    """

    def __init__(self, in_features: int, dtype=np.float32, *, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, dtype)
        self.out_features = out_features
        self.params["weight"] = np.zeros((out_features, in_features), dtype=dtype)
        if bias:  # bias=False: y = x @ W.T (before batch norm, which removes any bias again)
            self.params["bias"] = np.zeros(out_features, dtype=dtype)
        self.grads.update({name: np.zeros_like(p) for name, p in self.params.items()})
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        W, b, gemm = self.params["weight"], self.params.get("bias"), self.backend.gemm
        y = self._scratch.get("y", (x.shape[0], self.out_features))
        if b is None:
            gemm(x, W.T, out=y)
        else:
            y[...] = b                       # every row starts as the bias ...
            gemm(x, W.T, out=y, beta=1.0)    # ... and BLAS adds x @ W.T to it (torch's addmm does the same)
        self._x = x if (train if keep is None else keep) else None
        return y

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        x, W, gemm = self._x, self.params["weight"], self.backend.gemm
        dx = None
        if need_dx:  # first, while W still holds the weights the forward pass used
            dx = self._scratch.get("dx", x.shape)
            gemm(dout, W, out=dx)
        sink = self.sink
        ones = self._scratch.ones(dout.shape[0])  # ones @ dout = dout.sum(0)
        if sink.keep is not None:  # the plain gradient too (a recorded step of the fused path)
            gemm(dout.T, x, out=sink.keep["weight"])
            if "bias" in self.params:
                gemm(ones, dout, out=sink.keep["bias"][None, :])
        gemm(dout.T, x, out=sink.target["weight"], alpha=sink.alpha, beta=sink.beta)
        if "bias" in self.params:
            gemm(ones, dout, out=sink.target["bias"][None, :], alpha=sink.alpha, beta=sink.beta)
        return dx


class ReLU(Layer):
    """Rectified linear unit ``y = max(x, 0)``, element-wise (``torch.nn.ReLU``).

    Shapes: ``x`` and ``y`` are ``(N, D)``.

    Forward::      y = x * (x > 0)
    Backward::     dx = dout * (x > 0)     (the slope is 1 where x > 0, else 0; at x == 0 we take 0, as torch)

    Both work in place, and the mask ``x > 0`` computed in forward is what backward reuses. The
    mask is kept as 0.0/1.0 in the layer's float type: multiplying by it gives exactly the same
    numbers as multiplying by a boolean mask, but float-by-float needs no per-element type
    conversion (measured, batch 64, 533 units: 12 us per step for forward + backward against
    17 us with a boolean mask).
    """

    def __init__(self, in_features: int = 0, dtype=np.float32) -> None:
        super().__init__(in_features, dtype)
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        xp = self.xp
        positive = self._scratch.get("positive", x.shape, dtype=bool)
        mask = self._scratch.get("mask", x.shape)
        xp.greater(x, 0, out=positive)
        xp.copyto(mask, positive)        # True/False -> 1.0/0.0
        xp.multiply(x, mask, out=x)
        self._mask = mask if (train if keep is None else keep) else None
        return x

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray:
        xp = self.xp
        xp.multiply(dout, self._mask, out=dout)
        return dout


class _Elementwise(Layer):
    """An element-wise activation ``y = f(x)``: forward also stores the local slope ``f'(x)``
    (when training), and backward is the chain rule ``dx = dout * f'(x)``, in place."""

    def __init__(self, in_features: int = 0, dtype=np.float32) -> None:
        super().__init__(in_features, dtype)
        self._slope: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        slope = self._scratch.get("slope", x.shape) if (train if keep is None else keep) else None
        self._apply(x, slope)
        self._slope = slope
        return x

    def _apply(self, x: np.ndarray, slope: np.ndarray | None) -> None:
        """Overwrite ``x`` with ``f(x)``; fill ``slope`` with ``f'(x)`` unless it is None."""
        raise NotImplementedError

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray:
        xp = self.xp
        xp.multiply(dout, self._slope, out=dout)
        return dout


class LeakyReLU(_Elementwise):
    """Leaky ReLU with slope ``a`` below zero (``torch.nn.LeakyReLU(negative_slope=a)``).

    Forward::   y = x          if x > 0 else a * x
    Backward::  dx = dout * (1 if x > 0 else a)
    """

    def __init__(self, in_features: int = 0, dtype=np.float32, *, negative_slope: float = 0.01) -> None:
        super().__init__(in_features, dtype)
        self.negative_slope = negative_slope

    def _apply(self, x, slope):
        xp = self.xp
        positive = self._scratch.get("positive", x.shape, dtype=bool)
        xp.greater(x, 0, out=positive)
        if slope is not None:
            slope.fill(self.negative_slope)
            slope[positive] = 1.0
            xp.multiply(x, slope, out=x)
        else:  # (no ufunc where=: CuPy's ufuncs lack it; copyto's where= both have)
            scaled = self._scratch.get("scaled", x.shape)
            xp.multiply(x, self.negative_slope, out=scaled)
            xp.copyto(x, scaled, where=~positive)


class ELU(_Elementwise):
    """Exponential linear unit (``torch.nn.ELU(alpha=a)``; Clevert et al. 2016).

    Forward::   y = x          if x > 0 else a * (exp(x) - 1)
    Backward::  dx = dout * (1 if x > 0 else a * exp(x))
    """

    def __init__(self, in_features: int = 0, dtype=np.float32, *, alpha: float = 1.0) -> None:
        super().__init__(in_features, dtype)
        self.alpha = alpha

    def _apply(self, x, slope):
        xp = self.xp
        negative = self._scratch.get("negative", x.shape, dtype=bool)
        xp.less_equal(x, 0, out=negative)
        e = self._scratch.get("exp", x.shape)
        xp.minimum(x, 0, out=e)                  # exp only ever sees x <= 0 (never overflows)
        if slope is not None:
            xp.exp(e, out=slope)
            slope *= self.alpha                                         # a * exp(x) where x <= 0
            xp.copyto(slope, 1.0, where=~negative)                      # 1 where x > 0
        xp.expm1(e, out=e)                                              # exp(x) - 1, exact near 0
        e *= self.alpha
        xp.copyto(x, e, where=negative)          # (copyto's where=: CuPy's ufuncs have none)


class GELU(_Elementwise):
    """Gaussian error linear unit (``torch.nn.GELU(approximate=...)``; Hendrycks & Gimpel 2016).

    Exact form (``approximate="none"``), with the standard normal CDF ``Phi`` and density ``phi``::

        y  = x * Phi(x),            Phi(x) = (1 + erf(x / sqrt 2)) / 2
        dx = dout * (Phi(x) + x * phi(x)),      phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

    Tanh form (``approximate="tanh"``), with ``u = sqrt(2/pi) * (x + 0.044715 x^3)``, ``t = tanh(u)``::

        y  = x * (1 + t) / 2
        dx = dout * ((1 + t) / 2 + x * (1 - t^2) / 2 * sqrt(2/pi) * (1 + 3 * 0.044715 x^2))
    """

    _K = math.sqrt(2.0 / math.pi)
    _C = 0.044715

    def __init__(self, in_features: int = 0, dtype=np.float32, *, approximate: str = "none") -> None:
        super().__init__(in_features, dtype)
        self.approximate = approximate

    def _apply(self, x, slope):
        xp = self.xp
        cdf = self._scratch.get("cdf", x.shape)
        if self.approximate == "tanh":
            t = self._scratch.get("t", x.shape)
            xp.multiply(x, x, out=t)
            t *= self._C * x
            t += x
            t *= self._K
            xp.tanh(t, out=t)                     # t = tanh(u)
            xp.add(t, 1.0, out=cdf)
            cdf *= 0.5                            # (1 + t) / 2
            if slope is not None:
                xp.multiply(t, t, out=slope)
                xp.subtract(1.0, slope, out=slope)           # 1 - t^2
                xp.multiply(x, x, out=t)
                t *= 3 * self._C
                t += 1.0
                t *= self._K * 0.5                            # sqrt(2/pi) (1 + 3c x^2) / 2
                slope *= t
                slope *= x
                slope += cdf
        else:
            xp.multiply(x, 1.0 / math.sqrt(2.0), out=cdf)
            self.backend.erf(cdf, out=cdf)
            cdf += 1.0
            cdf *= 0.5                            # Phi(x)
            if slope is not None:
                xp.multiply(x, x, out=slope)
                slope *= -0.5
                xp.exp(slope, out=slope)
                slope *= 1.0 / math.sqrt(2.0 * math.pi)      # phi(x)
                slope *= x
                slope += cdf                                  # Phi(x) + x phi(x)
        xp.multiply(x, cdf, out=x)


class Tanh(_Elementwise):
    """Hyperbolic tangent (``torch.nn.Tanh``).

    Forward::   y = tanh(x)
    Backward::  dx = dout * (1 - y^2)
    """

    def _apply(self, x, slope):
        xp = self.xp
        xp.tanh(x, out=x)
        if slope is not None:
            xp.multiply(x, x, out=slope)
            xp.subtract(1.0, slope, out=slope)


class Sigmoid(_Elementwise):
    """Logistic sigmoid (``torch.nn.Sigmoid``).

    Forward::   y = 1 / (1 + exp(-x)), computed as e / (1 + e) with e = exp(x) for x < 0, so that
                exp never sees a large positive number (no overflow)
    Backward::  dx = dout * y * (1 - y)
    """

    def _apply(self, x, slope):
        xp = self.xp
        negative = self._scratch.get("negative", x.shape, dtype=bool)
        xp.less(x, 0, out=negative)
        e = self._scratch.get("exp", x.shape)
        xp.abs(x, out=e)
        xp.negative(e, out=e)
        xp.exp(e, out=e)                       # exp(-|x|), in (0, 1]
        xp.copyto(x, e)
        xp.copyto(x, 1.0, where=~negative)     # numerator: 1 for x >= 0, exp(x) for x < 0
        e += 1.0
        x /= e
        if slope is not None:
            xp.subtract(1.0, x, out=slope)
            slope *= x


class Dropout(Layer):
    """Inverted dropout (``torch.nn.Dropout(p)``; Srivastava et al. 2014).

    In training, each unit is kept with probability ``1 - p`` and the kept ones are scaled up, so
    the expected output equals the input and evaluation needs no rescaling::

        m  = keep / (1 - p)          keep (N, D): True where the unit survives this step
        y  = x * m                   (training);   y = x      (evaluation)
        dx = dout * m                (training);   dx = dout  (evaluation, ``keep=True``)

    ``keep`` is not drawn here: the training loop owns every random stream and hands this layer
    its mask for the step through :meth:`set_keep` (the same mask the torch twin gets).

    ``in_place``: ``y`` overwrites ``x`` (the default, as every element-wise layer does); the
    network sets it to ``False`` for a dropout layer on its input (``input_dropout``), whose ``x``
    is the caller's batch: ``y`` then goes into the layer's own buffer (the same one pass). That
    batch is gathered row by row (C order), as the ``keep`` masks are drawn, so the mask and ``y``
    are C-order there too: every pass runs over one memory layout.
    """

    def __init__(self, in_features: int = 0, dtype=np.float32, *, p: float = 0.5) -> None:
        super().__init__(in_features, dtype)
        self.p = p
        self.in_place = True
        self._mask: np.ndarray | None = None
        self._masked = False  # whether the last forward applied the mask (so backward applies it too)

    def set_keep(self, keep: np.ndarray) -> None:
        """Use ``keep`` (bool ``(N, D)``) for the next training forward pass."""
        xp = self.xp
        mask = self._scratch.get("mask", keep.shape, order=None if self.in_place else "C")
        xp.divide(keep, self.dtype.type(1.0 - self.p), out=mask, dtype=self.dtype)
        self._mask = mask

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        xp = self.xp
        self._masked = train and self.p != 0.0
        if not self._masked:
            return x
        if self._mask is None or self._mask.shape != x.shape:
            raise ValueError("Dropout needs this step's mask: call set_keep(keep) with a "
                             f"{x.shape} boolean array before a training forward pass")
        y = x if self.in_place else self._scratch.get("y", x.shape, order="C")
        xp.multiply(x, self._mask, out=y)
        return y

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray:
        xp = self.xp
        if self._masked:
            xp.multiply(dout, self._mask, out=dout)
        return dout


class BatchNorm1d(Layer):
    """Batch normalisation over the batch axis (``torch.nn.BatchNorm1d``; Ioffe & Szegedy 2015).

    Shapes: ``x``, ``y`` ``(N, D)``; ``weight gamma``, ``bias beta``, ``running_mean``,
    ``running_var`` ``(D,)``; ``num_batches_tracked`` a 0-d int64 count.

    Forward in training, with the batch's statistics (biased variance)::

        mu    = x.mean(0)                      var = ((x - mu)^2).mean(0)
        xhat  = (x - mu) / sqrt(var + eps)     y   = gamma * xhat + beta
        running_mean <- (1 - m) * running_mean + m * mu
        running_var  <- (1 - m) * running_var  + m * var * N / (N - 1)     (the *unbiased* variance)
        num_batches_tracked += 1

    Forward in evaluation: ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``.

    Backward (training), given ``dout (N, D)``, with ``g = dout * gamma``::

        dgamma = (dout * xhat).sum(0)          dbeta = dout.sum(0)
        dx     = (N * g - g.sum(0) - xhat * (g * xhat).sum(0)) / (N * sqrt(var + eps))

    (``mu`` and ``var`` depend on every row, hence the two sums; derived in Ioffe & Szegedy §3.)

    Backward in evaluation (after ``forward(x, train=False, keep=True)``): the running statistics
    are constants, so the layer is the per-feature affine map it looks like::

        dx = dout * gamma / sqrt(running_var + eps)         (dgamma, dbeta as in training)

    This class is the reference; the engine trains with its compiled twin by default
    (:class:`nnscratch.numpy_engine.jit.JitBatchNorm1d`: the same formulas, one loop per pass).
    """

    def __init__(self, in_features: int, dtype=np.float32, *, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(in_features, dtype)
        self.eps, self.momentum = eps, momentum
        d = in_features
        self.params.update(weight=np.ones(d, dtype=dtype), bias=np.zeros(d, dtype=dtype))
        self.grads.update({name: np.zeros_like(p) for name, p in self.params.items()})
        self.buffers.update(running_mean=np.zeros(d, dtype=dtype), running_var=np.ones(d, dtype=dtype),
                            num_batches_tracked=np.zeros((), dtype=np.int64))
        self._inv_std: np.ndarray | None = None
        self._batch_stats = True  # whether the last forward normalised with the batch's statistics

    def _track(self, mean, var, n: int) -> None:
        """The running statistics, as torch keeps them: ``r <- (1 - m) r + m * batch``, the batch's
        variance made unbiased (``* n / (n - 1)``) for ``running_var``; one more batch tracked."""
        m, b = self.momentum, self.buffers
        b["running_mean"] *= 1.0 - m
        b["running_mean"] += m * mean
        b["running_var"] *= 1.0 - m
        b["running_var"] += (m * n / (n - 1)) * var
        b["num_batches_tracked"] += 1

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        xp = self.xp
        n = x.shape[0]
        self._batch_stats = train
        xhat = self._scratch.get("xhat", x.shape)
        if train:
            if n < 2:
                raise ValueError("batch norm needs at least 2 samples per batch in training "
                                 f"(got a batch of {n})")
            mean = x.mean(axis=0)
            xp.subtract(x, mean, out=xhat)
            var = xp.einsum("ij,ij->j", xhat, xhat) / n           # biased variance, (D,)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            xhat *= inv_std
            self._track(mean, var, n)
            self._inv_std = inv_std
        else:
            inv_std = 1.0 / xp.sqrt(self.buffers["running_var"] + self.eps)
            xp.subtract(x, self.buffers["running_mean"], out=xhat)
            xhat *= inv_std
            if keep:
                self._inv_std = inv_std
        y = self._scratch.get("y", x.shape)
        xp.multiply(xhat, self.params["weight"], out=y)
        y += self.params["bias"]
        return y

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        xp = self.xp
        xhat, n = self._scratch.get("xhat", dout.shape), dout.shape[0]
        dx = None
        if need_dx and not self._batch_stats:  # evaluation: the affine map's own slope
            dx = self._scratch.get("dx", dout.shape)
            xp.multiply(dout, self.params["weight"] * self._inv_std, out=dx)
        elif need_dx:  # first, while gamma still holds the value the forward pass used
            g = self._scratch.get("dx", dout.shape)
            xp.multiply(dout, self.params["weight"], out=g)
            sum_g, sum_gx = g.sum(axis=0), xp.einsum("ij,ij->j", g, xhat)
            g *= n
            g -= sum_g
            g -= xhat * sum_gx
            g *= self._inv_std / n
            dx = g
        self.sink.put("weight", xp.einsum("ij,ij->j", dout, xhat))
        self.sink.put("bias", dout.sum(axis=0))
        return dx

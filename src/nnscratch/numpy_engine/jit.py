"""Numba-compiled element-wise kernels: the optimizers' updates (by default) and ``--jit``.

The optimizers' updates (:class:`JitSGD`, :class:`JitAdam`, :class:`JitAdamW`, :class:`JitRMSprop`,
built by :func:`make_jit_optimizer`) are one compiled pass over memory per parameter instead of
up to ~13 NumPy passes, with the same numbers bit for bit. The engine uses them whenever the
update does not fuse into the products (momentum, Adam, AdamW, RMSprop, weight decay:
``NumpyEngine(compiled_updates=True)``, the default); the NumPy classes of ``optimizers.py`` are
the readable reference they are tested against. Measured on ``configs/best.toml`` (Nesterov
momentum, 1.86M parameters, 2-core AMD EPYC): 6.0 s an epoch with the NumPy update, 5.15 s with
this one, the same losses to the last bit. What they gain per update is in docs/performance.md
("Optimizer updates", ``benchmarks/optimizers.py``).

Batch norm's training passes (:class:`JitBatchNorm1d`) are compiled by default too
(``NumpyEngine(compiled_layers=True)``): each feature's mean, variance, ``xhat`` and ``y`` in one
loop, its ``dgamma``, ``dbeta`` and ``dx`` in another, for the column-major batches the engine
uses; :class:`~nnscratch.numpy_engine.layers.BatchNorm1d` stays the reference. The sums run in
float64, so in float32 the numbers differ from NumPy's in the last bits (float64: to ~1e-14).
On a 64x512 float32 batch: forward 101 -> 51 us, backward 129 -> 34 us (docs/performance.md).

``--jit``, an experiment: the reference project's roadmap lists "Numba/JIT compilation for the
NumPy model". The matrix products are already BLAS, so only the element-wise parts can gain: the
ReLU mask and its backward, and the softmax-cross-entropy gradient, each done in one compiled loop
instead of several NumPy passes. The math is exactly that of
:class:`~nnscratch.numpy_engine.layers.ReLU` and
:class:`~nnscratch.numpy_engine.losses.SoftmaxCrossEntropy` (without label smoothing: the engine
keeps the NumPy loss then).

Needs ``numba``, a dependency of the package (the engine falls back to the NumPy updates without it).
"""

from __future__ import annotations

import math

from nnscratch.numpy_engine.backend import np  # numba compiles CPU code: NumPy arrays only

from nnscratch.numpy_engine.layers import BatchNorm1d, ReLU
from nnscratch.numpy_engine.losses import SoftmaxCrossEntropy
from nnscratch.numpy_engine.optimizers import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, RMSprop, make_optimizer

try:
    import numba
except ImportError as exc:  # pragma: no cover - exercised where numba is absent
    from nnscratch.errors import INSTALL_NUMBA

    raise ImportError(f"the --jit kernels need numba: {INSTALL_NUMBA}") from exc


@numba.njit(cache=True, fastmath=False)
def _relu_forward(x, mask):  # x, mask: 1-D views of the same memory layout
    for i in range(x.size):
        positive = x[i] > 0
        mask[i] = positive
        if not positive:
            x[i] = 0.0


@numba.njit(cache=True, fastmath=False)
def _relu_backward(dout, mask):
    for i in range(dout.size):
        if not mask[i]:
            dout[i] = 0.0


@numba.njit(cache=True, fastmath=False)
def _softmax_xent(z, y, p):  # z, p: (N, C); returns the mean loss and leaves dL/dz in p
    n, c = z.shape
    total = 0.0
    for i in range(n):
        m = z[i, 0]
        for j in range(1, c):
            m = max(m, z[i, j])
        s = 0.0
        for j in range(c):
            e = math.exp(z[i, j] - m)
            p[i, j] = e
            s += e
        total += math.log(s) - (z[i, y[i]] - m)
        for j in range(c):
            p[i, j] = p[i, j] / s / n
        p[i, y[i]] -= 1.0 / n
    return total / n


def _flat(a: np.ndarray) -> np.ndarray:
    return a.ravel(order="K")  # a view for C- or Fortran-contiguous arrays


class JitReLU(ReLU):
    """:class:`ReLU` with its two element-wise passes compiled by Numba."""

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        mask = self._scratch.get("mask", x.shape, dtype=bool)
        _relu_forward(_flat(x), _flat(mask))
        self._mask = mask if (train if keep is None else keep) else None
        return x

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray:
        _relu_backward(_flat(dout), _flat(self._mask))
        return dout


class JitSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """:class:`SoftmaxCrossEntropy` in one compiled loop (same formulas; loss accumulated in float64)."""

    def forward_backward(self, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        p = self._scratch.get("dz", z.shape)
        return float(_softmax_xent(z, y, p)), p


# -- batch norm in training: each feature's statistics and outputs in one compiled loop ---------
#
# The formulas are :class:`~nnscratch.numpy_engine.layers.BatchNorm1d`'s (its docstring), which
# stays the reference the tests compare against; here the arrays are taken transposed, ``(D, N)``
# with each feature's ``N`` values contiguous (a column-major ``(N, D)`` activation buffer, the
# engine's layout for batches up to ``COLUMN_MAJOR_MAX_ROWS``), so each feature's sums, its ``xhat``
# and its ``y`` are one short loop over memory in the cache. The sums run in float64 (in any order:
# ``reassoc`` lets LLVM vectorise them), so in float32 they are closer to exact than NumPy's.

_bn_kernel = numba.njit(cache=True, fastmath={"reassoc"}, error_model="numpy")


@_bn_kernel
def _batch_norm_forward(x, gamma, beta, eps, xhat, y, mean, var, inv_std):  # x, xhat, y: (D, N)
    d, n = x.shape
    for j in range(d):
        s = 0.0
        for i in range(n):
            s += x[j, i]
        mu = s / n                                   # mu = x.mean(0)
        ss = 0.0
        for i in range(n):
            c = x[j, i] - mu
            ss += c * c
        v = ss / n                                   # var = ((x - mu)^2).mean(0), biased
        r = 1.0 / math.sqrt(v + eps)                 # 1 / sqrt(var + eps)
        mean[j], var[j], inv_std[j] = mu, v, r
        g, b = gamma[j], beta[j]
        for i in range(n):
            h = (x[j, i] - mu) * r                   # xhat = (x - mu) / sqrt(var + eps)
            xhat[j, i] = h
            y[j, i] = h * g + b                      # y = gamma xhat + beta


@_bn_kernel
def _batch_norm_backward(dout, xhat, gamma, inv_std, dx, dgamma, dbeta, need_dx):  # dout, xhat, dx: (D, N)
    d, n = dout.shape
    for j in range(d):
        sd = 0.0
        sdx = 0.0
        for i in range(n):
            sd += dout[j, i]
            sdx += dout[j, i] * xhat[j, i]
        dbeta[j], dgamma[j] = sd, sdx                # dbeta = dout.sum(0), dgamma = (dout xhat).sum(0)
        if need_dx:                                  # g = dout gamma: g.sum(0) = gamma dbeta, (g xhat).sum(0) = gamma dgamma
            g = gamma[j]
            sum_g, sum_gx = g * sd, g * sdx
            scale = inv_std[j] / n
            for i in range(n):                       # dx = (N g - g.sum(0) - xhat (g xhat).sum(0)) / (N sqrt(var + eps))
                dx[j, i] = (n * (dout[j, i] * g) - sum_g - xhat[j, i] * sum_gx) * scale


class JitBatchNorm1d(BatchNorm1d):
    """:class:`BatchNorm1d` whose training forward and backward are one compiled loop each
    (:func:`_batch_norm_forward`, :func:`_batch_norm_backward`), for column-major batches (the
    engine's layout up to ``COLUMN_MAJOR_MAX_ROWS`` rows). Other layouts, evaluation and the GPU
    take the NumPy reference. Same formulas; sums in float64."""

    def _compiled(self, *arrays) -> bool:
        return not self.backend.is_gpu and all(a.ndim == 2 and a.flags.f_contiguous for a in arrays)

    def forward(self, x: np.ndarray, train: bool = True, keep: bool | None = None) -> np.ndarray:
        n = x.shape[0]
        xhat, y = self._scratch.get("xhat", x.shape), self._scratch.get("y", x.shape)  # as the reference's
        if not (train and n >= 2 and self._compiled(x, xhat, y)):
            return super().forward(x, train, keep)
        self._batch_stats = True
        mean, var, inv_std = (self._scratch.get(name, x.shape[1:]) for name in ("mean", "var", "inv_std"))
        _batch_norm_forward(x.T, self.params["weight"], self.params["bias"], self.eps, xhat.T, y.T,
                            mean, var, inv_std)
        self._track(mean, var, n)
        self._inv_std = inv_std
        return y

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        xhat, dx = self._scratch.get("xhat", dout.shape), self._scratch.get("dx", dout.shape)
        if not (self._batch_stats and self._compiled(dout, xhat, dx)):
            return super().backward(dout, need_dx)
        dgamma, dbeta = self._scratch.get("dgamma", dout.shape[1:]), self._scratch.get("dbeta", dout.shape[1:])
        _batch_norm_backward(dout.T, xhat.T, self.params["weight"], self._inv_std, dx.T, dgamma, dbeta, need_dx)
        self.sink.put("weight", dgamma)
        self.sink.put("bias", dbeta)
        return dx if need_dx else None


# -- optimizer updates: one compiled pass over memory per parameter ----------------------------
#
# Each kernel does, element by element, exactly the operations of the NumPy class's ``_update``,
# in the same order (see the docstrings in ``optimizers.py``): with ``fastmath=False`` and every
# constant passed in the parameter's own dtype, float32 arithmetic stays float32 (as NumPy's
# in-place operators do with a Python float) and every result is rounded where NumPy rounds it, so
# the parameters and state come out bit for bit the same. ``error_model="numpy"`` gives IEEE
# division (inf/NaN instead of a ZeroDivisionError check), which is also what lets LLVM vectorise
# the loops (the Python error model's check on every division keeps them scalar). Loop-invariant
# choices are made outside the loops, so no loop touches an array its variant does not use.

_opt_kernel = numba.njit(cache=True, fastmath=False, error_model="numpy")


@_opt_kernel
def _sgd_kernel(p, g, b, lr, weight_decay, momentum, one_minus_dampening, has_decay, has_momentum, first,
                nesterov):
    if not has_momentum:                             # θ <- θ - γ (g + λ θ)
        for i in range(p.size):
            gi = g[i]
            if has_decay:
                gi = gi + p[i] * weight_decay
            p[i] = p[i] - gi * lr
    elif first:                                      # b_1 <- g_1
        for i in range(p.size):
            gi = g[i]
            if has_decay:
                gi = gi + p[i] * weight_decay
            b[i] = gi
            if nesterov:
                gi = gi + gi * momentum
            p[i] = p[i] - gi * lr
    else:                                            # b <- μ b + (1 - τ) g  (τ = 0: g * 1 is exact)
        for i in range(p.size):
            gi = g[i]
            if has_decay:
                gi = gi + p[i] * weight_decay
            bi = b[i] * momentum + gi * one_minus_dampening
            b[i] = bi
            if nesterov:
                gi = gi + bi * momentum
            else:
                gi = bi
            p[i] = p[i] - gi * lr


@_opt_kernel
def _adam_kernel(p, g, m, v, v_max, one_minus_beta1, beta2, one_minus_beta2, weight_decay, decay,
                 sqrt_bias_correction2, eps, step_size, coupled, decoupled, amsgrad):
    if amsgrad:
        for i in range(p.size):
            pi, gi = p[i], g[i]
            if coupled:                              # g <- g + λ θ
                gi = gi + pi * weight_decay
            if decoupled:                            # θ <- θ (1 - γ λ)
                pi = pi * decay
            vi = v[i] * beta2 + (gi * gi) * one_minus_beta2
            v[i] = vi
            mi = m[i] + (gi - m[i]) * one_minus_beta1
            m[i] = mi
            vm = v_max[i]                            # np.maximum: NaN wins
            if vi > vm or vi != vi:
                vm = vi
            v_max[i] = vm
            p[i] = pi - (mi / (np.sqrt(vm) / sqrt_bias_correction2 + eps)) * step_size
    else:
        for i in range(p.size):
            pi, gi = p[i], g[i]
            if coupled:
                gi = gi + pi * weight_decay
            if decoupled:
                pi = pi * decay
            vi = v[i] * beta2 + (gi * gi) * one_minus_beta2
            v[i] = vi
            mi = m[i] + (gi - m[i]) * one_minus_beta1
            m[i] = mi
            p[i] = pi - (mi / (np.sqrt(vi) / sqrt_bias_correction2 + eps)) * step_size


@_opt_kernel
def _rmsprop_moments(pi, gi, vi, gai, alpha, one_minus_alpha, weight_decay, has_decay, centered):
    """One element's new ``v`` and ``g^ave``, its ``ṽ`` and its (decayed) ``g``.

    Scalars only: array arguments would cost reference counting in every iteration and keep the
    loops scalar (measured: 35-80x slower); with scalars LLVM inlines it into the vectorised loops.
    """
    if has_decay:                                    # g <- g + λ θ
        gi = gi + pi * weight_decay
    vi = vi * alpha + (gi * gi) * one_minus_alpha    # v <- α v + (1 - α) g²
    v_tilde = vi
    if centered:                                     # g^ave <- g^ave + (1 - α)(g - g^ave);  ṽ <- v - g^ave²
        gai = gai + (gi - gai) * one_minus_alpha
        v_tilde = vi - gai * gai
    return vi, gai, v_tilde, gi


@_opt_kernel
def _rmsprop_kernel(p, g, v, b, grad_avg, lr, alpha, one_minus_alpha, weight_decay, eps, momentum,
                    has_decay, centered, has_momentum):
    # four loops, so that none reads an array its variant lacks (a stand-in aliasing another array
    # would fail LLVM's overlap check and send the loop down its scalar path)
    zero = v.dtype.type(0)                           # g^ave where there is none (not used)
    if centered and has_momentum:                    # b <- μ b + g / denom;  θ <- θ - γ b
        for i in range(p.size):
            vi, gai, v_tilde, gi = _rmsprop_moments(p[i], g[i], v[i], grad_avg[i], alpha, one_minus_alpha,
                                                    weight_decay, has_decay, True)
            v[i] = vi
            grad_avg[i] = gai
            step = b[i] * momentum + gi / (np.sqrt(v_tilde) + eps)
            b[i] = step
            p[i] = p[i] - step * lr
    elif centered:                                   # θ <- θ - γ g / denom
        for i in range(p.size):
            vi, gai, v_tilde, gi = _rmsprop_moments(p[i], g[i], v[i], grad_avg[i], alpha, one_minus_alpha,
                                                    weight_decay, has_decay, True)
            v[i] = vi
            grad_avg[i] = gai
            p[i] = p[i] - (gi / (np.sqrt(v_tilde) + eps)) * lr
    elif has_momentum:
        for i in range(p.size):
            vi, _, v_tilde, gi = _rmsprop_moments(p[i], g[i], v[i], zero, alpha, one_minus_alpha,
                                                  weight_decay, has_decay, False)
            v[i] = vi
            step = b[i] * momentum + gi / (np.sqrt(v_tilde) + eps)
            b[i] = step
            p[i] = p[i] - step * lr
    else:
        for i in range(p.size):
            vi, _, v_tilde, gi = _rmsprop_moments(p[i], g[i], v[i], zero, alpha, one_minus_alpha,
                                                  weight_decay, has_decay, False)
            v[i] = vi
            p[i] = p[i] - (gi / (np.sqrt(v_tilde) + eps)) * lr


def _flat_views(*arrays: np.ndarray) -> list[np.ndarray] | None:
    """1-D views of ``arrays`` if they share dtype, shape and one contiguous layout, else ``None``.

    Then index ``i`` is the same element in every view; otherwise the caller takes the NumPy path.
    """
    first = arrays[0]
    if not (first.flags.c_contiguous or first.flags.f_contiguous):
        return None
    if any(a.dtype != first.dtype or a.shape != first.shape or a.strides != first.strides
           or not a.flags.writeable for a in arrays):
        return None
    return [a.ravel(order="K") for a in arrays]


class JitSGD(SGD):
    """:class:`SGD` with momentum, Nesterov, dampening and weight decay in one compiled loop.

    Same math, state and ``state()``/``load_state()`` as :class:`SGD`; plain SGD stays
    :attr:`fused` (the engine then never calls ``step``). The compiled loops only read ``grads``;
    arrays that do not share one contiguous layout take the NumPy code (as do all Jit classes).
    """

    def _update(self, p, g, s, work, lr):
        b = s.get("momentum_buffer", p)              # p: a stand-in the no-momentum loop never reads
        flat = _flat_views(p, g, b)
        if flat is None:
            return super()._update(p, g, s, work, lr)
        c = p.dtype.type
        _sgd_kernel(flat[0], flat[1], flat[2], c(lr), c(self.weight_decay), c(self.momentum),
                    c(1.0 - self.dampening), self.weight_decay != 0, self.momentum != 0, self.steps == 1,
                    self.nesterov)


class JitAdam(Adam):
    """:class:`Adam` (and, through :class:`JitAdamW`, AdamW) in one compiled loop per parameter.

    Reads ``p, g, m, v`` (and ``v_max``) once and writes ``p, m, v`` (and ``v_max``) once, where the
    NumPy class makes about 13 passes. Same math, state names and ``state()``/``load_state()``.
    """

    def _update(self, p, g, s, work, lr):
        m, v = s["exp_avg"], s["exp_avg_sq"]
        v_max = s.get("max_exp_avg_sq", v)           # v: a stand-in the plain loop never reads
        flat = _flat_views(p, g, m, v, v_max)
        if flat is None:
            return super()._update(p, g, s, work, lr)
        beta1, beta2 = self.betas
        c = p.dtype.type
        decays = self.weight_decay != 0
        # the Python floats of Adam._update, each rounded once to the parameter's dtype as NumPy does
        _adam_kernel(*flat, c(1.0 - beta1), c(beta2), c(1.0 - beta2), c(self.weight_decay),
                     c(1.0 - lr * self.weight_decay), c((1.0 - beta2 ** self.steps) ** 0.5), c(self.eps),
                     c(lr / (1.0 - beta1 ** self.steps)), decays and not self._decoupled,
                     decays and self._decoupled, self.amsgrad)


class JitAdamW(JitAdam, AdamW):
    """:class:`AdamW` through :class:`JitAdam`'s compiled loop (decoupled weight decay)."""


class JitRMSprop(RMSprop):
    """:class:`RMSprop` (centered, momentum, weight decay) in one compiled loop per parameter."""

    def _update(self, p, g, s, work, lr):
        v = s["square_avg"]
        b, grad_avg = s.get("momentum_buffer", v), s.get("grad_avg", v)  # stand-ins, never read
        flat = _flat_views(p, g, v, b, grad_avg)
        if flat is None:
            return super()._update(p, g, s, work, lr)
        c = p.dtype.type
        _rmsprop_kernel(*flat, c(lr), c(self.alpha), c(1.0 - self.alpha), c(self.weight_decay), c(self.eps),
                        c(self.momentum), self.weight_decay != 0, self.centered, self.momentum > 0)


_COMPILED: dict[type[Optimizer], type[Optimizer]] = {SGD: JitSGD, Adam: JitAdam, AdamW: JitAdamW,
                                                     RMSprop: JitRMSprop}
#: The compiled twin of every optimizer of :data:`~nnscratch.numpy_engine.optimizers.OPTIMIZERS`,
#: under the same names.
JIT_OPTIMIZERS: dict[str, type[Optimizer]] = {name: _COMPILED[cls] for name, cls in OPTIMIZERS.items()}


def make_jit_optimizer(name: str, params: dict[str, np.ndarray], **hyperparameters) -> Optimizer:
    """:func:`~nnscratch.numpy_engine.optimizers.make_optimizer` with the compiled classes above."""
    return make_optimizer(name, params, classes=JIT_OPTIMIZERS, **hyperparameters)

"""Optimizers of the NumPy engine: torch's update rules, written out by hand, in place.

Every optimizer here is the twin of a ``torch.optim`` class run with ``foreach=False`` (torch's
"single-tensor" algorithm, the one its docstrings describe): same epsilon placement, same bias
correction, same weight-decay coupling, same first-step rules, same state names.

Contract (the engine relies on exactly this):

* ``Optimizer(params, **hyperparameters)``: ``params`` maps names (``"0.weight"``, ``"0.bias"``,
  ...) to the *live* floating-point arrays, NumPy's or CuPy's (all of one array module, ``self.xp``;
  mixed precision keeps them float32); ``step`` updates them **in place** and keeps their
  dtype. An invalid hyperparameter raises :class:`~nnscratch.errors.ParameterError` naming it
  (``betas must both be in [0, 1), got (0.9, 1.0)``; the settings layer turns that into the flag).
* ``step(grads, lr)``: one update. ``grads`` has the same keys and shapes as ``params`` and is
  *scratch*: ``step`` may overwrite it. The learning rate comes with every step (schedules live
  in :mod:`nnscratch.training.schedules`, outside the optimizer).
* ``state()`` / ``load_state(state)``: all state as named arrays ``f"{param}.{torch_name}"``
  (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``square_avg``,
  ``grad_avg``, ``step``). ``step`` is a 0-d float32 array, as torch stores it. Before the first
  step the state is empty (``{}``), as torch's is.
* ``fused``: ``True`` only for plain SGD (``p -= lr * g``): the engine then does the update
  inside the weight-gradient products and never calls ``step`` (see ``layers.Dense.backward``).

Speed: ``step`` allocates nothing the size of a parameter. Every intermediate goes into one
preallocated ``work`` array per parameter (or into the gradient, which is scratch), through
NumPy's ``out=`` / in-place operators. Measured (2-core AMD EPYC, 1.86M float32 parameters,
784-1024-1024-10): Adam 6.2 ms per step (13 element-wise passes), against 17.9 ms for the same
formulas written as plain NumPy expressions and 4.1 ms for torch's single-tensor Adam; plain SGD's
``step`` 1.1 ms; no allocation at all (``tracemalloc`` peak under 1 kB). Every one of those passes
is a rounding of its own, so NumPy cannot do the same numbers in fewer. The engine therefore runs
the Numba twins of these classes (``numpy_engine/jit.py``: one pass, the same numbers bit for bit)
by default, and these NumPy classes are their readable reference (``tests/test_jit.py``), used
on a GPU, without numba, and with ``NumpyEngine(compiled_updates=False)`` (how much faster:
docs/performance.md, "Optimizer updates" and "Numba").
"""

from __future__ import annotations

import inspect

from nnscratch.errors import ParameterError
from nnscratch.numpy_engine.backend import np, xp_of


def _require(ok: bool, parameter: str, problem: str) -> None:
    """Raise ``ParameterError(parameter, problem)`` unless ``ok`` (written so that NaN fails)."""
    if not ok:
        raise ParameterError(parameter, problem)


def _at_least_zero(name: str, value: float) -> float:
    """Torch's check ``0.0 <= value`` (which NaN fails)."""
    _require(0.0 <= value, name, f"must be >= 0, got {value}")
    return float(value)


#: How often (in steps) the optimizers set subnormal state entries to 0: see ``Optimizer.flush_subnormals``.
FLUSH_SUBNORMALS_EVERY = 50


class Optimizer:
    """Base class: holds the live parameters, their named state arrays and the step count.

    A subclass declares :meth:`_state_keys` (torch's per-parameter state names, ``step`` aside)
    and writes :meth:`_update`, the algorithm for one parameter array.

    Attributes
    ----------
    fused : bool
        ``True`` when the update is plain ``p -= lr * g`` (the engine may fuse it, see above).
    steps : int
        Updates done so far (``t`` in the algorithms; torch's per-parameter ``step``).
    torch_class : str
        The name of its twin in ``torch.optim`` (``"Adam"``): the torch engine builds that class.
    """

    fused: bool = False
    torch_class: str = ""
    #: Whether torch keeps a ``step`` entry in this optimizer's state (SGD does not).
    _has_step_state: bool = True

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        self.xp = xp_of(next(iter(params.values()))) if params else np  # numpy, or cupy on a GPU
        for name, p in params.items():
            if xp_of(p) is not self.xp or not isinstance(p, self.xp.ndarray) or p.dtype.kind != "f":
                raise ValueError(f"parameter {name!r} must be a floating-point array of {self.xp.__name__}, "
                                 f"got {type(p).__name__} {getattr(p, 'dtype', '')}")
        self.params = dict(params)
        self.steps = 0
        self._state = {name: {key: self.xp.zeros_like(p) for key in self._state_keys()}
                       for name, p in self.params.items()}
        self._work = {name: self.xp.empty_like(p) for name, p in self.params.items()}

    def _state_keys(self) -> tuple[str, ...]:
        """Torch's names of the per-parameter state arrays (``step`` is handled by the base)."""
        return ()

    def _update(self, p: np.ndarray, g: np.ndarray, s: dict[str, np.ndarray],
                work: np.ndarray, lr: float) -> None:
        """Update one parameter ``p`` in place from its gradient ``g`` (scratch) and state ``s``."""
        raise NotImplementedError

    def step(self, grads: dict[str, np.ndarray], lr: float) -> None:
        """One update of every parameter, in place, with learning rate ``lr``.

        ``grads`` maps the parameter names to gradients of the same shapes; they are overwritten.
        """
        self.steps += 1
        lr = float(lr)  # a NumPy float64 scalar would push float32 arithmetic through float64
        for name, p in self.params.items():
            self._update(p, grads[name], self._state[name], self._work[name], lr)
        if self.steps % FLUSH_SUBNORMALS_EVERY == 0:
            self.flush_subnormals()

    def flush_subnormals(self) -> None:
        """Set state entries below the dtype's smallest normal number (``|a| < tiny``: 1.2e-38 in
        float32) to exactly 0.

        Why: a moving average (momentum buffer, ``exp_avg``...) whose gradient stays 0 for a while
        (an MNIST border pixel's weights) decays geometrically into subnormal numbers, and x86 CPUs
        compute on those through a slow microcode path. Measured on this project's Intel Xeon VM:
        one SGD-momentum step on 1.8M float32 parameters takes 3.8 ms with normal buffers and 33 ms
        with subnormal ones, and the epochs of ``configs/best.toml`` slowed from 4.2 to 5.1 s over
        20 epochs. Every :data:`FLUSH_SUBNORMALS_EVERY` steps costs three cheap passes; the values
        changed are below 1e-38 (float32) or 2e-308 (float64), far under any rounding of the update.
        """
        for arrays in self._state.values():
            for a in arrays.values():
                tiny = np.finfo(a.dtype).tiny
                self.xp.copyto(a, 0, where=self.xp.abs(a) < tiny)

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """All state as named copies: ``f"{param}.{torch_name}"`` -> array; ``{}`` before step 1.

        ``step`` (Adam, AdamW, RMSprop) is a 0-d float32 array holding :attr:`steps`, as torch's
        state tensor; the other arrays have their parameter's shape and dtype.
        """
        if self.steps == 0:
            return {}
        out = {}
        for name, arrays in self._state.items():
            if self._has_step_state:
                out[f"{name}.step"] = np.array(self.steps, dtype=np.float32)
            for key, a in arrays.items():
                out[f"{name}.{key}"] = np.array(self._host(a))
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state` returned (``{}`` resets to a fresh optimizer).

        Raises ``ValueError`` naming the offending entries when names or shapes do not match;
        nothing is changed then. Arrays are copied into this optimizer's own buffers.
        """
        if not state:
            self._reset()
            return
        expected = {f"{name}.{key}": (name, key) for name in self.params for key in self._state_keys()}
        step_names = [f"{name}.step" for name in self.params] if self._has_step_state else []
        missing = sorted((set(expected) | set(step_names)) - set(state))
        unexpected = sorted(set(state) - set(expected) - set(step_names))
        if missing or unexpected:
            raise ValueError(f"{self.torch_class} state does not match its parameters: "
                             f"missing {missing}, unexpected {unexpected}")
        wrong = [f"{full} {np.shape(state[full])} (expected {self._state[name][key].shape})"
                 for full, (name, key) in expected.items()
                 if np.shape(state[full]) != self._state[name][key].shape]
        if wrong:
            raise ValueError(f"{self.torch_class} state has wrong shapes: {', '.join(wrong)}")
        steps = self._steps_from(state, step_names)
        for full, (name, key) in expected.items():
            self.xp.copyto(self._state[name][key], self.xp.asarray(state[full]), casting="same_kind")
        self.steps = steps

    def _steps_from(self, state: dict[str, np.ndarray], step_names: list[str]) -> int:
        """The one step count of a state: all ``*.step`` entries equal, a whole number >= 0."""
        if not step_names:  # SGD: a non-empty state means the momentum buffers are started
            return 1
        values = {float(np.asarray(state[n]).reshape(())) for n in step_names}
        if len(values) != 1 or not all(v >= 0 and v == int(v) for v in values):
            raise ValueError(f"{self.torch_class} state has unusable step counts {sorted(values)}: "
                             "they must be one whole number >= 0 for all parameters")
        return int(values.pop())

    def _host(self, a) -> np.ndarray:
        """``a`` as a NumPy array (a copy from the GPU; ``a`` itself on the CPU)."""
        return a if self.xp is np else self.xp.asnumpy(a)

    def _reset(self) -> None:
        self.steps = 0
        for arrays in self._state.values():
            for a in arrays.values():
                a.fill(0)


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum (``torch.optim.SGD``).

    Algorithm (torch's docstring; ``γ`` lr, ``λ`` weight decay, ``μ`` momentum, ``τ`` dampening)::

        for t = 1, 2, ...:
            g_t <- ∇f(θ_{t-1})
            if λ != 0:  g_t <- g_t + λ θ_{t-1}              (L2 penalty added to the gradient)
            if μ != 0:
                if t > 1:  b_t <- μ b_{t-1} + (1 - τ) g_t
                else:      b_t <- g_t                        (buffer starts AT the gradient: no dampening at t=1)
                if nesterov:  g_t <- g_t + μ b_t
                else:         g_t <- b_t
            θ_t <- θ_{t-1} - γ g_t

    Note torch's momentum form ``b <- μ b + g; θ <- θ - γ b`` (lr applied after the buffer),
    unlike Sutskever et al.'s ``v <- μ v + γ g``; they differ when the lr changes.

    State: ``momentum_buffer`` (only when ``momentum != 0``); no ``step`` entry, as in torch.
    Plain SGD (no momentum, no weight decay) is :attr:`fused`.
    """

    torch_class = "SGD"
    _has_step_state = False

    def __init__(self, params: dict[str, np.ndarray], momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        self.momentum = _at_least_zero("momentum", momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.weight_decay = _at_least_zero("weight_decay", weight_decay)
        _require(not self.nesterov or (self.momentum > 0 and self.dampening == 0), "nesterov",
                 f"needs momentum > 0 and dampening 0, got momentum {self.momentum}, dampening {self.dampening}")
        super().__init__(params)
        self.fused = self.momentum == 0 and self.weight_decay == 0

    def _state_keys(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update(self, p, g, s, work, lr):
        xp = self.xp
        if self.weight_decay != 0:                   # g <- g + λ θ
            xp.multiply(p, self.weight_decay, out=work)
            g += work
        if self.momentum != 0:
            b = s["momentum_buffer"]
            if self.steps == 1:                      # b_1 <- g_1
                xp.copyto(b, g)
            else:                                    # b <- μ b + (1 - τ) g
                b *= self.momentum
                if self.dampening != 0:
                    xp.multiply(g, 1.0 - self.dampening, out=work)
                    b += work
                else:
                    b += g
            if self.nesterov:                        # g <- g + μ b
                xp.multiply(b, self.momentum, out=work)
                g += work
            else:                                    # g <- b
                g = b
        xp.multiply(g, lr, out=work)                 # θ <- θ - γ g
        p -= work


class Adam(Optimizer):
    r"""Adam (``torch.optim.Adam``), optionally AMSGrad, with L2 weight decay in the gradient.

    Algorithm (torch's docstring; ``γ`` lr, ``β1, β2`` betas, ``λ`` weight decay, ``ε`` eps)::

        m_0 <- 0, v_0 <- 0, v_0^max <- 0
        for t = 1, 2, ...:
            g_t <- ∇f(θ_{t-1})
            if λ != 0:  g_t <- g_t + λ θ_{t-1}               (AdamW instead decays θ itself)
            m_t <- β1 m_{t-1} + (1 - β1) g_t                 (first moment)
            v_t <- β2 v_{t-1} + (1 - β2) g_t²                (second moment)
            if amsgrad:  v_t^max <- max(v_{t-1}^max, v_t);  v <- v_t^max   else v <- v_t
            θ_t <- θ_{t-1} - (γ / (1 - β1^t)) m_t / (sqrt(v) / sqrt(1 - β2^t) + ε)

    The last line is torch's arrangement of ``θ - γ m̂ / (sqrt(v̂) + ε)`` with ``m̂ = m/(1-β1^t)``,
    ``v̂ = v/(1-β2^t)``: epsilon is added *after* the bias-corrected square root
    (``denom = sqrt(v)/sqrt(bias_correction2) + eps``, ``step_size = lr/bias_correction1``).
    The first moment is updated as torch does, ``m.lerp_(g, 1-β1)`` = ``m + (1-β1)(g - m)``.

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (AMSGrad only).
    """

    torch_class = "Adam"
    _decoupled = False  # AdamW: weight decay applied to θ, not added to the gradient

    def __init__(self, params: dict[str, np.ndarray], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        _require(len(betas) == 2, "betas", f"needs two values (beta1 beta2), got {betas}")
        _require(all(0.0 <= b < 1.0 for b in betas), "betas", f"must both be in [0, 1), got {tuple(betas)}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _at_least_zero("eps", eps)
        self.weight_decay = _at_least_zero("weight_decay", weight_decay)
        self.amsgrad = bool(amsgrad)
        super().__init__(params)

    def _state_keys(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _update(self, p, g, s, work, lr):
        xp = self.xp
        beta1, beta2 = self.betas
        m, v = s["exp_avg"], s["exp_avg_sq"]
        if self.weight_decay != 0:
            if self._decoupled:                      # θ <- θ (1 - γ λ)
                p *= 1.0 - lr * self.weight_decay
            else:                                    # g <- g + λ θ
                xp.multiply(p, self.weight_decay, out=work)
                g += work
        v *= beta2                                   # v <- β2 v + (1 - β2) g²
        xp.multiply(g, g, out=work)
        work *= 1.0 - beta2
        v += work
        g -= m                                       # m <- m + (1 - β1)(g - m); g is spent after this
        g *= 1.0 - beta1
        m += g
        if self.amsgrad:                             # v^max <- max(v^max, v)
            v = xp.maximum(s["max_exp_avg_sq"], v, out=s["max_exp_avg_sq"])
        bias_correction1 = 1.0 - beta1 ** self.steps
        bias_correction2 = 1.0 - beta2 ** self.steps
        step_size = lr / bias_correction1
        denom = xp.sqrt(v, out=work)                 # denom <- sqrt(v) / sqrt(1 - β2^t) + ε
        denom /= bias_correction2 ** 0.5
        denom += self.eps
        xp.divide(m, denom, out=work)                # θ <- θ - step_size m / denom
        work *= step_size
        p -= work


class AdamW(Adam):
    r"""AdamW (``torch.optim.AdamW``): Adam with *decoupled* weight decay.

    Algorithm (torch's docstring)::

        m_0 <- 0, v_0 <- 0, v_0^max <- 0
        for t = 1, 2, ...:
            g_t <- ∇f(θ_{t-1})
            θ_t <- θ_{t-1} - γ λ θ_{t-1}                    (decay the weights; g is untouched)
            m_t <- β1 m_{t-1} + (1 - β1) g_t
            v_t <- β2 v_{t-1} + (1 - β2) g_t²
            if amsgrad:  v_t^max <- max(v_{t-1}^max, v_t);  v <- v_t^max   else v <- v_t
            θ_t <- θ_t - (γ / (1 - β1^t)) m_t / (sqrt(v) / sqrt(1 - β2^t) + ε)

    The decay never enters ``m`` or ``v``, so it is not rescaled by the adaptive denominator.
    Note the default ``weight_decay=1e-2`` (Adam's is 0). State as :class:`Adam`.
    """

    torch_class = "AdamW"
    _decoupled = True

    def __init__(self, params: dict[str, np.ndarray], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class RMSprop(Optimizer):
    r"""RMSprop (``torch.optim.RMSprop``), optionally centered and with momentum.

    Algorithm (torch's docstring; ``α`` alpha, ``μ`` momentum)::

        v_0 <- 0, b_0 <- 0, g^ave_0 <- 0
        for t = 1, 2, ...:
            g_t <- ∇f(θ_{t-1})
            if λ != 0:  g_t <- g_t + λ θ_{t-1}
            v_t <- α v_{t-1} + (1 - α) g_t²                  (square average)
            ṽ_t <- v_t
            if centered:
                g^ave_t <- α g^ave_{t-1} + (1 - α) g_t       (gradient average, torch: lerp)
                ṽ_t <- ṽ_t - (g^ave_t)²                      (a variance estimate)
            if μ > 0:
                b_t <- μ b_{t-1} + g_t / (sqrt(ṽ_t) + ε)      (buffer starts at 0, unlike SGD's)
                θ_t <- θ_{t-1} - γ b_t
            else:
                θ_t <- θ_{t-1} - γ g_t / (sqrt(ṽ_t) + ε)

    Epsilon is added after the square root (TensorFlow adds it inside).
    State: ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
    """

    torch_class = "RMSprop"

    def __init__(self, params: dict[str, np.ndarray], alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False) -> None:
        # torch only checks alpha >= 0; alpha > 1 makes the square average negative (NaN), so we refuse it
        _require(0.0 <= alpha <= 1.0, "alpha", f"must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.eps = _at_least_zero("eps", eps)
        self.weight_decay = _at_least_zero("weight_decay", weight_decay)
        self.momentum = _at_least_zero("momentum", momentum)
        self.centered = bool(centered)
        super().__init__(params)

    def _state_keys(self) -> tuple[str, ...]:
        return (("square_avg",) + (("momentum_buffer",) if self.momentum > 0 else ())
                + (("grad_avg",) if self.centered else ()))

    def _update(self, p, g, s, work, lr):
        xp = self.xp
        alpha = self.alpha
        v = s["square_avg"]
        if self.weight_decay != 0:                   # g <- g + λ θ
            xp.multiply(p, self.weight_decay, out=work)
            g += work
        v *= alpha                                   # v <- α v + (1 - α) g²
        xp.multiply(g, g, out=work)
        work *= 1.0 - alpha
        v += work
        if self.centered:
            ga = s["grad_avg"]                       # g^ave <- g^ave + (1 - α)(g - g^ave)
            xp.subtract(g, ga, out=work)
            work *= 1.0 - alpha
            ga += work
            xp.multiply(ga, ga, out=work)            # denom <- sqrt(v - g^ave²) + ε
            xp.subtract(v, work, out=work)
            denom = xp.sqrt(work, out=work)
        else:                                        # denom <- sqrt(v) + ε
            denom = xp.sqrt(v, out=work)
        denom += self.eps
        xp.divide(g, denom, out=work)                # work <- g / denom
        if self.momentum > 0:
            b = s["momentum_buffer"]                 # b <- μ b + g / denom;  θ <- θ - γ b
            b *= self.momentum
            b += work
            xp.multiply(b, lr, out=work)
        else:                                        # θ <- θ - γ g / denom
            work *= lr
        p -= work


#: The optimizers by name: the one list of them (the ``--optimizer`` choices, the settings' check,
#: the torch twin's classes through each class's :attr:`Optimizer.torch_class`, the compiled twins).
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def hyperparameters_of(cls: type[Optimizer]) -> tuple[str, ...]:
    """The hyperparameters optimizer class ``cls`` takes: ``("momentum", "dampening", ...)`` for SGD."""
    return tuple(k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "params"))


def make_optimizer(name: str, params: dict[str, np.ndarray], *,
                   classes: dict[str, type[Optimizer]] | None = None, **hyperparameters) -> Optimizer:
    """Build the optimizer called ``name`` (a key of :data:`OPTIMIZERS`) over ``params``.

    Hyperparameters set to ``None`` count as not given (the class default applies), so a CLI can
    pass every flag it has. A hyperparameter the optimizer does not take is a :class:`ParameterError`
    (``betas does not apply to optimizer sgd``), as is an unknown name. ``classes`` replaces
    :data:`OPTIMIZERS` (``--jit`` passes the Numba-compiled twins of
    :mod:`nnscratch.numpy_engine.jit`: same math, same numbers, same state, one pass over memory).
    """
    classes = OPTIMIZERS if classes is None else classes
    _require(name in classes, "name", f"must be one of {', '.join(classes)}; got {name!r}")
    cls = classes[name]
    given = {k: v for k, v in hyperparameters.items() if v is not None}
    accepted = hyperparameters_of(cls)
    for key in given:
        _require(key in accepted, key, f"does not apply to optimizer {name}")
    return cls(params, **given)

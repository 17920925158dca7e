"""Learning-rate schedules: the learning rate as a function of the step, equal to torch's schedulers.

A schedule answers ``lr(step)``: the learning rate to use for optimisation step ``step = 0, 1, 2,
...``, which is what ``torch.optim.lr_scheduler.X(...).get_last_lr()[0]`` reports after ``step``
calls of ``scheduler.step()`` (single parameter group). Engine-neutral: plain Python floats.

**Units.** A "step" is whatever unit the caller steps in: one batch or one epoch. ``cyclic`` and
``onecycle`` are meant per batch (as in torch); ``step``, ``multistep``, ``exponential`` and
``cosine`` work either way (their ``step_size``, ``milestones``, ``T_max`` count the same unit);
``plateau`` moves only when :meth:`Schedule.observe` is given a validation loss (once per epoch).

**Exactly torch's numbers.** torch's "chainable" schedulers (StepLR, MultiStepLR, ExponentialLR,
CosineAnnealingLR, LinearLR) compute each learning rate from the previous one, which differs from
the closed forms in the last bits. We use the same recursions, in the same operation order, so the
values agree with torch's to the last bit or nearly (tests: < 1e-12 over 300 steps). A schedule
remembers the last ``(step, lr)`` it computed, so asking for consecutive steps costs O(1); asking
for an earlier step replays the recursion from 0.

**State.** Every schedule but ``plateau`` is a pure function of the step: its ``state()`` is ``{}``
(the step number, kept by the training loop, is all there is). ``plateau`` keeps torch's counters.

**Errors.** A bad parameter raises :class:`~nnscratch.errors.ParameterError` naming it as here
(``T_max must be an integer >= 1, got 0``); :mod:`nnscratch.run.config` says the flag instead.

Kinds (``make_schedule(name, base_lr, ...)``) and their torch twins:

=============  ===============================================  ==================================
name           parameters                                        torch
=============  ===============================================  ==================================
none           -                                                 (no scheduler)
step           step_size, gamma=0.1                              StepLR
multistep      milestones, gamma=0.1                             MultiStepLR
exponential    gamma                                             ExponentialLR
cosine         T_max, eta_min=0                                  CosineAnnealingLR
cyclic         max_lr, step_size_up=2000, step_size_down=None,   CyclicLR(base_lr=lr,
               mode=triangular, gamma=1                            cycle_momentum=False)
onecycle       total_steps, max_lr=lr, pct_start=0.3,            OneCycleLR(cycle_momentum=False)
               anneal_strategy=cos, div_factor=25,
               final_div_factor=1e4, three_phase=False
plateau        factor=0.1, patience=10, threshold=1e-4,          ReduceLROnPlateau(mode="min")
               threshold_mode=rel, cooldown=0, min_lr=0, eps=1e-8
=============  ===============================================  ==================================

Warm-up (``warmup_steps > 0``): ``none`` becomes ``LinearLR(start_factor=warmup_start_factor,
total_iters=warmup_steps)``; any of step/multistep/exponential/cosine becomes
``SequentialLR([LinearLR(...), X], milestones=[warmup_steps])``: X starts afresh at step
``warmup_steps`` (its ``step_size``, ``milestones``, ``T_max`` count steps *after* the warm-up).
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from nnscratch.errors import ParameterError


def _check(ok: bool, name: str, requirement: str, value) -> None:
    """Raise ``ParameterError(name, "must be <requirement>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ParameterError(name, f"must be {requirement}, got {value!r}")


def _float(name: str, value, requirement: str, ok) -> float:
    """``value`` as a float, checked by the predicate ``ok`` (NaN fails every comparison)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ParameterError(name, f"must be a number {requirement}, got {value!r}") from None
    _check(ok(x), name, requirement, value)
    return x


def _int(name: str, value, minimum: int) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum
    _check(ok, name, f"an integer >= {minimum}", value)
    return int(value)


def _choice(name: str, value, choices: tuple[str, ...]) -> str:
    _check(value in choices, name, "one of " + ", ".join(choices), value)
    return value


class Schedule:
    """A learning rate per step: ``lr(step)`` for ``step = 0, 1, 2, ...``.

    Subclasses give the first value :meth:`_first` and the recursion :meth:`_next` (torch's
    ``get_lr``: the lr at step ``t`` from the lr at step ``t - 1``); closed-form schedules ignore
    the previous value.
    """

    name = ""

    def __init__(self, base_lr: float) -> None:
        self.base_lr = _float("base_lr", base_lr, "finite and >= 0", lambda x: 0 <= x < math.inf)
        self._cache: tuple[int, float] | None = None  # the last (step, lr) computed

    def lr(self, step: int) -> float:
        """The learning rate for optimisation step ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self._cache is None or step < self._cache[0]:
            self._cache = (0, self._first())
        t, lr = self._cache
        while t < step:
            t += 1
            lr = self._next(t, lr)
        self._cache = (t, lr)
        return lr

    def _first(self) -> float:
        """The lr at step 0 (torch: after the scheduler's constructor)."""
        return self.base_lr

    def _next(self, t: int, lr: float) -> float:
        """The lr at step ``t >= 1`` given ``lr``, the lr at step ``t - 1``."""
        raise NotImplementedError

    def _restart(self) -> float:
        """The lr at this schedule's step 0 when it takes over inside :class:`SequentialLR`:
        torch calls ``_update_lr(0)``, the closed form at epoch 0. That is :meth:`_first` for all
        but the cosine, whose closed form ``eta_min + (base_lr - eta_min)`` can miss base_lr by a bit."""
        return self._first()

    def observe(self, metric: float) -> None:
        """Report a validation loss (once per epoch). Only ``plateau`` uses it; others ignore it."""

    def state(self) -> dict[str, np.ndarray]:
        """State as named arrays; ``{}`` for a schedule that is a function of the step alone."""
        return {}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state` (``ValueError`` naming unexpected entries)."""
        if state:
            raise ValueError(f"the {self.name} schedule has no state, got {sorted(state)}")


class Constant(Schedule):
    """``lr(t) = base_lr`` (no scheduler: the kind ``none``)."""

    name = "none"

    def _next(self, t, lr):
        return lr


class StepLR(Schedule):
    """Decay by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``)::

        lr(t) = base_lr * gamma ** (t // step_size)     computed as torch does: lr(t-1) * gamma
                                                        when t is a multiple of step_size
    """

    name = "step"

    def __init__(self, base_lr: float, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(base_lr)
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _float("gamma", gamma, "> 0", lambda x: x > 0)

    def _next(self, t, lr):
        return lr * self.gamma if t % self.step_size == 0 else lr


class MultiStepLR(Schedule):
    """Decay by ``gamma`` at each milestone (``torch.optim.lr_scheduler.MultiStepLR``)::

        lr(t) = base_lr * gamma ** (number of milestones <= t)
    """

    name = "multistep"

    def __init__(self, base_lr: float, milestones, gamma: float = 0.1) -> None:
        super().__init__(base_lr)
        ms = list(milestones) if isinstance(milestones, (list, tuple)) else None
        ok = bool(ms) and all(isinstance(m, (int, np.integer)) and not isinstance(m, bool) and m >= 1
                              for m in ms) and all(a < b for a, b in zip(ms, ms[1:]))
        _check(ok, "milestones", "increasing integers >= 1 (at least one)", milestones)
        self.milestones = [int(m) for m in ms]
        self.gamma = _float("gamma", gamma, "> 0", lambda x: x > 0)

    def _next(self, t, lr):
        return lr * self.gamma if t in self.milestones else lr


class ExponentialLR(Schedule):
    """Decay by ``gamma`` every step (``torch.optim.lr_scheduler.ExponentialLR``)::

        lr(t) = base_lr * gamma ** t                    computed as lr(t-1) * gamma
    """

    name = "exponential"

    def __init__(self, base_lr: float, gamma: float) -> None:
        super().__init__(base_lr)
        self.gamma = _float("gamma", gamma, "> 0", lambda x: x > 0)

    def _next(self, t, lr):
        return lr * self.gamma


class CosineAnnealingLR(Schedule):
    r"""Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` steps
    (``torch.optim.lr_scheduler.CosineAnnealingLR``, no restarts)::

        lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2

    computed, as torch does, by the recursion
    ``lr(t) = eta_min + (lr(t-1) - eta_min) * (1 + cos(pi t/T)) / (1 + cos(pi (t-1)/T))``,
    with torch's special case where that ratio is 0/0 (``t = T_max + 1`` and every ``2 T_max``
    after). Past ``T_max`` the learning rate climbs back up, as torch's does.
    """

    name = "cosine"

    def __init__(self, base_lr: float, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(base_lr)
        self.T_max = _int("T_max", T_max, 1)
        self.eta_min = _float("eta_min", eta_min, "finite and >= 0", lambda x: 0 <= x < math.inf)

    def _next(self, t, lr):
        T, eta_min = self.T_max, self.eta_min
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (lr - eta_min) + eta_min

    def _restart(self):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * 0 / self.T_max)) / 2


class LinearLR(Schedule):
    """Linear warm-up: the factor on ``base_lr`` goes from ``start_factor`` to ``end_factor`` over
    ``total_iters`` steps, then stays (``torch.optim.lr_scheduler.LinearLR``)::

        lr(t) = base_lr * (start + (end - start) * min(t, total_iters) / total_iters)

    computed, as torch does, as ``lr(t-1)`` times the ratio of consecutive factors.
    """

    name = "warmup"

    def __init__(self, base_lr: float, start_factor: float = 1.0 / 3, total_iters: int = 5,
                 end_factor: float = 1.0) -> None:
        super().__init__(base_lr)
        self.start_factor = _float("warmup_start_factor", start_factor, "in (0, 1]", lambda x: 0 < x <= 1)
        self.end_factor = _float("warmup_end_factor", end_factor, "in [0, 1]", lambda x: 0 <= x <= 1)
        self.total_iters = _int("warmup_steps", total_iters, 1)

    def _first(self):
        return self.base_lr * self.start_factor

    def _next(self, t, lr):
        if t > self.total_iters:
            return lr
        start, end = self.start_factor, self.end_factor
        return lr * (1.0 + (end - start) / (self.total_iters * start + (t - 1) * (end - start)))


class SequentialLR(Schedule):
    """``first`` for steps ``0 .. milestone-1``, then ``second`` started afresh
    (``torch.optim.lr_scheduler.SequentialLR([first, second], milestones=[milestone])``)::

        lr(t) = first.lr(t)                  t < milestone
        lr(t) = second.lr(t - milestone)     t >= milestone   (torch: second's closed form at its
                                                               step 0, then its own recursion)
    """

    def __init__(self, first: Schedule, second: Schedule, milestone: int) -> None:
        super().__init__(first.base_lr)
        self.first, self.second = first, second
        self.milestone = _int("warmup_steps", milestone, 1)
        self.name = f"{first.name}+{second.name}"

    def _first(self):
        return self.first._first()

    def _next(self, t, lr):
        if t < self.milestone:
            return self.first._next(t, lr)
        if t == self.milestone:
            return self.second._restart()
        return self.second._next(t - self.milestone, lr)


class CyclicLR(Schedule):
    """Cyclical learning rate between ``base_lr`` and ``max_lr`` (``torch.optim.lr_scheduler.CyclicLR``
    with ``cycle_momentum=False``; meant per batch)::

        cycle = floor(1 + t / (up + down))               the cycle number, from 1
        x     = 1 + t / (up + down) - cycle              position in the cycle, in [0, 1)
        h     = x / r  if x <= r  else  (x - 1) / (r - 1)     with r = up / (up + down): 0 -> 1 -> 0
        lr(t) = base_lr + (max_lr - base_lr) * h * scale

    ``scale`` is 1 (``triangular``), ``1 / 2**(cycle - 1)`` (``triangular2``: the amplitude
    halves every cycle) or ``gamma ** t`` (``exp_range``).
    """

    name = "cyclic"
    #: The values of ``mode`` (the ``--cyclic-mode`` choices).
    MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, base_lr: float, max_lr: float, step_size_up: int = 2000, step_size_down: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0) -> None:
        super().__init__(base_lr)
        self.max_lr = _float("max_lr", max_lr, "finite and >= 0", lambda x: 0 <= x < math.inf)
        up = _int("step_size_up", step_size_up, 1)
        down = up if step_size_down is None else _int("step_size_down", step_size_down, 1)
        self.total_size = float(up) + float(down)
        self.step_ratio = float(up) / self.total_size
        self.mode = _choice("mode", mode, self.MODES)
        self.gamma = _float("gamma", gamma, "> 0", lambda x: x > 0)

    def _at(self, t: int) -> float:
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        base_height = (self.max_lr - self.base_lr) * scale_factor
        if self.mode == "triangular":
            return self.base_lr + base_height * 1.0
        if self.mode == "triangular2":
            return self.base_lr + base_height * (1 / (2.0 ** (cycle - 1)))
        return self.base_lr + base_height * self.gamma ** t

    def _first(self):
        return self._at(0)

    def _next(self, t, lr):
        return self._at(t)


class OneCycleLR(Schedule):
    """The 1cycle policy (``torch.optim.lr_scheduler.OneCycleLR`` with ``cycle_momentum=False``;
    meant per batch, defined for steps ``0 .. total_steps``). With ``initial = max_lr / div_factor``
    and ``min = initial / final_div_factor``, the phases (``p = pct_start``, ``T = total_steps``)::

        two phases:    initial -> max_lr  over steps 0 .. pT-1,   max_lr -> min      up to T-1
        three_phase:   initial -> max_lr  over 0 .. pT-1,         max_lr -> initial  up to 2pT-2,
                       initial -> min     up to T-1

    each annealed by ``cos`` (``end + (start - end) (1 + cos(pi s)) / 2``) or ``linear``
    (``start + (end - start) s``), ``s`` the fraction of the phase done. ``max_lr`` defaults to
    the schedule's ``base_lr`` (the ``--lr`` is the peak).
    """

    name = "onecycle"
    #: The values of ``anneal_strategy`` (the ``--anneal-strategy`` choices).
    ANNEAL_STRATEGIES = ("cos", "linear")

    def __init__(self, base_lr: float, total_steps: int, max_lr: float | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False) -> None:
        super().__init__(base_lr)
        self.total_steps = _int("total_steps", total_steps, 1)
        self.max_lr = self.base_lr if max_lr is None else _float(
            "max_lr", max_lr, "finite and >= 0", lambda x: 0 <= x < math.inf)
        pct_start = _float("pct_start", pct_start, "in [0, 1]", lambda x: 0 <= x <= 1)
        self.anneal_strategy = _choice("anneal_strategy", anneal_strategy, self.ANNEAL_STRATEGIES)
        div_factor = _float("div_factor", div_factor, "> 0", lambda x: x > 0)
        final_div_factor = _float("final_div_factor", final_div_factor, "> 0", lambda x: x > 0)
        self.initial_lr = self.max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        self.phases = self._phases(pct_start, bool(three_phase))
        ends = [0.0] + [end for end, _, _ in self.phases]
        if any(a == b for a, b in zip(ends, ends[1:])):
            raise ParameterError("pct_start", f"{pct_start} gives a one-cycle phase of zero length with "
                                 f"{self.total_steps} total steps; choose another")

    def _phases(self, pct_start: float, three_phase: bool) -> list[tuple[float, float, float]]:
        """``(end_step, start_lr, end_lr)`` of each phase, as torch's ``_schedule_phases``."""
        T, initial, peak, low = self.total_steps, self.initial_lr, self.max_lr, self.min_lr
        if three_phase:
            return [(float(pct_start * T) - 1, initial, peak),
                    (float(2 * pct_start * T) - 2, peak, initial),
                    (T - 1, initial, low)]
        return [(float(pct_start * T) - 1, initial, peak), (T - 1, peak, low)]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            cos_out = math.cos(math.pi * pct) + 1
            return end + (start - end) / 2.0 * cos_out
        return (end - start) * pct + start

    def _at(self, t: int) -> float:
        if t > self.total_steps:
            raise ValueError(f"one-cycle schedule asked for step {t} of {self.total_steps} total steps")
        start_step = 0.0
        for i, (end_step, start_lr, end_lr) in enumerate(self.phases):
            if t <= end_step or i == len(self.phases) - 1:
                return self._anneal(start_lr, end_lr, (t - start_step) / (end_step - start_step))
            start_step = end_step
        raise AssertionError("unreachable")

    def _first(self):
        return self._at(0)

    def _next(self, t, lr):
        return self._at(t)


class ReduceLROnPlateau(Schedule):
    """Cut the lr by ``factor`` when the validation loss stops improving
    (``torch.optim.lr_scheduler.ReduceLROnPlateau``, mode ``min``).

    After each :meth:`observe(loss) <observe>` (once per epoch)::

        improved = loss < best * (1 - threshold)    (threshold_mode rel)
                   loss < best - threshold          (threshold_mode abs)
        if improved: best <- loss; bad <- 0   else: bad <- bad + 1       (NaN never improves)
        if in cooldown: cooldown <- cooldown - 1; bad <- 0
        if bad > patience: lr <- max(lr * factor, min_lr) unless that changes lr by <= eps;
                           cooldown <- cooldown_epochs; bad <- 0

    :meth:`lr` returns the current learning rate whatever the step.
    State: ``last_lr``, ``best``, ``num_bad_epochs``, ``cooldown_counter``, ``last_epoch``.
    """

    name = "plateau"
    #: The values of ``threshold_mode`` (the ``--plateau-threshold-mode`` choices).
    THRESHOLD_MODES = ("rel", "abs")
    _STATE = ("last_lr", "best", "num_bad_epochs", "cooldown_counter", "last_epoch")

    def __init__(self, base_lr: float, factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
                 threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8) -> None:
        super().__init__(base_lr)
        self.factor = _float("factor", factor, "in [0, 1)", lambda x: 0 <= x < 1)
        self.patience = _int("patience", patience, 0)
        self.threshold = _float("threshold", threshold, "finite and >= 0", lambda x: 0 <= x < math.inf)
        self.threshold_mode = _choice("threshold_mode", threshold_mode, self.THRESHOLD_MODES)
        self.cooldown = _int("cooldown", cooldown, 0)
        self.min_lr = _float("min_lr", min_lr, "finite and >= 0", lambda x: 0 <= x < math.inf)
        self.eps = _float("eps", eps, "finite and >= 0", lambda x: 0 <= x < math.inf)
        self.last_lr, self.best = self.base_lr, math.inf
        self.num_bad_epochs = self.cooldown_counter = self.last_epoch = 0

    def lr(self, step: int = 0) -> float:
        return self.last_lr

    def _is_better(self, loss: float) -> bool:
        if self.threshold_mode == "rel":
            return loss < self.best * (1.0 - self.threshold)
        return loss < self.best - self.threshold

    def observe(self, metric: float) -> None:
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            new_lr = max(self.last_lr * self.factor, self.min_lr)
            if self.last_lr - new_lr > self.eps:
                self.last_lr = new_lr
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def state(self) -> dict[str, np.ndarray]:
        """The counters as 0-d float64 arrays named as torch's attributes (``last_lr``: torch's ``_last_lr``)."""
        return {key: np.array(getattr(self, key), dtype=np.float64) for key in self._STATE}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if set(state) != set(self._STATE):
            raise ValueError(f"plateau schedule state must have {sorted(self._STATE)}, got {sorted(state)}")
        values = {key: float(np.asarray(state[key]).reshape(())) for key in self._STATE}
        self.last_lr, self.best = values["last_lr"], values["best"]
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = (
            int(values[k]) for k in ("num_bad_epochs", "cooldown_counter", "last_epoch"))


#: The schedules by name: the one list of them (the ``--lr-schedule`` choices and the settings' check).
SCHEDULES: dict[str, type[Schedule]] = {
    "none": Constant, "step": StepLR, "multistep": MultiStepLR, "exponential": ExponentialLR,
    "cosine": CosineAnnealingLR, "cyclic": CyclicLR, "onecycle": OneCycleLR, "plateau": ReduceLROnPlateau,
}
#: Kinds that cannot follow a warm-up: cyclic and onecycle set the lr from the first step (onecycle
#: has its own warm-up), and torch's SequentialLR refuses ReduceLROnPlateau.
_NO_WARMUP = ("cyclic", "onecycle", "plateau")


def parameters(name: str) -> dict[str, bool]:
    """The parameters of schedule ``name`` beyond ``base_lr``, each mapped to whether it is required
    (``parameters("cosine") == {"T_max": True, "eta_min": False}``). Warm-up's two are not listed."""
    _check(name in SCHEDULES, "name", "one of " + ", ".join(SCHEDULES), name)
    signature = inspect.signature(SCHEDULES[name].__init__).parameters
    return {key: p.default is inspect.Parameter.empty for key, p in signature.items()
            if key not in ("self", "base_lr")}


def make_schedule(name: str, base_lr: float, warmup_steps: int | None = 0,
                  warmup_start_factor: float | None = None, **params) -> Schedule:
    """Build schedule ``name`` (a key of :data:`SCHEDULES`) for learning rate ``base_lr``.

    ``params`` are the kind's parameters (see the table in the module docstring); ``None`` means
    "not given" (the default applies), so a caller may pass every setting it has. A parameter the
    kind does not take, a missing required one, a bad value or an unknown name raises
    :class:`~nnscratch.errors.ParameterError` naming the parameter.
    ``warmup_steps > 0`` puts a linear warm-up from ``warmup_start_factor * base_lr`` (default
    1/3, torch's) in front, as explained in the module docstring.
    """
    accepted = parameters(name)
    given = {k: v for k, v in params.items() if v is not None}
    for key in given:
        if key not in accepted:
            raise ParameterError(key, f"does not apply to the {name} schedule")
    for key, required in accepted.items():
        if required and key not in given:
            raise ParameterError(key, f"is required by the {name} schedule")
    schedule = SCHEDULES[name](base_lr, **given)
    warmup_steps = _int("warmup_steps", 0 if warmup_steps is None else warmup_steps, 0)
    if warmup_steps == 0:
        if warmup_start_factor is not None:
            raise ParameterError("warmup_start_factor", "needs a warm-up (warmup_steps > 0)")
        return schedule
    if name in _NO_WARMUP:
        raise ParameterError("warmup_steps", f"cannot be combined with the {name} schedule")
    start = 1.0 / 3 if warmup_start_factor is None else warmup_start_factor
    warmup = LinearLR(base_lr, start_factor=start, total_iters=warmup_steps)
    return warmup if name == "none" else SequentialLR(warmup, schedule, warmup_steps)

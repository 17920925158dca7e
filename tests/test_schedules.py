"""Learning-rate schedules against torch's schedulers, step by step (``get_last_lr()[0]``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as tl

from nnscratch.errors import ParameterError, UsageError
from nnscratch.training.schedules import SCHEDULES, ReduceLROnPlateau, make_schedule

STEPS = 300


def close(a: float, b: float) -> bool:
    """Equal to 1e-12, relative to the larger magnitude (absolute 1e-18 for values near 0)."""
    return abs(a - b) <= 1e-12 * max(abs(a), abs(b)) + 1e-18


def torch_lrs(build, base_lr: float, steps: int = STEPS) -> list[float]:
    """``get_last_lr()[0]`` of the scheduler ``build(optimizer)`` before each of ``steps`` steps."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    scheduler = build(opt)
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(steps - 1):
        opt.step()  # no gradient: changes nothing, but keeps torch's call-order check quiet
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


CASES = [  # (id, name, base_lr, our parameters, torch scheduler builder)
    ("step", "step", 0.1, {"step_size": 30, "gamma": 0.5},
     lambda o: tl.StepLR(o, step_size=30, gamma=0.5)),
    ("step-7", "step", 0.3, {"step_size": 7, "gamma": 0.9},
     lambda o: tl.StepLR(o, step_size=7, gamma=0.9)),
    ("multistep", "multistep", 0.1, {"milestones": [30, 80, 150], "gamma": 0.3},
     lambda o: tl.MultiStepLR(o, milestones=[30, 80, 150], gamma=0.3)),
    ("exponential", "exponential", 0.1, {"gamma": 0.98},
     lambda o: tl.ExponentialLR(o, gamma=0.98)),
    ("cosine", "cosine", 0.1, {"T_max": 300},
     lambda o: tl.CosineAnnealingLR(o, T_max=300)),
    ("cosine-past-T_max", "cosine", 0.1, {"T_max": 70, "eta_min": 1e-3},
     lambda o: tl.CosineAnnealingLR(o, T_max=70, eta_min=1e-3)),
    ("cyclic-triangular", "cyclic", 0.01, {"max_lr": 0.1, "step_size_up": 20, "step_size_down": 30},
     lambda o: tl.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=20, step_size_down=30, cycle_momentum=False)),
    ("cyclic-triangular2", "cyclic", 0.01, {"max_lr": 0.1, "step_size_up": 25, "mode": "triangular2"},
     lambda o: tl.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=25, mode="triangular2", cycle_momentum=False)),
    ("cyclic-exp_range", "cyclic", 0.01,
     {"max_lr": 0.1, "step_size_up": 15, "step_size_down": 10, "mode": "exp_range", "gamma": 0.995},
     lambda o: tl.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=15, step_size_down=10, mode="exp_range",
                           gamma=0.995, cycle_momentum=False)),
    ("onecycle", "onecycle", 0.1, {"total_steps": STEPS},
     lambda o: tl.OneCycleLR(o, max_lr=0.1, total_steps=STEPS, cycle_momentum=False)),
    ("onecycle-linear-three-phase", "onecycle", 0.2,
     {"total_steps": STEPS, "max_lr": 0.1, "pct_start": 0.25, "anneal_strategy": "linear", "div_factor": 10.0,
      "final_div_factor": 100.0, "three_phase": True},
     lambda o: tl.OneCycleLR(o, max_lr=0.1, total_steps=STEPS, pct_start=0.25, anneal_strategy="linear",
                             div_factor=10.0, final_div_factor=100.0, three_phase=True, cycle_momentum=False)),
    ("warmup", "none", 0.1, {"warmup_steps": 10, "warmup_start_factor": 0.1},
     lambda o: tl.LinearLR(o, start_factor=0.1, total_iters=10)),
    ("warmup-default-factor", "none", 0.05, {"warmup_steps": 25},
     lambda o: tl.LinearLR(o, total_iters=25)),
    ("warmup-cosine", "cosine", 0.1, {"warmup_steps": 10, "warmup_start_factor": 0.01, "T_max": 290, "eta_min": 1e-3},
     lambda o: tl.SequentialLR(o, [tl.LinearLR(o, start_factor=0.01, total_iters=10),
                                   tl.CosineAnnealingLR(o, T_max=290, eta_min=1e-3)], milestones=[10])),
    ("warmup-step", "step", 0.1, {"warmup_steps": 5, "warmup_start_factor": 0.2, "step_size": 40, "gamma": 0.5},
     lambda o: tl.SequentialLR(o, [tl.LinearLR(o, start_factor=0.2, total_iters=5),
                                   tl.StepLR(o, step_size=40, gamma=0.5)], milestones=[5])),
    ("warmup-multistep", "multistep", 0.1, {"warmup_steps": 8, "milestones": [50, 100]},
     lambda o: tl.SequentialLR(o, [tl.LinearLR(o, total_iters=8),
                                   tl.MultiStepLR(o, milestones=[50, 100])], milestones=[8])),
    ("warmup-exponential", "exponential", 0.1, {"warmup_steps": 20, "warmup_start_factor": 0.5, "gamma": 0.99},
     lambda o: tl.SequentialLR(o, [tl.LinearLR(o, start_factor=0.5, total_iters=20),
                                   tl.ExponentialLR(o, gamma=0.99)], milestones=[20])),
]


@pytest.mark.parametrize("name, base_lr, params, build", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_equals_torch_for_300_steps(name, base_lr, params, build):
    expected = torch_lrs(build, base_lr)
    schedule = make_schedule(name, base_lr, **params)
    ours = [schedule.lr(t) for t in range(STEPS)]
    bad = [(t, a, b) for t, (a, b) in enumerate(zip(ours, expected)) if not close(a, b)]
    assert not bad, f"first mismatches (step, ours, torch): {bad[:3]}"
    assert len(set(expected)) > 1 or name == "none"
    # asked out of order, the schedule replays its recursion and gives the same numbers
    for t in (150, 20, 299, 0, 151):
        assert schedule.lr(t) == ours[t]


def test_none_is_constant():
    schedule = make_schedule("none", 0.05)
    assert [schedule.lr(t) for t in range(STEPS)] == [0.05] * STEPS


def test_onecycle_ends_at_total_steps():
    expected = torch_lrs(lambda o: tl.OneCycleLR(o, max_lr=0.1, total_steps=50, cycle_momentum=False), 0.1, 51)
    schedule = make_schedule("onecycle", 0.1, total_steps=50)
    assert close(schedule.lr(50), expected[50])
    with pytest.raises(ValueError, match="step 51 of 50"):
        schedule.lr(51)


LOSSES = [1.0, 0.9, 0.95, 0.95, 0.95, 0.89, 0.9, 0.9, 0.9, 0.9, float("nan"), 0.7, 0.7, 0.69999, 0.7,
          0.71, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.55, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
PLATEAU_CASES = [  # (parameters, whether the lr drops on LOSSES)
    ({}, True),
    ({"factor": 0.5, "patience": 2, "threshold": 1e-2, "cooldown": 1, "min_lr": 0.01}, True),
    ({"factor": 0.3, "patience": 0, "threshold": 0.05, "threshold_mode": "abs"}, True),
    ({"factor": 0.9, "patience": 1, "threshold": 0.0, "cooldown": 3, "min_lr": 0.0999, "eps": 1e-3}, False),  # eps
    ({"factor": 0.9, "patience": 1, "threshold": 0.0, "cooldown": 3, "min_lr": 0.05}, True),
    ({"factor": 0.5, "patience": 2, "threshold": 0.0, "threshold_mode": "abs"}, True),  # equal is not better
]


@pytest.mark.parametrize("params, drops", PLATEAU_CASES)
def test_plateau_equals_torch(params, drops):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    theirs = tl.ReduceLROnPlateau(opt, mode="min", **params)
    ours = make_schedule("plateau", 0.1, **params)
    lrs = []
    for loss in LOSSES * 2:
        theirs.step(loss)
        ours.observe(loss)
        assert ours.lr(123) == theirs.get_last_lr()[0]
        assert (ours.best, ours.num_bad_epochs, ours.cooldown_counter) == (
            theirs.best, theirs.num_bad_epochs, theirs.cooldown_counter) or math.isnan(loss)
        lrs.append(ours.lr(0))
    assert (len(set(lrs)) > 1) == drops


def test_plateau_state_round_trip():
    whole = ReduceLROnPlateau(0.1, factor=0.5, patience=1, cooldown=2)
    for loss in LOSSES:
        whole.observe(loss)
    first = ReduceLROnPlateau(0.1, factor=0.5, patience=1, cooldown=2)
    for loss in LOSSES[:13]:
        first.observe(loss)
    resumed = ReduceLROnPlateau(0.1, factor=0.5, patience=1, cooldown=2)
    resumed.load_state(first.state())
    for loss in LOSSES[13:]:
        resumed.observe(loss)
    assert resumed.state().keys() == whole.state().keys()
    for key, value in whole.state().items():
        np.testing.assert_array_equal(resumed.state()[key], value)
    with pytest.raises(ValueError, match="last_lr"):
        resumed.load_state({"best": np.array(1.0)})


def test_stateless_schedules_have_empty_state():
    schedule = make_schedule("cosine", 0.1, T_max=10)
    assert schedule.state() == {}
    schedule.load_state({})
    with pytest.raises(ValueError):
        schedule.load_state({"last_epoch": np.array(3.0)})


def test_observe_is_a_no_op_except_for_plateau():
    schedule = make_schedule("step", 0.1, step_size=2)
    schedule.observe(float("nan"))
    assert schedule.lr(2) == 0.1 * 0.1


def test_none_means_default():
    schedule = make_schedule("step", 0.1, step_size=5, gamma=None, warmup_steps=None, warmup_start_factor=None,
                             milestones=None)
    assert schedule.gamma == 0.1


INVALID = [  # (name, base_lr, parameters, what the message starts with: the parameter, as it is passed)
    ("nope", 0.1, {}, "name"),
    ("cosine", -0.1, {"T_max": 10}, "base_lr"),
    ("cosine", float("nan"), {"T_max": 10}, "base_lr"),
    ("step", 0.1, {}, "step_size is required by the step schedule"),
    ("step", 0.1, {"step_size": 0}, "step_size"),
    ("step", 0.1, {"step_size": 2.5}, "step_size"),
    ("step", 0.1, {"step_size": 2, "gamma": 0.0}, "gamma"),
    ("multistep", 0.1, {"milestones": [5, 3]}, "milestones"),
    ("multistep", 0.1, {"milestones": []}, "milestones"),
    ("exponential", 0.1, {"gamma": -1.0}, "gamma"),
    ("exponential", 0.1, {"gamma": "fast"}, "gamma"),
    ("cosine", 0.1, {"T_max": 0}, "T_max"),
    ("cosine", 0.1, {"T_max": 10, "eta_min": -1.0}, "eta_min"),
    ("cosine", 0.1, {"T_max": 10, "step_size": 3}, "step_size does not apply to the cosine schedule"),
    ("cyclic", 0.01, {"max_lr": 0.1, "mode": "zigzag"}, "mode"),
    ("cyclic", 0.01, {"max_lr": 0.1, "step_size_up": 0}, "step_size_up"),
    ("cyclic", 0.01, {"max_lr": 0.1, "step_size_down": -2}, "step_size_down"),
    ("onecycle", 0.1, {"total_steps": 100, "pct_start": 1.5}, "pct_start"),
    ("onecycle", 0.1, {"total_steps": 100, "anneal_strategy": "exp"}, "anneal_strategy"),
    ("onecycle", 0.1, {"total_steps": 10, "pct_start": 0.1}, "pct_start"),  # torch: ZeroDivisionError
    ("onecycle", 0.1, {"total_steps": 0}, "total_steps"),
    ("plateau", 0.1, {"factor": 1.0}, "factor"),
    ("plateau", 0.1, {"patience": -1}, "patience"),
    ("plateau", 0.1, {"threshold_mode": "foo"}, "threshold_mode"),
    ("cosine", 0.1, {"T_max": 10, "warmup_steps": -1}, "warmup_steps"),
    ("cosine", 0.1, {"T_max": 10, "warmup_steps": 5, "warmup_start_factor": 0.0}, "warmup_start_factor"),
    ("cosine", 0.1, {"T_max": 10, "warmup_start_factor": 0.5}, "warmup_start_factor"),
    ("onecycle", 0.1, {"total_steps": 100, "warmup_steps": 5}, "warmup_steps"),
    ("plateau", 0.1, {"warmup_steps": 5}, "warmup_steps"),
]


@pytest.mark.parametrize("name, base_lr, params, start", INVALID)
def test_invalid_parameters_name_the_parameter(name, base_lr, params, start):
    """Called from Python, a schedule names its own parameter (``T_max``), never a flag."""
    with pytest.raises(ParameterError) as info:
        make_schedule(name, base_lr, **params)
    message = str(info.value)
    assert message.startswith(start + ("" if " " in start else " ")) and "\n" not in message
    assert "--" not in message


#: (settings, the flag the settings layer's message starts with): the same problems through RunConfig
#: (the CLI and the API's keyword settings) name the flag, through config.SCHEDULE_PARAMETERS.
FLAG_CASES = [
    ({"lr_schedule": "step", "lr_step_size": 2, "lr_gamma": 0.0}, "--lr-gamma must be > 0"),
    ({"lr_schedule": "cosine", "min_lr": -1.0}, "--min-lr must be"),
    ({"lr_schedule": "cyclic"}, "--lr-schedule cyclic needs --max-lr"),
    ({"lr_schedule": "cyclic", "max_lr": 0.1, "lr_gamma": -1.0}, "--lr-gamma must be > 0"),
    ({"lr_schedule": "onecycle", "pct_start": 1.5}, "--pct-start must be"),
    ({"lr_schedule": "onecycle", "total_steps": 10, "pct_start": 0.1}, "--pct-start 0.1 gives"),
    ({"lr_schedule": "plateau", "plateau_factor": 1.0}, "--plateau-factor must be"),
    ({"lr_schedule": "plateau", "min_lr": -1.0}, "--min-lr must be"),
    ({"lr_schedule": "plateau", "plateau_eps": -1.0}, "--plateau-eps must be"),
    ({"lr_schedule": "cosine", "lr_step_size": 3}, "--lr-step-size does not apply to --lr-schedule cosine"),
    ({"lr_schedule": "none", "lr_gamma": 0.5}, "--lr-gamma does not apply to --lr-schedule none"),
    ({"lr_schedule": "plateau", "warmup_steps": 5}, "--warmup-steps cannot be combined with the plateau schedule"),
    ({"warmup_start_factor": 0.5}, "--warmup-start-factor needs a warm-up"),
    ({"lr_schedule": "cosine", "warmup_steps": 5}, "--warmup-steps counts optimisation steps (batches), "
                                                   "but --lr-schedule cosine advances once per epoch"),
    ({"lr_schedule": "step", "lr_step_size": 3, "warmup_steps": 5, "lr_schedule_unit": "epoch"},
     "--warmup-steps counts optimisation steps"),
]


@pytest.mark.parametrize("settings, start", FLAG_CASES)
def test_the_settings_name_the_flag(settings, start):
    from nnscratch.run.config import RunConfig

    with pytest.raises(UsageError) as info:
        RunConfig(**settings)
    assert str(info.value).startswith(start) and "\n" not in str(info.value), str(info.value)


def test_warmup_with_a_per_step_schedule_is_accepted():
    """The fix the refusal names works: warm-up steps and the schedule's units are both batches."""
    from nnscratch.run.config import RunConfig

    cfg = RunConfig(epochs=2, lr_schedule="cosine", warmup_steps=30, lr_schedule_unit="step")
    schedule = cfg.make_schedule(steps_per_epoch=100)
    assert schedule.lr(0) == pytest.approx(0.01 / 3) and schedule.lr(30) == pytest.approx(0.01)
    assert schedule.second.T_max == 170  # 200 steps of the run less the 30 of the warm-up
    assert "--warmup-steps 30" in cfg.describe() and "--lr-schedule-unit step" in cfg.describe()


def test_every_config_key_of_a_schedule_reaches_a_parameter():
    """config.SCHEDULE_PARAMETERS names only parameters some schedule has, and covers them all."""
    from nnscratch.run.config import SCHEDULE_PARAMETERS
    from nnscratch.training.schedules import parameters

    mapped = {p for names in SCHEDULE_PARAMETERS.values() for p in names}
    every = {p for name in SCHEDULES for p in parameters(name)}
    assert mapped == every


def test_registry_names():
    assert set(SCHEDULES) == {"none", "step", "multistep", "exponential", "cosine", "cyclic", "onecycle",
                              "plateau"}

"""The NumPy optimizers against torch's own (``foreach=False``), step by step, in float64.

Each test feeds the same random parameters, random gradients and a learning rate that changes
every step to both optimizers, and compares parameters and every state array (by torch's state
names) with the norm-based relative error of :func:`helpers.rel_error`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import rel_error
from optimizer_cases import CASES, IDS
from nnscratch.errors import ParameterError, UsageError
from nnscratch.numpy_engine.optimizers import OPTIMIZERS, SGD, Adam, AdamW, RMSprop, make_optimizer

SHAPES = {"0.weight": (7, 5), "0.bias": (7,), "1.weight": (3, 7)}
TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
         "rmsprop": torch.optim.RMSprop}
STEPS = 50

def random_params(seed: int, dtype=np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def random_grads(seed: int, steps: int, dtype=np.float64) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed + 1000)
    return [{name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}
            for _ in range(steps)]


def learning_rates(steps: int) -> list[float]:
    """A learning rate that changes every step (so that torch's lr is set each step too)."""
    return [0.05 * (1.0 + 0.5 * np.sin(t)) for t in range(steps)]


def run_ours(name, hp, params, grads, lrs):
    opt = make_optimizer(name, params, **hp)
    for g, lr in zip(grads, lrs):
        opt.step({k: v.copy() for k, v in g.items()}, lr)
    return opt


def run_torch(name, hp, params, grads, lrs):
    """The same run in torch; returns the final parameters and the state by our naming."""
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = TORCH[name](list(tensors.values()), lr=lrs[0], foreach=False, **hp)
    for g, lr in zip(grads, lrs):
        for k, p in tensors.items():
            p.grad = torch.tensor(g[k])
        opt.param_groups[0]["lr"] = lr
        opt.step()
    state = {f"{k}.{key}": value.detach().numpy()
             for k, p in tensors.items() for key, value in opt.state[p].items()}
    return {k: p.detach().numpy() for k, p in tensors.items()}, state


@pytest.mark.parametrize("name, hp", CASES, ids=IDS)
def test_equals_torch(name, hp):
    params, grads, lrs = random_params(0), random_grads(0, STEPS), learning_rates(STEPS)
    torch_params, torch_state = run_torch(name, hp, params, grads, lrs)
    ours = {k: v.copy() for k, v in params.items()}
    opt = run_ours(name, hp, ours, grads, lrs)
    for k in SHAPES:
        assert rel_error(ours[k], torch_params[k]) < 1e-10, k
        assert not np.array_equal(ours[k], params[k]), "the parameters did not move"
    state = opt.state()
    assert sorted(state) == sorted(torch_state), "state names differ from torch's"
    for key, value in state.items():
        assert value.shape == torch_state[key].shape, key
        assert rel_error(value, torch_state[key]) < 1e-10, key


@pytest.mark.parametrize("name, hp", CASES, ids=IDS)
def test_state_round_trip_is_exact(name, hp):
    params, grads, lrs = random_params(1), random_grads(1, STEPS), learning_rates(STEPS)
    whole = {k: v.copy() for k, v in params.items()}
    whole_opt = run_ours(name, hp, whole, grads, lrs)

    first = {k: v.copy() for k, v in params.items()}
    saved = run_ours(name, hp, first, grads[:25], lrs[:25]).state()
    resumed = {k: v.copy() for k, v in first.items()}
    opt = make_optimizer(name, resumed, **hp)
    opt.load_state(saved)
    for g, lr in zip(grads[25:], lrs[25:]):
        opt.step({k: v.copy() for k, v in g.items()}, lr)

    for k in SHAPES:
        np.testing.assert_array_equal(resumed[k], whole[k])
    assert opt.state().keys() == whole_opt.state().keys()
    for key, value in whole_opt.state().items():
        np.testing.assert_array_equal(opt.state()[key], value)


def test_state_is_a_copy_and_empty_before_the_first_step():
    params = random_params(2)
    opt = Adam(params)
    assert opt.state() == {}
    opt.step(random_grads(2, 1)[0], 0.1)
    state = opt.state()
    assert state["0.weight.step"].shape == () and state["0.weight.step"] == 1
    state["0.weight.exp_avg"][...] = 123.0
    assert not np.any(opt.state()["0.weight.exp_avg"] == 123.0)


def test_load_empty_state_resets():
    params = random_params(3)
    opt = SGD(params, momentum=0.9)
    opt.step(random_grads(3, 1)[0], 0.1)
    opt.load_state({})
    assert opt.steps == 0 and opt.state() == {}


@pytest.mark.parametrize("name, hp", [("sgd", {}), ("adam", {"amsgrad": True}), ("rmsprop", {"centered": True})])
def test_float32_stays_float32_and_matches_torch(name, hp):
    params, grads, lrs = random_params(4, np.float32), random_grads(4, 10, np.float32), learning_rates(10)
    torch_params, _ = run_torch(name, hp, params, grads, lrs)
    ours = {k: v.copy() for k, v in params.items()}
    opt = run_ours(name, hp, ours, grads, lrs)
    for k in SHAPES:
        assert ours[k].dtype == np.float32
        assert rel_error(ours[k], torch_params[k]) < 1e-5, k
    assert all(v.dtype == np.float32 for v in opt.state().values())


def test_params_are_updated_in_place():
    params = random_params(5)
    arrays = dict(params)
    opt = Adam(params)
    opt.step(random_grads(5, 1)[0], 0.1)
    assert all(opt.params[k] is arrays[k] for k in SHAPES)


@pytest.mark.parametrize("cls, hp, fused", [
    (SGD, {}, True),
    (SGD, {"momentum": 0.9}, False),
    (SGD, {"weight_decay": 1e-4}, False),
    (Adam, {}, False),
    (AdamW, {}, False),
    (RMSprop, {}, False),
])
def test_fused_only_for_plain_sgd(cls, hp, fused):
    assert cls(random_params(6), **hp).fused is fused


def test_registry_and_none_means_default():
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop"}
    opt = make_optimizer("adamw", random_params(7), betas=None, eps=None, weight_decay=None)
    assert isinstance(opt, AdamW) and opt.weight_decay == 1e-2 and opt.betas == (0.9, 0.999)


INVALID = [  # (optimizer, hyperparameters, parameter the message names, torch rejects it too)
    ("sgd", {"momentum": -0.5}, "momentum", True),
    ("sgd", {"weight_decay": -1.0}, "weight_decay", True),
    ("sgd", {"nesterov": True}, "nesterov", True),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "nesterov", True),
    ("adam", {"betas": (1.0, 0.999)}, "betas", True),
    ("adam", {"betas": (0.9, -0.1)}, "betas", True),
    ("adam", {"eps": -1e-8}, "eps", True),
    ("adam", {"eps": float("nan")}, "eps", True),
    ("adam", {"weight_decay": -0.1}, "weight_decay", True),
    ("adamw", {"betas": (0.9, 1.5)}, "betas", True),
    ("rmsprop", {"alpha": -0.1}, "alpha", True),
    ("rmsprop", {"alpha": 1.5}, "alpha", False),  # ours is stricter: alpha > 1 makes v negative
    ("rmsprop", {"momentum": -0.1}, "momentum", True),
    ("rmsprop", {"eps": -1.0}, "eps", True),
    ("rmsprop", {"weight_decay": -1.0}, "weight_decay", True),
]


@pytest.mark.parametrize("name, hp, parameter, torch_rejects", INVALID)
def test_invalid_hyperparameters_name_the_parameter(name, hp, parameter, torch_rejects):
    """Called from Python, the message names the parameter one passed (not a command-line flag)."""
    with pytest.raises(ParameterError) as info:
        make_optimizer(name, random_params(8), **hp)
    message = str(info.value)
    assert info.value.parameter == parameter and message.startswith(parameter + " ") and "\n" not in message
    assert "--" not in message
    if torch_rejects:
        with pytest.raises(ValueError):
            TORCH[name]([torch.zeros(2, requires_grad=True)], lr=0.1, **hp)


def test_unknown_optimizer_and_foreign_hyperparameter():
    with pytest.raises(ParameterError, match="^name must be one of sgd, adam, adamw, rmsprop"):
        make_optimizer("lbfgs", random_params(9))
    with pytest.raises(ParameterError, match="^betas does not apply to optimizer sgd"):
        make_optimizer("sgd", random_params(9), betas=(0.9, 0.99))


@pytest.mark.parametrize("name, hp, parameter, torch_rejects", INVALID)
def test_the_settings_name_the_flag(name, hp, parameter, torch_rejects):
    """Through the settings (what the CLI and the API's keyword settings go through) the same
    problem names the flag: ``--weight-decay must be >= 0``."""
    from nnscratch.run.config import RunConfig

    with pytest.raises(UsageError) as info:
        RunConfig(optimizer=name, **hp)
    assert str(info.value).startswith("--" + parameter.replace("_", "-") + " "), str(info.value)



def test_load_state_rejects_wrong_names_and_shapes():
    params = random_params(10)
    opt = Adam(params)
    opt.step(random_grads(10, 1)[0], 0.1)
    state = opt.state()
    fresh = Adam(random_params(10))

    renamed = dict(state)
    renamed["0.weight.exp_avgs"] = renamed.pop("0.weight.exp_avg")
    with pytest.raises(ValueError, match=r"missing \['0.weight.exp_avg'\], unexpected \['0.weight.exp_avgs'\]"):
        fresh.load_state(renamed)

    reshaped = dict(state)
    reshaped["1.weight.exp_avg_sq"] = np.zeros((7, 3))
    with pytest.raises(ValueError, match=r"1.weight.exp_avg_sq \(7, 3\)"):
        fresh.load_state(reshaped)
    assert fresh.state() == {}, "a failed load must leave the optimizer untouched"

    with pytest.raises(ValueError, match="max_exp_avg_sq"):  # AMSGrad state into plain Adam
        Adam(random_params(10), amsgrad=True).load_state(state)


def test_sgd_momentum_hand_computed():
    """Two steps by hand: the buffer starts at the gradient, dampening applies from step 2."""
    p = {"w": np.array([1.0, -2.0])}
    opt = SGD(p, momentum=0.9, dampening=0.5)
    opt.step({"w": np.array([0.5, 1.0])}, lr=0.1)     # b = g = [0.5, 1];  p = p - 0.1 b
    np.testing.assert_allclose(p["w"], [0.95, -2.1])
    opt.step({"w": np.array([1.0, 0.0])}, lr=0.1)     # b = 0.9 b + 0.5 g = [0.95, 0.9]
    np.testing.assert_allclose(p["w"], [0.95 - 0.095, -2.1 - 0.09])


def test_adam_first_step_hand_computed():
    """At t = 1 the bias corrections make the step exactly lr * g / (|g| + eps')."""
    p = {"w": np.array([0.0, 0.0])}
    Adam(p, eps=0.0).step({"w": np.array([3.0, -0.5])}, lr=0.01)
    np.testing.assert_allclose(p["w"], [-0.01, 0.01], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_state_is_flushed_every_few_steps(dtype):
    """Moving averages that decay into subnormal numbers (slow on x86) are set to 0 every
    FLUSH_SUBNORMALS_EVERY steps; normal entries are left exactly as they were."""
    from nnscratch.numpy_engine.optimizers import FLUSH_SUBNORMALS_EVERY

    tiny = np.finfo(dtype).tiny
    params = {"w": np.ones((4, 5), dtype=dtype)}
    opt = make_optimizer("sgd", params, momentum=0.99)
    grads = lambda: {"w": np.zeros((4, 5), dtype=dtype)}  # noqa: E731
    opt.step({"w": np.full((4, 5), 1.0, dtype=dtype)}, 0.1)
    buf = opt._state["w"]["momentum_buffer"]
    buf[0, 0] = tiny / 4          # subnormal: decays further, never below the flush
    buf[1, 1] = 3.0               # normal: must survive untouched (apart from the decay)
    for _ in range(FLUSH_SUBNORMALS_EVERY - 2):
        opt.step(grads(), 0.1)
    assert 0 < buf[0, 0] < tiny   # still subnormal one step before the flush
    expected = buf[1, 1] * dtype(0.99)
    opt.step(grads(), 0.1)        # step FLUSH_SUBNORMALS_EVERY
    assert opt.steps % FLUSH_SUBNORMALS_EVERY == 0
    assert buf[0, 0] == 0 and not np.any((buf != 0) & (np.abs(buf) < tiny))
    assert buf[1, 1] == expected

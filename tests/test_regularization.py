"""Weight penalties (central differences), gradient clipping (against torch) and early stopping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import numerical_gradient, rel_error
from nnscratch.training.early_stopping import EarlyStopping
from nnscratch.errors import UsageError
from nnscratch.training.regularization import add_penalty_gradient, clip_grad_norm, penalty

SHAPES = {"0.weight": (6, 4), "0.bias": (6,), "1.weight": (3, 6)}


def random_arrays(seed: int, dtype=np.float64, away_from_zero: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in SHAPES.items():
        a = rng.standard_normal(shape)
        if away_from_zero:  # |θ| >= 0.1, so that ±h never crosses the kink of |θ| at 0
            a = np.sign(a) * (0.1 + np.abs(a))
        out[name] = a.astype(dtype)
    return out


# -- penalty -----------------------------------------------------------------------------------

def test_penalty_hand_computed():
    params = {"w": np.array([[1.0, -2.0]]), "b": np.array([0.5])}
    # l1 (1 + 2 + 0.5) + l2 (1 + 4 + 0.25), no 1/2 in front of the square
    assert penalty(params, l1=0.1, l2=0.2) == pytest.approx(0.1 * 3.5 + 0.2 * 5.25, rel=1e-15)
    assert penalty(list(params.values()), l1=0.1, l2=0.0) == pytest.approx(0.35, rel=1e-15)
    assert penalty(params, 0.0, 0.0) == 0.0


@pytest.mark.parametrize("l1, l2", [(0.3, 0.0), (0.0, 0.7), (0.3, 0.7)])
def test_penalty_gradient_matches_central_differences(l1, l2):
    params = random_arrays(0, away_from_zero=True)
    grads = {name: np.zeros_like(p) for name, p in params.items()}
    add_penalty_gradient(params, grads, l1, l2)
    for name, p in params.items():
        numeric = numerical_gradient(lambda: penalty(params, l1, l2), p)
        assert rel_error(grads[name], numeric) < 1e-8, name


def test_penalty_gradient_adds_to_existing_gradient():
    params = random_arrays(1)
    grads = random_arrays(2)
    expected = {k: grads[k] + 0.3 * np.sign(params[k]) + 2 * 0.7 * params[k] for k in SHAPES}
    add_penalty_gradient(params, grads, 0.3, 0.7)
    for k in SHAPES:
        np.testing.assert_allclose(grads[k], expected[k], rtol=1e-15)


def test_penalty_of_float32_is_computed_in_float64():
    params32 = random_arrays(3, np.float32)
    params64 = {k: v.astype(np.float64) for k, v in params32.items()}
    assert isinstance(penalty(params32, 0.3, 0.7), float)
    assert penalty(params32, 0.3, 0.7) == pytest.approx(penalty(params64, 0.3, 0.7), rel=1e-14)


@pytest.mark.parametrize("l1, l2, name", [(-0.1, 0.0, "l1"), (0.0, -1.0, "l2"), (float("nan"), 0.0, "l1")])
def test_negative_coefficients_name_the_parameter(l1, l2, name):
    """The library names its parameter (``l1 must ...``); the settings layer says the flag."""
    from nnscratch.api import config
    from nnscratch.errors import ParameterError

    with pytest.raises(ParameterError, match=f"^{name} must be a finite number >= 0"):
        penalty(random_arrays(4), l1, l2)
    with pytest.raises(ParameterError, match=f"^{name} "):
        add_penalty_gradient(random_arrays(4), random_arrays(5), l1, l2)
    with pytest.raises(UsageError, match=f"^--{name} must be"):
        config(l1=l1, l2=l2)


# -- gradient clipping -------------------------------------------------------------------------

@pytest.mark.parametrize("max_norm", [0.5, 3.0, 5.5, 1e6])
def test_clip_grad_norm_equals_torch(max_norm):
    grads = random_arrays(6)
    tensors = [torch.zeros(shape, dtype=torch.float64, requires_grad=True) for shape in SHAPES.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    expected_norm = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm, foreach=False))

    ours = {k: v.copy() for k, v in grads.items()}
    norm = clip_grad_norm(ours, max_norm)
    assert norm == pytest.approx(expected_norm, rel=1e-14)
    for t, (k, g) in zip(tensors, ours.items()):
        assert rel_error(g, t.grad.numpy()) < 1e-14, k
    clipped = math.sqrt(sum(float(np.sum(g ** 2)) for g in ours.values()))
    if max_norm < norm:
        assert clipped == pytest.approx(max_norm, rel=1e-5) and clipped < max_norm
    else:
        for k in SHAPES:
            np.testing.assert_array_equal(ours[k], grads[k])


def test_clip_grad_norm_float32_stays_float32():
    grads = random_arrays(7, np.float32)
    norm = clip_grad_norm(grads, 0.5)
    assert norm > 0.5 and all(g.dtype == np.float32 for g in grads.values())


def test_clip_grad_norm_rejects_bad_max_norm():
    with pytest.raises(UsageError, match="^max_norm must be a finite number > 0"):
        clip_grad_norm(random_arrays(8), 0.0)


# -- early stopping ----------------------------------------------------------------------------

def run(stopper: EarlyStopping, losses: list[float]) -> int | None:
    """Feed epochs 1, 2, ... until ``update`` says stop; return that epoch (None if never)."""
    for epoch, loss in enumerate(losses, start=1):
        if stopper.update(epoch, loss):
            return epoch
    return None


CURVE = [0.90, 0.50, 0.30, 0.20, 0.15, 0.12, 0.10, 0.085, 0.0712, 0.0713, 0.072, 0.075, 0.08, 0.09]


def test_stops_after_patience_epochs_without_improvement():
    stopper = EarlyStopping(patience=3)
    assert run(stopper, CURVE) == 12
    assert (stopper.best_epoch, stopper.best_loss, stopper.stopped_epoch) == (9, 0.0712, 12)
    assert stopper.reason == ("stopped after epoch 12: validation loss did not improve by more than 0 "
                              "for 3 epochs; best 0.0712 at epoch 9")


def test_min_delta_makes_small_gains_count_as_none():
    # against the best (not the previous) loss: epoch 7 gains 0.02 on 0.12 (no), epoch 8 0.035 (yes),
    # epoch 9 gains 0.0138 on 0.085 (no), then 10 and 11 are worse: stop after 11, best at 8
    stopper = EarlyStopping(patience=3, min_delta=0.025)
    assert run(stopper, CURVE) == 11
    assert (stopper.best_epoch, stopper.best_loss) == (8, 0.085)
    assert "by more than 0.025 for 3 epochs; best 0.085 at epoch 8" in stopper.reason


def test_nan_counts_as_no_improvement():
    stopper = EarlyStopping(patience=2)
    assert run(stopper, [1.0, 0.8, float("nan"), 0.7, float("nan"), float("nan"), 0.1]) == 6
    assert (stopper.best_epoch, stopper.best_loss) == (4, 0.7)


def test_no_stop_on_an_improving_curve_and_reason_says_so():
    stopper = EarlyStopping(patience=2)
    assert run(stopper, [1.0, 0.9, 0.95, 0.8, 0.85, 0.7]) is None
    assert stopper.stopped_epoch is None and stopper.best_epoch == 6
    assert stopper.reason == "did not stop early; best 0.7 at epoch 6"


def test_early_stopping_state_round_trip():
    whole, first = EarlyStopping(patience=3), EarlyStopping(patience=3)
    run(whole, CURVE)
    run(first, CURVE[:10])
    resumed = EarlyStopping(patience=3)
    resumed.load_state(first.state())
    stop = [epoch for epoch, loss in enumerate(CURVE[10:], start=11) if resumed.update(epoch, loss)]
    assert stop[0] == whole.stopped_epoch == resumed.stopped_epoch
    assert resumed.reason == whole.reason


@pytest.mark.parametrize("kwargs, name", [({"patience": 0}, "patience"), ({"patience": 2.5}, "patience"),
                                          ({"patience": 3, "min_delta": -0.1}, "min_delta")])
def test_early_stopping_rejects_bad_settings(kwargs, name):
    """Named as the class's parameters; the settings check the flags first (``--early-stopping 0``)."""
    with pytest.raises(UsageError, match=f"^{name} must be"):
        EarlyStopping(**kwargs)

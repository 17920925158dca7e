"""The full training step of both twins with everything on: a deep net (GELU, batch norm, shared
dropout masks), Adam/AdamW/RMSprop/SGD-momentum with weight decay, warm-up + cosine schedule,
L1/L2 penalties, gradient clipping; exact resume through ``state()``/``load_state()``; early stopping.
All float64 on 2,000 real MNIST images, against the torch twin (torch's own optimizers and
``clip_grad_norm_``) as the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import rel_error
from nnscratch.run.config import RunConfig
from nnscratch.data.preprocess import to_features
from nnscratch.training.early_stopping import EarlyStopping
from nnscratch.engines import make_engine
from nnscratch.model.registry import dropout_layers, initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.training.loop import ScheduleCursor
from nnscratch.training.streams import init_rng
from nnscratch.training.trainer import fit

N_TRAIN, BATCH = 2000, 64
DEEP = mlp_spec(hidden=(256, 128), activation="gelu", batch_norm=True, dropout=0.2)


@pytest.fixture(scope="module")
def data(mnist):
    return (to_features(mnist.train_images[:N_TRAIN], np.float64), mnist.train_labels[:N_TRAIN].astype(np.int64),
            to_features(mnist.val_images[:2000], np.float64), mnist.val_labels[:2000].astype(np.int64))


def _run(data, engine: str, cfg: RunConfig, epochs: int = 1, spec=DEEP, stopper=None):
    x, y, xv, yv = data
    initial = initial_state(spec, init_rng(0))
    steps = -(-N_TRAIN // BATCH)
    eng = make_engine(engine, spec, initial, np.float64, device="cpu", optimizer=cfg.optimizer,
                      optimizer_options=cfg.optimizer_options(), l1=cfg.l1, l2=cfg.l2,
                      clip_grad_norm=cfg.clip_grad_norm)
    rate = ScheduleCursor(cfg.make_schedule(steps), cfg.schedule_unit())
    history = fit(eng, (x, y), (xv, yv), seed=0, epochs=epochs, batch_size=BATCH, num_classes=10, lr=rate,
                  dropout=dropout_layers(spec), early_stopping=stopper)
    return eng, history


CONFIGS = {
    "adamw-warmup-cosine-clip": RunConfig(epochs=1, optimizer="adamw", lr=2e-3, weight_decay=0.05, lr_schedule="cosine",
                                          warmup_steps=5, lr_schedule_unit="step", clip_grad_norm=0.5),
    "adam-amsgrad-l1-l2": RunConfig(epochs=1, optimizer="adam", lr=1e-3, amsgrad=True, weight_decay=1e-4, l1=1e-6, l2=1e-5),
    "sgd-nesterov-step": RunConfig(epochs=1, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4,
                                   lr_schedule="step", lr_step_size=10, lr_gamma=0.5, lr_schedule_unit="step"),
    "rmsprop-centered-onecycle": RunConfig(epochs=1, optimizer="rmsprop", lr=1e-3, centered=True, momentum=0.5,
                                           lr_schedule="onecycle"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_twins_agree_with_every_training_option(data, name):
    cfg = CONFIGS[name]
    (ea, ha), (eb, hb) = _run(data, "numpy", cfg), _run(data, "torch", cfg)
    assert not ea.fused  # these options need the explicit gradient
    la, lb = np.asarray(ha.step_loss), np.asarray(hb.step_loss)
    assert len(la) == 32 and float(np.max(np.abs(la - lb) / np.abs(lb))) < 1e-10
    assert ha.step_lr == hb.step_lr and len(set(ha.step_lr)) > (1 if cfg.lr_schedule != "none" else 0)
    sa, sb = ea.state(), eb.state()
    assert sorted(sa) == sorted(sb)
    assert any(k.startswith("optimizer.") for k in sa)
    for key in sa:
        if np.asarray(sa[key]).dtype.kind == "f":
            assert rel_error(sa[key], sb[key]) < 1e-10, key
        else:
            np.testing.assert_array_equal(sa[key], sb[key])
    assert ha.epochs[0].val_loss == pytest.approx(hb.epochs[0].val_loss, rel=1e-10)


def test_step_learning_rates_are_torchs_scheduler_values(data):
    """The rates the loop hands both engines (warm-up then cosine, per step) equal torch's scheduler."""
    import torch

    cfg = CONFIGS["adamw-warmup-cosine-clip"]
    _, history = _run(data, "numpy", cfg)
    opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / 3, total_iters=5)
    cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=32 - 5)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[5])
    expected = []
    for _ in range(32):
        expected.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    np.testing.assert_allclose(history.step_lr, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_state_round_trip_resumes_exactly(data, engine):
    """Train 20 steps, save state(), load it into a fresh engine, train 12 more: the same as 32 in a row."""
    x, y, _, _ = data
    cfg = CONFIGS["adamw-warmup-cosine-clip"]
    spec = mlp_spec(hidden=(64,), batch_norm=True, activation="elu")
    rng = np.random.default_rng(3)
    batches = [(rng.integers(0, N_TRAIN, BATCH)) for _ in range(32)]
    initial = initial_state(spec, np.random.default_rng(0))

    def build():
        return make_engine(engine, spec, initial, np.float64, device="cpu", optimizer="adamw",
                           optimizer_options=cfg.optimizer_options(), clip_grad_norm=0.5)

    def steps(eng, idx):
        for k in idx:
            eng.train_step(x[batches[k]], y[batches[k]], 1e-3 * (1 + k % 3))

    straight = build()
    steps(straight, range(32))
    first = build()
    steps(first, range(20))
    saved = first.state()
    resumed = build()
    resumed.load_state(saved)
    assert resumed.steps == 20
    steps(resumed, range(20, 32))
    a, b = straight.state(), resumed.state()
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_early_stopping_stops_and_restores_the_best_epoch(data):
    """A learning rate far too high makes the validation loss climb: training stops after
    ``patience`` bad epochs and the weights of the best epoch come back."""
    spec = mlp_spec(hidden=(32,))
    cfg = RunConfig(lr=0.5, optimizer="sgd", momentum=0.9)
    best_states = {}

    class Recorder(EarlyStopping):
        def update(self, epoch, val_loss):
            stop = super().update(epoch, val_loss)
            best_states[epoch] = val_loss
            return stop

    stopper = Recorder(patience=2)
    eng, history = _run(data, "numpy", cfg, epochs=12, spec=spec, stopper=stopper)
    es = history.early_stopping
    assert es["stopped_epoch"] is not None and len(history.epochs) == es["stopped_epoch"] < 12
    assert es["best_epoch"] == int(np.nanargmin([r.val_loss for r in history.epochs])) + 1
    assert es["stopped_epoch"] - es["best_epoch"] == 2
    assert es["restored_best"] and "restored" in es["reason"]
    # the engine now holds the best epoch's weights: its validation loss is the best one
    from nnscratch.training.loop import evaluate

    _, _, xv, yv = data
    assert evaluate(eng, xv, yv, 10)["loss"] == pytest.approx(es["best_val_loss"], rel=1e-12)

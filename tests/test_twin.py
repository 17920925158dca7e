"""Twin parity on real MNIST: the NumPy engine and the torch twin, from the same initial weights
and the same batch order, trained through the same ``train.fit``, must agree to float rounding.

One epoch on the first 2,000 training images (32 steps of 64), validated on the 10,000
validation images. Weight differences are ``max|diff| / max|w|`` per tensor (see
:func:`helpers.rel_error`).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import optional_import, rel_error
from nnscratch.engines import make_engine
from nnscratch.data.preprocess import to_features
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.training.streams import EpochOrders, init_rng
from nnscratch.training.trainer import fit

optional_import("torch")

N_TRAIN = 2000
BATCH = 64
LR = 0.01
SPEC = mlp_spec()  # 784-533-10, the seed architecture


@pytest.fixture(scope="module")
def arrays(mnist):
    """Features per dtype: ``arrays(dtype) -> (x_train, y_train, x_val, y_val)``."""
    cache = {}

    def get(dtype):
        dtype = np.dtype(dtype)
        if dtype not in cache:
            cache[dtype] = (to_features(mnist.train_images[:N_TRAIN], dtype.type),
                            mnist.train_labels[:N_TRAIN].astype(np.int64),
                            to_features(mnist.val_images, dtype.type), mnist.val_labels.astype(np.int64))
        return cache[dtype]

    return get


def _train(arrays, engine: str, dtype, seed: int = 0, **options):
    x, y, xv, yv = arrays(dtype)
    initial = initial_state(SPEC, init_rng(seed))
    orders = [EpochOrders(seed, N_TRAIN).order(0)]
    eng = make_engine(engine, SPEC, initial, np.dtype(dtype), device="cpu", **options)
    history = fit(eng, (x, y), (xv, yv), orders=orders, batch_size=BATCH, num_classes=SPEC.num_classes, lr=LR)
    return {"history": history, "state": eng.state_dict(), "initial": initial, "orders": orders}


@pytest.fixture(scope="module")
def runs(arrays):
    """Each run trained once per module, on demand."""
    cache = {}

    def get(key):
        if key not in cache:
            engine, dtype, seed, *rest = key
            options = {"fuse": rest[0]} if rest else {}
            cache[key] = _train(arrays, engine, dtype, seed, **options)
        return cache[key]

    return get


def _assert_twins(a, b, tol):
    ha, hb = a["history"], b["history"]
    assert len(ha.step_loss) == len(hb.step_loss) == -(-N_TRAIN // BATCH)
    la, lb = np.asarray(ha.step_loss), np.asarray(hb.step_loss)
    assert np.all(np.isfinite(la))
    step_rel = float(np.max(np.abs(la - lb) / np.abs(lb)))
    assert step_rel < tol, f"per-step losses differ by {step_rel:.3g} relative"
    assert sorted(a["state"]) == sorted(b["state"]) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    for name in a["state"]:
        err = rel_error(a["state"][name], b["state"][name])
        assert err < tol, f"{name}: weights differ by {err:.3g} relative"
    return ha.epochs[0], hb.epochs[0]


@pytest.mark.parametrize("fuse_sgd", [True, False], ids=["fused-sgd", "plain-sgd"])
def test_float64_twins_agree_to_rounding(runs, fuse_sgd):
    a, b = runs(("numpy", np.float64, 0, fuse_sgd)), runs(("torch", np.float64, 0))
    ra, rb = _assert_twins(a, b, 1e-12)
    # validation metrics in the history: the same predictions, the same loss up to rounding
    assert ra.epoch == rb.epoch == 1
    assert ra.train_accuracy == rb.train_accuracy
    assert ra.val_accuracy == rb.val_accuracy
    assert ra.val_f1 == rb.val_f1
    assert ra.train_loss == pytest.approx(rb.train_loss, rel=1e-12)
    assert ra.val_loss == pytest.approx(rb.val_loss, rel=1e-12)
    # training did something: weights moved, loss went down, better than chance
    assert rel_error(a["state"]["0.weight"], a["initial"]["0.weight"]) > 1e-4
    losses = a["history"].step_loss
    assert np.mean(losses[-8:]) < np.mean(losses[:8])
    assert ra.val_accuracy == pytest.approx(0.386, abs=0.01)  # this seeded run reaches 0.386 (chance: 0.1)


def test_fused_and_plain_sgd_agree(runs):
    a, b = runs(("numpy", np.float64, 0, True)), runs(("numpy", np.float64, 0, False))
    _assert_twins(a, b, 1e-12)


def test_train_loss_is_the_batch_weighted_mean_of_step_losses(runs):
    h = runs(("numpy", np.float64, 0, True))["history"]
    sizes = np.diff(np.r_[np.arange(0, N_TRAIN, BATCH), N_TRAIN])
    assert sizes[-1] == N_TRAIN - 31 * BATCH  # the last batch is short
    assert h.epochs[0].train_loss == pytest.approx(np.average(h.step_loss, weights=sizes), rel=1e-14)


def test_float32_twins_agree_loosely(runs):
    a, b = runs(("numpy", np.float32, 0)), runs(("torch", np.float32, 0))
    assert a["state"]["0.weight"].dtype == b["state"]["0.weight"].dtype == np.float32
    ra, rb = _assert_twins(a, b, 1e-4)
    assert abs(ra.val_accuracy - rb.val_accuracy) <= 0.002  # at most a few of 10,000 flip
    assert ra.val_loss == pytest.approx(rb.val_loss, rel=1e-4)
    # float32 and float64 runs of the same engine agree loosely too
    c = runs(("numpy", np.float64, 0, True))
    _assert_twins(a, c, 1e-4)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_same_seed_same_run(arrays, runs, engine):
    first = runs((engine, np.float64, 0) + ((True,) if engine == "numpy" else ()))
    again = _train(arrays, engine, np.float64, 0)
    assert again["history"].step_loss == first["history"].step_loss  # bit for bit
    for name in first["state"]:
        np.testing.assert_array_equal(again["state"][name], first["state"][name])
    ra, rb = first["history"].epochs[0], again["history"].epochs[0]
    assert (ra.train_loss, ra.train_accuracy, ra.val_loss, ra.val_accuracy, ra.val_f1) == \
        (rb.train_loss, rb.train_accuracy, rb.val_loss, rb.val_accuracy, rb.val_f1)


def test_different_seed_different_run(runs):
    a, b = runs(("numpy", np.float64, 0, True)), runs(("numpy", np.float64, 1, True))
    assert not np.array_equal(a["initial"]["0.weight"], b["initial"]["0.weight"])
    assert not np.array_equal(a["orders"][0], b["orders"][0])
    assert sorted(a["orders"][0]) == sorted(b["orders"][0]) == list(range(N_TRAIN))
    assert a["history"].step_loss != b["history"].step_loss
    assert rel_error(a["state"]["0.weight"], b["state"]["0.weight"]) > 1e-3


def test_the_seed_streams_are_those_the_seed_project_always_had():
    """The initial weights and the batch orders of a seed are those drawn before the streams were
    keyed (``SeedSequence(seed).spawn(3)``, one sequential order generator): the README's results stand."""
    old_init, old_order = (np.random.default_rng(s) for s in np.random.SeedSequence(0).spawn(2))
    np.testing.assert_array_equal(init_rng(0).random(5), old_init.random(5))
    orders = EpochOrders(0, 100)
    expected = [old_order.permutation(100) for _ in range(3)]
    for e in (0, 1, 2):
        np.testing.assert_array_equal(orders.order(e), expected[e])
    np.testing.assert_array_equal(orders.order(1), expected[1])          # out of turn: replayed
    np.testing.assert_array_equal(EpochOrders(0, 100).order(2), expected[2])  # a fresh object, epoch 2 first
    assert not np.array_equal(EpochOrders(1, 100).order(0), expected[0])


# --------------------------------------------------------------------------- a deeper net, both twins


DEEP = mlp_spec(hidden=(256, 128), activation="gelu", batch_norm=True, dropout=0.2)


def test_deep_float64_twins_with_gelu_batch_norm_and_shared_dropout_masks(arrays):
    """784-256-128-10 with GELU, batch norm and dropout (masks drawn once by the loop and handed to
    both), plain SGD: per-step losses, final weights and running statistics agree to rounding."""
    from nnscratch.run.experiment import max_rel_state_diff
    from nnscratch.model.registry import dropout_layers

    x, y, xv, yv = arrays(np.float64)
    runs = {}
    for engine in ("numpy", "torch"):
        initial = initial_state(DEEP, init_rng(0))
        eng = make_engine(engine, DEEP, initial, np.float64, device="cpu", **({"shared_masks": True}
                                                                            if engine == "torch" else {}))
        history = fit(eng, (x, y), (xv, yv), seed=0, epochs=1, batch_size=BATCH, num_classes=DEEP.num_classes,
                      lr=0.05, dropout=dropout_layers(DEEP))
        runs[engine] = (history, eng.state_dict(), initial)
    (ha, sa, initial), (hb, sb, _) = runs["numpy"], runs["torch"]
    la, lb = np.asarray(ha.step_loss), np.asarray(hb.step_loss)
    assert len(la) == 32
    assert float(np.max(np.abs(la - lb) / np.abs(lb))) < 1e-10
    assert sorted(sa) == sorted(sb)
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked", "5.running_var"} <= set(sa)
    assert int(sa["1.num_batches_tracked"]) == int(sb["1.num_batches_tracked"]) == 32
    assert "0.bias" not in sa and "4.bias" not in sa and "8.bias" in sa  # no bias before batch norm (mlp_spec)
    for name in sa:
        if sa[name].dtype.kind == "f":
            assert rel_error(sa[name], sb[name]) < 1e-10, name
    assert max_rel_state_diff(sa, sb) < 1e-10
    assert ha.epochs[0].val_accuracy == hb.epochs[0].val_accuracy
    assert ha.epochs[0].val_loss == pytest.approx(hb.epochs[0].val_loss, rel=1e-10)
    # it trained, and dropout was on: the running statistics and the weights moved
    assert rel_error(sa["0.weight"], initial["0.weight"]) > 1e-4
    assert not np.allclose(sa["1.running_var"], 1.0)
    assert np.mean(la[-8:]) < np.mean(la[:8])


def test_dropout_masks_change_the_run_and_follow_the_seed(arrays):
    """Different dropout streams give different runs; without the shared masks the curves differ."""
    from nnscratch.model.registry import dropout_layers

    x, y, xv, yv = arrays(np.float64)
    spec = mlp_spec(hidden=(64,), dropout=0.5)

    def run(seed_for_masks: int) -> list[float]:
        eng = make_engine("numpy", spec, initial_state(spec, init_rng(0)), np.float64)
        return fit(eng, (x, y), None, orders=[EpochOrders(0, N_TRAIN).order(0)], seed=seed_for_masks,
                   batch_size=BATCH, num_classes=10, lr=0.05, dropout=dropout_layers(spec)).step_loss

    assert run(0) == run(0)
    assert run(0) != run(1)

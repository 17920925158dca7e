"""The JAX peer of ``nnscratch bench`` trains what our engine trains: one epoch from the same
initial weights in the same batches gives the same weights (float64, against our NumPy engine,
itself checked against torch by the twin tests), for each optimizer and layer kind it builds;
what it cannot build it says; and ``bench`` gives its row with the compiling epoch apart."""

import numpy as np
import pytest

from helpers import optional_import
from nnscratch.engines import make_engine
from nnscratch.model.registry import initial_state
from nnscratch.model.spec import LayerSpec, ModelSpec, mlp_spec
from nnscratch.training.trainer import fit

jax = optional_import("jax")

from nnscratch.run import jax_peer  # noqa: E402

def _every_activation() -> ModelSpec:
    kinds = ("relu", "leaky_relu", "tanh", "sigmoid")
    layers = [layer for kind in kinds for layer in (LayerSpec("dense", {"out_features": 24}), LayerSpec(kind))]
    return ModelSpec(784, (*layers, LayerSpec("dense", {"out_features": 10})))


CASES = {  # (spec, engine options, images: 256 are 4 whole batches of 64, 300 add a last one of 44)
    "relu-leaky-tanh-sigmoid, sgd momentum dampening": (
        _every_activation(), {"optimizer": "sgd", "optimizer_options": {"momentum": 0.8, "dampening": 0.1}}, 256),
    "gelu batch norm, nesterov, weight decay, label smoothing": (
        mlp_spec(784, (48, 32), 10, activation="gelu", batch_norm=True),
        {"optimizer": "sgd", "optimizer_options": {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
         "label_smoothing": 0.1}, 300),
    "elu, adamw": (mlp_spec(784, (48,), 10, activation="elu"),
                   {"optimizer": "adamw", "optimizer_options": {"weight_decay": 0.01}}, 256),
    "relu, adam with L2": (mlp_spec(784, (48,), 10),
                           {"optimizer": "adam", "optimizer_options": {"weight_decay": 1e-3}}, 256),
}


@pytest.mark.parametrize("case", CASES)
def test_one_epoch_of_the_jax_peer_is_one_epoch_of_our_engine_float64(case):
    spec, options, n = CASES[case]
    rng = np.random.default_rng(0)
    pixels, y = rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n)
    initial = initial_state(spec, np.random.default_rng(1))
    order = np.random.default_rng(2).permutation(n)
    engine = make_engine("numpy", spec, initial, np.float64, **options)
    fit(engine, (pixels, y), None, orders=[order], batch_size=64, num_classes=10, lr=0.05, dtype=np.float64)
    ours = engine.state_dict()
    with jax.enable_x64(True):
        peer = jax_peer.JaxPeer(spec, initial, pixels, y, 64, 0.05, options, dtype="float64")
        peer.epoch(order)
        theirs = peer.params()
    assert set(theirs) == {k for k in ours if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    for name, value in theirs.items():
        assert not np.allclose(value, initial[name])  # it trained
        np.testing.assert_allclose(value, ours[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_what_the_peer_cannot_build_it_names():
    spec = mlp_spec(784, (16,), 10)
    assert jax_peer.unsupported(spec, {}) is None
    assert jax_peer.unsupported(spec, {"optimizer": "rmsprop"}) == "the JAX peer has no rmsprop optimizer"
    assert jax_peer.unsupported(spec, {"max_norm": 3.0}) == "the JAX peer has no max norm"
    assert jax_peer.unsupported(spec, {"optimizer": "adam", "optimizer_options": {"amsgrad": True}}) \
        == "the JAX peer has no amsgrad"


def test_the_bench_row_of_the_jax_peer_leaves_its_compiling_epoch_out():
    from nnscratch.run.benchmark import format_table, run_benchmark

    rng = np.random.default_rng(0)
    pixels, y = rng.integers(0, 256, (256, 784), dtype=np.uint8), rng.integers(0, 10, 256)
    result = run_benchmark(pixels, y, engines=["jax-jit"], batch_sizes=[64], deep=[], epochs=2, progress=False,
                           settle_s=0.0, peak_size=64)
    (row,) = result["rows"]
    assert row["engine"] == "jax-jit" and len(row["epochs_s"]) == 2 and row["s_per_epoch"] > 0
    assert row["note"].startswith("first epoch, compiling: ")
    assert "jax-jit 784-533-10 batch 64: first epoch, compiling:" in format_table(result)

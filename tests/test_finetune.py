"""Fine-tuning (issue 21, parts 2 and 3): frozen layers in both engines, starting from a trained
model (what is kept, what is replaced), ``nnscratch finetune`` and the ``--classes`` data option.

What each test proves is in its docstring; the engine-level tests use small random data (no
files), the rest the real MNIST files (``mnist`` fixture).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from helpers import assert_one_line_error, optional_import, run_cli
from nnscratch.data.datasets import Dataset, keep_classes
from nnscratch.engines import make_engine
from nnscratch.errors import ParameterError, UsageError
from nnscratch.model.registry import first_trainable_layer, frozen_layers, initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.numpy_engine.backend import numpy_gemm

# 20 inputs -> dense 16 (bias-free) -> batch norm -> relu -> dropout -> dense 12 -> bn -> relu -> dropout -> dense 5
BN_SPEC = mlp_spec(20, (16, 12), 5, "relu", 0.25, True)
PLAIN_SPEC = mlp_spec(20, (16, 12), 5)   # 0 dense, 1 relu, 2 dense, 3 relu, 4 dense
N = 32


def _batch(seed: int, spec=BN_SPEC):
    """Inputs, labels and dropout masks of one step, the same for both twins."""
    from nnscratch.model.registry import dropout_layers

    rng = np.random.default_rng(seed)
    masks = {i: rng.random((N, width)) >= p for i, width, p in dropout_layers(spec)}
    return rng.normal(size=(N, spec.input_dim)), rng.integers(0, spec.num_classes, N), masks


def _initial(spec=BN_SPEC):
    """A fresh initial state whose batch norm running statistics are not the trivial 0 and 1."""
    state = initial_state(spec, np.random.default_rng(7))
    rng = np.random.default_rng(8)
    for name in state:
        if name.endswith("running_mean"):
            state[name] = rng.normal(size=state[name].shape)
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, size=state[name].shape)
    return state


def _engine(name, spec, initial, dtype=np.float32, **options):
    if name == "torch":
        optional_import("torch")
        options["shared_masks"] = True
    return make_engine(name, spec, initial, dtype, device="cpu", **options)


def _train(engine, steps=4, spec=BN_SPEC):
    for step in range(steps):
        x, y, masks = _batch(step, spec)
        engine.train_step(x.astype(engine_dtype(engine)), y, 0.05, masks)
    return engine


def engine_dtype(engine):
    return engine.model.dtype if engine.name == "numpy" else {"torch.float32": np.float32}.get(
        str(engine.dtype), np.float64)


def test_the_frozen_set_is_the_first_dense_layers_and_their_batch_norm():
    """freeze=1 of dense-bn-relu-dropout-dense-...: layers 0 and 1 frozen, layer 4 (the next dense) trains
    first; freeze=2 adds 4 and 5; the output layer can never be frozen."""
    assert frozen_layers(BN_SPEC, 0) == () and first_trainable_layer(BN_SPEC, 0) == 0
    assert frozen_layers(BN_SPEC, 1) == (0, 1) and first_trainable_layer(BN_SPEC, 1) == 4
    assert frozen_layers(BN_SPEC, 2) == (0, 1, 4, 5) and first_trainable_layer(BN_SPEC, 2) == 8
    with pytest.raises(ParameterError, match="freeze 3 leaves nothing to train"):
        frozen_layers(BN_SPEC, 3)


@pytest.mark.parametrize("engine_name", ["numpy", "torch"])
@pytest.mark.parametrize("options", [{"optimizer": "sgd"},                       # the fused path (NumPy)
                                     {"optimizer": "adam", "l1": 1e-3, "l2": 1e-3, "clip_grad_norm": 0.5}])
def test_frozen_weights_and_running_statistics_stay_bit_for_bit(engine_name, options):
    """After training with freeze=1, the frozen dense layer and its batch norm (weights, running
    statistics, batch count) are exactly the initial arrays, while every trainable layer (the next
    batch norm's running statistics too) has moved; the optimizer holds only trainable parameters."""
    initial = _initial()
    engine = _train(_engine(engine_name, BN_SPEC, initial, freeze=1, **options))
    state = engine.state_dict()
    for name in ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert np.array_equal(state[name], np.asarray(initial[name]).astype(state[name].dtype)), name
    for name in ("4.weight", "5.weight", "5.running_mean", "8.weight", "8.bias"):
        assert not np.array_equal(state[name], np.asarray(initial[name]).astype(state[name].dtype)), name
    assert int(state["5.num_batches_tracked"]) == 4
    optimizer_state = {k for k in engine.state() if k.startswith("optimizer.")}
    assert not any(k.startswith(("optimizer.0.", "optimizer.1.")) for k in optimizer_state), optimizer_state
    if options["optimizer"] == "adam":
        assert any(k.startswith("optimizer.4.") for k in optimizer_state)


def _count_products(engine):
    """Record the output array of every matrix product ``engine``'s layers compute (each layer is
    moved to a backend whose ``gemm`` counts; on the CPU that keeps the very same arrays)."""
    calls = []

    def counting(a, b, out, alpha=1.0, beta=0.0):
        calls.append(out)
        return numpy_gemm(a, b, out, alpha, beta)

    for layer in engine.model.layers:
        layer.to(dataclasses.replace(layer.backend, gemm=counting))
    return calls


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_frozen_layer_s_weight_gradient_is_never_computed(optimizer):
    """One step of 20-16-12-5 costs 3 forward products and, backward, dx + dW + db for the two upper
    dense layers and dW + db for the first: 11. With freeze=1 it is 3 + 3 + 2 = 8: no product for the
    frozen layer's dW/db, and none for the first trainable layer's dx (need_dx=False there); no product
    ever writes into the frozen layer's weight or gradient arrays (fused SGD or not)."""
    initial = _initial(PLAIN_SPEC)
    counts = {}
    for freeze in (0, 1):
        engine = _engine("numpy", PLAIN_SPEC, initial, np.float64, optimizer=optimizer, freeze=freeze)
        calls = _count_products(engine)
        x, y, _ = _batch(0, PLAIN_SPEC)
        engine.train_step(x, y, 0.1, {})
        counts[freeze] = len(calls)
        if freeze:
            first = engine.model.layers[0]
            targets = [first.params["weight"], first.params["bias"], first.grads["weight"], first.grads["bias"]]
            assert not any(np.shares_memory(out, t) for out in calls for t in targets)
    assert counts == {0: 11, 1: 8}


def test_the_twins_agree_in_float64_with_freezing():
    """freeze=1 on a network with batch norm and dropout, Adam with L2 and clipping: the NumPy engine
    and the torch twin give the same step losses (relative difference < 1e-10) and weights."""
    initial = _initial()
    options = {"optimizer": "adam", "l2": 1e-3, "clip_grad_norm": 1.0, "freeze": 1}
    a = _train(_engine("numpy", BN_SPEC, initial, np.float64, **options), steps=6)
    b = _train(_engine("torch", BN_SPEC, initial, np.float64, **options), steps=6)
    la, lb = a.take_epoch_stats()[0], b.take_epoch_stats()[0]
    assert np.max(np.abs(la - lb) / np.abs(lb)) < 1e-10
    sa, sb = a.state_dict(), b.state_dict()
    for name in sa:
        assert np.allclose(sa[name], sb[name], rtol=1e-10, atol=1e-12), name
    assert np.allclose(a.eval().predict_logits(_batch(9)[0]), b.eval().predict_logits(_batch(9)[0]), rtol=1e-10)


def test_keep_classes_filters_and_relabels_a_hand_case():
    """Classes 1 and 3 of a 4-class dataset: only their images stay, in order, in every set;
    labels 1 -> 0 and 3 -> 1; class names b and d; a class the dataset lacks is one line."""
    images = np.arange(8, dtype=np.uint8).reshape(8, 1, 1, 1)
    labels = np.array([0, 1, 2, 3, 1, 3, 3, 0])
    data = Dataset("hand", ("a", "b", "c", "d"), (1, 1, 1), images, labels, images[:4], labels[:4],
                   images[4:], labels[4:], source="here", title="Hand")
    kept = keep_classes(data, (1, 3), "1,3")
    assert kept.class_names == ("b", "d")
    assert kept.train_images.ravel().tolist() == [1, 3, 4, 5, 6] and kept.train_labels.tolist() == [0, 1, 0, 1, 1]
    assert kept.val_images.ravel().tolist() == [1, 3] and kept.val_labels.tolist() == [0, 1]
    assert kept.test_images.ravel().tolist() == [4, 5, 6] and kept.test_labels.tolist() == [0, 1, 1]
    assert "classes 1,3 kept" in kept.split_rule
    with pytest.raises(UsageError, match="Hand has classes 0-3, not 4"):
        keep_classes(data, (1, 4), "1,4")


def test_classes_on_mnist(mnist):
    """--classes 5-9 on MNIST keeps exactly the images of digits 5-9 in each set, relabelled 0-4."""
    from nnscratch.data import load_dataset

    data = load_dataset("mnist", download=False, progress=False, classes="5-9")
    for part in ("train", "val", "test"):
        full = getattr(mnist, f"{part}_labels")
        assert np.array_equal(getattr(data, f"{part}_labels"), full[full >= 5] - 5)
        assert np.array_equal(getattr(data, f"{part}_images"), getattr(mnist, f"{part}_images")[full >= 5])
    assert data.class_names == ("5", "6", "7", "8", "9")


@pytest.fixture(scope="module")
def source_model(tmp_path_factory, request):
    """A 784-16-12-5 model with batch norm trained 1 epoch on 512 MNIST images of digits 0-4."""
    from nnscratch import api

    mnist = request.getfixturevalue("mnist")
    out = tmp_path_factory.mktemp("source") / "run"
    api.train(dataset="mnist", classes="0-4", hidden=[16, 12], batch_norm=True, epochs=1, train_subset=512,
              checkpoints=False, out=out, data=keep_classes(mnist, (0, 1, 2, 3, 4), "0-4"))
    return out / "numpy_model.safetensors"


def test_starting_from_a_model_keeps_its_tensors_and_draws_a_fresh_head(source_model, mnist):
    """Fine-tuning to 3 classes with reset_head: the network settings come from the source, every
    tensor but the head's is the source's, the head is the one a from-scratch run with the same seed
    starts with, of the new class count; the summary says so."""
    from nnscratch.files.model_files import load_model
    from nnscratch.run.config import resolve_config
    from nnscratch.run.experiment import plan_run
    from nnscratch.training.streams import init_rng

    source, _, _ = load_model(source_model)
    cfg = resolve_config(None, {"finetune_from": str(source_model), "classes": "5-7", "reset_head": True,
                                "seed": 3}, ("numpy",))
    assert cfg.hidden == (16, 12) and cfg.batch_norm
    plan = plan_run(cfg, 512, 784, 3)
    head = [n for n in plan.initial if n.startswith("6.")]
    assert plan.transfer.replaced == tuple(head) == ("6.weight", "6.bias")
    assert set(plan.transfer.kept) == set(plan.initial) - set(head) and plan.transfer.dropped == ()
    assert plan.transfer.line().endswith(f"kept {len(plan.initial) - 2} tensors, replaced 2 (6.weight, 6.bias), "
                                         "dropped 0")
    for name in plan.transfer.kept:
        assert np.array_equal(plan.initial[name], source[name]), name
    fresh = initial_state(plan.spec, init_rng(3), cfg.init)
    assert plan.initial["6.weight"].shape == (3, 12) and np.array_equal(plan.initial["6.weight"], fresh["6.weight"])
    # the same class count keeps the head unless asked
    same = plan_run(resolve_config(None, {"finetune_from": str(source_model)}, ("numpy",)), 512, 784, 5)
    assert same.transfer.replaced == () and np.array_equal(same.initial["6.weight"], source["6.weight"])
    with pytest.raises(ParameterError, match="reset_head is needed"):
        plan_run(resolve_config(None, {"finetune_from": str(source_model)}, ("numpy",)), 512, 784, 10)


def test_finetune_both_twins_with_freezing_agree(source_model, mnist):
    """api.compare fine-tuned from the model with freeze=1 in float64: the twins agree to 1e-10, the
    frozen layers are the source's after training, and metrics.json records the settings and transfer."""
    from nnscratch import api
    from nnscratch.files.model_files import load_model

    source, _, _ = load_model(source_model)
    run = api.compare(finetune_from=str(source_model), classes="5-9", freeze=1, reset_head=True, dtype="float64",
                      epochs=1, train_subset=320, checkpoints=False,
                      data=keep_classes(mnist, (5, 6, 7, 8, 9), "5-9"))
    assert run.twin["max_rel_step_loss_diff"] < 1e-10
    for engine in ("numpy", "torch"):
        for name in ("0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"):
            assert np.array_equal(run.models[engine][name], source[name].astype(run.models[engine][name].dtype))
    assert run.config["finetune_from"] == str(source_model) and run.config["freeze"] == 1
    assert run.config["reset_head"] is True and run.metrics["finetune"]["replaced"] == ["6.weight", "6.bias"]


def test_the_finetune_command(source_model, tmp_path, mnist):
    """nnscratch finetune writes a run like train's, prints the transfer line, and its model remembers
    --classes, which evaluate then applies."""
    proc = run_cli(["finetune", "--from", str(source_model), "--classes", "5-9", "--reset-head", "--freeze", "1",
                    "--epochs", "1", "--train-subset", "256", "--quiet", "--out", "ft", "--no-checkpoints"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"from {source_model}: kept 12 tensors, replaced 2 (6.weight, 6.bias), dropped 0" in proc.stderr
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert metrics["config"]["freeze"] == 1 and metrics["config"]["classes"] == "5-9"
    assert metrics["dataset"]["class_names"] == ["5", "6", "7", "8", "9"] and metrics["dataset"]["test"] == 4861
    proc = run_cli(["evaluate", "--model", "ft/numpy_model.safetensors"], tmp_path)
    assert proc.returncode == 0 and "4,861 images" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--from", "{junk}"], "--from needs a model file or checkpoint: "),
    (["--from", "{model}", "--freeze", "3"], "--freeze 3 is more than the network's 2 hidden dense layer(s)"),
    (["--from", "{model}"], "--reset-head is needed: "),
    (["--from", "{model}", "--classes", "11", "--reset-head"], "--classes 11: MNIST has classes 0-9, not 11"),
    (["--from", "{model}", "--classes", "0-4", "--hidden", "32"], "layer 0 is (dense 784 -> 16, no bias) there, (dense 784 -> 32, no bias) here"),
    (["--from", "{model}", "--classes", "x"], "--classes takes class indices and ranges"),
])
def test_bad_finetune_inputs_are_one_line(args, message, source_model, tmp_path, mnist):
    """Each bad input is one line on stderr, exit 2, nothing written."""
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    args = [a.format(junk=junk, model=source_model) for a in args]
    proc = run_cli(["finetune", *args, "--epochs", "1", "--train-subset", "64", "--quiet", "--out", "x"], tmp_path)
    assert proc.returncode == 2
    assert message in assert_one_line_error(proc.stderr, proc.stdout)
    assert not (tmp_path / "x").exists()


def test_predict_names_the_classes_a_model_was_trained_on():
    """A model trained on --classes 5-9 of MNIST names its 5 outputs 5..9 even without its run folder."""
    from nnscratch.cli.predict import class_names

    assert class_names("/nowhere/model.safetensors", "mnist", 5, "5-9") == ["5", "6", "7", "8", "9"]
    assert class_names("/nowhere/model.safetensors", "mnist", 10, None) == [str(k) for k in range(10)]

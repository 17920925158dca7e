"""Issue 20, item 4: the max-norm constraint (``--max-norm C``) and dropout on the input
(``--input-dropout P``).

Oracles: a hand computation of the projection (a float64 loop over units), the engine without
max-norm (rows under the limit must come out bit for bit the same), torch's own ``renorm_`` in the
twin (float64, several steps with max-norm, input and hidden dropout and momentum), the keyed
dropout stream, a network without the input layer (evaluation), finite differences (gradcheck),
and the uninterrupted run (resume).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import optional_import
from nnscratch import api
from nnscratch.analysis.gradcheck import check_network
from nnscratch.engines import make_engine
from nnscratch.model.registry import dense_layers, dropout_layers, frozen_layers, initial_state
from nnscratch.model.spec import mlp_spec
from nnscratch.numpy_engine.model import NumpyEngine
from nnscratch.run.config import RunConfig
from nnscratch.training.regularization import MAX_NORM_EPS, MaxNorm
from nnscratch.training.streams import dropout_keeps
from nnscratch.training.trainer import fit

C = 1.0
#: 0: input dropout, 1: dense 12 -> 9, 2: relu, 3: dropout, 4: dense 9 -> 7, 5: relu, 6: dropout, 7: dense 7 -> 4
SPEC = mlp_spec(input_dim=12, hidden=(9, 7), num_classes=4, dropout=0.3, input_dropout=0.25)
N = 16


def _start(spec=SPEC, seed=0) -> dict[str, np.ndarray]:
    """The initial state with each dense layer's rows set to norms spread from 0.3 C to 3 C: one
    step later some rows are surely over the limit and some surely under it."""
    state = initial_state(spec, np.random.default_rng(seed))
    for i in dense_layers(spec):
        w = state[f"{i}.weight"]
        w *= (np.linspace(0.3, 3.0, w.shape[0]) * C / np.linalg.norm(w, axis=1))[:, None]
    return state


def _batch(seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((N, SPEC.input_dim)), rng.integers(0, SPEC.num_classes, N)


def hand_max_norm(w: np.ndarray, c: float) -> np.ndarray:
    """The projection unit by unit, in plain Python floats: ``w_j * c / (||w_j|| + 1e-7)`` where ``||w_j|| > c``."""
    out = np.array(w, dtype=np.float64)
    for j in range(w.shape[0]):
        norm = math.sqrt(math.fsum(float(v) * float(v) for v in w[j]))
        if norm > c:
            out[j] = [float(v) * (c / (norm + 1e-7)) for v in w[j]]
    return out


#: name -> (optimizer, its options, a learning rate that moves the rows by well under C in a step)
OPTIMIZERS = {
    "sgd-fused": ("sgd", {}, 0.05),
    "sgd-nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}, 0.05),
    "adam": ("adam", {}, 0.01),
    "adamw": ("adamw", {"weight_decay": 0.1}, 0.01),
    "rmsprop": ("rmsprop", {"momentum": 0.5, "centered": True}, 0.001),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_one_step_equals_the_hand_formula_and_rows_under_the_limit_are_untouched(name):
    optimizer, options, lr = OPTIMIZERS[name]
    x, y = _batch()
    keeps = dropout_keeps(0, 0, 0, dropout_layers(SPEC), N)
    engines = [NumpyEngine(SPEC, _start(), np.float64, optimizer=optimizer, optimizer_options=options,
                           max_norm=limit) for limit in (None, C)]
    assert engines[1].fused == (name == "sgd-fused")   # max-norm keeps plain SGD's fused update
    for engine in engines:
        engine.train_step(x, y, lr, keeps)
    free, constrained = engines[0].model.state_dict(), engines[1].model.state_dict()
    over = under = 0
    for i in dense_layers(SPEC):
        w, got = free[f"{i}.weight"], constrained[f"{i}.weight"]
        norms = np.linalg.norm(w, axis=1)
        np.testing.assert_allclose(got, hand_max_norm(w, C), rtol=1e-14, atol=0)
        np.testing.assert_array_equal(got[norms < C], w[norms < C])         # untouched, bit for bit
        assert np.all(np.linalg.norm(got, axis=1) <= C)
        np.testing.assert_array_equal(constrained[f"{i}.bias"], free[f"{i}.bias"])  # biases are not constrained
        over, under = over + int(np.sum(norms > C * 1.01)), under + int(np.sum(norms < C * 0.99))
    assert over >= 3 and under >= 3
    # the loss of the step is the same: the projection comes after the update
    assert engines[0].take_epoch_stats()[0][0] == engines[1].take_epoch_stats()[0][0]


def test_max_norm_in_float32_allocates_nothing_the_size_of_a_weight():
    import tracemalloc

    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(533, 784)).astype(np.float32), rng.normal(size=(10, 533)).astype(np.float32)]
    constraint = MaxNorm(weights, 3.0)
    constraint.apply()
    # float32: 1e-7 is under the rounding of a norm near 3, so rows end at 3 to float32 rounding
    assert all(np.linalg.norm(w.astype(np.float64), axis=1).max() <= 3.0 * (1 + 1e-6) for w in weights)
    for w in weights:   # over the limit again, so that the scaling pass runs too
        w *= 2
    tracemalloc.start()
    constraint.apply()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024   # the weights are 1.7 MB; NumPy's broadcasting keeps a 32 kB buffer of its own
    assert all(w.dtype == np.float32 for w in weights)
    np.testing.assert_allclose(np.linalg.norm(weights[0].astype(np.float64), axis=1), 3.0 * (1 - 3e-7), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_ways_of_summing_the_rows_give_the_squared_norms(dtype):
    from nnscratch.training import regularization

    w = np.random.default_rng(1).normal(size=(37, 300)).astype(dtype)
    exact = np.array([math.fsum(float(v) ** 2 for v in row) for row in w])
    ways = [regularization._row_squares_einsum] + ([regularization._row_squares_vecdot] if hasattr(np, "vecdot") else [])
    for way in ways:
        out = np.empty(37, dtype)
        way(w, out)
        np.testing.assert_allclose(out, exact, rtol=3e-5 if dtype == np.float32 else 1e-13, err_msg=way.__name__)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_a_limit_that_is_not_a_positive_number_is_refused(bad):
    from nnscratch.errors import ParameterError

    with pytest.raises(ParameterError, match="max_norm must be a finite number > 0"):
        MaxNorm([np.ones((2, 2))], bad)
    from nnscratch.errors import UsageError

    with pytest.raises(UsageError, match="--max-norm must be"):
        RunConfig(max_norm=bad)


def test_frozen_layers_are_not_projected():
    x, y = _batch()
    start = _start()
    engine = NumpyEngine(SPEC, start, np.float64, optimizer="sgd", max_norm=C, freeze=1)
    assert frozen_layers(SPEC, 1) == (1,)
    engine.train_step(x, y, 0.05, dropout_keeps(0, 0, 0, dropout_layers(SPEC), N))
    state = engine.model.state_dict()
    np.testing.assert_array_equal(state["1.weight"], start["1.weight"])          # rows up to 3 C, frozen
    assert np.linalg.norm(start["1.weight"], axis=1).max() > 2 * C
    for i in (4, 7):
        assert np.linalg.norm(state[f"{i}.weight"], axis=1).max() <= C


# -- the twin, float64 ----------------------------------------------------------------------------

TWIN_CASES = {
    "sgd-nesterov": dict(optimizer="sgd", optimizer_options={"momentum": 0.9, "nesterov": True}),
    "adam-frozen-batch-norm": dict(optimizer="adam", optimizer_options={}, freeze=1),
}


@pytest.mark.parametrize("case", list(TWIN_CASES))
def test_the_twin_applies_the_same_projection_with_torch_renorm(case):
    """Both engines, the loop's keyed masks (input and hidden dropout), 3 epochs of 8 steps: step
    losses and every tensor equal to float64 rounding, and max-norm did bind."""
    optional_import("torch")
    options = TWIN_CASES[case]
    spec = mlp_spec(input_dim=12, hidden=(9, 7), num_classes=4, dropout=0.3, input_dropout=0.25,
                    batch_norm="batch-norm" in case)
    rng = np.random.default_rng(5)
    x, y = rng.random((128, 12)), rng.integers(0, 4, 128)
    start = _start(spec)
    runs, states = [], []
    for name in ("numpy", "torch"):
        engine = make_engine(name, spec, start, np.float64, device="cpu", max_norm=C, **options)
        runs.append(fit(engine, (x, y), None, seed=3, epochs=3, batch_size=N, num_classes=4, lr=0.05,
                        dropout=dropout_layers(spec), dtype=np.float64).step_loss)
        states.append(engine.state())
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-12, atol=0)
    assert set(states[0]) == set(states[1])
    for k, v in states[0].items():
        np.testing.assert_allclose(states[1][k], v, rtol=1e-12, atol=1e-15, err_msg=k)
    trainable = [i for i in dense_layers(spec) if i not in frozen_layers(spec, options.get("freeze", 0))]
    norms = [np.linalg.norm(states[0][f"{i}.weight"], axis=1) for i in trainable]
    assert all(n.max() <= C for n in norms)
    assert norms[0].max() > C * (1 - 1e-6)   # it bound: the first trainable layer ends with rows at the limit


def test_torch_renorm_is_the_formula_of_the_docstring():
    """The twin's op itself, against the hand formula (float64): the same numbers to rounding."""
    torch = optional_import("torch")
    w = np.random.default_rng(0).normal(size=(20, 30)) * np.linspace(0.05, 0.5, 20)[:, None]
    got = torch.from_numpy(w.copy()).renorm_(2, 0, C).numpy()
    np.testing.assert_allclose(got, hand_max_norm(w, C), rtol=1e-15, atol=0)
    assert MAX_NORM_EPS == 1e-7


def test_the_jit_engine_equals_the_numpy_engine_with_max_norm():
    optional_import("numba")
    rng = np.random.default_rng(6)
    x, y = rng.random((96, 12)), rng.integers(0, 4, 96)
    for optimizer, options in (("sgd", {}), ("adam", {})):
        runs = []
        for jit in (False, True):
            engine = NumpyEngine(SPEC, _start(), np.float64, optimizer=optimizer, optimizer_options=options,
                                 max_norm=C, jit=jit)
            history = fit(engine, (x, y), None, seed=2, epochs=2, batch_size=N, num_classes=4, lr=0.05,
                          dropout=dropout_layers(SPEC), dtype=np.float64)
            runs.append((history.step_loss, engine.model.state_dict()))
        np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-13)
        for k, v in runs[0][1].items():
            np.testing.assert_allclose(runs[1][1][k], v, rtol=1e-12, atol=1e-15, err_msg=f"{optimizer} {k}")
        assert np.linalg.norm(runs[1][1]["1.weight"], axis=1).max() <= C


# -- input dropout --------------------------------------------------------------------------------

def test_input_dropout_is_layer_0_and_the_hidden_dropout_keeps_its_place():
    plain = mlp_spec(input_dim=12, hidden=(9, 7), num_classes=4, dropout=0.3)
    assert [layer.kind for layer in SPEC.layers] == ["dropout", *[layer.kind for layer in plain.layers]]
    assert SPEC.layers[0].args == {"p": 0.25}
    assert dropout_layers(SPEC) == [(0, 12, 0.25), (3, 9, 0.3), (6, 7, 0.3)]
    assert SPEC.describe() == "12-9-7-4 (input dropout 0.25, relu, dropout 0.3)"
    assert RunConfig(input_dropout=0.2, dropout=0.5, hidden=(9,)).model_spec(12, 4) == \
        mlp_spec(12, (9,), 4, dropout=0.5, input_dropout=0.2)
    assert mlp_spec(12, (9,), 4, input_dropout=0.0) == mlp_spec(12, (9,), 4)   # 0: no layer at all


def test_the_input_mask_comes_from_the_keyed_stream_and_leaves_the_callers_batch_alone():
    x, y = _batch()
    x_before = x.copy()
    keeps = dropout_keeps(7, 2, 5, dropout_layers(SPEC), N)
    assert keeps[0].shape == (N, 12) and 0.1 < 1 - keeps[0].mean() < 0.4     # about 25 % of the inputs dropped
    engine = NumpyEngine(SPEC, _start(), np.float64)
    first_dense = engine.model.layers[1]
    engine.train_step(x, y, 0.0, keeps)   # lr 0: the weights stay, we look at what the first layer saw
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(first_dense._x, x * (keeps[0] / 0.75))
    assert first_dense._x is not x


def test_evaluation_uses_no_input_mask_in_either_engine():
    """The logits in evaluation equal those of the same weights without the input layer at all."""
    plain = mlp_spec(input_dim=12, hidden=(9, 7), num_classes=4, dropout=0.3)
    state = _start()
    shifted = {f"{int(k.split('.')[0]) - 1}.{k.split('.', 1)[1]}": v for k, v in state.items()}
    x, _ = _batch()
    expected = NumpyEngine(plain, shifted, np.float64).eval().predict_logits(x)
    for name in ("numpy", "torch"):
        if name == "torch":
            optional_import("torch")
        got = make_engine(name, SPEC, state, np.float64, device="cpu").eval().predict_logits(x)
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15, err_msg=name)


def test_gradients_with_input_dropout_against_finite_differences():
    rng = np.random.default_rng(3)
    checks = check_network(SPEC, rng.normal(size=(6, 12)), rng.integers(0, 4, 6), rng=rng)
    assert {c.layer for c in checks} >= {"1 dense", "7 dense"}
    assert all(c.passed(1e-6) for c in checks), [(c.layer, c.name, c.error) for c in checks if not c.passed(1e-6)]


def test_the_first_dense_layer_computes_no_input_gradient():
    """Behind input dropout, backward stops at the first dense layer: no dx of the input is made."""
    engine = NumpyEngine(SPEC, _start(), np.float64, optimizer="adam")
    x, y = _batch()
    engine.train_step(x, y, 0.01, dropout_keeps(0, 0, 0, dropout_layers(SPEC), N))
    assert not any(key[0] == "dx" for key in engine.model.layers[1]._scratch._arrays)
    assert any(key[0] == "dx" for key in engine.model.layers[4]._scratch._arrays)


# -- the whole road: settings, resume, the files ---------------------------------------------------

@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_a_run_resumed_from_a_mid_epoch_checkpoint_is_bit_identical(engine, tmp_path):
    """float32 (the default), Nesterov momentum, input and hidden dropout, max-norm: the run resumed
    from the file written at step 7 of 24 ends with the same step losses and the same state, bit for bit."""
    from nnscratch.files.checkpoint import CheckpointWriter, read_checkpoint, run_meta
    from nnscratch.training.trainer import Trainer

    if engine == "torch":
        optional_import("torch")
    rng = np.random.default_rng(8)
    x, y = rng.random((128, 12)).astype(np.float32), rng.integers(0, 4, 128)

    def trainer(checkpoints=None) -> Trainer:
        built = make_engine(engine, SPEC, _start(), np.float32, device="cpu", optimizer="sgd",
                            optimizer_options={"momentum": 0.9, "nesterov": True}, max_norm=C)
        return Trainer(built, (x, y), None, seed=4, epochs=3, batch_size=N, num_classes=4, schedule=0.1,
                       dropout=dropout_layers(SPEC), dtype=np.float32, checkpoints=checkpoints)

    full = trainer(CheckpointWriter(tmp_path, run_meta(SPEC, {"engines": [engine]}, {}), every_steps=7))
    history = full.run()
    ck = read_checkpoint(tmp_path / "step-7.safetensors")
    assert ck.trainer["step"] == 7 and any(k.startswith("optimizer.") for k in ck.tensors)
    resumed = trainer()
    resumed.load_state(ck.tensors, ck.trainer)
    assert resumed.run().step_loss == history.step_loss
    end = full.engine.state()
    for k, v in resumed.engine.state().items():
        np.testing.assert_array_equal(v, end[k], err_msg=k)
    norms = np.linalg.norm(end["1.weight"].astype(np.float64), axis=1)
    assert C * (1 - 1e-5) < norms.max() <= C * (1 + 1e-6)   # max-norm bound (to float32 rounding)


RUN = dict(train_subset=320, val_size=200, hidden=[16], dropout=0.5, input_dropout=0.2, max_norm=1.5,
           optimizer="sgd", momentum=0.9, nesterov=True, lr=0.1, epochs=1)


@pytest.fixture(scope="module")
def finished(mnist, tmp_path_factory):
    """A run with both settings, its model file written as the command line writes it."""
    out = tmp_path_factory.mktemp("maxnorm") / "run"
    return api.train(engine="numpy", out=out, data=mnist, **RUN), out


def test_a_model_with_input_dropout_is_evaluated_predicted_and_fine_tuned(finished, mnist, tmp_path, capsys):
    from nnscratch.cli.main import main

    full, out = finished
    model = out / "numpy_model.safetensors"
    assert main(["evaluate", "--model", str(model)]) == 0
    printed = capsys.readouterr().out
    assert "input dropout 0.2" in printed and f"accuracy {full.test['numpy']['accuracy']:.4f}" in printed
    from PIL import Image

    Image.fromarray(mnist.test_images[0].reshape(28, 28)).save(tmp_path / "digit.png")
    assert main(["predict", str(tmp_path / "digit.png"), "--model", str(model)]) == 0
    assert "digit.png:" in capsys.readouterr().out
    tuned = api.train(engine="numpy", finetune_from=str(model), freeze=1, data=mnist, train_subset=128,
                      val_size=200, epochs=1)
    assert tuned.config["input_dropout"] == 0.2 and tuned.config["dropout"] == 0.5   # the source's network
    assert set(tuned.metrics["finetune"]["kept"]) == set(full.models["numpy"])       # every tensor by name
    np.testing.assert_array_equal(tuned.models["numpy"]["1.weight"], full.models["numpy"]["1.weight"])  # frozen


def test_a_model_with_input_dropout_exports_to_onnx(finished, mnist, tmp_path):
    optional_import("onnx")
    onnxruntime = optional_import("onnxruntime")
    from nnscratch.cli.main import main

    full, out = finished
    assert main(["export", "--model", str(out / "numpy_model.safetensors"), "--to", "onnx",
                 str(tmp_path / "m.onnx")]) == 0
    images = mnist.test_images[:50].reshape(50, -1).astype(np.float32) / 255
    logits = onnxruntime.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": images})[0]
    engine = make_engine("numpy", mlp_spec(784, (16,), 10, dropout=0.5, input_dropout=0.2), full.models["numpy"])
    np.testing.assert_allclose(logits, engine.eval().predict_logits(images), rtol=1e-4, atol=1e-5)


def test_the_settings_take_both_keys_from_a_file(tmp_path):
    from nnscratch.run.config import resolve_config

    (tmp_path / "c.toml").write_text("max_norm = 3\ninput_dropout = 0.2\ndropout = 0.5\n")
    cfg = resolve_config(tmp_path / "c.toml", {}, ("numpy",))
    assert cfg.max_norm == 3.0 and isinstance(cfg.max_norm, float) and cfg.input_dropout == 0.2
    assert "--input-dropout 0.2" in cfg.describe() and "--max-norm 3.0" in cfg.describe()
    assert "max-norm" not in RunConfig().describe() and "input-dropout" not in RunConfig().describe()

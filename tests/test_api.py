"""The Python API (nnscratch.api): the same numbers as the command line, plain return types,
predict() agreeing with the run's test accuracy, and one-line UsageErrors for bad settings.

One tiny real run (500 MNIST training images, one epoch, float64, both engines) through the API
and the same run through ``python -m nnscratch compare`` are shared by the tests of this module.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from helpers import one_line, run_cli
from nnscratch import api
from nnscratch.run.config import RunConfig
from nnscratch.errors import UsageError

SETTINGS = {"train_subset": 500, "epochs": 1, "dtype": "float64"}


@pytest.fixture(scope="module")
def run(mnist):
    return api.compare(api.config(**SETTINGS), data=mnist)


@pytest.fixture(scope="module")
def cli_metrics(mnist, tmp_path_factory):
    """metrics.json of the same run through the command line (mnist: skip or fail without the data)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli(["compare", "--train-subset", "500", "--epochs", "1", "--dtype", "float64", "--quiet",
                    "--out", str(out)], cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "metrics.json").read_text())


def assert_same(api_value, cli_value, path="metrics"):
    """Equal structures; floats equal to 1e-12 relative (the same arithmetic in two processes)."""
    if isinstance(cli_value, dict):
        assert set(api_value) == set(cli_value), path
        for key in cli_value:
            assert_same(api_value[key], cli_value[key], f"{path}.{key}")
    elif isinstance(cli_value, list):
        assert isinstance(api_value, list) and len(api_value) == len(cli_value), path
        for k, (a, c) in enumerate(zip(api_value, cli_value)):
            assert_same(a, c, f"{path}[{k}]")
    elif isinstance(cli_value, float):
        assert math.isclose(api_value, cli_value, rel_tol=1e-12, abs_tol=1e-300), (path, api_value, cli_value)
    else:
        assert api_value == cli_value, (path, api_value, cli_value)


def test_api_gives_the_numbers_of_the_command_line(run, cli_metrics):
    timings = ("train_time_s", "wall_time_s", "plain_torch")  # measured, not computed
    for key in ("config", "architecture", "dataset", "twin"):
        assert_same(run.metrics[key], cli_metrics[key], key)
    for name in ("numpy", "torch"):
        ours, theirs = run.metrics["engines"][name], cli_metrics["engines"][name]
        assert_same({k: v for k, v in ours.items() if k not in timings and k != "history"},
                    {k: v for k, v in theirs.items() if k not in timings and k != "history"}, name)
        assert_same([{k: v for k, v in e.items() if k != "time_s"} for e in ours["history"]],
                    [{k: v for k, v in e.items() if k != "time_s"} for e in theirs["history"]], f"{name}.history")
    assert run.test["numpy"] == run.metrics["engines"]["numpy"]["test"]
    assert run.twin["max_rel_step_loss_diff"] < 1e-12 and run.twin["test_prediction_agreement"] == 1.0


def test_run_holds_plain_python(run):
    assert run.engines == ("numpy", "torch") and run.out is None
    json.dumps({"config": run.config, "history": run.history, "test": run.test, "twin": run.twin,
                "metrics": run.metrics})
    steps = math.ceil(500 / 64)
    for name in run.engines:
        h = run.history[name]
        assert len(h["step_loss"]) == len(h["step_lr"]) == steps
        assert all(type(v) is float for v in h["step_loss"] + h["step_lr"])
        assert [e["epoch"] for e in h["epochs"]] == [1] and h["early_stopping"] is None
        assert set(h["epochs"][0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                       "val_f1", "time_s", "gradient_flow"}
        assert run.models[name]["0.weight"].shape == (533, 784)
        assert run.models[name]["0.weight"].dtype == np.float64
    assert "784-533-10" in repr(run) and "numpy" in repr(run)


def test_predict_agrees_with_the_test_accuracy(run, mnist):
    for name in run.engines:
        probs = run.predict(mnist.test_images, engine=name)
        assert probs.shape == (len(mnist.test_labels), 10) and probs.dtype == np.float64
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
        classes = run.predict_classes(mnist.test_images, engine=name)
        assert float(np.mean(classes == mnist.test_labels)) == run.test[name]["accuracy"]
    # model inputs (N, D) as the engine sees them give the same answer as the images
    x = mnist.test_images[:50].reshape(50, -1) / 255.0
    np.testing.assert_allclose(run.predict(x), run.predict(mnist.test_images[:50]), rtol=1e-12)


def test_train_one_engine_from_a_runs_config_then_write_report(run, mnist, tmp_path):
    calls = []
    one = api.train(run.config, engine="numpy", data=mnist, on_epoch=lambda e, rec: calls.append((e, rec)))
    assert one.engines == ("numpy",) and one.twin is None
    assert one.history["numpy"]["step_loss"] == run.history["numpy"]["step_loss"]  # the same run again
    assert calls == [("numpy", one.history["numpy"]["epochs"][0])]
    with pytest.raises(UsageError, match="trained numpy, not 'torch'"):
        one.predict(mnist.test_images[:2], engine="torch")
    report = api.write_report(one, tmp_path / "out")
    assert report == tmp_path / "out" / "report.md" and report.is_file() and one.out == tmp_path / "out"
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == json.loads(json.dumps(one.metrics))
    assert (tmp_path / "out" / "numpy_model.safetensors").is_file()


def test_config_file_then_settings(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('epochs = 7\nhidden = [64, 32]\nlr = 0.1\n')
    cfg = api.config(path, lr=1, hidden=16)
    assert isinstance(cfg, RunConfig)
    assert (cfg.epochs, cfg.hidden, cfg.lr, type(cfg.lr)) == (7, (16,), 1.0, float)
    assert api.config(epochs=None).epochs == RunConfig().epochs  # None: not given


@pytest.mark.parametrize("call, words", [
    (lambda: api.config(epoch=3), "unknown setting 'epoch'; did you mean 'epochs'?"),
    (lambda: api.config(learning_rate=0.1), "did you mean 'lr'?"),
    (lambda: api.config(epochs=0), "--epochs must be an integer >= 1, got 0"),
    (lambda: api.config(activation="swish"), "--activation must be one of"),
    (lambda: api.config("no/such.toml"), "does not exist"),
    (lambda: api.train(engine="jax"), "unknown engine 'jax'"),
    (lambda: api.train(lr=-1.0), "--lr must be a number > 0"),
    (lambda: api.compare(engines=("numpy",)), "train(engine=...) or compare()"),
    (lambda: api.train(42), "a RunConfig, a TOML file or a dict"),
], ids=["typo", "other-name", "bad-value", "bad-choice", "no-file", "engine", "train-value", "engines", "type"])
def test_bad_settings_raise_one_line_usage_errors(call, words):
    with pytest.raises(UsageError) as exc_info:
        call()
    assert words in one_line(exc_info)


def test_predict_refuses_the_wrong_shape(run, mnist):
    with pytest.raises(UsageError, match=r"\(N, 28, 28, 1\) or inputs \(N, 784\)"):
        run.predict(mnist.test_images[0])
    with pytest.raises(UsageError, match="uint8 images or float inputs"):
        run.predict(np.zeros((2, 784), dtype=np.int64))

"""The command line, end to end on real MNIST (small runs: 2,000 training images, one epoch).

One ``compare`` run (a subprocess, ``python -m nnscratch``) is shared by the tests of this module;
the float64 compare and the one-engine ``train`` run in-process through ``cli.main``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, cli_env, run_cli, run_python
from nnscratch.cli.main import main

SUBSET = 2000
STEPS = math.ceil(SUBSET / 64)  # 32
ENGINE_FILES = ("loss_curve.png", "metrics.png", "confusion_matrix.png", "correct_predictions.png",
                "incorrect_predictions.png", "gradient_flow.png", "model.safetensors")
TOP_KEYS = {"config", "architecture", "dataset", "engines"}
OPTIONAL_TOP_KEYS = {"machine", "created"}  # documented in report/markdown.py and written by experiment.py
SMALL = ["--train-subset", str(SUBSET), "--epochs", "1", "--quiet", "--device", "cpu"]


def _expected_files(engines: tuple[str, ...]) -> set[str]:
    files = {"metrics.json", "metrics.jsonl", "checkpoints", "report.md", "mnist_samples.png"}
    files |= {f"{e}_{suffix}" for e in engines for suffix in ENGINE_FILES}
    if set(engines) == {"numpy", "torch"}:
        files.add("twin_divergence.png")
    return files


def _main(argv: list[str]) -> tuple[int, str, str]:
    """``cli.main(argv)`` in-process, returning ``(exit code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _check_engine_block(block: dict) -> None:
    assert {"test", "train_time_s", "step_loss", "history"} <= set(block)
    test = block["test"]
    assert set(test) == {"accuracy", "precision", "recall", "f1", "macro", "per_class", "confusion_matrix",
                         "errors"}
    for key in ("accuracy", "precision", "recall", "f1"):
        assert isinstance(test[key], float) and 0.0 <= test[key] <= 1.0, key
    assert set(test["macro"]) == {"precision", "recall", "f1"}
    assert all(isinstance(v, float) for v in test["macro"].values())
    assert len(test["per_class"]) == 10
    for k, row in enumerate(test["per_class"]):
        assert row["class"] == str(k)
        assert {"precision", "recall", "f1", "support"} <= set(row)
    cm = test["confusion_matrix"]
    assert len(cm) == 10 and all(len(row) == 10 for row in cm)
    assert all(isinstance(v, int) and v >= 0 for row in cm for v in row)
    assert sum(map(sum, cm)) == 10_000
    trace = sum(cm[i][i] for i in range(10))
    assert test["errors"] == 10_000 - trace
    assert test["accuracy"] == pytest.approx(trace / 10_000, abs=1e-15)
    assert [row["support"] for row in test["per_class"]] == [sum(row) for row in cm]

    assert isinstance(block["train_time_s"], float) and block["train_time_s"] > 0
    assert isinstance(block["step_loss"], list) and len(block["step_loss"]) == STEPS
    assert all(isinstance(v, float) and math.isfinite(v) for v in block["step_loss"])
    assert len(block["history"]) == 1
    record = block["history"][0]
    assert set(record) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_f1",
                           "time_s", "gradient_flow"}
    assert record["epoch"] == 1
    assert all(math.isfinite(record[k]) for k in record if k != "gradient_flow")


def _check_metrics(metrics: dict, engines: tuple[str, ...]) -> None:
    keys = set(metrics)
    expected = TOP_KEYS | ({"twin"} if len(engines) == 2 else set())
    assert expected <= keys <= expected | OPTIONAL_TOP_KEYS, keys
    d = metrics["dataset"]
    assert (d["name"], d["train"], d["val"], d["test"]) == ("mnist", SUBSET, 10_000, 10_000)
    assert set(d) == {"name", "title", "class_names", "image_shape", "train", "val", "test", "source", "notes",
                      "split_rule", "standardization"}
    assert (d["title"], d["image_shape"], d["standardization"]) == ("MNIST", [28, 28, 1], None)
    assert d["class_names"] == [str(k) for k in range(10)]
    assert list(metrics["engines"]) == list(engines)
    for e in engines:
        _check_engine_block(metrics["engines"][e])
    cfg = metrics["config"]
    assert (cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["hidden"], cfg["seed"], cfg["train_subset"]) == \
        (1, 64, 0.01, [533], 0, SUBSET)
    if len(engines) == 2:
        twin = metrics["twin"]
        assert {"max_abs_step_loss_diff", "max_rel_weight_diff"} <= set(twin)
        assert all(isinstance(twin[k], float) and twin[k] >= 0 for k in twin)


def _no_temp_files(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not leftovers, leftovers


# --------------------------------------------------------------------------- compare (float32)


@pytest.fixture(scope="module")
def compare_run(mnist, tmp_path_factory):
    """One ``nnscratch compare`` on 2,000 images for one epoch, as a user would run it."""
    out = tmp_path_factory.mktemp("compare") / "run"
    proc = run_cli(["compare", *SMALL, "--out", str(out), "--data-dir", mnist.source],
                   cwd=tmp_path_factory.mktemp("cwd"))
    return proc, out


def test_twin_figures_in_metrics_are_recomputed_from_the_run(compare_run, mnist):
    """The ``twin`` block is not trusted: recompute each figure from the two ``step_loss`` lists and
    from the two saved models' test predictions, and compare."""
    from nnscratch.data.preprocess import to_features
    from nnscratch.engines import make_engine
    from nnscratch.files.model_files import load_model

    proc, out = compare_run
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    a, b = (np.asarray(metrics["engines"][e]["step_loss"]) for e in ("numpy", "torch"))
    assert len(a) == len(b) == STEPS
    twin = metrics["twin"]
    assert twin["max_abs_step_loss_diff"] == float(np.max(np.abs(a - b)))
    assert twin["max_rel_step_loss_diff"] == pytest.approx(float(np.max(np.abs(a - b) / np.abs(b))), rel=1e-12)
    assert twin["max_abs_step_loss_diff"] > 0  # float32 twins are not bit-equal: a real difference measured
    states = {e: load_model(out / f"{e}_model.safetensors")[0] for e in ("numpy", "torch")}
    # written out here rather than calling experiment.max_rel_state_diff, the function that computed it:
    # per tensor max|a - b| / max|b| (the seed network has no all-zero tensor, so no floor applies)
    ours, theirs = states["numpy"], states["torch"]
    assert sorted(ours) == sorted(theirs) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    by_hand = max(float(np.max(np.abs(ours[k].astype(np.float64) - theirs[k].astype(np.float64))))
                  / float(np.max(np.abs(theirs[k].astype(np.float64)))) for k in ours)
    assert twin["max_rel_weight_diff"] == pytest.approx(by_hand, rel=1e-12)
    x = to_features(mnist.test_images, np.float32)
    spec = load_model(out / "numpy_model.safetensors")[1]
    preds = {e: make_engine(e, spec, states[e], np.float32, device="cpu").eval().predict_logits(x).argmax(1)
             for e in states}
    assert twin["test_prediction_agreement"] == float(np.mean(preds["numpy"] == preds["torch"]))


def test_compare_exits_0_and_writes_every_file(compare_run):
    proc, out = compare_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p.name for p in out.iterdir()} == _expected_files(("numpy", "torch"))
    for p in out.iterdir():
        assert p.stat().st_size > 0, p.name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png.name
    _no_temp_files(out)
    report = (out / "report.md").read_text()
    assert report.strip()
    assert "twin_divergence.png" in report


def test_compare_metrics_json_shape(compare_run):
    proc, out = compare_run
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    _check_metrics(metrics, ("numpy", "torch"))
    assert metrics["config"]["dtype"] == "float32"
    # float32 twins: close, not necessarily bit-equal
    assert metrics["twin"]["max_rel_weight_diff"] < 1e-4
    assert metrics["twin"]["max_abs_step_loss_diff"] < 1e-4


def test_compare_stdout_has_results_table_and_hyperparameters(compare_run):
    proc, out = compare_run
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    stdout = proc.stdout
    assert "--epochs 1 --batch-size 64 --lr 0.01 --hidden 533 --activation relu --dropout 0.0 --no-batch-norm " \
           "--init he_normal --label-smoothing 0.0 --optimizer sgd --lr-schedule none --seed 0 --dtype float32 " \
           "--train-subset 2000" in stdout
    for word in ("Metric", "NumPy", "PyTorch", "Accuracy", "Precision", "Recall", "F1", "Errors",
                 "Training time"):
        assert word in stdout, word
    acc_line = next(line for line in stdout.splitlines() if line.startswith("Accuracy"))
    for e in ("numpy", "torch"):
        assert f"{metrics['engines'][e]['test']['accuracy']:.4f}" in acc_line
    errors_line = next(line for line in stdout.splitlines() if line.startswith("Errors"))
    assert f"{metrics['engines']['numpy']['test']['errors']:,} / 10,000" in errors_line
    assert "twin agreement" in stdout


def test_compare_models_load_and_reproduce_test_accuracy(compare_run, mnist):
    """The saved model gives back the run's test predictions (same engine, same dtype)."""
    from nnscratch.engines import make_engine
    from nnscratch.data.preprocess import to_features
    from nnscratch.training.metrics import classification_report
    from nnscratch.files.model_files import load_model

    proc, out = compare_run
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    x = to_features(mnist.test_images, np.float32)
    for e in ("numpy", "torch"):
        state, spec, info = load_model(out / f"{e}_model.safetensors")
        assert spec.describe() == "784-533-10 (relu)"
        assert info["engine"] == e and info["dtype"] == "float32"
        engine = make_engine(e, spec, state, dtype=np.float32, device="cpu").eval()
        report = classification_report(mnist.test_labels, engine.predict_logits(x).argmax(axis=1),
                                       mnist.class_names)
        assert report == metrics["engines"][e]["test"]


# --------------------------------------------------------------------------- compare (float64)


def test_compare_float64_twins_agree_to_rounding(mnist, tmp_path):
    out = tmp_path / "run64"
    code, stdout, stderr = _main(["compare", "--dtype", "float64", *SMALL, "--out", str(out),
                                  "--data-dir", mnist.source])
    assert code == 0, stderr
    assert "--dtype float64" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    _check_metrics(metrics, ("numpy", "torch"))
    a, b = metrics["engines"]["numpy"], metrics["engines"]["torch"]
    assert a["test"]["accuracy"] == b["test"]["accuracy"]
    assert a["test"]["confusion_matrix"] == b["test"]["confusion_matrix"]
    twin = metrics["twin"]
    assert twin["max_rel_weight_diff"] < 1e-12
    assert twin["max_abs_step_loss_diff"] < 1e-12
    assert np.allclose(a["step_loss"], b["step_loss"], rtol=1e-12, atol=0)
    assert {p.name for p in out.iterdir()} == _expected_files(("numpy", "torch"))
    _no_temp_files(out)


# --------------------------------------------------------------------------- train + evaluate


@pytest.fixture(scope="module")
def train_run(mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    code, stdout, stderr = _main(["train", "--engine", "numpy", *SMALL, "--out", str(out),
                                  "--data-dir", mnist.source])
    return code, stdout, stderr, out


def test_train_numpy_writes_one_engine(train_run):
    code, stdout, stderr, out = train_run
    assert code == 0, stderr
    assert {p.name for p in out.iterdir()} == _expected_files(("numpy",))
    assert not (out / "twin_divergence.png").exists()
    assert not any(p.name.startswith("torch_") for p in out.iterdir())
    metrics = json.loads((out / "metrics.json").read_text())
    _check_metrics(metrics, ("numpy",))
    assert "twin" not in metrics
    assert "NumPy" in stdout and "PyTorch" not in stdout
    _no_temp_files(out)


def test_evaluate_prints_the_runs_accuracy(train_run, mnist, tmp_path):
    code, _, stderr, out = train_run
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["engines"]["numpy"]["test"]
    json_out = tmp_path / "eval.json"
    proc = run_cli(["evaluate", "--model", str(out / "numpy_model.safetensors"), "--data-dir", mnist.source,
                    "--json", str(json_out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"accuracy {test['accuracy']:.4f}" in proc.stdout
    assert f"errors {test['errors']}" in proc.stdout
    assert json.loads(json_out.read_text())["test"] == test


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("args", [
    ["compare", "--epochs", "0"],
    ["compare", "--lr", "-1"],
    ["compare", "--train-subset", "0"],
    ["train", "--engine", "numpy", "--epochs", "0"],
    ["compare", "--data-dir", "/nonexistent/dir"],
    ["evaluate", "--model", "/nonexistent.safetensors"],
], ids=["epochs-0", "lr-negative", "train-subset-0", "train-epochs-0", "data-dir-missing", "model-missing"])
def test_bad_input_is_one_line_exit_2(args, tmp_path):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if args[0] != "evaluate" else []
    proc = run_cli([*args, *extra], cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = assert_one_line_error(proc.stderr, proc.stdout)
    if "--data-dir" in args:
        assert "/nonexistent/dir" in line
    if "--model" in args:
        assert "/nonexistent.safetensors" in line
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_bench_refuses_a_bad_pause_before_measuring(value, tmp_path):
    proc = run_cli(["bench", "--settle", value], cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "--settle" in assert_one_line_error(proc.stderr, proc.stdout)


def test_train_subset_larger_than_training_set(mnist, tmp_path):
    proc = run_cli(["compare", "--train-subset", "60000", "--epochs", "1", "--data-dir", mnist.source,
                    "--out", str(tmp_path / "out")], cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = assert_one_line_error(proc.stderr, proc.stdout)
    assert "60000" in line and "--train-subset" in line


def test_evaluate_on_a_text_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("this is not a model\n")
    proc = run_cli(["evaluate", "--model", str(path)], cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert str(path) in assert_one_line_error(proc.stderr, proc.stdout)


def test_evaluate_on_a_model_whose_tensors_do_not_fit_its_spec(mnist, tmp_path):
    """A damaged model file must be a one-line error too, not a ValueError traceback."""
    from nnscratch.files.model_files import save_model
    from nnscratch.model.registry import initial_state
    from nnscratch.model.spec import mlp_spec

    path = tmp_path / "mismatch.safetensors"
    save_model(path, initial_state(mlp_spec(hidden=(16,)), np.random.default_rng(0)), mlp_spec(hidden=(64, 32)),
               dtype="float32", dataset="mnist")
    proc = run_cli(["evaluate", "--model", str(path), "--data-dir", mnist.source], cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert_one_line_error(proc.stderr, proc.stdout)


_PATCHED_MIRRORS = """\
import dataclasses, sys
from nnscratch.data import datasets
spec = datasets.DATASETS["mnist"]
datasets.DATASETS["mnist"] = dataclasses.replace(spec, mirrors=(sys.argv[1],))
from nnscratch.cli.main import main
raise SystemExit(main(sys.argv[2:]))
"""


def test_missing_dataset_without_network(tmp_path):
    """No files anywhere and no reachable mirror: one line saying where it looked and what to do."""
    data_dir, cache = tmp_path / "empty-data", tmp_path / "empty-cache"
    data_dir.mkdir()
    cache.mkdir()
    # a port that is bound but not listening: connections to it are refused at once
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        mirror = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        proc = run_python(_PATCHED_MIRRORS, [mirror, "compare", "--epochs", "1", "--train-subset", "2000",
                                             "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=cli_env(NNSCRATCH_DATA_DIR=str(data_dir), XDG_CACHE_HOME=str(cache)))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = assert_one_line_error(proc.stderr, proc.stdout)
    assert str(data_dir) in line
    assert str(cache) in line
    assert "127.0.0.1" in line
    assert "--data-dir" in line and "NNSCRATCH_DATA_DIR" in line
    # nothing half-downloaded was left in the cache
    assert not [p for p in cache.rglob("*") if p.is_file() and "nnscratch" in p.parts]


# --------------------------------------------------------------------------- help


def _help(verb: str, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    captured = capsys.readouterr()
    return " ".join(captured.out.split())  # undo argparse's line wrapping


@pytest.mark.parametrize("verb", ["compare", "train"])
def test_help_of_run_verbs_lists_hyperparameters_with_seed_defaults(verb, capsys):
    text = _help(verb, capsys)
    assert text.startswith(f"usage: nnscratch {verb}")
    for flag, default in (("--epochs", "20"), ("--batch-size", "64"), ("--lr", "0.01"), ("--hidden", "533"),
                          ("--seed", "0"), ("--dtype", "float32")):
        assert flag in text, flag
        assert f"(default: {default})" in text, flag
    for flag in ("--train-subset", "--data-dir", "--out", "--device", "--threads", "--quiet"):
        assert flag in text, flag
    if verb == "train":
        assert "--engine" in text and "(default: numpy)" in text


def test_help_of_evaluate(capsys):
    text = _help("evaluate", capsys)
    assert text.startswith("usage: nnscratch evaluate")
    for flag in ("--model", "--engine", "--data-dir", "--dtype", "--json"):
        assert flag in text, flag
    assert "(default: numpy)" in text


def test_help_of_bench(capsys):
    text = _help("bench", capsys)
    assert text.startswith("usage: nnscratch bench")
    for flag in ("--epochs", "--batch-sizes", "--deep", "--engines", "--train-subset", "--threads", "--data-dir"):
        assert flag in text, flag
    assert "(default: 64 256 1024)" in text  # the seed's batch size of 64 first
    assert "(default: 3)" in text


def test_top_level_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in ("compare", "train", "evaluate", "bench"):
        assert verb in out


def test_sigterm_mid_run_is_one_line_exit_143_and_leaves_no_temp_file(mnist, tmp_path):
    """A terminated run finishes its step, checkpoints and says ``nnscratch: terminated: ...`` with the
    command that resumes it (exit 143, as shells expect), without a traceback or half-written files."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import cli_env

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nnscratch", "train", "--epochs", "200", "--train-subset", "3000",
                             "--data-dir", mnist.source, "--out", str(out)],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training has started
        if line.startswith("  output:"):
            break
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if line.strip() and "step/s" not in line and "epoch" not in line]
    assert lines[-1].startswith("nnscratch: terminated: numpy checkpoint written to ") and "Traceback" not in stderr
    assert "; resume with: nnscratch train --engine numpy --resume " in lines[-1]
    assert not out.exists() or not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

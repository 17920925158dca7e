"""Tests for the report package: figures, report.md and the machine block, on synthetic data."""

from __future__ import annotations

import json
import re

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnscratch.report import machine_info, render_report, write_figures, write_report
from nnscratch.report.markdown import format_duration, most_confused
from nnscratch.report.plots import plot_twin_divergence, select_predictions

CLASSES = tuple(str(d) for d in range(10))
STEPS_PER_EPOCH = 50
ENGINE_FIGURES = ("loss_curve", "metrics", "confusion_matrix", "correct_predictions",
                  "incorrect_predictions")


def _engine(rng: np.random.Generator, accuracy: float, time_s: float) -> dict:
    """A random but valid engine result: 2 epochs, a 10x10 confusion matrix, step losses."""
    cm = rng.integers(0, 6, size=(10, 10))
    np.fill_diagonal(cm, rng.integers(80, 120, size=10))
    support = cm.sum(axis=1)
    recall = np.diag(cm) / support
    per_class = [{"class": str(c), "precision": 0.9, "recall": float(recall[c]), "f1": 0.9,
                  "support": int(support[c]), "accuracy": float(recall[c])} for c in range(10)]
    steps = 2 * STEPS_PER_EPOCH
    step_loss = (2.3 * np.exp(-np.arange(steps) / 30) + 0.1) * rng.uniform(0.8, 1.2, steps)
    history = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "train_accuracy": 0.8 + 0.05 * e,
                "val_loss": 1.1 / (e + 1), "val_accuracy": 0.79 + 0.05 * e,
                "val_f1": 0.78 + 0.05 * e, "time_s": time_s / 2} for e in range(2)]
    test = {"accuracy": accuracy, "precision": 0.91234, "recall": 0.90876, "f1": 0.90557,
            "macro": {"precision": 0.9011, "recall": 0.9022, "f1": 0.9033},
            "per_class": per_class, "confusion_matrix": cm.tolist(),
            "errors": int(cm.sum() - np.trace(cm))}
    return {"test": test, "train_time_s": time_s, "step_loss": step_loss.tolist(),
            "history": history}


@pytest.fixture(scope="module")
def data() -> dict:
    """Synthetic metrics for both engines plus the arrays the figures need."""
    rng = np.random.default_rng(0)
    engines = {"numpy": _engine(rng, 0.95281, 172.0), "torch": _engine(rng, 0.95344, 76.4)}
    n = 200
    labels = np.arange(n) % 10
    probs = {}
    for engine in engines:
        logits = rng.normal(size=(n, 10))
        logits[np.arange(n), labels] += 2.0          # mostly right, some wrong
        p = np.exp(logits)
        probs[engine] = p / p.sum(axis=1, keepdims=True)
    metrics = {
        "config": {"epochs": 2, "batch_size": 64, "lr": 0.01, "hidden": [533], "seed": 7,
                   "dtype": "float32", "train_subset": None},
        "dataset": {"name": "mnist", "train": 50000, "val": 10000, "test": 10000},
        "engines": engines,
        "twin": {"max_abs_step_loss_diff": 3.05e-7, "max_rel_weight_diff": 1.5e-6,
                 "max_rel_step_loss_diff": 2.1e-7, "test_prediction_agreement": 0.9993},
        "machine": machine_info(),
    }
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return {"metrics": metrics, "test_images": images, "test_labels": labels,
            "probabilities": probs, "class_names": CLASSES,
            "train_images": images[::-1].copy(), "train_labels": labels[::-1].copy()}


def _figures(out_dir, data: dict, engines: tuple[str, ...]) -> list:
    metrics = dict(data["metrics"], engines={e: data["metrics"]["engines"][e] for e in engines})
    return write_figures(out_dir, metrics, **{k: v for k, v in data.items() if k != "metrics"})


def _assert_valid_pngs(out_dir, written, expected: set[str]) -> None:
    assert {p.name for p in written} == expected
    assert {p.name for p in out_dir.iterdir()} == expected      # no temp files left behind
    for path in written:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert 300 <= width <= 2500 and 150 <= height <= 2500, (path.name, image.size)


def test_write_figures_both_engines(tmp_path, data):
    written = _figures(tmp_path, data, ("numpy", "torch"))
    expected = {"mnist_samples.png", "twin_divergence.png"}
    expected |= {f"{e}_{kind}.png" for e in ("numpy", "torch") for kind in ENGINE_FIGURES}
    _assert_valid_pngs(tmp_path, written, expected)


def test_write_figures_one_engine_has_no_twin(tmp_path, data):
    written = _figures(tmp_path, data, ("numpy",))
    expected = {"mnist_samples.png"} | {f"numpy_{kind}.png" for kind in ENGINE_FIGURES}
    _assert_valid_pngs(tmp_path, written, expected)
    assert not (tmp_path / "twin_divergence.png").exists()


def test_twin_divergence_handles_identical_losses(tmp_path):
    losses = [2.3, 1.0, 0.5, 0.25]
    path = plot_twin_divergence(losses, list(losses), tmp_path / "twin.png", "float64",
                                epochs=2)
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["twin.png"]


def test_twin_divergence_draws_both_loss_curves_on_top(tmp_path, monkeypatch):
    """The top panel shows the two engines' (smoothed) training losses, each its own line, so that a
    reader sees them follow one curve; the two panels below show their differences."""
    import nnscratch.report.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or Path(path))
    rng = np.random.default_rng(0)
    a = np.exp(-np.linspace(0, 3, 500)) + 0.01 * rng.random(500)
    b = a + 1e-4 * rng.standard_normal(500)
    plots.plot_twin_divergence(a, b, tmp_path / "twin.png", "float32", epochs=5)
    top, middle, bottom = figures[0].axes
    assert top.get_ylabel() == "training loss" and len(top.get_lines()) == 2
    smoothed = [line.get_ydata() for line in top.get_lines()]
    assert len(smoothed[0]) == 500 - 5 + 1  # a running mean over 500 // 100 = 5 steps
    np.testing.assert_allclose(smoothed[0], np.convolve(a, np.ones(5) / 5, mode="valid"))
    np.testing.assert_allclose(smoothed[1], np.convolve(b, np.ones(5) / 5, mode="valid"))
    assert "loss NumPy" in middle.get_ylabel() and bottom.get_ylabel() == "relative difference"


def test_select_predictions_is_deterministic_and_correctly_split():
    labels = np.array([0, 1, 2, 0, 1, 2])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), [0, 1, 2, 1, 0, 0]] = 0.8          # last three wrong
    probs[4, 0], probs[5, 0] = 0.6, 0.9                     # confidences of mistakes 0.8/0.6/0.9
    assert select_predictions(labels, probs, correct=False, n=2).tolist() == [5, 3]
    assert select_predictions(labels, probs, correct=True, n=20).tolist() == [0, 1, 2]


def test_render_report_results_table(data):
    text = render_report(data["metrics"], ["mnist_samples.png", "numpy_loss_curve.png",
                                           "twin_divergence.png"])
    assert "| Metric | NumPy | PyTorch |" in text
    assert "| Accuracy | 0.9528 | 0.9534 |" in text
    assert "| Precision (weighted) | 0.9123 | 0.9123 |" in text
    assert "| Recall (weighted) | 0.9088 | 0.9088 |" in text
    assert "| F1 (weighted) | 0.9056 | 0.9056 |" in text
    assert "| F1 (macro) | 0.9033 | 0.9033 |" in text
    assert "| Training time | 2m52s | 1m16s |" in text
    assert "seed 7" in text
    assert "![" in text and "](numpy_loss_curve.png)" in text
    assert "](twin_divergence.png)" in text
    errors = data["metrics"]["engines"]["numpy"]["test"]["errors"]
    assert f"| Test errors | {errors:,} of " in text


def test_render_report_per_digit_table(data):
    text = render_report(data["metrics"], [])
    assert "| Digit | Test images | NumPy accuracy | PyTorch accuracy |" in text
    for engine in ("numpy", "torch"):
        per_class = data["metrics"]["engines"][engine]["test"]["per_class"]
        assert f"{per_class[3]['accuracy']:.4f}" in text
    row = re.search(r"^\| 7 \| [\d,]+ \| (\d\.\d{4}) \| (\d\.\d{4}) \|$", text, re.MULTILINE)
    assert row is not None
    expected = data["metrics"]["engines"]["numpy"]["test"]["per_class"][7]["accuracy"]
    assert row.group(1) == f"{expected:.4f}"


def test_most_confused_pairs_from_hand_made_matrix(data):
    cm = np.diag(np.full(10, 100))
    cm[4, 9], cm[9, 4], cm[3, 5], cm[7, 1], cm[2, 7], cm[8, 3] = 31, 12, 17, 12, 5, 9
    assert most_confused(cm, k=3) == [(4, 9, 31), (3, 5, 17), (7, 1, 12)]
    metrics = json.loads(json.dumps(data["metrics"]))
    metrics["engines"]["torch"]["test"]["confusion_matrix"] = cm.tolist()
    text = render_report(metrics, [])
    section = text.split("## Most confused pairs")[1].split("\n## ")[0]
    first_row = next(line for line in section.splitlines() if line.startswith("| 1 |"))
    assert first_row.endswith("| 4 → 9 (31) |")
    assert "| 5 |" in section and "2 → 7 (5)" not in section  # top 5 only: 2 -> 7 is sixth


def test_report_twin_and_machine_sections(tmp_path, data):
    path = write_report(tmp_path / "report.md", data["metrics"], [tmp_path / "numpy_metrics.png"])
    text = path.read_text(encoding="utf-8")
    assert "](numpy_metrics.png)" in text                   # linked relative to the report
    assert "3.05e-07" in text and "1.50e-06" in text and "99.93%" in text
    assert "same initial weights" in text
    machine = text.split("## Machine")[1]
    assert data["metrics"]["machine"]["cpu_model"] in machine
    assert "NumPy " + data["metrics"]["machine"]["numpy"] in machine
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_report_with_one_engine_has_no_twin_section(data):
    metrics = {k: v for k, v in data["metrics"].items() if k != "twin"}
    metrics["engines"] = {"numpy": data["metrics"]["engines"]["numpy"]}
    text = render_report(metrics, ["numpy_metrics.png"])
    assert "| Metric | NumPy |\n|---|---|\n| Accuracy | 0.9528 |" in text
    assert "PyTorch |" not in text and "Twin" not in text
    assert "## Machine" in text


@pytest.mark.parametrize("seconds, text", [(12.34, "12.3 s"), (172.0, "2m52s"),
                                           (59.96, "60.0 s"), (3723.0, "1h02m03s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_machine_info_shape():
    info = machine_info()
    for key in ("cpu_model", "logical_cores", "usable_cores", "memory_bytes", "os", "python",
                "numpy", "scipy", "torch", "matplotlib", "blas"):
        assert key in info
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["logical_cores"] >= 1 and 1 <= info["usable_cores"] <= info["logical_cores"]
    assert info["numpy"] == np.__version__
    assert isinstance(info["blas"], list)
    json.dumps(info)                                        # plain JSON-able

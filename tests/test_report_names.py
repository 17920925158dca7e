"""Display names live in one place (``nnscratch.report.display_names``); the results table and the benchmark
figure use the report package's helpers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

import nnscratch
from nnscratch.report.display_names import class_noun, dataset_slug, dataset_title, engine_label
from nnscratch.report.bench_plot import plot_benchmark
from nnscratch.report.results_table import results_table

SRC = Path(nnscratch.__file__).parent


def test_engine_label():
    assert [engine_label(e) for e in ("numpy", "torch", "jax")] == ["NumPy", "PyTorch", "jax"]


@pytest.mark.parametrize("name, title, expected", [
    ("mnist", None, "MNIST"), ("fashion-mnist", None, "Fashion-MNIST"), ("cifar10", None, "CIFAR-10"),
    ("MNIST", None, "MNIST"), ("folder:/data/my pets", None, "my pets"), ("csv:/x/digits.csv", None, "digits.csv"),
    ("cifar10", "CIFAR ten", "CIFAR ten"), ("something", "", "something"),
])
def test_dataset_title(name, title, expected):
    assert dataset_title(name, title) == expected


@pytest.mark.parametrize("name, title, expected", [
    ("mnist", "MNIST", "mnist"), ("fashion-mnist", "Fashion-MNIST", "fashion-mnist"),
    ("cifar10", "CIFAR-10", "cifar10"), ("folder:/data/My Pets!", "My Pets!", "my-pets"),
    ("folder:/data/My Pets!", None, "my-pets"), ("npz:/x/t.npz", "t.npz", "t-npz"), ("???", None, "dataset"),
])
def test_dataset_slug(name, title, expected):
    assert dataset_slug(name, title) == expected


def test_class_noun():
    assert [class_noun(n) for n in ("mnist", "fashion-mnist", "folder:/x/digits")] == ["digit", "class", "class"]


def test_display_names_are_defined_once():
    """No module but display_names.py spells out an engine's or a built-in dataset's display name table."""
    pattern = re.compile(r"""["']numpy["']\s*:\s*["']NumPy["']|["']fashion-mnist["']\s*:\s*["']Fashion-MNIST["']""")
    offenders = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
                 if p.name != "display_names.py" and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert not (SRC / "bench_plot.py").exists()               # moved to report/bench_plot.py


def test_results_table_uses_the_display_names():
    test = {"accuracy": 0.9, "precision": 0.9, "recall": 0.9, "f1": 0.9, "errors": 1,
            "confusion_matrix": [[5, 1], [0, 4]]}
    metrics = {"engines": {e: {"test": test, "train_time_s": 61.0} for e in ("numpy", "torch")}}
    header = results_table(metrics).splitlines()[0].split()
    assert header == ["Metric", "NumPy", "PyTorch"]
    assert "1m01s" in results_table(metrics)


def test_benchmark_figure_is_written(tmp_path):
    rows = [{"arch": "784-533-10", "batch_size": 64, "engine": e, "s_per_epoch": s}
            for e, s in (("numpy-float32", 3.1), ("torch-eager", 2.4), ("sklearn", None))]
    result = {"rows": rows, "limit_s_per_epoch": {"784-533-10 float32": 0.9},
              "peak_gflops": {"float32": {"peak": 180.0}}, "threads": 2}
    path = tmp_path / "bench.png"
    plot_benchmark(result, str(path))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert [p.name for p in tmp_path.iterdir()] == ["bench.png"]

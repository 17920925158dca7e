"""Figures and report.md adapt to the dataset: title, class names, grey or colour images of any size,
long names, few or many classes; and the training extras (learning-rate schedule, early stopping)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from nnscratch.report import render_report, write_figures, write_report
from nnscratch.report import plots
from nnscratch.report.context import dataset_view, lr_varies

DIGITS = tuple(str(d) for d in range(10))
CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LONG = ("a very long class name number one", "a very long class name number two",
        "a very long class name number three")
ENGINE_FIGURES = ("loss_curve", "metrics", "confusion_matrix", "correct_predictions",
                  "incorrect_predictions")

#: name, title, class names, image shape (H, W, C), expected sample-grid file.
DATASETS = {
    "mnist": ("mnist", "MNIST", DIGITS, (28, 28, 1), "mnist_samples.png"),
    "cifar10": ("cifar10", "CIFAR-10", CIFAR, (32, 32, 3), "cifar10_samples.png"),
    "long": ("folder:/data/Long Names", "Long Names", LONG, (8, 8, 1), "long-names_samples.png"),
    "two": ("npz:/data/pets.npz", "pets.npz", ("cat", "dog"), (16, 16, 1), "pets-npz_samples.png"),
}


def _engine(rng: np.random.Generator, labels: np.ndarray, k: int, **extra) -> tuple[dict, np.ndarray]:
    """An engine result consistent with random but mostly right test probabilities."""
    logits = rng.normal(size=(len(labels), k))
    logits[np.arange(len(labels)), labels] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, probs.argmax(axis=1)), 1)
    recall = np.diag(cm) / cm.sum(axis=1)
    per_class = [{"class": f"class {c}", "precision": 0.9, "recall": float(recall[c]), "f1": 0.9,
                  "support": int(cm[c].sum()), "accuracy": float(recall[c])} for c in range(k)]
    test = {"accuracy": float(np.trace(cm) / cm.sum()), "precision": 0.9, "recall": 0.9,
            "f1": 0.9, "macro": {"precision": 0.9, "recall": 0.9, "f1": 0.9},
            "per_class": per_class, "confusion_matrix": cm.tolist(),
            "errors": int(cm.sum() - np.trace(cm))}
    history = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "train_accuracy": 0.8,
                "val_loss": 1.2 / (e + 1), "val_accuracy": 0.8, "val_f1": 0.8, "time_s": 1.0}
               for e in range(3)]
    result = {"test": test, "train_time_s": 3.0, "history": history,
              "step_loss": (2.0 * np.exp(-np.arange(30) / 10) + 0.1).tolist(), **extra}
    return result, probs


def _images(rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 (N, H, W, C): colour noise for C = 3; for C = 1 a bright bar on black, as in MNIST."""
    h, w, c = shape
    if c == 3:
        return rng.integers(0, 256, size=(len(labels), h, w, c), dtype=np.uint8)
    images = np.zeros((len(labels), h, w, 1), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, h // 4: 3 * h // 4, 1 + int(label) % (w - 2)] = 255
    return images


def make_run(key: str, engines=("numpy", "torch"), n: int = 120, **extra) -> dict:
    """Synthetic metrics (with the new dataset fields) and the arrays the figures need."""
    name, title, classes, shape, _ = DATASETS[key]
    rng = np.random.default_rng(len(classes))
    labels = np.arange(n) % len(classes)
    results, probs = {}, {}
    for engine in engines:
        results[engine], probs[engine] = _engine(rng, labels, len(classes), **extra)
    metrics = {
        "config": {"epochs": 3, "batch_size": 32, "lr": 0.05, "hidden": [64, 32], "seed": 3,
                   "dtype": "float32", "optimizer": "adam", "betas": [0.9, 0.999],
                   "clip_grad_norm": None, "batch_norm": True, "train_subset": None,
                   "early_stopping": {"patience": 2, "min_delta": 0.0}},
        "dataset": {"name": name, "title": title, "class_names": list(classes),
                    "image_shape": list(shape), "train": n, "val": 20, "test": n,
                    "source": "/data/somewhere", "notes": ["pixels divided by 255"],
                    "split_rule": "stratified, seed 3"},
        "engines": results,
    }
    if len(engines) == 2:
        metrics["twin"] = {"max_abs_step_loss_diff": 1e-7, "max_rel_step_loss_diff": 1e-7,
                           "max_rel_weight_diff": 2e-6, "test_prediction_agreement": 0.99}
    images = _images(rng, labels, shape)
    return {"metrics": metrics, "test_images": images, "test_labels": labels,
            "probabilities": probs, "train_images": images, "train_labels": labels}


def _write(out_dir, run: dict) -> tuple[list, str]:
    """Every figure and report.md of ``run`` into ``out_dir``; returns the figures and the text."""
    figures = write_figures(out_dir, run["metrics"], **{k: v for k, v in run.items() if k != "metrics"})
    report = write_report(out_dir / "report.md", run["metrics"], figures)
    return figures, report.read_text(encoding="utf-8")


def _rgb(path) -> np.ndarray:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
        return np.asarray(image.convert("RGB")).astype(np.int16)


def _coloured_pixels(path) -> int:
    """How many pixels of a PNG are clearly not grey (R, G and B differ by more than 8)."""
    rgb = _rgb(path)
    return int(np.sum((np.abs(rgb[..., 0] - rgb[..., 1]) > 8) | (np.abs(rgb[..., 1] - rgb[..., 2]) > 8)))


# --------------------------------------------------------------------------- every dataset


@pytest.mark.parametrize("key", list(DATASETS))
def test_figures_and_report_for_each_dataset(tmp_path, key):
    name, title, classes, _, samples = DATASETS[key]
    figures, text = _write(tmp_path, make_run(key))
    expected = {samples, "twin_divergence.png"}
    expected |= {f"{e}_{kind}.png" for e in ("numpy", "torch") for kind in ENGINE_FIGURES}
    assert {p.name for p in figures} == expected
    assert {p.name for p in tmp_path.iterdir()} == expected | {"report.md"}
    for path in figures:
        height, width, _ = _rgb(path).shape
        assert 300 <= width <= 2500 and 150 <= height <= 2500, (path.name, width, height)
        assert f"]({path.name})" in text                    # every figure is linked
    assert text.startswith(f"# nnscratch: NumPy vs PyTorch on {title}\n")
    for class_name in classes:
        assert f"| {class_name} |" in text                  # the per-class table uses the names
    assert "class 0" not in text                            # ... not the per_class fallback
    if key == "mnist":
        assert "## Per-digit accuracy on MNIST" in text and "| Digit | Test images |" in text
    else:
        assert "digit" not in text.lower()
        assert f"## Per-class accuracy on {title}" in text and "| Class | Test images |" in text
    assert "lr_schedule" not in text and "Early stopping" not in text


def test_data_section_describes_the_dataset(tmp_path):
    text = render_report(make_run("cifar10")["metrics"], [])
    assert ("**Data:** CIFAR-10 (32×32 colour images, 10 classes): 120 train / 20 validation / "
            "120 test images.") in text
    assert "**Classes:** airplane, automobile, bird," in text
    assert "**Split:** stratified, seed 3" in text and "- pixels divided by 255" in text
    grey = render_report(make_run("long")["metrics"], [])
    assert "**Data:** Long Names (8×8 greyscale images, 3 classes)" in grey


def test_colour_images_are_drawn_in_colour_and_grey_in_grey(tmp_path):
    _write(tmp_path / "rgb", make_run("cifar10"))
    _write(tmp_path / "grey", make_run("mnist"))
    assert _coloured_pixels(tmp_path / "rgb" / "cifar10_samples.png") > 10_000
    assert _coloured_pixels(tmp_path / "rgb" / "numpy_incorrect_predictions.png") > 10_000
    assert _coloured_pixels(tmp_path / "grey" / "mnist_samples.png") == 0
    # MNIST-style greyscale (bright strokes on black) is drawn as dark ink on white paper
    assert _rgb(tmp_path / "grey" / "mnist_samples.png").mean() > 200


def test_three_dimensional_images_still_work(tmp_path):
    run = make_run("mnist", engines=("numpy",))
    run["train_images"] = run["test_images"] = run["test_images"][..., 0]      # (N, H, W)
    figures, _ = _write(tmp_path, run)
    assert "mnist_samples.png" in {p.name for p in figures}


# --------------------------------------------------------------------------- what each figure says


@pytest.fixture
def captured(monkeypatch):
    """Figures as drawn, instead of written: ``plots.save_figure`` records each one."""
    figures = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    yield figures
    for fig in figures:
        plots.plt.close(fig)


def _titles(fig) -> list[str]:
    """Every title and free text of a figure (image titles, row names, the figure's title)."""
    texts = [ax.get_title() for ax in fig.axes if ax.get_title()]
    texts += [t.get_text() for ax in fig.axes for t in ax.texts]
    return texts + [t.get_text() for t in fig.texts]


def test_confusion_matrix_labels_fit_long_names(captured, tmp_path):
    plots.plot_confusion_matrix(np.diag([5, 6, 7]), LONG, tmp_path / "cm.png", "numpy",
                                dataset="Long Names")
    ax = captured[0].axes[0]
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        texts = [t.get_text() for t in labels]
        assert len(texts) == 3 and len(set(texts)) == 3     # cut, yet still told apart
        assert all(len(t) <= plots.LABEL_CHARS and "…" in t for t in texts)
    assert all(t.get_rotation() != 0 for t in ax.get_xticklabels())
    assert "Long Names test set" in ax.get_title()


@pytest.mark.parametrize("n", [2, 20])
def test_confusion_matrix_readable_from_2_to_20_classes(tmp_path, n):
    names = [f"category number {k}" for k in range(n)]
    cm = np.diag(np.full(n, 50)) + 1
    path = plots.plot_confusion_matrix(cm, names, tmp_path / "cm.png", "torch")
    height, width, _ = _rgb(path).shape
    assert 600 <= width <= 2000 and 600 <= height <= 2000


def test_short_labels_keep_names_apart():
    assert plots.short_labels(["cat", "dog"]) == ["cat", "dog"]
    assert plots.short_labels(["category 10 with name", "category 11 with name"]) == [
        "category 10 w…", "category 11 w…"]
    assert plots.short_labels(LONG) == ["a very…er one", "a very…er two", "a very…three"]
    assert len(set(plots.short_labels(["x" * 30 + "a" + "x" * 30, "x" * 30 + "b" + "x" * 30]))) == 2


def test_sample_grid_caps_many_classes_and_says_so(captured, tmp_path):
    labels = np.arange(100) % 25
    images = np.zeros((100, 8, 8, 3), dtype=np.uint8)
    plots.plot_samples(images, labels, [f"c{k}" for k in range(25)], tmp_path / "s.png",
                       title="Many training samples")
    fig = captured[0]
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 20 * 2
    assert {ax.get_title() for ax in drawn} == {f"c{k}" for k in range(20)}
    assert "the first 20 of 25 classes" in fig._suptitle.get_text()


def test_sample_grid_shows_every_class_of_a_two_class_dataset(captured, tmp_path):
    run = make_run("two", engines=("numpy",))
    write_figures(tmp_path, run["metrics"], **{k: v for k, v in run.items() if k != "metrics"})
    samples = captured[0]
    assert "pets.npz training samples" in samples._suptitle.get_text()
    assert sum(1 for ax in samples.axes if ax.images) >= 8
    assert {"cat", "dog"} <= set(_titles(samples))


def test_prediction_grids_name_the_classes(captured, tmp_path):
    run = make_run("cifar10", engines=("numpy",))
    write_figures(tmp_path, run["metrics"], **{k: v for k, v in run.items() if k != "metrics"})
    by_title = {fig._suptitle.get_text(): fig for fig in captured if fig._suptitle is not None}
    correct = next(f for t, f in by_title.items() if "correct test predictions" in t)
    assert "NumPy on CIFAR-10" in correct._suptitle.get_text()
    assert "each class in turn" in correct._suptitle.get_text()
    shown = " ".join(_titles(correct))
    assert all(f"true {name}" in shown for name in CIFAR)   # every class appears
    assert correct.axes[0].images[0].get_array().ndim == 3  # drawn as RGB, not through a colormap


# --------------------------------------------------------------------------- training extras


def _varying_lr(steps: int = 30) -> list[float]:
    warm = np.linspace(0.01, 0.1, 5)
    return [*warm, *(0.1 * np.cos(np.linspace(0, np.pi / 2, steps - 5)) + 1e-3)]


def test_learning_rate_figure_only_when_the_rate_varies(tmp_path):
    varying = make_run("cifar10", step_lr=_varying_lr())
    varying["metrics"]["config"] |= {"lr_schedule": "cosine", "warmup_steps": 5}
    figures, text = _write(tmp_path / "varying", varying)
    assert "lr_schedule.png" in {p.name for p in figures}
    assert (tmp_path / "varying" / "lr_schedule.png").stat().st_size > 0
    assert "![Learning rate per step](lr_schedule.png)" in text
    assert text.count("](lr_schedule.png)") == 1           # not repeated under Figures
    assert re.search(r"\*\*Learning rate:\*\* `cosine` schedule, 5 warm-up steps: 0\.01 at step 1, "
                     r"peak 0\.101 at step 6, [\d.e-]+ at step 30\.", text)
    constant = make_run("cifar10", step_lr=[0.05] * 30)
    figures, text = _write(tmp_path / "constant", constant)
    assert "lr_schedule.png" not in {p.name for p in figures}
    assert not (tmp_path / "constant" / "lr_schedule.png").exists()
    assert "Learning rate:" not in text and "## Training\n" not in text


def test_learning_rate_per_engine_when_the_engines_differ(captured, tmp_path):
    run = make_run("mnist")
    run["metrics"]["engines"]["numpy"]["step_lr"] = _varying_lr()
    run["metrics"]["engines"]["torch"]["step_lr"] = [0.05] * 30
    assert lr_varies(run["metrics"])
    text = render_report(run["metrics"], ["lr_schedule.png"])
    assert "- NumPy: 0.01 at step 1" in text and "- PyTorch: 0.05 at step 1, peak 0.05" in text
    write_figures(tmp_path, run["metrics"], test_images=None, test_labels=None, probabilities=None)
    lr_fig = next(f for f in captured if f.axes[0].get_ylabel() == "learning rate")
    assert len(lr_fig.axes[0].get_lines()) == 2


def test_early_stopping_line_per_engine():
    stopping = {"stopped_epoch": 7, "best_epoch": 4, "best_val_loss": 0.07123, "restored_best": True,
                "reason": "stopped after epoch 7: validation loss did not improve by more than 0 "
                          "for 3 epochs; best 0.07123 at epoch 4; weights of epoch 4 restored"}
    run = make_run("cifar10", early_stopping=stopping)
    run["metrics"]["config"]["epochs"] = 20
    text = render_report(run["metrics"], [])
    for engine in ("NumPy", "PyTorch"):
        assert (f"- **Early stopping ({engine}):** stopped after epoch 7 of 20 (validation loss did "
                "not improve by more than 0 for 3 epochs). Best validation loss 0.0712 at epoch 4; "
                "its weights were restored.") in text
    ran_out = dict(stopping, stopped_epoch=None, restored_best=False, best_epoch=2)
    run["metrics"]["engines"]["torch"]["early_stopping"] = ran_out
    text = render_report(run["metrics"], [])
    assert ("- **Early stopping (PyTorch):** did not stop early (ran all 20 epochs). Best "
            "validation loss 0.0712 at epoch 2; the last epoch's weights were kept.") in text
    run["metrics"]["engines"]["torch"]["early_stopping"] = dict(ran_out, best_epoch=3)
    assert "at epoch 3; the last epoch was the best." in render_report(run["metrics"], [])


def test_config_line_shows_every_kind_of_value():
    run = make_run("two", engines=("numpy",))
    run["metrics"]["config"] |= {"lr_schedule": None, "momentum": 0.9, "l2": 0.0,
                                 "activation": "gelu", "standardize": False}
    text = render_report(run["metrics"], [])
    line = next(line for line in text.splitlines() if line.startswith("**Config**"))
    # every value that differs from its default is shown, whatever its type; defaults are left out
    # (but for the few that say what the run is), the whole config is in metrics.json
    for shown in ("`betas=[0.9,0.999]`", "`batch_norm=True`",
                  "`early_stopping={patience:2,min_delta:0.0}`", "`hidden=[64,32]`",
                  "`lr_schedule=none`", "`momentum=0.9`", "`activation=gelu`"):
        assert shown in line
    for default in ("`clip_grad_norm=", "`standardize=", "`l2=", "`train_subset="):
        assert default not in line


# --------------------------------------------------------------------------- older metrics.json


def test_older_metrics_fall_back_to_the_name_and_per_class_entries(captured, tmp_path):
    run = make_run("cifar10", engines=("numpy",))
    run["metrics"]["dataset"] = {"name": "fashion-mnist", "train": 120, "val": 20, "test": 120}
    view = dataset_view(run["metrics"])
    assert view.title == "Fashion-MNIST" and view.slug == "fashion-mnist" and view.noun == "class"
    assert view.class_names[:2] == ("class 0", "class 1") and view.image_shape is None
    text = render_report(run["metrics"], [])
    assert text.startswith("# nnscratch: NumPy on Fashion-MNIST\n")
    assert "| class 3 |" in text and "digit" not in text.lower()
    assert "**Data:** Fashion-MNIST (10 classes): 120 train" in text
    figures = write_figures(tmp_path, run["metrics"], **{k: v for k, v in run.items() if k != "metrics"})
    assert [p.name for p in figures][0] == "fashion-mnist_samples.png"
    assert "Fashion-MNIST training samples" in captured[0]._suptitle.get_text()
    assert "class 0" in _titles(captured[0])

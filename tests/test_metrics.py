"""Our NumPy metrics against scikit-learn's, used here only as the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import optional_import

from nnscratch.training.metrics import accuracy, classification_report, confusion_matrix, per_class_scores, weighted_f1

skm = optional_import("sklearn.metrics")

C = 10
NAMES = tuple(str(d) for d in range(C))


def _labels(seed: int, n: int = 500, num_classes: int = C, skill: float = 0.6):
    """Random true labels and predictions that are right about ``skill`` of the time."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, size=n)
    y_pred = np.where(rng.random(n) < skill, y_true, rng.integers(0, num_classes, size=n))
    return y_true, y_pred


def _cases():
    y_true, y_pred = _labels(0)
    yield "random", y_true, y_pred

    y_true, y_pred = _labels(1)
    y_pred = np.where(y_pred == 3, 4, y_pred)  # class 3 never predicted: its precision is 0/0
    assert 3 in y_true and 3 not in y_pred
    yield "never-predicted", y_true, y_pred

    y_true, y_pred = _labels(2)
    y_true = np.where(y_true == 7, 0, y_true)  # class 7 absent from y_true, but predicted
    assert 7 not in y_true and 7 in y_pred
    yield "absent-from-truth", y_true, y_pred

    y_true, y_pred = _labels(3)
    y_true = np.where(y_true == 5, 6, y_true)
    y_pred = np.where(y_pred == 5, 6, y_pred)  # class 5 nowhere at all
    y_pred = np.where(y_pred == 2, 1, y_pred)  # and class 2 never predicted
    yield "absent-everywhere", y_true, y_pred

    y_true, _ = _labels(4)
    yield "perfect", y_true, y_true.copy()

    rng = np.random.default_rng(5)
    yield "small", rng.integers(0, C, size=7), rng.integers(0, C, size=7)


CASES = list(_cases())


@pytest.mark.parametrize("name,y_true,y_pred", CASES, ids=[c[0] for c in CASES])
def test_confusion_matrix_equals_sklearn(name, y_true, y_pred):
    cm = confusion_matrix(y_true, y_pred, C)
    expected = skm.confusion_matrix(y_true, y_pred, labels=range(C))
    assert cm.shape == (C, C)
    assert cm.dtype.kind == "i"
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == len(y_true)


@pytest.mark.parametrize("name,y_true,y_pred", CASES, ids=[c[0] for c in CASES])
def test_classification_report_equals_sklearn(name, y_true, y_pred):
    report = classification_report(y_true, y_pred, NAMES)
    labels = list(range(C))
    assert set(report) == {"accuracy", "precision", "recall", "f1", "macro", "per_class", "confusion_matrix",
                           "errors"}

    assert report["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-15)
    assert accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred), abs=1e-15)

    for average, ours in (("weighted", report), ("macro", report["macro"])):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                         zero_division=0)
        assert ours["precision"] == pytest.approx(p, abs=1e-12), average
        assert ours["recall"] == pytest.approx(r, abs=1e-12), average
        assert ours["f1"] == pytest.approx(f, abs=1e-12), average

    p, r, f, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None,
                                                           zero_division=0)
    assert len(report["per_class"]) == C
    for k, row in enumerate(report["per_class"]):
        assert row["class"] == NAMES[k]
        assert row["precision"] == pytest.approx(p[k], abs=1e-12), k
        assert row["recall"] == pytest.approx(r[k], abs=1e-12), k
        assert row["f1"] == pytest.approx(f[k], abs=1e-12), k
        assert row["support"] == support[k]
        assert row["accuracy"] == row["recall"]  # per-class accuracy is the recall
        assert np.isfinite([row["precision"], row["recall"], row["f1"]]).all()

    np.testing.assert_array_equal(np.array(report["confusion_matrix"]),
                                  skm.confusion_matrix(y_true, y_pred, labels=labels))
    assert report["errors"] == int(np.count_nonzero(y_true != y_pred))
    assert weighted_f1(y_true, y_pred, C) == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0), abs=1e-12)


def test_report_is_plain_json_data():
    import json

    y_true, y_pred = _labels(6)
    report = classification_report(y_true, y_pred, NAMES)
    assert json.loads(json.dumps(report)) == report
    assert all(isinstance(v, int) for row in report["confusion_matrix"] for v in row)
    assert isinstance(report["errors"], int)


def test_zero_division_gives_zero_not_nan():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 0])  # class 1 never predicted, class 2 nowhere
    s = per_class_scores(confusion_matrix(y_true, y_pred, 3))
    np.testing.assert_array_equal(s["precision"], [0.5, 0.0, 0.0])
    np.testing.assert_array_equal(s["recall"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(s["f1"], [2 / 3, 0.0, 0.0])
    np.testing.assert_array_equal(s["support"], [2, 2, 0])


def test_class_names_are_used_in_per_class():
    names = ("cat", "dog", "bird")
    report = classification_report(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1]), names)
    assert [row["class"] for row in report["per_class"]] == list(names)
    assert report["errors"] == 2
    assert report["accuracy"] == 0.5

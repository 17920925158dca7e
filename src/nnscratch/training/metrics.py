"""Classification metrics, written in NumPy (scikit-learn is only the tests' oracle).

All of them derive from the confusion matrix ``cm`` (rows = true class, columns = predicted):

* accuracy  = trace(cm) / cm.sum()
* precision_k = cm[k, k] / cm[:, k].sum()   (of the samples predicted k, the share that are k)
* recall_k    = cm[k, k] / cm[k, :].sum()   (of the samples that are k, the share found; per-class accuracy)
* f1_k        = 2 p_k r_k / (p_k + r_k)
* weighted average: each class weighted by its support ``cm[k, :].sum()``; macro: plain mean.

A ratio with a zero denominator is 0, as scikit-learn's default ``zero_division`` gives.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts, ``cm[i, j]`` = samples of true class ``i`` predicted as ``j``."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` and ``support`` arrays of length C."""
    tp = np.diag(cm)
    precision = _safe_divide(tp, cm.sum(axis=0))
    recall = _safe_divide(tp, cm.sum(axis=1))
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": cm.sum(axis=1)}


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names) -> dict:
    """Everything the report needs, as plain JSON-able data (the ``test`` block of ``metrics.json``)."""
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    s = per_class_scores(cm)
    weights = _safe_divide(s["support"], s["support"].sum())
    result = {"accuracy": accuracy(y_true, y_pred)}
    for name in ("precision", "recall", "f1"):
        result[name] = float(np.sum(weights * s[name]))
    result["macro"] = {name: float(np.mean(s[name])) for name in ("precision", "recall", "f1")}
    result["per_class"] = [
        {"class": str(class_names[i]), "precision": float(s["precision"][i]), "recall": float(s["recall"][i]),
         "f1": float(s["f1"][i]), "support": int(s["support"][i]), "accuracy": float(s["recall"][i])}
        for i in range(k)]
    result["confusion_matrix"] = cm.tolist()
    result["errors"] = int(cm.sum() - np.trace(cm))
    return result


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    s = per_class_scores(confusion_matrix(y_true, y_pred, num_classes))
    return float(np.sum(_safe_divide(s["support"], s["support"].sum()) * s["f1"]))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``softmax`` in float64, stable (``exp`` of ``z - max z`` never overflows)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, y: np.ndarray, label_smoothing: float = 0.0) -> float:
    """Mean cross-entropy of ``softmax(logits)`` against labels ``y``, in float64, as
    ``torch.nn.CrossEntropyLoss(label_smoothing=eps)`` defines it::

        log p_ij = z_ij - m_i - log sum_k exp(z_ik - m_i)          (m_i = max_k z_ik, for stability)
        L        = -(1/N) sum_i [(1 - eps) log p_{i, y_i} + (eps / C) sum_j log p_ij]

    This is the evaluation-side loss, shared by both engines; the NumPy engine's training loss
    (with its gradient) is :class:`nnscratch.numpy_engine.losses.SoftmaxCrossEntropy`.
    """
    logp = log_softmax(logits)
    picked = logp[np.arange(len(y)), np.asarray(y)]
    if label_smoothing:
        picked = (1.0 - label_smoothing) * picked + label_smoothing * logp.mean(axis=1)
    return float(-picked.mean())


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ``log p_ij = z_ij - m_i - log sum_k exp(z_ik - m_i)`` in float64 (``m_i = max_k z_ik``)."""
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def sample_losses(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's cross-entropy ``-log p_{i, y_i}`` (float64, ``(N,)``): the terms whose mean is
    :func:`cross_entropy` without label smoothing."""
    return -log_softmax(logits)[np.arange(len(y)), np.asarray(y)]

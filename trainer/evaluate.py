"""Test-set metrics: accuracy (with its 95% interval), loss, per-class precision/recall/F1,
confusion matrix; and scoring a registry model on a split (``evaluate_on``, and
``evaluate_outcomes`` for the per-image right/wrong vector the promotion gate pairs)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.stats import accuracy_interval
from trainer import data

if TYPE_CHECKING:
    from vision.model import LoadedModel

logger = logging.getLogger(__name__)


def predict(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, probabilities) over a dataset of (images, labels) batches."""
    labels, probs = [], []
    for x, y in dataset:
        probs.append(np.asarray(model(x, training=False), dtype=np.float64))
        labels.append(np.asarray(y))
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    return np.concatenate(labels).astype(np.int64), np.concatenate(probs)


def metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Everything metrics.json says about a model on one split."""
    k = len(classes)
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    cm = np.zeros((k, k), dtype=np.int64)  # rows: true class, columns: predicted
    np.add.at(cm, (y_true, y_pred), 1)
    n = len(y_true)
    p_true = np.clip(probs[np.arange(n), y_true], 1e-7, 1.0) if n else np.zeros(0)
    per_class = {}
    for i, name in enumerate(classes):
        tp, predicted, actual = cm[i, i], cm[:, i].sum(), cm[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
            "support": int(actual),
        }
    present = [v["f1"] for v in per_class.values() if v["support"]]
    accuracy = float(np.trace(cm) / n) if n else 0.0
    return {
        "accuracy": accuracy,
        "accuracy_ci": accuracy_interval(accuracy, n),  # Wilson 95% interval
        "loss": float(-np.log(p_true).mean()) if n else float("nan"),
        "macro_f1": float(np.mean(present)) if present else 0.0,
        "images": int(n),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def evaluate_on(
    loaded: LoadedModel, items: Sequence[data.Item], batch_size: int, max_pixels: int | None = None
) -> dict[str, Any]:
    """``metrics`` of a loaded registry model on ``items`` (read as the trainer reads them)."""
    return evaluate_outcomes(loaded, items, batch_size, max_pixels)[0]


def evaluate_outcomes(
    loaded: LoadedModel, items: Sequence[data.Item], batch_size: int, max_pixels: int | None = None
) -> tuple[dict[str, Any], list[bool]]:
    """``evaluate_on`` plus whether each image was classified right, in ``items`` order
    (unreadable files skipped, as they always are), for a paired comparison of two models."""
    return outcomes(*predict_items(loaded, items, batch_size, max_pixels), loaded.classes)


def outcomes(
    y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]
) -> tuple[dict[str, Any], list[bool]]:
    """``metrics`` and the per-image right/wrong vector of predictions already made."""
    correct = (probs.argmax(axis=1) == y_true).tolist() if len(y_true) else []
    return metrics(y_true, probs, classes), [bool(x) for x in correct]


def predict_items(
    loaded: LoadedModel, items: Sequence[data.Item], batch_size: int, max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, raw softmax outputs) of a loaded registry model on ``items``."""
    ds = data.make_dataset(
        items,
        loaded.classes,
        loaded.image_size,
        batch_size,
        training=False,
        cache=False,
        max_pixels=max_pixels,
    )
    return predict(loaded.model, ds)

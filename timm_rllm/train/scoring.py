"""What a model predicts, beyond ACC and AUC: balanced accuracy and whether it collapsed to one answer.

Predictions are thresholded exactly as ``medmnist.evaluator.getACC`` does (binary: P(last class) > 0.5;
multi-label: each label's probability > 0.5; otherwise the arg-max), so BACC, the prediction counts and
the collapse flag describe the same predictions that ACC scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data import MULTI_LABEL

THRESHOLD = 0.5  # getACC's default


def predicted_labels(y_score: np.ndarray, task: str) -> np.ndarray:
    """(N,) class indices, or (N, L) 0/1 for multi-label, from probabilities."""
    y_score = np.asarray(y_score)
    if task == MULTI_LABEL:
        return (y_score > THRESHOLD).astype(np.int64)
    if task == "binary-class":
        positive = y_score[:, -1] if y_score.ndim == 2 else y_score
        return (positive > THRESHOLD).astype(np.int64)
    return y_score.argmax(-1).astype(np.int64)


def _mean_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in y_true of the fraction of their images predicted as them."""
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]))


def balanced_accuracy(y_true: np.ndarray, y_score: np.ndarray, task: str) -> float:
    """Mean per-class recall (classes present in y_true); multi-label: the mean over labels of each label's
    balanced accuracy ((TPR + TNR) / 2, or the one rate a single-valued label has)."""
    y_true = np.asarray(y_true)
    y_pred = predicted_labels(y_score, task)
    if task == MULTI_LABEL:
        return float(np.mean([_mean_recall(y_true[:, j], y_pred[:, j]) for j in range(y_true.shape[1])]))
    return _mean_recall(y_true.reshape(-1).astype(np.int64), y_pred)


def prediction_summary(y_score: np.ndarray, task: str, num_classes: int) -> dict[str, Any]:
    """``collapsed``: every image gets the same prediction (one class; multi-label: one label vector).
    ``pred_counts``: images per predicted class (multi-label: images predicted positive, per label)."""
    y_pred = predicted_labels(y_score, task)
    if task == MULTI_LABEL:
        collapsed = bool(len(y_pred) > 0 and (y_pred == y_pred[:1]).all())
        return {"collapsed": collapsed, "pred_counts": y_pred.sum(0).astype(int).tolist()}
    counts = np.bincount(y_pred, minlength=num_classes)
    return {"collapsed": bool((counts > 0).sum() <= 1), "pred_counts": counts.astype(int).tolist()}


def collapse_tally(runs: Sequence[Mapping[str, Any]]) -> str:
    """``k/n``: how many of n results files say their selected model collapsed on the test split
    (``n/a`` when the files predate the flag)."""
    known = [r["collapsed"] for r in runs if r.get("collapsed") is not None]
    return f"{sum(known)}/{len(known)}" if known else "n/a"

"""Classification metrics on held-out data, the same for candidate and champion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

PRIMARY_METRIC = "auc"


@dataclass(frozen=True)
class CalibrationBins:
    """Top-label reliability: per confidence bin, its rows, mean confidence and accuracy.

    Bins are ``bins`` equal-width intervals of [0, 1]; empty bins have ``counts == 0`` and
    NaN confidence and accuracy.
    """

    edges: NDArray[np.float64]
    counts: NDArray[np.int64]
    confidence: NDArray[np.float64]
    accuracy: NDArray[np.float64]

    @property
    def ece(self) -> float:
        total = int(self.counts.sum())
        if total == 0:
            return float("nan")
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.counts[filled] * gaps) / total)


def calibration_bins(y_true: NDArray[Any], proba: NDArray[Any], bins: int = 10) -> CalibrationBins:
    """Bin the predicted class's probability (top-label confidence) against its correctness."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y = np.asarray(y_true).astype(int)
    p = np.asarray(proba, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    if len(y) == 0:
        empty = np.full(bins, np.nan)
        return CalibrationBins(edges, np.zeros(bins, dtype=np.int64), empty, empty.copy())
    predicted = p.argmax(axis=1)
    confidence = p[np.arange(len(y)), predicted]
    correct = (predicted == y).astype(float)
    # bin i holds (edges[i], edges[i + 1]]; a confidence of exactly 0 goes to the first bin
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.int64)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, conf_sum / np.maximum(counts, 1), np.nan)
        accuracy = np.where(counts > 0, correct_sum / np.maximum(counts, 1), np.nan)
    return CalibrationBins(edges, counts, mean_conf, accuracy)


def expected_calibration_error(y_true: NDArray[Any], proba: NDArray[Any], bins: int = 10) -> float:
    """Top-label expected calibration error, binary and multiclass.

    The rows-weighted mean, over ``bins`` equal-width confidence bins, of
    ``|accuracy - mean confidence|`` where confidence is the probability of the predicted
    (argmax) class. 0 is perfectly calibrated; NaN without rows.
    """
    return calibration_bins(y_true, proba, bins).ece


def classification_metrics(y_true: NDArray[Any], proba: NDArray[Any]) -> dict[str, float]:
    """accuracy, AUC (one-vs-rest macro for multiclass), log loss, Brier score and ECE.

    AUC is NaN with a single class present. In multiclass, when some classes are absent
    from ``y_true`` the macro average is over the classes that are present.
    """
    import sklearn

    # the arguments are ours and well-formed: skip scikit-learn's per-call validation of
    # them (a third of the time on holdout-sized inputs); the figures are the same
    with sklearn.config_context(skip_parameter_validation=True):
        return _classification_metrics(y_true, proba)


def _classification_metrics(y_true: NDArray[Any], proba: NDArray[Any]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    n_classes = proba.shape[1]
    labels = list(range(n_classes))
    clipped = np.clip(proba, 1e-12, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    onehot = np.eye(n_classes)[y_true]
    metrics = {
        "accuracy": float(accuracy_score(y_true, proba.argmax(axis=1))),
        "log_loss": float(log_loss(y_true, clipped, labels=labels)),
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1))),
        "ece": expected_calibration_error(y_true, proba),
        "rows": float(len(y_true)),
    }
    present = np.unique(y_true)
    if len(present) < 2:
        metrics["auc"] = float("nan")
    elif n_classes == 2:
        metrics["auc"] = float(roc_auc_score(y_true, proba[:, 1]))
    elif len(present) == n_classes:
        metrics["auc"] = float(
            roc_auc_score(y_true, clipped, multi_class="ovr", average="macro", labels=labels)
        )
    else:
        metrics["auc"] = float(
            np.mean([roc_auc_score(y_true == k, clipped[:, k]) for k in present])
        )
    return metrics

"""Classification metrics on held-out data, the same for candidate and champion."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

PRIMARY_METRIC = "auc"


def classification_metrics(y_true: NDArray[Any], proba: NDArray[Any]) -> dict[str, float]:
    """accuracy, AUC (one-vs-rest macro for multiclass), log loss and Brier score."""
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
        "rows": float(len(y_true)),
    }
    present = np.unique(y_true)
    if len(present) < 2:
        metrics["auc"] = float("nan")
    elif n_classes == 2:
        metrics["auc"] = float(roc_auc_score(y_true, proba[:, 1]))
    else:
        metrics["auc"] = float(
            roc_auc_score(y_true, clipped, multi_class="ovr", average="macro", labels=labels)
        )
    return metrics

"""Small PNG figures for the gate's report: ROC curves, reliability diagram, importance.

Matplotlib's object API on the Agg canvas (no pyplot, no global backend, safe in
threads and subprocesses); imported inside the functions so importing this module
costs nothing. Figures are 5x4 in at 80 dpi: a few tens of KB, small enough to embed
as base64 in Dagster markdown metadata (``png_markdown``).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ct_assets.training.metrics import calibration_bins

if TYPE_CHECKING:
    import lightgbm
    from matplotlib.figure import Figure

FIGSIZE = (5.0, 4.0)
DPI = 80


def _figure() -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=FIGSIZE, dpi=DPI)


def _png(figure: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _roc_curve(
    y: NDArray[Any], proba: NDArray[Any], n_classes: int
) -> tuple[NDArray[Any], NDArray[Any], float]:
    """Binary: the second class's ROC; multiclass: the micro-average (one-vs-rest, pooled)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:
        p = np.column_stack([1.0 - p, p])
    if n_classes == 2:
        truth, score = (np.asarray(y) == 1).astype(int), p[:, 1]
    else:
        truth = np.eye(n_classes, dtype=int)[np.asarray(y)].ravel()
        score = p.ravel()
    if truth.min() == truth.max():
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")
    fpr, tpr, _ = roc_curve(truth, score)
    return fpr, tpr, float(roc_auc_score(truth, score))


def roc_png(y: NDArray[Any], probas: Mapping[str, NDArray[Any]], classes: Sequence[str]) -> bytes:
    """ROC curve of each model (e.g. {"candidate": p, "champion": q}) on the same rows.

    ``y`` holds class indices into ``classes``; binary plots the ROC of ``classes[1]``,
    multiclass the micro-averaged one-vs-rest ROC.
    """
    figure = _figure()
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, proba in probas.items():
        fpr, tpr, auc = _roc_curve(y, proba, len(classes))
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {auc:.3f})")
    target = f"class {classes[1]}" if len(classes) == 2 else "micro-average one-vs-rest"
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {target}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize="small")
    return _png(figure)


def calibration_png(
    y: NDArray[Any],
    probas: Mapping[str, NDArray[Any]],
    classes: Sequence[str],
    bins: int = 10,
) -> bytes:
    """Reliability diagram: accuracy against top-label confidence per bin, for each model.

    The diagonal is perfect calibration; the legend gives each model's ECE (the same bins
    as ``metrics.expected_calibration_error``).
    """
    figure = _figure()
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    lowest = 1.0 / max(len(classes), 1)
    for name, proba in probas.items():
        p = np.asarray(proba, dtype=float)
        if p.ndim == 1:
            p = np.column_stack([1.0 - p, p])
        result = calibration_bins(np.asarray(y), p, bins)
        filled = result.counts > 0
        ax.plot(
            result.confidence[filled],
            result.accuracy[filled],
            marker="o",
            markersize=3,
            linewidth=1.5,
            label=f"{name} (ECE {result.ece:.3f})",
        )
    ax.set(
        xlabel="confidence (predicted class probability)",
        ylabel="accuracy",
        title="Reliability diagram",
    )
    ax.set_xlim(min(lowest, 0.5) - 0.02, 1.0)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="upper left", fontsize="small")
    return _png(figure)


def importance_png(booster: lightgbm.Booster, top: int = 20) -> bytes:
    """The ``top`` features by total gain, largest at the top."""
    gains = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
    names = [str(n) for n in booster.feature_name()]
    order = np.argsort(-gains, kind="stable")[:top][::-1]
    figure = _figure()
    ax = figure.add_subplot()
    positions = np.arange(len(order))
    ax.barh(positions, gains[order], color="tab:blue")
    ax.set_yticks(positions, [names[i] for i in order], fontsize="small")
    ax.set(xlabel="total gain", title=f"Feature importance (top {len(order)})")
    return _png(figure)


def png_markdown(png: bytes, alt: str) -> str:
    """An inline markdown image, e.g. for ``dg.MetadataValue.md``."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"

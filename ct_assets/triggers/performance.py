"""Performance trigger: has the champion's accuracy on recent labeled events clearly dropped?

The champion's accuracy on the last ``window`` labeled (attributed) events is compared
with its validation-time baseline. A drop fires only when it is statistically supported:
at least ``min_samples`` events and an exact one-sided binomial test rejecting
"accuracy >= baseline - tolerance" at level ``alpha``. The one-sided Wilson upper bound
at the same level is reported alongside (it falls below ``baseline - tolerance``
essentially when the test rejects). AUC is reported, not tested, when the task is binary
and probabilities are given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

if TYPE_CHECKING:
    from ct_assets.training.model import TrainedModel


@dataclass(frozen=True)
class PerformanceConfig:
    #: Fewer labeled events than this never fire.
    min_samples: int = 200
    #: The last this many events are scored (None: all given).
    window: int | None = 1000
    #: Accuracy may drop this much below the baseline before it counts as a drop.
    tolerance: float = 0.02
    #: Level of the one-sided test.
    alpha: float = 0.01

    def __post_init__(self) -> None:
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if self.window is not None and self.window < self.min_samples:
            raise ValueError(f"window {self.window} < min_samples {self.min_samples}")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")


@dataclass(frozen=True)
class PerformanceDecision:
    fire: bool
    n: int
    metric_name: str
    metric: float
    baseline: float
    tolerance: float
    #: baseline - tolerance: the accuracy the test asks whether we are below.
    target: float
    p_value: float
    alpha: float
    #: One-sided (1 - alpha) Wilson upper confidence bound of the accuracy.
    upper_bound: float
    min_samples: int
    auc: float | None = None

    def reason(self) -> str:
        measured = (
            f"{self.metric_name} {self.metric:.3f} on the last {self.n} labeled events vs "
            f"baseline {self.baseline:.3f} - tolerance {self.tolerance:.3f} = {self.target:.3f}"
        )
        verb = "<" if self.p_value < self.alpha else ">="
        evidence = (
            f"one-sided binomial p={self.p_value:.3g} {verb} alpha {self.alpha:g}; "
            f"{1 - self.alpha:.0%} upper bound {self.upper_bound:.3f}"
        )
        auc = f"; AUC {self.auc:.3f}" if self.auc is not None else ""
        if self.n < self.min_samples:
            return (
                f"not firing: only {self.n} labeled events < min_samples {self.min_samples}; "
                f"{measured} ({evidence}){auc}"
            )
        if self.fire:
            return f"performance drop: {measured} ({evidence}){auc}"
        return f"no significant drop: {measured} ({evidence}){auc}"

    def to_dict(self) -> dict[str, Any]:
        def finite(value: float | None) -> float | None:
            return float(value) if value is not None and math.isfinite(value) else None

        return {
            "fire": self.fire,
            "n": self.n,
            "metric_name": self.metric_name,
            "metric": finite(self.metric),
            "baseline": finite(self.baseline),
            "tolerance": self.tolerance,
            "target": finite(self.target),
            "p_value": finite(self.p_value),
            "alpha": self.alpha,
            "upper_bound": finite(self.upper_bound),
            "min_samples": self.min_samples,
            "auc": finite(self.auc),
            "reason": self.reason(),
        }


def wilson_upper(successes: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Wilson score upper bound of a proportion (1.0 when n is 0)."""
    if n == 0:
        return 1.0
    from scipy.stats import norm

    z = float(norm.ppf(1.0 - alpha))
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return min(1.0, centre + half)


def binary_auc(y_true: NDArray[Any], score: NDArray[Any]) -> float | None:
    """ROC AUC by ranks (ties averaged); None with a single class present."""
    from scipy.stats import rankdata

    positives = int(np.sum(y_true == 1))
    negatives = int(y_true.size - positives)
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(score)
    rank_sum = float(ranks[y_true == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def check_performance(
    y_true: Sequence[Any] | NDArray[Any],
    predictions: NDArray[Any] | Sequence[Any],
    baseline_metric: float,
    config: PerformanceConfig | None = None,
    *,
    classes: Sequence[str] | None = None,
) -> PerformanceDecision:
    """Fire when the champion's accuracy is significantly below ``baseline_metric`` minus
    the tolerance on the last ``config.window`` labeled events.

    ``y_true``: labels in time order, as class indices or, with ``classes``, as class
    names. ``predictions``: class probabilities (rows x classes, columns in class order)
    or predicted labels (of the same kind as ``y_true``).
    """
    from scipy.stats import binom

    config = config or PerformanceConfig()
    if not 0.0 <= baseline_metric <= 1.0:
        raise ValueError(f"baseline accuracy must be in [0, 1], got {baseline_metric}")
    truth = np.asarray(y_true)
    predicted = np.asarray(predictions)
    if predicted.shape[0] != truth.shape[0]:
        raise ValueError(f"{truth.shape[0]} labels but {predicted.shape[0]} predictions")
    if config.window is not None:
        truth, predicted = truth[-config.window :], predicted[-config.window :]
    proba: NDArray[Any] | None = None
    if predicted.ndim == 2:
        proba = predicted.astype(np.float64)
        if classes is not None:
            # a label that is not one of the classes is a wrong answer (code -1)
            index = {c: i for i, c in enumerate(classes)}
            truth = np.array([index.get(str(v), -1) for v in truth.tolist()], dtype=np.int64)
        elif truth.size and not np.issubdtype(truth.dtype, np.integer):
            raise ValueError("labels with class probabilities: class indices, or pass classes")
        predicted = proba.argmax(axis=1)
    n = int(truth.shape[0])
    correct = int(np.sum(truth == predicted))
    accuracy = correct / n if n else float("nan")
    target = baseline_metric - config.tolerance
    # P(at most `correct` right answers | the true accuracy is the target): small when the
    # observed accuracy is too low for the champion to still be at the target.
    p_value = float(binom.cdf(correct, n, target)) if n and target > 0 else 1.0
    auc = None
    if proba is not None and proba.shape[1] == 2 and n:
        auc = binary_auc(truth, proba[:, 1])
    return PerformanceDecision(
        fire=n >= config.min_samples and p_value < config.alpha,
        n=n,
        metric_name="accuracy",
        metric=accuracy,
        baseline=float(baseline_metric),
        tolerance=config.tolerance,
        target=target,
        p_value=p_value,
        alpha=config.alpha,
        upper_bound=wilson_upper(correct, n, config.alpha),
        min_samples=config.min_samples,
        auc=auc,
    )


@dataclass(frozen=True)
class Outcomes:
    """The champion on labeled examples, oldest first: label indices, its class
    probabilities and each example's time (None where the examples carry none)."""

    y: NDArray[np.int64]
    proba: NDArray[np.float64]
    timestamps: list[datetime | None]

    @property
    def errors(self) -> NDArray[np.int64]:
        """1 where the champion's most probable class was wrong: its live error stream."""
        if self.y.size == 0:
            return np.zeros(0, dtype=np.int64)
        wrong: NDArray[np.int64] = (self.proba.argmax(axis=1) != self.y).astype(np.int64)
        return wrong


def outcome_stream(
    examples: pl.DataFrame, model: TrainedModel, last: int | None = None
) -> Outcomes:
    """The champion's outcomes on attributed examples
    (:func:`~ct_assets.data.attribution.attribute_feedback` output, time-ordered): the last
    ``last`` of those whose label is one of the model's classes."""
    from ct_assets.triggers.drift import feature_frame

    known = examples.filter(pl.col("label").cast(pl.String).is_in(model.spec.classes))
    if last is not None:
        known = known.tail(last)
    frame = feature_frame(known, model.spec.feature_names)
    y = model.spec.label_indices(known["label"]).astype(np.int64)
    if known.height == 0:  # nothing labeled yet (e.g. just promoted)
        empty = np.zeros((0, len(model.spec.classes)), dtype=np.float64)
        return Outcomes(np.zeros(0, dtype=np.int64), empty, [])
    proba = np.asarray(model.predict_proba(frame), dtype=np.float64)
    times = known["timestamp"].to_list() if "timestamp" in known.columns else [None] * len(y)
    return Outcomes(y, proba, times)


def champion_outcomes(
    examples: pl.DataFrame, model: TrainedModel, last: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Label indices and the champion's probabilities (see :func:`outcome_stream`)."""
    outcomes = outcome_stream(examples, model, last)
    return outcomes.y, outcomes.proba

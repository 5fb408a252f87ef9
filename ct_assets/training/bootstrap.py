"""Paired bootstrap of ``metric(candidate) - metric(champion)`` on the same rows.

Both models' scores are resampled together (the same row indices for both), so the
interval reflects how much the *difference* varies with the sample rather than each
model's own noise. Vectorised over resamples: bootstrap counts are weights, and every
metric is computed for many weightings at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ct_assets.json_values import json_safe

BootstrapMetric = Literal["auc", "accuracy", "log_loss", "brier"]
#: Bootstrap counts, one row per resample, one column per row of the data.
Weights = NDArray[np.floating[Any]]
#: A metric of many weightings of the same rows at once: (resamples, rows) -> (resamples,).
Statistic = Callable[[Weights], NDArray[np.float64]]
#: Bootstrap work per chunk: resamples x rows cells; small enough to stay in cache.
_CHUNK_CELLS = 1_000_000


@dataclass(frozen=True)
class BootstrapResult:
    """``delta`` = metric(candidate) - metric(champion) on all rows; [low, high] its interval.

    ``n_resamples`` counts the resamples used (those where the metric is defined, e.g. both
    classes present for AUC). ``p_worse``: one-sided bootstrap p-value of "the candidate
    is worse" (share of resampled differences at or above 0, add-one smoothed): small when
    nearly every resample puts the candidate below the champion.
    """

    delta: float
    low: float
    high: float
    n_resamples: int
    metric: str
    confidence: float = 0.95
    p_worse: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        safe: dict[str, Any] = json_safe(asdict(self))
        return safe


def _as_matrix(proba: NDArray[Any]) -> NDArray[np.float64]:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 1:  # binary: probability of the second class
        return np.column_stack([1.0 - p, p])
    if p.ndim != 2:
        raise ValueError(f"probabilities must be 1-D or 2-D, got shape {p.shape}")
    return p


class _AucStat:
    """Weighted one-vs-rest AUC of one model, for many weight vectors (bootstrap counts) at once.

    The Mann-Whitney statistic with ties counted half: for each positive row i,
    ``C_i`` = weight of the negatives scored below it + half the weight of those tied with
    it; AUC = sum(w_i * C_i) / (W_pos * W_neg). Negatives are sorted by score once, so
    ``C_i`` is a cumulative sum read at two precomputed positions (below / up to the
    positive's score). Binary uses the second class's column; multiclass is the macro
    average over the classes defined (both present) in each resample.
    """

    def __init__(self, y: NDArray[np.int64], proba: NDArray[np.float64]) -> None:
        n_classes = proba.shape[1]
        classes = [1] if n_classes == 2 else list(range(n_classes))
        self.parts: list[
            tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]
        ] = []
        for k in classes:
            positive = np.flatnonzero(y == k)
            negative = np.flatnonzero(y != k)
            negative = negative[np.argsort(proba[negative, k], kind="stable")]
            neg_scores = proba[negative, k]
            pos_scores = proba[positive, k]
            lo = np.searchsorted(neg_scores, pos_scores, side="left")
            hi = np.searchsorted(neg_scores, pos_scores, side="right")
            self.parts.append((positive, negative, lo, hi))

    def __call__(self, weights: Weights) -> NDArray[np.float64]:
        b = weights.shape[0]
        total = np.zeros(b)
        defined = np.zeros(b)
        for positive, negative, lo, hi in self.parts:
            w_pos = weights[:, positive]
            cum_neg = np.zeros((b, len(negative) + 1), dtype=weights.dtype)
            np.cumsum(weights[:, negative], axis=1, out=cum_neg[:, 1:])
            below = cum_neg[:, lo]
            if np.array_equal(lo, hi):
                numerator = np.einsum("ij,ij->i", w_pos, below, dtype=np.float64)
            else:
                below += cum_neg[:, hi]
                numerator = 0.5 * np.einsum("ij,ij->i", w_pos, below, dtype=np.float64)
            denominator = w_pos.sum(axis=1, dtype=np.float64) * cum_neg[:, -1].astype(np.float64)
            ok = denominator > 0
            total[ok] += numerator[ok] / denominator[ok]
            defined += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(defined > 0, total / np.maximum(defined, 1), np.nan)


def _row_stat(values: NDArray[np.float64]) -> Statistic:
    """A metric that is a mean over rows: weighted mean of the per-row values."""

    def stat(weights: Weights) -> NDArray[np.float64]:
        totals = weights.sum(axis=1, dtype=np.float64)
        return np.asarray((weights @ values) / totals, dtype=np.float64)

    return stat


def _statistic(metric: str, y: NDArray[np.int64], proba: NDArray[np.float64]) -> Statistic:
    rows = np.arange(len(y))
    if metric == "auc":
        return _AucStat(y, proba)
    if metric == "accuracy":
        return _row_stat((proba.argmax(axis=1) == y).astype(np.float64))
    if metric == "log_loss":  # as classification_metrics: clipped, renormalised
        clipped = np.clip(proba, 1e-12, 1.0)
        clipped = clipped / clipped.sum(axis=1, keepdims=True)
        return _row_stat(-np.log(clipped[rows, y]))
    if metric == "brier":
        onehot = np.eye(proba.shape[1])[y]
        return _row_stat(np.sum((proba - onehot) ** 2, axis=1))
    raise ValueError(f"unknown bootstrap metric {metric!r}; use auc, accuracy, log_loss or brier")


def paired_bootstrap(
    y: NDArray[Any],
    p_candidate: NDArray[Any],
    p_champion: NDArray[Any],
    metric: BootstrapMetric | str = "auc",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile interval of ``metric(candidate) - metric(champion)`` over paired resamples.

    Each resample draws row indices with replacement, the same for both models, so the
    interval reflects how much the *difference* varies with the sample rather than each
    model's own noise. ``y`` holds class indices, ``p_*`` shape (rows, classes) (or 1-D
    positive-class probabilities). Resamples where the metric is undefined (AUC with a
    single class) are skipped; ``n_resamples`` of the result counts those used.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    labels = np.asarray(y).astype(np.int64)
    cand, champ = _as_matrix(p_candidate), _as_matrix(p_champion)
    n = len(labels)
    if cand.shape != champ.shape or cand.shape[0] != n:
        raise ValueError(
            f"shapes differ: y {labels.shape}, candidate {cand.shape}, champion {champ.shape}"
        )
    if n == 0:
        nan = float("nan")
        return BootstrapResult(nan, nan, nan, 0, str(metric), confidence)
    stat_cand, stat_champ = _statistic(metric, labels, cand), _statistic(metric, labels, champ)
    ones = np.ones((1, n))
    delta = float(stat_cand(ones)[0] - stat_champ(ones)[0])
    rng = np.random.default_rng(seed)
    # Counts are small integers: float32 holds them and their cumulative sums exactly
    # (below 2**24 rows) at half the memory traffic of float64; sums are taken in float64.
    dtype: type[np.floating[Any]] = np.float32 if n < 2**24 else np.float64
    chunk = max(1, min(n_resamples, _CHUNK_CELLS // n))
    deltas: list[NDArray[np.float64]] = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        index = rng.integers(0, n, size=(b, n))
        index += (np.arange(b) * n)[:, None]
        counts = np.bincount(index.ravel(), minlength=b * n).reshape(b, n)
        weights: Weights = counts.astype(dtype)
        deltas.append(stat_cand(weights) - stat_champ(weights))
    all_deltas = np.concatenate(deltas) if deltas else np.empty(0)
    used = all_deltas[np.isfinite(all_deltas)]
    if len(used) == 0:
        nan = float("nan")
        return BootstrapResult(delta, nan, nan, 0, str(metric), confidence)
    alpha = 1.0 - confidence
    low, high = np.quantile(used, [alpha / 2, 1.0 - alpha / 2])
    p_worse = (int(np.count_nonzero(used >= 0.0)) + 1) / (len(used) + 1)
    return BootstrapResult(
        delta, float(low), float(high), len(used), str(metric), confidence, p_worse
    )

"""The drift decision: a window's features and scores against the reference."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets.triggers.drift.config import DriftConfig
from ct_assets.triggers.drift.encoding import sample_indices
from ct_assets.triggers.drift.reference import DriftReference


@dataclass(frozen=True)
class DriftDecision:
    fire: bool
    feature_drift: bool
    score_drift: bool
    detector: str
    correction: str
    #: Feature p-values below this are drift (Bonferroni: p_val / features; FDR: the
    #: Benjamini-Hochberg cut-off, or p_val / features when nothing is significant).
    threshold: float
    feature_p_values: dict[str, float]
    #: The test statistic per feature: KS distance (numeric) or chi-squared (categorical).
    feature_distances: dict[str, float]
    #: The size of each feature's change, on one scale: KS distance (numeric), total
    #: variation distance between category frequencies (categorical).
    feature_effects: dict[str, float]
    feature_tests: dict[str, str]
    #: Features below the threshold with an effect of at least ``min_distance``,
    #: smallest p-value first.
    drifted_features: list[str]
    score_p_value: float | None
    score_distance: float | None
    score_threshold: float
    min_distance: float
    #: Rows in the window before sampling, rows compared, rows of the reference.
    window_rows: int
    window_size: int
    reference_size: int
    min_window: int
    reference_version: str

    def reason(self) -> str:
        k = len(self.feature_p_values)
        low = [(n, self.feature_p_values[n]) for n in self.drifted_features]
        if low:
            listed = ", ".join(f"{n} p={p:.3g}" for n, p in low[:5])
            more = f", +{len(low) - 5} more" if len(low) > 5 else ""
            features = (
                f"feature drift: {len(low)}/{k} features below p {self.threshold:.3g} "
                f"with an effect >= {self.min_distance:.3g} ({listed}{more})"
            )
        elif self.feature_p_values:
            name = min(self.feature_p_values, key=lambda n: self.feature_p_values[n])
            p, effect = self.feature_p_values[name], self.feature_effects.get(name, 0.0)
            if p < self.threshold:
                features = (
                    f"no feature drift: min p={p:.3g} ({name}) < {self.threshold:.3g} "
                    f"but its effect {effect:.3f} < {self.min_distance:.3g}"
                )
            else:
                features = (
                    f"no feature drift: min p={p:.3g} ({name}) >= {self.threshold:.3g} "
                    f"over {k} features"
                )
        else:
            features = "no features compared"
        if self.score_p_value is None:
            score = "score: not checked"
        else:
            verb = "<" if self.score_p_value < self.score_threshold else ">="
            score = (
                f"score KS p={self.score_p_value:.3g} {verb} {self.score_threshold:.3g} "
                f"(D={self.score_distance:.3f})"
            )
            if verb == "<" and not self.score_drift:
                score += f", D < {self.min_distance:.3g}: no score drift"
        sizes = (
            f"window {self.window_size} of {self.window_rows} rows vs reference "
            f"{self.reference_size} ({self.detector}, {self.correction})"
        )
        text = f"{features}; {score}; {sizes}"
        if self.window_size < self.min_window:
            return f"not firing: window {self.window_size} < min_window {self.min_window}; {text}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "fire": self.fire,
            "feature_drift": self.feature_drift,
            "score_drift": self.score_drift,
            "detector": self.detector,
            "correction": self.correction,
            "threshold": _finite(self.threshold),
            "feature_p_values": {k: _finite(v) for k, v in self.feature_p_values.items()},
            "feature_distances": {k: _finite(v) for k, v in self.feature_distances.items()},
            "feature_effects": {k: _finite(v) for k, v in self.feature_effects.items()},
            "feature_tests": dict(self.feature_tests),
            "drifted_features": list(self.drifted_features),
            "score_p_value": _finite(self.score_p_value),
            "score_distance": _finite(self.score_distance),
            "score_threshold": _finite(self.score_threshold),
            "min_distance": self.min_distance,
            "window_rows": self.window_rows,
            "window_size": self.window_size,
            "reference_size": self.reference_size,
            "min_window": self.min_window,
            "reference_version": self.reference_version,
            "reason": self.reason(),
        }


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def check_drift(
    reference: DriftReference,
    recent_features: pl.DataFrame,
    recent_scores: NDArray[Any] | None,
    config: DriftConfig | None = None,
) -> DriftDecision:
    """Compare a window of recent feature rows (and the champion's scores on them) with
    the reference; fire on feature or score drift when the window is large enough.

    ``recent_features`` has the features as columns or as a ``features`` struct.
    ``recent_scores`` are class probabilities (rows x classes, in ``reference.classes``
    order) or, when binary, the positive class's probability; rows aligned with
    ``recent_features`` are sampled with them. None: no score test.
    """
    config = config or DriftConfig()
    n = recent_features.height
    index = sample_indices(n, config.max_window, config.seed)
    window = recent_features[index] if index.size < n else recent_features
    x = reference.encode(window)
    size = int(x.shape[0])
    k = len(reference.feature_names)
    p_values = np.ones(k)
    distances = np.zeros(k)
    threshold = config.p_val / max(k, 1)
    if size >= 2 and k:
        result = reference.detector(config).predict(
            x, drift_type="batch", return_p_val=True, return_distance=True
        )["data"]
        p_values = np.asarray(result["p_val"], dtype=np.float64)
        distances = np.asarray(result["distance"], dtype=np.float64)
        raw = np.asarray(result["threshold"], dtype=np.float64)
        threshold = float(raw) if raw.ndim == 0 else float(raw.min())
    names = reference.feature_names
    effects = feature_effects(reference, x, distances)
    drifted = sorted(
        (i for i in range(k) if p_values[i] < threshold and effects[i] >= config.min_distance),
        key=lambda i: p_values[i],
    )
    tests = {n: ("chi2" if n in reference.categories else "ks") for n in names}
    score_p, score_d = _score_test(reference, recent_scores, index, n, config)
    feature_drift = bool(drifted)
    score_drift = (
        score_p is not None
        and score_p < config.score_p_val
        and (score_d or 0.0) >= config.min_distance
    )
    return DriftDecision(
        fire=(feature_drift or score_drift) and size >= config.min_window,
        feature_drift=feature_drift,
        score_drift=score_drift,
        detector=config.detector,
        correction=config.correction,
        threshold=threshold,
        feature_p_values={names[i]: float(p_values[i]) for i in range(k)},
        feature_distances={names[i]: float(distances[i]) for i in range(k)},
        feature_effects={names[i]: float(effects[i]) for i in range(k)},
        feature_tests=tests,
        drifted_features=[names[i] for i in drifted],
        score_p_value=score_p,
        score_distance=score_d,
        score_threshold=config.score_p_val,
        min_distance=config.min_distance,
        window_rows=n,
        window_size=size,
        reference_size=reference.size,
        min_window=config.min_window,
        reference_version=reference.version,
    )


def feature_effects(
    reference: DriftReference, window: NDArray[np.float64], ks_distances: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per feature, how far the window lies from the reference on a 0-1 scale: the KS
    distance for numeric features (as the detector measured it), the total variation
    distance between the category frequencies (missing and unseen codes included) for
    categorical ones."""
    effects = np.asarray(ks_distances, dtype=np.float64).copy()
    if window.shape[0] == 0:
        return np.zeros_like(effects)
    for i in reference.categorical_indices:
        codes = np.concatenate([reference.x_ref[:, i], window[:, i]]).astype(np.int64)
        size = int(codes.max()) + 1 if codes.size else 1
        ref = np.bincount(reference.x_ref[:, i].astype(np.int64), minlength=size)
        new = np.bincount(window[:, i].astype(np.int64), minlength=size)
        effects[i] = 0.5 * float(np.abs(ref / ref.sum() - new / new.sum()).sum())
    return effects


def score_columns(scores: NDArray[Any], n_classes: int) -> NDArray[np.float64]:
    """The score columns the KS test compares: the positive class's probability when
    binary (one column), every class's otherwise."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim == 1:
        if n_classes > 2:
            raise ValueError(f"{n_classes} classes need a score matrix, got one column")
        return array[:, None]
    if array.ndim != 2 or array.shape[1] != n_classes:
        raise ValueError(f"scores have shape {array.shape}, expected (rows, {n_classes})")
    return array[:, 1:2] if n_classes == 2 else array


def _score_test(
    reference: DriftReference,
    scores: NDArray[Any] | None,
    index: NDArray[np.int64],
    n: int,
    config: DriftConfig,
) -> tuple[float | None, float | None]:
    """Two-sample KS p-value (Bonferroni over class columns) and the largest distance.

    Scores aligned with the feature window (as many rows) are sampled with it; others
    are sampled on their own."""
    if scores is None or reference.scores_ref is None:
        return None, None
    from scipy.stats import ks_2samp

    recent = score_columns(scores, len(reference.classes))
    if recent.shape[0] == n:
        if index.size < n:
            recent = recent[index]
    else:
        recent = recent[sample_indices(recent.shape[0], config.max_window, config.seed)]
    ref = score_columns(reference.scores_ref, len(reference.classes))
    p_min, d_max, tested = 1.0, 0.0, False
    for j in range(ref.shape[1]):
        a = ref[:, j][np.isfinite(ref[:, j])]
        b = recent[:, j][np.isfinite(recent[:, j])]
        if a.size < 2 or b.size < 2:
            continue
        result = ks_2samp(a, b, method="asymp")
        p_min = min(p_min, float(result.pvalue))
        d_max = max(d_max, float(result.statistic))
        tested = True
    if not tested:
        return None, None
    return min(1.0, p_min * ref.shape[1]), d_max


def prediction_scores(predictions: pl.DataFrame, classes: list[str]) -> NDArray[np.float64]:
    """The logged ``scores`` struct of prediction events as a (rows x classes) matrix in
    ``classes`` order (a class missing from the struct or a row: NaN)."""
    if "scores" not in predictions.columns:
        return np.full((predictions.height, len(classes)), np.nan)
    dtype = predictions.schema["scores"]
    fields = {f.name for f in dtype.fields} if isinstance(dtype, pl.Struct) else set()
    columns = [
        pl.col("scores").struct.field(c).cast(pl.Float64).alias(c)
        if c in fields
        else pl.lit(None, dtype=pl.Float64).alias(c)
        for c in classes
    ]
    return predictions.select(columns).fill_null(np.nan).to_numpy().astype(np.float64)

"""The promotion gate's evaluation: candidate vs champion beyond one holdout number.

Plain functions over models and Polars frames (no Dagster, no MLflow):

- ``paired_bootstrap``: the sampling uncertainty of ``metric(candidate) - metric(champion)``
  on the same rows, resampled together (paired), vectorised over resamples;
- ``evaluate_gate``: holdout metrics of both models, the bootstrap of the primary metric,
  per-slice metrics (bias), metrics on named older frames (forgetting) -> ``GateReport``;
- ``decide``: the promotion decision from a report, one reason line per criterion.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets.data.dataset import LABEL
from ct_assets.json_values import json_safe
from ct_assets.training.gate import Checks, GateDecision, check_floor, check_tolerance, is_missing
from ct_assets.training.metrics import PRIMARY_METRIC, classification_metrics
from ct_assets.training.model import TrainedModel

BootstrapMetric = Literal["auc", "accuracy", "log_loss", "brier"]
#: Bootstrap counts, one row per resample, one column per row of the data.
Weights = NDArray[np.floating[Any]]
#: A metric of many weightings of the same rows at once: (resamples, rows) -> (resamples,).
Statistic = Callable[[Weights], NDArray[np.float64]]
#: Metric columns of the report's tables, in order.
REPORT_METRICS = ("auc", "accuracy", "log_loss", "brier", "ece", "rows")
#: Numeric slice columns with more distinct values than this are bucketed into quartiles.
MAX_DISCRETE_VALUES = 10
#: Categorical slice columns keep their most frequent values; the rest is one "(other)" slice.
MAX_SLICE_VALUES = 20
#: Bootstrap work per chunk: resamples x rows cells; small enough to stay in cache.
_CHUNK_CELLS = 1_000_000


# --- paired bootstrap -------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """``delta`` = metric(candidate) - metric(champion) on all rows; [low, high] its interval.

    ``n_resamples`` counts the resamples used (those where the metric is defined, e.g. both
    classes present for AUC).
    """

    delta: float
    low: float
    high: float
    n_resamples: int
    metric: str
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return _json_dict(asdict(self))


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
    return BootstrapResult(delta, float(low), float(high), len(used), str(metric), confidence)


#: The history frame of examples kept in the training window on purpose (always checked).
RESERVOIR_FRAME = "reservoir"


# --- the gate's report ------------------------------------------------------------------------


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the promotion gate (primary metric: AUC, higher is better).

    ``tolerance``: largest allowed drop of the primary metric vs the champion (point
    estimate; also rejected when the whole bootstrap interval lies below ``-tolerance``).
    ``min_metric``: floor of the primary metric. ``forgetting_tolerance`` /
    ``slice_tolerance``: largest allowed drop on a historical frame / a slice with at least
    ``min_slice_rows`` rows. ``max_ece``: calibration ceiling, enforced when the candidate
    is also worse calibrated than the champion by more than ``ece_margin``.
    """

    tolerance: float = 0.0
    min_metric: float = 0.55
    n_resamples: int = 1000
    confidence: float = 0.95
    forgetting_tolerance: float = 0.02
    slice_tolerance: float = 0.05
    min_slice_rows: int = 50
    max_ece: float = 0.15
    seed: int = 0
    ece_margin: float = 0.02


@dataclass(frozen=True)
class SliceMetrics:
    """Both models on the rows of ``column == value`` (or a quartile bucket of it)."""

    column: str
    value: str
    rows: int
    candidate: dict[str, float]
    champion: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return _json_dict(asdict(self))


@dataclass(frozen=True)
class HistoryMetrics:
    """Both models on a named older frame: does the candidate still know it?"""

    name: str
    rows: int
    candidate: dict[str, float]
    champion: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return _json_dict(asdict(self))


@dataclass(frozen=True)
class GateReport:
    """Everything the gate looked at; ``decision`` is ``decide(report, config)``."""

    primary_metric: str
    candidate: dict[str, float]
    champion: dict[str, float] | None
    bootstrap: BootstrapResult | None
    slices: list[SliceMetrics]
    forgetting: list[HistoryMetrics]
    config: GateConfig
    notes: list[str] = field(default_factory=list)
    decision: GateDecision | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (non-finite numbers become None)."""
        return _json_dict(
            {
                "primary_metric": self.primary_metric,
                "candidate": self.candidate,
                "champion": self.champion,
                "bootstrap": asdict(self.bootstrap) if self.bootstrap else None,
                "slices": [asdict(s) for s in self.slices],
                "forgetting": [asdict(h) for h in self.forgetting],
                "config": asdict(self.config),
                "notes": self.notes,
                "decision": self.decision.label if self.decision else None,
                "reasons": self.decision.reasons if self.decision else [],
                "failed": self.decision.failed if self.decision else [],
            }
        )

    def markdown(self) -> str:
        """Tables of metrics, bootstrap, slices and forgetting, then the decision's reasons."""
        m = self.primary_metric
        parts: list[str] = []
        if self.decision is not None:
            parts.append(f"**{self.decision.label}**")
        rows = ["| metric | candidate | champion | delta |", "|---|---|---|---|"]
        for name in REPORT_METRICS:
            cand = self.candidate.get(name)
            champ = self.champion.get(name) if self.champion else None
            rows.append(
                f"| {name} | {_fmt(cand, name)} | {_fmt(champ, name)} | "
                f"{_fmt_delta(cand, champ, name)} |"
            )
        parts.append("### Holdout\n\n" + "\n".join(rows))
        if self.bootstrap is not None:
            b = self.bootstrap
            parts.append(
                "### Paired bootstrap (candidate - champion)\n\n"
                "| metric | delta | low | high | confidence | resamples |\n"
                "|---|---|---|---|---|---|\n"
                f"| {b.metric} | {_fmt(b.delta)} | {_fmt(b.low)} | {_fmt(b.high)} | "
                f"{b.confidence:.0%} | {b.n_resamples} |"
            )
        if self.slices:
            rows = [
                f"| column | value | rows | candidate {m} | champion {m} | delta | "
                "candidate accuracy | champion accuracy |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for s in self.slices:
                cand, champ = s.candidate.get(m), (s.champion or {}).get(m)
                rows.append(
                    f"| {_cell(s.column)} | {_cell(s.value)} | {s.rows} | {_fmt(cand)} | "
                    f"{_fmt(champ)} | {_fmt_delta(cand, champ)} | "
                    f"{_fmt(s.candidate.get('accuracy'))} | "
                    f"{_fmt((s.champion or {}).get('accuracy'))} |"
                )
            parts.append("### Slices\n\n" + "\n".join(rows))
        if self.forgetting:
            rows = [
                f"| frame | rows | candidate {m} | champion {m} | delta |",
                "|---|---|---|---|---|",
            ]
            for h in self.forgetting:
                cand, champ = h.candidate.get(m), (h.champion or {}).get(m)
                rows.append(
                    f"| {_cell(h.name)} | {h.rows} | {_fmt(cand)} | {_fmt(champ)} | "
                    f"{_fmt_delta(cand, champ)} |"
                )
            parts.append("### Forgetting\n\n" + "\n".join(rows))
        if self.decision is not None:
            failed = set(self.decision.failed)
            lines = [
                f"- **{reason}**" if reason in failed else f"- {reason}"
                for reason in self.decision.reasons
            ]
            parts.append("### Decision\n\n" + "\n".join(lines))
        if self.notes:
            parts.append("### Notes\n\n" + "\n".join(f"- {note}" for note in self.notes))
        return "\n\n".join(parts)


# --- scoring and slicing ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Scored:
    """A model's probabilities on every row of a frame; ``y`` = -1 where the label is unknown."""

    y: NDArray[np.int64]
    proba: NDArray[np.float64]

    @property
    def known(self) -> NDArray[np.bool_]:
        return np.asarray(self.y >= 0)

    def metrics(self, rows: NDArray[np.bool_] | None = None) -> dict[str, float]:
        """Metrics on the known rows (of the selection), as ``train.evaluate``."""
        selected = self.known if rows is None else self.known & rows
        if not selected.any():
            return {"rows": 0.0}
        return classification_metrics(self.y[selected], self.proba[selected])


def _score(model: TrainedModel, frame: pl.DataFrame) -> _Scored:
    classes = model.spec.classes
    if frame.height == 0:
        return _Scored(np.empty(0, dtype=np.int64), np.empty((0, len(classes))))
    codes = {value: i for i, value in enumerate(classes)}
    y = (
        frame[LABEL]
        .cast(pl.String)
        .replace_strict(codes, default=-1, return_dtype=pl.Int64)
        .fill_null(-1)
        .to_numpy()
        .astype(np.int64)
    )
    proba = np.asarray(model.predict_proba(frame), dtype=np.float64)
    return _Scored(y, proba)


def _segments(column: pl.Series) -> tuple[list[str], NDArray[Any]]:
    """Slice names in display order and each row's slice.

    Numeric columns with more than ``MAX_DISCRETE_VALUES`` distinct values are cut at their
    quartiles; anything else is sliced by value (the most frequent ``MAX_SLICE_VALUES - 1``
    values, the rest as "(other)"). Missing values are the slice "null".
    """
    dtype = column.dtype
    if dtype.is_numeric() and column.drop_nulls().n_unique() > MAX_DISCRETE_VALUES:
        values = column.cast(pl.Float64).fill_null(np.nan).to_numpy()
        finite = values[np.isfinite(values)]
        edges = np.unique(np.quantile(finite, [0.25, 0.5, 0.75])) if len(finite) else finite
        names = _bucket_names(edges)
        bucket = np.searchsorted(edges, values, side="left")
        labels = np.array(names, dtype=object)[np.minimum(bucket, len(names) - 1)]
        labels[~np.isfinite(values)] = "null"
        order = [*names, "null"]
    else:
        labels = np.array(
            [("null" if v is None else str(v)) for v in column.cast(pl.String).to_list()],
            dtype=object,
        )
        values_, counts = np.unique(labels.astype(str), return_counts=True)
        if len(values_) > MAX_SLICE_VALUES:
            keep = {
                str(v) for v in values_[np.argsort(-counts, kind="stable")][: MAX_SLICE_VALUES - 1]
            }
            labels = np.array([v if v in keep else "(other)" for v in labels], dtype=object)
        special = ("null", "(other)")
        plain = sorted({str(v) for v in labels if v not in special})
        if dtype.is_numeric():
            plain.sort(key=float)
        order = [*plain, *special]
    present = set(labels.tolist())
    return [name for name in order if name in present], labels


def _bucket_names(edges: NDArray[np.float64]) -> list[str]:
    if len(edges) == 0:
        return ["all"]
    names = [f"q1 <= {edges[0]:.4g}"]
    names += [
        f"q{i + 2} ({lo:.4g}, {hi:.4g}]" for i, (lo, hi) in enumerate(itertools.pairwise(edges))
    ]
    names.append(f"q{len(edges) + 1} > {edges[-1]:.4g}")
    return names


# --- evaluate and decide ----------------------------------------------------------------------


def evaluate_gate(
    candidate: TrainedModel,
    champion: TrainedModel | None,
    holdout: pl.DataFrame,
    history: Mapping[str, pl.DataFrame] | None = None,
    slice_columns: list[str] | None = None,
    config: GateConfig | None = None,
) -> GateReport:
    """Both models on the holdout, its slices and older frames; decided by ``decide``.

    Rows whose label is not among a model's classes are left out of that model's metrics
    (as ``train.evaluate``). The bootstrap pairs the rows both models can score and needs
    both models to have the same classes.
    """
    config = config or GateConfig()
    history = history or {}
    notes: list[str] = []
    cand = _score(candidate, holdout)
    champ = _score(champion, holdout) if champion is not None else None
    bootstrap: BootstrapResult | None = None
    if champion is not None and champ is not None:
        if candidate.spec.classes != champion.spec.classes:
            notes.append(
                f"classes differ (candidate {candidate.spec.classes}, champion "
                f"{champion.spec.classes}): no paired bootstrap"
            )
        else:
            both = cand.known & champ.known
            bootstrap = paired_bootstrap(
                cand.y[both],
                cand.proba[both],
                champ.proba[both],
                metric=PRIMARY_METRIC,
                n_resamples=config.n_resamples,
                confidence=config.confidence,
                seed=config.seed,
            )
    unknown = int((~cand.known).sum())
    if unknown:
        notes.append(f"{unknown} holdout rows with labels the candidate does not know: ignored")
    slices: list[SliceMetrics] = []
    for column in slice_columns or []:
        if column not in holdout.columns:
            notes.append(f"slice column {column!r} is not in the holdout")
            continue
        if holdout.height == 0:
            continue
        names, labels = _segments(holdout[column])
        for name in names:
            rows = np.asarray(labels == name)
            cand_metrics = cand.metrics(rows)
            slices.append(
                SliceMetrics(
                    column=column,
                    value=name,
                    rows=int(cand_metrics["rows"]),
                    candidate=cand_metrics,
                    champion=champ.metrics(rows) if champ is not None else None,
                )
            )
    forgetting: list[HistoryMetrics] = []
    for name, frame in history.items():
        old_cand = _score(candidate, frame).metrics()
        old_champ = _score(champion, frame).metrics() if champion is not None else None
        forgetting.append(HistoryMetrics(name, int(old_cand["rows"]), old_cand, old_champ))
    report = GateReport(
        primary_metric=PRIMARY_METRIC,
        candidate=cand.metrics() if holdout.height else {},
        champion=champ.metrics() if champ is not None and holdout.height else None,
        bootstrap=bootstrap,
        slices=slices,
        forgetting=forgetting,
        config=config,
        notes=notes,
    )
    return replace(report, decision=decide(report, config))


def decide(report: GateReport, config: GateConfig | None = None) -> GateDecision:
    """Promote unless a criterion fails; one reason line per criterion, passed or failed.

    Rejects when: the candidate has no primary metric; it is below ``min_metric``; it drops
    more than ``tolerance`` below the champion, or the bootstrap interval of the difference
    lies entirely below ``-tolerance``; its ECE is above ``max_ece`` and worse than the
    champion's by more than ``ece_margin`` (a first model is only told); it is more than
    ``forgetting_tolerance`` below the champion on a historical frame, or more than
    ``slice_tolerance`` below it on a slice (each with at least ``min_slice_rows`` rows).
    Without a champion only the floor applies (calibration is reported). When the
    bootstrap shows the candidate clearly better on the current holdout (interval above
    0), older data other than the reservoir is reported but not held against it: the
    concept it follows has changed (concept drift), and forgetting it is the point of
    retraining. The reservoir, kept in the window on purpose, is always checked.
    """
    config = config or report.config
    m = report.primary_metric
    value = report.candidate.get(m)
    if value is None or math.isnan(value):
        checks = Checks()
        checks.add(False, f"candidate has no {m} on the holdout")
        return checks.decision()
    checks = Checks()
    check_floor(checks, value, config.min_metric, m)
    _check_calibration(checks, report, config)
    if report.champion is None:
        checks.note("no champion yet: floor only")
        return checks.decision()
    base = report.champion.get(m)
    if base is None or math.isnan(base):
        checks.note(f"champion has no {m} on this holdout; not compared")
    else:
        check_tolerance(checks, value, base, config.tolerance, m)
    _check_bootstrap(checks, report.bootstrap, config)
    changed = _concept_changed(report.bootstrap)
    for old in report.forgetting:
        if changed and old.name != RESERVOIR_FRAME and old.rows >= config.min_slice_rows:
            _note_changed_concept(checks, old, m, report.bootstrap)
        else:
            _check_history(checks, old, m, config)
    _check_slices(checks, report.slices, m, config)
    return checks.decision()


def _concept_changed(b: BootstrapResult | None) -> bool:
    """The candidate is clearly better than the champion on the current holdout: the
    champion's older data describes a concept that no longer holds."""
    return b is not None and b.n_resamples > 0 and not math.isnan(b.low) and b.low > 0


def _note_changed_concept(
    checks: Checks, old: HistoryMetrics, m: str, b: BootstrapResult | None
) -> None:
    cand, champ = old.candidate.get(m), (old.champion or {}).get(m)
    assert b is not None
    checks.note(
        f"{old.name} not held against the candidate: it is clearly better on the current "
        f"holdout (interval [{b.low:+.4f}, {b.high:+.4f}]), so that older data follows a "
        f"concept that changed (candidate {m} {_fmt(cand)}, champion {_fmt(champ)} on "
        f"{old.rows} rows)"
    )


def _check_calibration(checks: Checks, report: GateReport, config: GateConfig) -> None:
    ece = report.candidate.get("ece")
    if ece is None or math.isnan(ece):
        checks.note("candidate ece unknown: calibration not checked")
        return
    if ece <= config.max_ece + 1e-12:
        checks.add(True, f"candidate ece {ece:.4f} <= max {config.max_ece:.4f}")
        return
    if report.champion is None:
        # Rejecting the first model would leave nothing to serve: a model that is worse
        # calibrated than the ceiling is still better than no model, and a later candidate
        # is held to it against this one.
        checks.note(
            f"candidate ece {ece:.4f} > max {config.max_ece:.4f}: not held against a first "
            "model (no champion to keep instead)"
        )
        return
    base = report.champion.get("ece")
    if base is None or math.isnan(base):
        checks.add(False, f"poorly calibrated: candidate ece {ece:.4f} > max {config.max_ece:.4f}")
        return
    worse = ece > base + config.ece_margin + 1e-12
    checks.add(
        not worse,
        f"{'poorly calibrated: ' if worse else ''}candidate ece {ece:.4f} > max "
        f"{config.max_ece:.4f} and {'>' if worse else '<='} champion {base:.4f} + "
        f"{config.ece_margin:.4f}",
    )


def _check_bootstrap(checks: Checks, b: BootstrapResult | None, config: GateConfig) -> None:
    if b is None:
        checks.note("no paired bootstrap")
        return
    if b.n_resamples == 0 or math.isnan(b.high):
        checks.note(f"paired bootstrap of {b.metric} undefined (no resample with both classes)")
        return
    interval = (
        f"bootstrap {b.confidence:.0%} interval of {b.metric} delta (candidate - champion) "
        f"[{b.low:+.4f}, {b.high:+.4f}] ({b.n_resamples} resamples, delta {b.delta:+.4f})"
    )
    bound = 0.0 - config.tolerance  # no "-0.0000"
    worse = b.high < bound - 1e-12
    if worse:
        checks.add(False, f"{interval}: upper bound < -tolerance ({bound:.4f}), clearly worse")
    else:
        checks.add(True, f"{interval}: upper bound >= -tolerance ({bound:.4f})")


def _check_history(checks: Checks, old: HistoryMetrics, m: str, config: GateConfig) -> None:
    cand, champ = old.candidate.get(m), (old.champion or {}).get(m)
    if old.rows < config.min_slice_rows:
        checks.note(f"{old.name}: {old.rows} rows < {config.min_slice_rows}, not compared")
        return
    if cand is None or champ is None or is_missing(cand) or is_missing(champ):
        checks.note(f"{old.name}: {m} undefined on {old.rows} rows, not compared")
        return
    forgets = cand + 1e-12 < champ - config.forgetting_tolerance
    checks.add(
        not forgets,
        f"{'forgets' if forgets else 'remembers'} {old.name}: candidate {m} {cand:.4f} "
        f"{'<' if forgets else '>='} champion {champ:.4f} - {config.forgetting_tolerance:.4f} "
        f"on {old.rows} rows",
    )


def _check_slices(checks: Checks, slices: list[SliceMetrics], m: str, config: GateConfig) -> None:
    by_column: dict[str, list[SliceMetrics]] = {}
    for s in slices:
        by_column.setdefault(s.column, []).append(s)
    for column, group in by_column.items():
        compared = 0
        small = 0
        undefined = 0
        failed = 0
        worst: tuple[float, str] | None = None
        for s in group:
            cand, champ = s.candidate.get(m), (s.champion or {}).get(m)
            if s.rows < config.min_slice_rows:
                small += 1
                continue
            if cand is None or champ is None or is_missing(cand) or is_missing(champ):
                undefined += 1
                continue
            compared += 1
            if worst is None or cand - champ < worst[0]:
                worst = (cand - champ, s.value)
            if cand + 1e-12 < champ - config.slice_tolerance:
                failed += 1
                checks.add(
                    False,
                    f"worse on slice {column}={s.value} ({s.rows} rows): candidate {m} "
                    f"{cand:.4f} < champion {champ:.4f} - {config.slice_tolerance:.4f}",
                )
        skipped = f"; {small} with < {config.min_slice_rows} rows" if small else ""
        skipped += f"; {undefined} with {m} undefined" if undefined else ""
        lowest = f" (lowest delta {worst[0]:+.4f} at {worst[1]})" if worst else ""
        if compared and not failed:
            checks.add(
                True,
                f"slices of {column}: {compared} compared, none below champion - "
                f"{config.slice_tolerance:.4f}{lowest}{skipped}",
            )
        elif not compared:
            checks.note(f"slices of {column}: none compared{skipped}")
        else:
            checks.note(
                f"slices of {column}: {failed} of {compared} compared below champion - "
                f"{config.slice_tolerance:.4f}{lowest}{skipped}"
            )


# --- formatting -------------------------------------------------------------------------------


def _json_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    safe: dict[str, Any] = json_safe(value)
    return safe


def _fmt(value: float | None, name: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    if name == "rows":
        return str(int(value))
    return f"{value:.4f}"


def _fmt_delta(cand: float | None, champ: float | None, name: str = "") -> str:
    if cand is None or champ is None or math.isnan(cand) or math.isnan(champ):
        return "-"
    if name == "rows":
        return f"{int(cand - champ):+d}"
    return f"{cand - champ:+.4f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")

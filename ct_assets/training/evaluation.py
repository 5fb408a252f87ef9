"""The promotion gate's evaluation: candidate vs champion beyond one holdout number.

Plain functions over models and Polars frames (no Dagster, no MLflow):

- ``evaluate_gate``: holdout metrics of both models, the paired bootstrap of the primary
  metric (``ct_assets.training.bootstrap``), per-slice metrics (bias), metrics on named
  older frames (forgetting), each with its own paired bootstrap where it could fail the
  candidate -> ``GateReport``, decided by ``ct_assets.training.gate.decide``. Scoring a
  frame and cutting a column into slices live in ``ct_assets.training.slicing``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets.json_values import json_safe
from ct_assets.training.bootstrap import BootstrapResult, paired_bootstrap
from ct_assets.training.gate import GateDecision, decide
from ct_assets.training.metrics import PRIMARY_METRIC
from ct_assets.training.model import TrainedModel
from ct_assets.training.slicing import ScoredFrame, score_frame, slice_rows

#: Metric columns of the report's tables, in order.
REPORT_METRICS = ("auc", "accuracy", "log_loss", "brier", "ece", "rows")


# --- the gate's report ------------------------------------------------------------------------


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the promotion gate (primary metric: AUC, higher is better).

    ``tolerance``: the non-inferiority margin of the primary metric against the champion:
    the candidate passes when the lower bound of the paired bootstrap interval of the
    difference (two-sided ``confidence``, so one-sided ``(1 + confidence) / 2``) is above
    ``-tolerance``. ``min_metric``: floor of the primary metric. ``forgetting_tolerance``
    / ``slice_tolerance``: largest allowed drop on a historical frame / a slice with at
    least ``min_slice_rows`` rows, held against the candidate only when the drop is also
    significant (Holm across every frame and slice compared, at one-sided
    ``(1 - confidence) / 2``). ``max_ece``: calibration ceiling, enforced when the candidate
    is also worse calibrated than the champion by more than ``ece_margin``.
    """

    tolerance: float = 0.02
    min_metric: float = 0.55
    n_resamples: int = 1000
    confidence: float = 0.95
    forgetting_tolerance: float = 0.02
    slice_tolerance: float = 0.05
    min_slice_rows: int = 50
    max_ece: float = 0.15
    seed: int = 0
    ece_margin: float = 0.02


def gate_config(source: Any) -> GateConfig:
    """The gate's thresholds from settings (``Settings`` or the training config resource:
    both name them ``gate_*``)."""
    return GateConfig(
        tolerance=source.gate_tolerance,
        min_metric=source.gate_min_auc,
        n_resamples=source.gate_bootstrap_resamples,
        forgetting_tolerance=source.gate_forgetting_tolerance,
        slice_tolerance=source.gate_slice_tolerance,
        max_ece=source.gate_max_ece,
        seed=source.seed,
    )


@dataclass(frozen=True)
class SliceMetrics:
    """Both models on the rows of ``column == value`` (or a quartile bucket of it)."""

    column: str
    value: str
    rows: int
    candidate: dict[str, float]
    champion: dict[str, float] | None
    #: Paired bootstrap of the primary metric on the slice: only when its drop exceeds the
    #: tolerance (the only slices that can fail the candidate).
    bootstrap: BootstrapResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return _json_dict(asdict(self))


@dataclass(frozen=True)
class HistoryMetrics:
    """Both models on a named older frame: does the candidate still know it?"""

    name: str
    rows: int
    candidate: dict[str, float]
    champion: dict[str, float] | None
    #: Paired bootstrap of the primary metric on the frame (None without a champion).
    bootstrap: BootstrapResult | None = None

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
                f"| column | value | rows | candidate {m} | champion {m} | delta | interval | "
                "candidate accuracy | champion accuracy |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for s in self.slices:
                cand, champ = s.candidate.get(m), (s.champion or {}).get(m)
                rows.append(
                    f"| {_cell(s.column)} | {_cell(s.value)} | {s.rows} | {_fmt(cand)} | "
                    f"{_fmt(champ)} | {_fmt_delta(cand, champ)} | {_interval(s.bootstrap)} | "
                    f"{_fmt(s.candidate.get('accuracy'))} | "
                    f"{_fmt((s.champion or {}).get('accuracy'))} |"
                )
            parts.append("### Slices\n\n" + "\n".join(rows))
        if self.forgetting:
            rows = [
                f"| frame | rows | candidate {m} | champion {m} | delta | interval |",
                "|---|---|---|---|---|---|",
            ]
            for h in self.forgetting:
                cand, champ = h.candidate.get(m), (h.champion or {}).get(m)
                rows.append(
                    f"| {_cell(h.name)} | {h.rows} | {_fmt(cand)} | {_fmt(champ)} | "
                    f"{_fmt_delta(cand, champ)} | {_interval(h.bootstrap)} |"
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
    cand = score_frame(candidate, holdout)
    champ = score_frame(champion, holdout) if champion is not None else None
    paired = champion is not None and candidate.spec.classes == champion.spec.classes
    if champion is not None and not paired:
        notes.append(
            f"classes differ (candidate {candidate.spec.classes}, champion "
            f"{champion.spec.classes}): no paired bootstrap"
        )

    def interval(
        a: ScoredFrame, b: ScoredFrame | None, rows: NDArray[np.bool_] | None = None
    ) -> BootstrapResult | None:
        if not paired or b is None:
            return None
        both = a.known & b.known if rows is None else a.known & b.known & rows
        return paired_bootstrap(
            a.y[both],
            a.proba[both],
            b.proba[both],
            metric=PRIMARY_METRIC,
            n_resamples=config.n_resamples,
            confidence=config.confidence,
            seed=config.seed,
        )

    bootstrap: BootstrapResult | None = interval(cand, champ)
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
        names, labels = slice_rows(holdout[column])
        for name in names:
            rows = np.asarray(labels == name)
            cand_metrics = cand.metrics(rows)
            champ_metrics = champ.metrics(rows) if champ is not None else None
            dropped = _drop(cand_metrics, champ_metrics) > config.slice_tolerance
            slices.append(
                SliceMetrics(
                    column=column,
                    value=name,
                    rows=int(cand_metrics["rows"]),
                    candidate=cand_metrics,
                    champion=champ_metrics,
                    bootstrap=interval(cand, champ, rows) if dropped else None,
                )
            )
    forgetting: list[HistoryMetrics] = []
    for name, frame in history.items():
        old = score_frame(candidate, frame)
        old_champion = score_frame(champion, frame) if champion is not None else None
        old_cand = old.metrics()
        forgetting.append(
            HistoryMetrics(
                name,
                int(old_cand["rows"]),
                old_cand,
                old_champion.metrics() if old_champion is not None else None,
                interval(old, old_champion),
            )
        )
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
    return replace(report, decision=decide(report))


def _drop(candidate: Mapping[str, float], champion: Mapping[str, float] | None) -> float:
    """How far the candidate is below the champion on the primary metric (NaN: unknown)."""
    if champion is None:
        return math.nan
    cand, champ = candidate.get(PRIMARY_METRIC), champion.get(PRIMARY_METRIC)
    if cand is None or champ is None:
        return math.nan
    return champ - cand


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


def _interval(b: BootstrapResult | None) -> str:
    if b is None or b.n_resamples == 0 or math.isnan(b.low):
        return "-"
    return f"[{b.low:+.4f}, {b.high:+.4f}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")

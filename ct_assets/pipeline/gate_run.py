"""One run of the promotion gate: a registered candidate against the current champion on
the candidate dataset's time-based holdout, its report written and recorded in MLflow.

Plain code over the registry, dataset files and paths (no Dagster): the frames the gate
looks at (:func:`history_frames`, :func:`slice_columns`), its plots, and
:func:`run_gate`, which the ``validation_report`` asset calls once. The measurements are
``training.evaluation.evaluate_gate``'s, the decision ``training.gate``'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ct_assets import keys
from ct_assets.data.dataset import META_COLUMNS
from ct_assets.data.dataset_objects import dataset_file
from ct_assets.data.tables import write_bytes_atomically
from ct_assets.registry import (
    CHAMPION,
    TAG_CANDIDATES,
    TAG_DECISION,
    TAG_DEPLOYMENT_STATUS,
    TAG_REPORT,
    TAG_WINDOW_START,
    Registry,
)
from ct_assets.storage import ObjectStore, put_file, same_file
from ct_assets.training.candidates import candidates_markdown, recorded_candidates
from ct_assets.training.evaluation import GateConfig, GateReport, evaluate_gate
from ct_assets.training.gate import GateDecision
from ct_assets.training.model import TrainedModel
from ct_assets.training.plots import calibration_png, importance_png, png_markdown, roc_png

REPORTS_PREFIX = keys.REPORTS_OBJECT_PREFIX
HISTORY_ROWS = 20_000  # newest rows of the champion's older held-out data the check uses


class GateRunError(ValueError):
    """The gate cannot run: the candidate's dataset is missing."""


@dataclass(frozen=True)
class GateRun:
    """What one gate run judged and decided, and where its report went.

    ``champion_version``: None when there was no champion to compare with (or the
    candidate is the champion). ``candidates``: the candidate windows recorded at training.
    ``report_path``: the JSON report under the reports folder; ``report_uri``: the same
    report on the object store (``CT_STORAGE_URI``; its path when the store is that
    folder); ``artifact_uri``: the same report as an artifact of the candidate's MLflow run.
    """

    candidate_version: str
    champion_version: str | None
    dataset_version: str | None
    holdout_rows: int
    gate: GateReport
    decision: GateDecision
    candidates: list[dict[str, Any]]
    plots: dict[str, bytes]
    report_path: Path
    artifact_uri: str
    report_uri: str = ""

    def markdown(self) -> str:
        """The decision, the candidate windows, the gate's tables and the plots."""
        images = "\n\n".join(png_markdown(png, name) for name, png in self.plots.items())
        return (
            f"**{self.decision.label}** v{self.candidate_version}\n\n"
            f"{_candidates_section(self.candidates)}{self.gate.markdown()}\n\n{images}"
        )


def run_gate(
    registry: Registry,
    candidate_version: str,
    *,
    datasets_dir: Path,
    reports_dir: Path,
    config: GateConfig,
    configured_slices: str,
    plots: bool,
    run_id: str,
    objects: ObjectStore | None = None,
) -> GateRun:
    """Judge ``candidate_version`` against the registry's champion and record the verdict.

    Both models are judged as validated (trained without their own holdout). The report
    (JSON, and PNG plots when ``plots``) is written under ``reports_dir`` and logged on
    the candidate's run with its holdout metrics; the version is tagged with the report,
    the decision and, when rejected, its deployment status. ``run_id``: the run that
    asked, kept in the report.
    """
    candidate_info = registry.version(candidate_version)
    dataset_version = candidate_info.dataset_version
    dataset_path = dataset_file(objects, datasets_dir, str(dataset_version))
    if not dataset_path.exists():
        raise GateRunError(f"candidate v{candidate_version}'s dataset {dataset_path} is missing")
    dataset = pl.read_parquet(dataset_path)
    holdout = dataset.filter(pl.col("split") == "holdout")
    # Both models as validated, trained without their own holdout (a registered model may
    # be its recipe refit with it): the champion's refit may have learned rows of this
    # holdout or of the older frames, and would be judged on rows it saw.
    candidate = registry.load_validated_model(candidate_version)
    champion_info = registry.alias(CHAMPION)
    champion = None
    champion_dataset = None
    if champion_info is not None and champion_info.version != candidate_version:
        champion = registry.load_validated_model(champion_info.version)
        if champion_info.dataset_version != dataset_version:
            older = dataset_file(objects, datasets_dir, str(champion_info.dataset_version))
            if older.exists():
                champion_dataset = pl.read_parquet(older)
    change_at = candidate_info.tags.get(TAG_WINDOW_START)
    since = datetime.fromisoformat(change_at) if change_at else None
    history = history_frames(dataset, champion_dataset, since)
    columns = slice_columns(configured_slices, dataset)
    gate = evaluate_gate(candidate, champion, holdout, history, columns, config)
    decision = gate.decision
    assert decision is not None
    if since is not None and champion_dataset is not None:
        decision.reasons.append(
            f"older data before the change point at {change_at} not held against the "
            "candidate: the concept changed there (its dataset starts at the change)"
        )
    candidates = recorded_candidates(candidate_info.tags.get(TAG_CANDIDATES, ""))
    images = gate_plots(candidate, champion, holdout) if plots else {}
    champion_version = champion_info.version if champion is not None and champion_info else None
    report: dict[str, Any] = {
        "candidate_version": candidate_version,
        "champion_version": champion_version,
        "dataset_version": dataset_version,
        "holdout_rows": holdout.height,
        "candidates": candidates,
        **gate.to_dict(),
        "decision": decision.label,
        "inconclusive": decision.inconclusive,
        "reasons": decision.reasons,
        "failed": decision.failed,
        "dagster_run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(),
    }
    path = write_report(reports_dir, candidate_version, report, images)
    report_uri = publish_report(objects, path, list(images))
    registry.log_metrics(
        candidate_info.run_id, {f"holdout_{k}": v for k, v in gate.candidate.items()}
    )
    artifact_uri = registry.log_report(candidate_info.run_id, report, images)
    registry.set_version_tag(candidate_version, TAG_REPORT, artifact_uri)
    registry.set_version_tag(candidate_version, TAG_DECISION, decision.label)
    if not decision.promote:
        registry.set_version_tag(candidate_version, TAG_DEPLOYMENT_STATUS, "rejected")
    return GateRun(
        candidate_version=candidate_version,
        champion_version=champion_version,
        dataset_version=dataset_version,
        holdout_rows=holdout.height,
        gate=gate,
        decision=decision,
        candidates=candidates,
        plots=images,
        report_path=path,
        artifact_uri=artifact_uri,
        report_uri=report_uri,
    )


def history_frames(
    dataset: pl.DataFrame,
    champion_dataset: pl.DataFrame | None,
    change_at: datetime | None = None,
) -> dict[str, pl.DataFrame]:
    """The older data a candidate must not forget.

    * ``reservoir``: the dataset's sample of older examples, kept in the window on purpose;
    * ``older_window``: the champion's held-out examples from before the candidate's
      window: data neither model trained on, so both are judged out of sample (the
      champion's training rows would flatter it). Only from ``change_at`` on when the
      candidate's window starts at a detected change: older examples follow the concept
      that changed, and forgetting it is the point of the retrain.
    """
    history: dict[str, pl.DataFrame] = {}
    parts = dataset["window_part"] if "window_part" in dataset.columns else None
    if parts is not None:
        reservoir = dataset.filter(pl.col("window_part") == "reservoir")
        if reservoir.height:
            history["reservoir"] = reservoir
    if champion_dataset is not None and champion_dataset.height:
        recent = (
            dataset.filter(pl.col("window_part") != "reservoir") if parts is not None else dataset
        )
        start = recent["timestamp"].min() if recent.height else None
        if start is not None:
            older = champion_dataset.filter(
                (pl.col("split") == "holdout") & (pl.col("timestamp") < start)
            )
            if change_at is not None:
                moment = pl.lit(change_at).cast(older.schema["timestamp"])
                older = older.filter(pl.col("timestamp") >= moment)
            older = older.tail(HISTORY_ROWS)
            if older.height:
                history["older_window"] = older
    return history


def slice_columns(configured: str, dataset: pl.DataFrame) -> list[str]:
    """The configured columns, or the categorical features and the serving arm."""
    if configured.strip():
        return [c.strip() for c in configured.split(",") if c.strip()]
    categorical = [
        c for c in dataset.columns if c not in META_COLUMNS and dataset.schema[c] == pl.String
    ]
    return [*categorical, "arm"]


def gate_plots(
    candidate: TrainedModel, champion: TrainedModel | None, holdout: pl.DataFrame
) -> dict[str, bytes]:
    """ROC and calibration of both models on the holdout, the candidate's importances."""
    known = holdout.filter(pl.col("label").cast(pl.String).is_in(candidate.spec.classes))
    plots = {"feature_importance": importance_png(candidate.booster)}
    if known.height == 0:
        return plots
    y = np.asarray(candidate.spec.label_indices(known["label"]))
    probas = {"candidate": candidate.predict_proba(known)}
    if champion is not None and champion.spec.classes == candidate.spec.classes:
        probas["champion"] = champion.predict_proba(known)
    plots["roc"] = roc_png(y, probas, candidate.spec.classes)
    plots["calibration"] = calibration_png(y, probas, candidate.spec.classes)
    return plots


def write_report(
    reports_dir: Path, version: str, report: dict[str, Any], plots: dict[str, bytes]
) -> Path:
    """The report as ``validation-v<version>.json`` and its plots beside it."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        write_bytes_atomically(reports_dir / f"validation-v{version}-{name}.png", png)
    path = reports_dir / f"validation-v{version}.json"
    text = json.dumps(report, indent=2, sort_keys=True, default=str)
    return write_bytes_atomically(path, text.encode())


def publish_report(objects: ObjectStore | None, path: Path, plots: list[str]) -> str:
    """The report written at ``path`` (and its ``plots`` beside it) copied to
    ``reports/`` on the object store, the plots first; the report's URI there (its local
    path when there is no store or the store's object is that file)."""
    key = f"{REPORTS_PREFIX}/{path.name}"
    if objects is None or same_file(objects, key, path):
        return str(path)
    stem = path.name.removesuffix(".json")
    for name in plots:
        plot = path.with_name(f"{stem}-{name}.png")
        put_file(objects, f"{REPORTS_PREFIX}/{plot.name}", plot)
    put_file(objects, key, path)
    return objects.uri_of(key)


def _candidates_section(candidates: list[dict[str, Any]]) -> str:
    if not candidates:
        return ""
    table = candidates_markdown(candidates)
    return f"Candidate windows on the same holdout (the best became this version):\n\n{table}\n\n"

"""Validation: the candidate against the champion on the same time-based holdout."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from ct_assets import keys
from ct_assets.data.dataset import META_COLUMNS
from ct_assets.data.tables import write_bytes_atomically
from ct_assets.defs.lineage import require_metadata
from ct_assets.defs.resources import DatasetStoreResource, RegistryResource, TrainingConfigResource
from ct_assets.registry import (
    CHAMPION,
    TAG_CANDIDATES,
    TAG_DECISION,
    TAG_DEPLOYMENT_STATUS,
    TAG_REPORT,
    TAG_WINDOW_START,
)
from ct_assets.training.candidates import candidates_markdown, recorded_candidates
from ct_assets.training.evaluation import evaluate_gate, gate_config
from ct_assets.training.model import TrainedModel
from ct_assets.training.plots import calibration_png, importance_png, png_markdown, roc_png
from ct_assets.uris import redact_uri

GATE_CODE_VERSION = "gate-v2"


HISTORY_ROWS = 20_000  # newest rows of the champion's older held-out data the check uses


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


@dg.asset(
    name=keys.VALIDATION_REPORT,
    group_name=keys.VALIDATION,
    deps=[keys.CANDIDATE_MODEL],
    kinds={"lightgbm", "mlflow"},
    code_version=GATE_CODE_VERSION,
    check_specs=[
        dg.AssetCheckSpec(
            keys.GATE_CHECK,
            asset=keys.VALIDATION_REPORT,
            blocking=True,
            description="The candidate is not worse than the champion: blocks champion_model.",
        )
    ],
    description=(
        "Candidate vs champion on the candidate dataset's time-based holdout: AUC with a "
        "paired bootstrap interval of the difference, accuracy, log loss, calibration "
        "(ECE, Brier), per-slice metrics (CT_SLICE_COLUMNS), and catastrophic forgetting on "
        "older data (the reservoir, the champion's older window). The decision lists every "
        "reason. Rendered as markdown with ROC, calibration and feature-importance plots; "
        "JSON and PNGs are artifacts of the candidate's MLflow run and under CT_HOME/reports."
    ),
)
def validation_report(
    context: dg.AssetExecutionContext,
    dataset_store: DatasetStoreResource,
    registry: RegistryResource,
    training_config: TrainingConfigResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    candidate_version = str(
        require_metadata(context.instance, keys.CANDIDATE_MODEL, keys.META_MODEL_VERSION)
    )
    reg = registry.registry()
    candidate_info = reg.version(candidate_version)
    dataset_version = candidate_info.dataset_version
    dataset_path = dataset_store.datasets / f"{dataset_version}.parquet"
    if not dataset_path.exists():
        raise dg.Failure(f"candidate v{candidate_version}'s dataset {dataset_path} is missing")
    dataset = pl.read_parquet(dataset_path)
    holdout = dataset.filter(pl.col("split") == "holdout")
    # Both models as validated, trained without their own holdout (a registered model may
    # be its recipe refit with it): the champion's refit may have learned rows of this
    # holdout or of the older frames, and would be judged on rows it saw.
    candidate = reg.load_validated_model(candidate_version)
    champion_info = reg.alias(CHAMPION)
    champion = None
    champion_dataset = None
    if champion_info is not None and champion_info.version != candidate_version:
        champion = reg.load_validated_model(champion_info.version)
        older = dataset_store.datasets / f"{champion_info.dataset_version}.parquet"
        if champion_info.dataset_version != dataset_version and older.exists():
            champion_dataset = pl.read_parquet(older)
    config = gate_config(training_config)
    change_at = candidate_info.tags.get(TAG_WINDOW_START)
    since = datetime.fromisoformat(change_at) if change_at else None
    history = history_frames(dataset, champion_dataset, since)
    columns = slice_columns(training_config.slice_columns, dataset)
    gate = evaluate_gate(candidate, champion, holdout, history, columns, config)
    if since is not None and champion_dataset is not None:
        assert gate.decision is not None
        gate.decision.reasons.append(
            f"older data before the change point at {change_at} not held against the "
            "candidate: the concept changed there (its dataset starts at the change)"
        )
    candidates = recorded_candidates(candidate_info.tags.get(TAG_CANDIDATES, ""))
    decision = gate.decision
    assert decision is not None
    plots = _plots(candidate, champion, holdout) if training_config.report_plots else {}
    report: dict[str, Any] = {
        "candidate_version": candidate_version,
        "champion_version": champion_info.version
        if champion is not None and champion_info
        else None,
        "dataset_version": dataset_version,
        "holdout_rows": holdout.height,
        "candidates": candidates,
        **gate.to_dict(),
        "decision": decision.label,
        "inconclusive": decision.inconclusive,
        "reasons": decision.reasons,
        "failed": decision.failed,
        "dagster_run_id": context.run.run_id,
        "created_at": datetime.now(UTC).isoformat(),
    }
    path = _write_report(dataset_store.reports, candidate_version, report, plots)
    reg.log_metrics(candidate_info.run_id, {f"holdout_{k}": v for k, v in gate.candidate.items()})
    artifact_uri = reg.log_report(candidate_info.run_id, report, plots)
    reg.set_version_tag(candidate_version, TAG_REPORT, artifact_uri)
    reg.set_version_tag(candidate_version, TAG_DECISION, decision.label)
    if not decision.promote:
        reg.set_version_tag(candidate_version, TAG_DEPLOYMENT_STATUS, "rejected")
    reasons_md = "\n".join(f"- {reason}" for reason in decision.reasons)
    images = "\n\n".join(png_markdown(png, name) for name, png in plots.items())
    bootstrap = gate.bootstrap
    return dg.MaterializeResult(
        metadata={
            keys.META_MODEL_VERSION: candidate_version,
            keys.META_DECISION: decision.label,
            "inconclusive": decision.inconclusive,
            keys.META_AUC: gate.candidate.get("auc", float("nan")),
            "champion_version": champion_info.version
            if champion is not None and champion_info
            else "none",
            "champion_auc": (gate.champion or {}).get("auc", float("nan")),
            "auc_delta_low": bootstrap.low if bootstrap else float("nan"),
            "auc_delta_high": bootstrap.high if bootstrap else float("nan"),
            "ece": gate.candidate.get("ece", float("nan")),
            "failed_criteria": len(decision.failed),
            "report": dg.MetadataValue.md(
                f"**{decision.label}** v{candidate_version}\n\n"
                f"{_candidates_section(candidates)}{gate.markdown()}\n\n{images}"
            ),
            "report_path": dg.MetadataValue.path(str(path)),
            "mlflow_artifact": redact_uri(artifact_uri),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=keys.GATE_CHECK,
                passed=decision.promote,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "decision": decision.label,
                    "reasons": reasons_md,
                    "failed": "\n".join(f"- {r}" for r in decision.failed) or "(none)",
                },
            )
        ],
    )


def _candidates_section(candidates: list[dict[str, Any]]) -> str:
    if not candidates:
        return ""
    table = candidates_markdown(candidates)
    return f"Candidate windows on the same holdout (the best became this version):\n\n{table}\n\n"


def _plots(
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


def _write_report(
    reports_dir: Path, version: str, report: dict[str, Any], plots: dict[str, bytes]
) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        write_bytes_atomically(reports_dir / f"validation-v{version}-{name}.png", png)
    path = reports_dir / f"validation-v{version}.json"
    text = json.dumps(report, indent=2, sort_keys=True, default=str)
    return write_bytes_atomically(path, text.encode())

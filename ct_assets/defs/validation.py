"""Validation: the candidate against the champion on the same time-based holdout."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ct_assets import keys
from ct_assets.defs.lineage import require_metadata
from ct_assets.defs.resources import DatasetStoreResource, RegistryResource, TrainingConfigResource
from ct_assets.registry import CHAMPION, TAG_DECISION, TAG_REPORT
from ct_assets.training.gate import decide
from ct_assets.training.train import evaluate

GATE_CODE_VERSION = "gate-v1"


def metrics_table(candidate: dict[str, float], champion: dict[str, float] | None) -> str:
    rows = ["| metric | candidate | champion |", "|---|---|---|"]
    for name in ("auc", "accuracy", "log_loss", "brier", "rows"):
        theirs = f"{champion[name]:.4f}" if champion and name in champion else "-"
        rows.append(f"| {name} | {candidate.get(name, float('nan')):.4f} | {theirs} |")
    return "\n".join(rows)


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
        "Candidate vs champion on the candidate dataset's holdout: AUC, accuracy, log loss, "
        "Brier; the gate's decision with every reason. Saved as JSON under CT_HOME/reports "
        "and as an artifact of the candidate's MLflow run."
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
    holdout = pl.read_parquet(dataset_path).filter(pl.col("split") == "holdout")
    candidate_metrics = evaluate(reg.load_model(candidate_version), holdout)
    champion = reg.alias(CHAMPION)
    champion_metrics = None
    if champion is not None and champion.version != candidate_version:
        champion_metrics = evaluate(reg.load_model(champion.version), holdout)
    decision = decide(
        candidate_metrics,
        champion_metrics,
        tolerance=training_config.gate_tolerance,
        min_metric=training_config.gate_min_auc,
    )
    report: dict[str, Any] = {
        "candidate_version": candidate_version,
        "champion_version": champion.version if champion else None,
        "dataset_version": dataset_version,
        "holdout_rows": holdout.height,
        "candidate": candidate_metrics,
        "champion": champion_metrics,
        "decision": decision.label,
        "reasons": decision.reasons,
        "dagster_run_id": context.run.run_id,
        "created_at": datetime.now(UTC).isoformat(),
    }
    path = _write_report(dataset_store.reports, candidate_version, report)
    artifact_uri = reg.log_report(candidate_info.run_id, report)
    reg.set_version_tag(candidate_version, TAG_REPORT, artifact_uri)
    reg.set_version_tag(candidate_version, TAG_DECISION, decision.label)
    reasons_md = "\n".join(f"- {reason}" for reason in decision.reasons)
    return dg.MaterializeResult(
        metadata={
            keys.META_MODEL_VERSION: candidate_version,
            keys.META_DECISION: decision.label,
            keys.META_AUC: candidate_metrics.get("auc", float("nan")),
            "champion_version": champion.version if champion else "none",
            "champion_auc": (champion_metrics or {}).get("auc", float("nan")),
            "report": dg.MetadataValue.md(
                f"**{decision.label}** v{candidate_version}\n\n"
                f"{metrics_table(candidate_metrics, champion_metrics)}\n\n{reasons_md}"
            ),
            "report_path": dg.MetadataValue.path(str(path)),
            "mlflow_artifact": artifact_uri,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=keys.GATE_CHECK,
                passed=decision.promote,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"decision": decision.label, "reasons": reasons_md},
            )
        ],
    )


def _write_report(reports_dir: Path, version: str, report: dict[str, Any]) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"validation-v{version}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
    return path

"""Validation: the candidate against the champion on the same time-based holdout."""

from collections.abc import Iterator

import dagster as dg

from ct_assets import keys
from ct_assets.defs.dataset_store import DatasetStoreResource
from ct_assets.defs.handoffs import HANDOFF_IO_MANAGER, CandidateHandoff, GateHandoff
from ct_assets.defs.resources import RegistryResource, TrainingConfigResource
from ct_assets.pipeline.gate_run import GateRunError, run_gate
from ct_assets.training.evaluation import gate_config
from ct_assets.uris import redact_uri

GATE_CODE_VERSION = "gate-v2"


@dg.asset(
    name=keys.VALIDATION_REPORT,
    group_name=keys.VALIDATION,
    ins={"candidate": dg.AssetIn(key=keys.CANDIDATE_MODEL)},
    io_manager_key=HANDOFF_IO_MANAGER,  # champion_model's input: a GateHandoff
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
    candidate: CandidateHandoff,
    dataset_store: DatasetStoreResource,
    registry: RegistryResource,
    training_config: TrainingConfigResource,
) -> Iterator[dg.Output[GateHandoff] | dg.AssetCheckResult]:
    candidate_version = candidate.model_version
    try:
        run = run_gate(
            registry.registry(),
            candidate_version,
            datasets_dir=dataset_store.datasets,
            objects=dataset_store.objects(),
            reports_dir=dataset_store.reports,
            config=gate_config(training_config),
            configured_slices=training_config.slice_columns,
            plots=training_config.report_plots,
            run_id=context.run.run_id,
        )
    except GateRunError as error:
        raise dg.Failure(str(error)) from error
    gate, decision, bootstrap = run.gate, run.decision, run.gate.bootstrap
    yield dg.Output(
        GateHandoff(
            decision=decision.label,
            model_version=candidate_version,
            promote=bool(decision.promote),
            champion_version=str(run.champion_version or ""),
            dagster_run_id=context.run.run_id,
        ),
        metadata={
            keys.META_MODEL_VERSION: candidate_version,
            keys.META_DECISION: decision.label,
            "inconclusive": decision.inconclusive,
            keys.META_AUC: gate.candidate.get("auc", float("nan")),
            "champion_version": run.champion_version or "none",
            "champion_auc": (gate.champion or {}).get("auc", float("nan")),
            "auc_delta_low": bootstrap.low if bootstrap else float("nan"),
            "auc_delta_high": bootstrap.high if bootstrap else float("nan"),
            "ece": gate.candidate.get("ece", float("nan")),
            "failed_criteria": len(decision.failed),
            "report": dg.MetadataValue.md(run.markdown()),
            "report_path": dg.MetadataValue.path(str(run.report_path)),
            "report_uri": redact_uri(run.report_uri),
            "mlflow_artifact": redact_uri(run.artifact_uri),
        },
    )
    yield dg.AssetCheckResult(
        check_name=keys.GATE_CHECK,
        passed=decision.promote,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "decision": decision.label,
            "reasons": "\n".join(f"- {reason}" for reason in decision.reasons),
            "failed": "\n".join(f"- {r}" for r in decision.failed) or "(none)",
        },
    )

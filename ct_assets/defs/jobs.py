"""Jobs: the on-demand (and sensor-launched) retrain through the whole loop, the raw
partitions and their curation, the labeling queue, the monitoring assets and their
schedule."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ct_assets import keys
from ct_assets.defs.automation import utc_schedule
from ct_assets.defs.bias_checks import retrain_assets
from ct_assets.settings import Settings

RETRAIN_ASSETS = [
    keys.TRAINING_DATASET,
    keys.CANDIDATE_MODEL,
    keys.VALIDATION_REPORT,
    keys.CHAMPION_MODEL,
    keys.DEPLOYMENT_HISTORY,
    keys.FEEDBACK_LOOP_LATENCY,
]


def build_retrain_job(settings: Settings) -> UnresolvedAssetJobDefinition:
    """The retrain job; with ``CT_BIAS_BLOCK_TRAINING`` on it first runs
    ``feedback_bias_report``, whose blocking checks then stop the dataset and the rest."""
    return dg.define_asset_job(
        keys.RETRAIN_JOB,
        selection=dg.AssetSelection.assets(*retrain_assets(settings, RETRAIN_ASSETS)),
        description=(
            "Dataset (cut at the log's current position) -> candidate -> validation -> "
            "champion. Launch it by hand (ct/trigger=manual, ct/mode full|incremental) or "
            "let a sensor launch it."
            + (
                " Runs feedback_bias_report first: a flagged bias stops the run."
                if settings.bias_block_training
                else ""
            )
        ),
        tags={
            keys.RUN_TAG_JOB: keys.RETRAIN_JOB,
            keys.RUN_TAG_TRIGGER: "manual",
            keys.RUN_TAG_MODE: "full",
        },
    )


raw_partitions_job = dg.define_asset_job(
    keys.RAW_PARTITIONS_JOB,
    selection=dg.AssetSelection.assets(
        keys.RAW_FEEDBACK,
        keys.RAW_PREDICTIONS,
        keys.VALIDATED_FEEDBACK,
        keys.FEEDBACK_QUARANTINE,
        keys.ATTRIBUTED_EXAMPLES,
    ),
    description=(
        "Materialize event dates (UTC) of the raw assets and their curation: validated "
        "feedback, its quarantine, attributed examples."
    ),
)

labeling_queue_job = dg.define_asset_job(
    keys.LABELING_QUEUE_JOB,
    selection=dg.AssetSelection.assets(keys.LABELING_QUEUE),
    description="Rank the recent predictions without feedback for labeling.",
)

MONITORING_ASSETS = [
    keys.FEEDBACK_AGGREGATES,
    keys.FEEDBACK_LOOP_LATENCY,
    keys.FEEDBACK_BIAS_REPORT,
    keys.PIPELINE_HEALTH,
]

monitoring_job = dg.define_asset_job(
    keys.MONITORING_JOB,
    selection=dg.AssetSelection.assets(*MONITORING_ASSETS),
    description="Refresh the monitoring of the loop itself (group monitoring).",
    tags={keys.RUN_TAG_JOB: keys.MONITORING_JOB},
)


def build_monitoring_schedule(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    cron = settings.monitoring_cron
    return utc_schedule(
        keys.MONITORING_SCHEDULE,
        job,
        cron,
        running=True,
        tags={keys.RUN_TAG_JOB: keys.MONITORING_JOB},
        description=(
            f"Refreshes the monitoring assets on cron '{cron}' (UTC, CT_MONITORING_CRON) so "
            "their figures chart over time."
        ),
    )

"""Dagster wiring, by stage. Logic lives in the plain modules these files call."""

from __future__ import annotations

import dagster as dg

from ct_assets import keys
from ct_assets.defs.canary import (
    build_canary_analysis,
    build_canary_sensor,
    build_shadow_evaluation,
    canary_job,
)
from ct_assets.defs.curation import build_daily_assets, labeling_queue
from ct_assets.defs.dataset import REFERENCE_SCHEMA_SPEC, build_training_dataset
from ct_assets.defs.deployment import champion_model, deployment_history
from ct_assets.defs.ingestion import build_raw_partitions_sensor, daily_partitions
from ct_assets.defs.jobs import (
    build_monitoring_schedule,
    build_retrain_job,
    labeling_queue_job,
    monitoring_job,
    raw_partitions_job,
)
from ct_assets.defs.observability import build_monitoring_assets
from ct_assets.defs.pipeline_health import build_pipeline_health
from ct_assets.defs.resources import resources_from_settings
from ct_assets.defs.retention import build_gc_job, build_gc_schedule
from ct_assets.defs.rollback import rollback_job
from ct_assets.defs.training import candidate_model
from ct_assets.defs.triggers import (
    DRIFT_MONITOR_SPEC,
    PERFORMANCE_MONITOR_SPEC,
    build_drift_sensor,
    build_performance_sensor,
    build_retrain_schedule,
    build_volume_sensor,
)
from ct_assets.defs.validation import validation_report
from ct_assets.settings import Settings

ASSETS = [
    labeling_queue,
    candidate_model,
    validation_report,
    champion_model,
    deployment_history,
]


def with_owners(
    asset: dg.AssetsDefinition | dg.AssetSpec,
) -> dg.AssetsDefinition | dg.AssetSpec:
    """The asset with ``keys.OWNERS`` where it names no owner of its own."""
    if isinstance(asset, dg.AssetSpec):
        return asset.replace_attributes(owners=list(asset.owners) or keys.OWNERS)
    return asset.map_asset_specs(
        lambda spec: spec.replace_attributes(owners=list(spec.owners) or keys.OWNERS)
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    """The whole code location for ``settings`` (paths under its CT_HOME)."""
    partitions = daily_partitions(settings.partition_start_date)
    retrain_job = build_retrain_job(settings)
    gc_job = build_gc_job(settings)
    assets: list[dg.AssetsDefinition | dg.AssetSpec] = [
        build_daily_assets(settings.partition_start_date),
        build_training_dataset(settings),
        REFERENCE_SCHEMA_SPEC,
        *ASSETS,
        DRIFT_MONITOR_SPEC,
        PERFORMANCE_MONITOR_SPEC,
        build_canary_analysis(settings),
        build_shadow_evaluation(),
        *build_monitoring_assets(settings),
        build_pipeline_health(settings),
    ]
    return dg.Definitions(
        assets=[with_owners(asset) for asset in assets],
        jobs=[
            retrain_job,
            raw_partitions_job,
            labeling_queue_job,
            rollback_job,
            canary_job,
            monitoring_job,
            gc_job,
        ],
        sensors=[
            build_volume_sensor(settings, retrain_job),
            build_drift_sensor(settings, retrain_job),
            build_performance_sensor(settings, retrain_job),
            build_canary_sensor(settings, canary_job),
            build_raw_partitions_sensor(
                settings, raw_partitions_job, labeling_queue_job, partitions
            ),
        ],
        schedules=[
            build_retrain_schedule(settings, retrain_job),
            build_monitoring_schedule(settings, monitoring_job),
            build_gc_schedule(settings, gc_job),
        ],
        resources=resources_from_settings(settings),
    )

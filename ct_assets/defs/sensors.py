"""Sensors that launch retrain runs, each explaining its decision."""

import json

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ct_assets import keys
from ct_assets.defs.lineage import latest_metadata
from ct_assets.defs.resources import EventLogResource
from ct_assets.settings import Settings
from ct_assets.triggers import volume_decision

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def build_volume_sensor(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    threshold = settings.volume_threshold
    mode = settings.volume_mode

    @dg.sensor(
        name=keys.VOLUME_SENSOR,
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Retrains ({mode}) when {threshold} labeled feedback events arrived since the "
            "champion's dataset cutoff. Waits while a retrain is in flight."
        ),
    )
    def volume_sensor(
        context: dg.SensorEvaluationContext, event_log: EventLogResource
    ) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        last_requested = int(cursor.get("requested_upto", 0))
        champion = latest_metadata(context.instance, keys.CHAMPION_MODEL) or {}
        cutoff = int(champion.get(keys.META_LOG_POSITION, 0))
        position = event_log.log().counts().feedback
        decision = volume_decision(position, cutoff, last_requested, threshold)
        if not decision.fire:
            return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason))
        in_flight = context.instance.get_runs(
            dg.RunsFilter(tags={keys.TAG_JOB: keys.RETRAIN_JOB}, statuses=IN_FLIGHT), limit=1
        )
        if in_flight:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{decision.reason}, but retrain run {in_flight[0].run_id} is in flight"
                )
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"volume-{position}",
                    tags={
                        keys.TAG_TRIGGER: "volume",
                        keys.TAG_REASON: decision.reason,
                        keys.TAG_MODE: mode,
                        keys.TAG_JOB: keys.RETRAIN_JOB,
                    },
                )
            ],
            cursor=json.dumps({"requested_upto": position}),
        )

    return volume_sensor

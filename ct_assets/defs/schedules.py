"""Schedules: the retrain trigger on a cron (off until a user turns it on), and the
refresh of the monitoring assets (on)."""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ct_assets import keys
from ct_assets.settings import Settings


def build_retrain_schedule(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    cron = settings.retrain_cron
    return dg.ScheduleDefinition(
        name=keys.RETRAIN_SCHEDULE,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if settings.retrain_schedule_on
            else dg.DefaultScheduleStatus.STOPPED
        ),
        tags={
            keys.TAG_TRIGGER: "schedule",
            keys.TAG_MODE: "full",
            keys.TAG_REASON: f"scheduled full retrain (cron '{cron}' UTC)",
            keys.TAG_JOB: keys.RETRAIN_JOB,
        },
        description=(
            f"A full retrain on cron '{cron}' (UTC), whatever the other triggers say; "
            "stopped unless CT_RETRAIN_SCHEDULE_ON=1 or turned on in the UI."
        ),
    )


def build_monitoring_schedule(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    cron = settings.monitoring_cron
    return dg.ScheduleDefinition(
        name=keys.MONITORING_SCHEDULE,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags={keys.TAG_JOB: keys.MONITORING_JOB},
        description=(
            f"Refreshes the monitoring assets on cron '{cron}' (UTC, CT_MONITORING_CRON) so "
            "their figures chart over time."
        ),
    )

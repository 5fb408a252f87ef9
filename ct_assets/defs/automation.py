"""How the sensors and schedules are declared: each runs from the start (nothing to switch
on in the UI first), sensors every ``CT_SENSOR_INTERVAL_SECONDS``, schedules on a UTC cron."""

from collections.abc import Callable
from typing import Any

import dagster as dg

from ct_assets.settings import Settings


def running_sensor(
    settings: Settings, name: str, job: Any, description: str
) -> Callable[..., dg.SensorDefinition]:
    """The decorator of a sensor ``name`` that launches ``job``, running from the start."""
    return dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )


def utc_schedule(
    name: str,
    job: Any,
    cron: str,
    *,
    running: bool,
    tags: dict[str, str],
    description: str,
) -> dg.ScheduleDefinition:
    """A schedule of ``job`` on ``cron`` (UTC), running from the start when ``running``."""
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
        ),
        tags=tags,
        description=description,
    )

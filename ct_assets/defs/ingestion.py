"""Ingestion: the event log as seen by Dagster, one daily partition per event date (UTC)."""

import hashlib
import json
from datetime import date, timedelta
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from ct_assets import keys
from ct_assets.data.dataset import value_counts
from ct_assets.data.tables import TableStore
from ct_assets.defs.resources import EventLogResource
from ct_assets.defs.retrain_requests import IN_FLIGHT
from ct_assets.defs.tables import column_schema
from ct_assets.eventlog import EventLog
from ct_assets.pipeline.curation import CONTEXT_DAYS
from ct_assets.pipeline.event_tables import refresh_raw_table, refreshed_events
from ct_assets.schema import EventKind
from ct_assets.settings import Settings


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """One partition per UTC event date, today's included (it fills as events arrive)."""
    return dg.DailyPartitionsDefinition(start_date=start_date, end_offset=1)


def partition_version(fingerprint: str) -> str:
    """The data version of a date whose committed segments have ``fingerprint``
    (:meth:`EventLog.partition_fingerprints`): it changes exactly when events of that
    date are committed."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def raw_materialization(
    asset_key: dg.AssetKey,
    log: EventLog,
    kind: EventKind,
    day: str,
    fingerprint: str,
    store: TableStore,
) -> dg.AssetMaterialization:
    """One date of a raw asset: its events as a columnar table (written again only when
    the date's events changed since it was, from the table it replaces and the frames
    committed since), its figures as metadata."""
    path, schema = refresh_raw_table(log, store, kind, day, fingerprint)
    counted = "feedback_type" if kind == "feedback" else "model_version"
    wanted = ["timestamp", "log_offset", counted, *(["label"] if kind == "feedback" else [])]
    # its figures from the columns they need, checked against the source again (another
    # writer may have replaced the file meanwhile)
    frame = store.read_current(asset_key.to_user_string(), day, fingerprint, columns=wanted)
    if frame is None:
        frame, _ = refreshed_events(log, store, kind, day, fingerprint)
        schema = frame.schema
    metadata: dict[str, Any] = {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(pl.DataFrame(schema=schema)),
        "segments": fingerprint or "(none)",
        "path": dg.MetadataValue.path(str(path)),
    }
    if frame.height:
        metadata["first_event_time"] = str(frame["timestamp"].min())
        metadata["last_event_time"] = str(frame["timestamp"].max())
        offsets = frame["log_offset"].to_list()
        metadata["log_offset_range"] = f"{offsets[0]} .. {offsets[-1]}"
        if kind == "feedback":
            metadata["labeled"] = int(frame["label"].is_not_null().sum())
        by = "by_feedback_type" if kind == "feedback" else "by_model_version"
        metadata[by] = dg.MetadataValue.json(value_counts(frame, counted))
    return dg.AssetMaterialization(
        asset_key=asset_key,
        partition=day,
        metadata=metadata,
        tags={DATA_VERSION_TAG: partition_version(fingerprint)},
    )


RAW_FEEDBACK_DESCRIPTION = (
    "Feedback events (explicit labels, implicit signals) durable in the event log, one "
    "partition per event date (UTC); each partition reads only its own segment files and "
    "is kept as a columnar table, CT_HOME/tables/raw_feedback/date=<day>.parquet. The "
    "data version changes exactly when events of that date are committed, so late "
    "arrivals show the partition as stale."
)
RAW_PREDICTIONS_DESCRIPTION = (
    "Logged predictions (features, scores, model version, arm) durable in the event log, "
    "one partition per event date (UTC), kept as CT_HOME/tables/raw_predictions/"
    "date=<day>.parquet; feedback refers to them by `prediction_id`."
)


def changed_partitions(
    fingerprints: dict[str, str], seen: dict[str, str], valid: set[str]
) -> tuple[list[str], list[str]]:
    """Event dates whose committed segments changed since ``seen`` (and are partitions),
    and the dates that have events but no partition (before the start date)."""
    changed = [day for day, fp in sorted(fingerprints.items()) if seen.get(day) != fp]
    return [d for d in changed if d in valid], [d for d in changed if d not in valid]


def refresh_range(changed: list[str], event_dates: list[str], after: int) -> tuple[str, str]:
    """The first and last date to materialize when ``changed`` dates got new events: the
    dates with events (``event_dates``) from CONTEXT_DAYS before the first change (their
    curation looks at it) to ``after`` days past the last one."""
    low = (date.fromisoformat(changed[0]) - timedelta(days=CONTEXT_DAYS)).isoformat()
    high = (date.fromisoformat(changed[-1]) + timedelta(days=after)).isoformat()
    window = [d for d in sorted(event_dates) if low <= d <= high]
    return window[0], window[-1]


def run_dates(tags: dict[str, str]) -> tuple[str, str] | None:
    """The first and last partition a run materializes, from its tags; None when it names
    none (it may touch any date)."""
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        return tags[ASSET_PARTITION_RANGE_START_TAG], tags.get(ASSET_PARTITION_RANGE_END_TAG, "")
    if PARTITION_NAME_TAG in tags:
        return tags[PARTITION_NAME_TAG], tags[PARTITION_NAME_TAG]
    return None


def _describe(dates: tuple[str, str] | None) -> str:
    if dates is None:
        return "no dates named"
    return dates[0] if dates[0] == dates[1] else f"{dates[0]}..{dates[1]}"


def overlapping_run_in_flight(
    instance: dg.DagsterInstance, job_name: str, first: str, last: str
) -> dg.DagsterRun | None:
    """A run of ``job_name`` queued or running whose dates overlap ``first``..``last``."""
    for run in instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT)):
        dates = run_dates(dict(run.tags))
        if dates is None or (dates[0] <= last and first <= dates[1]):
            return run
    return None


def build_raw_partitions_sensor(
    settings: Settings,
    job: UnresolvedAssetJobDefinition,
    queue_job: UnresolvedAssetJobDefinition,
    partitions: dg.DailyPartitionsDefinition,
) -> dg.SensorDefinition:
    # pending feedback of a later date may now find its prediction
    after = max(timedelta(hours=settings.pending_expiry_hours).days + 1, CONTEXT_DAYS)

    @dg.sensor(
        name=keys.RAW_PARTITIONS_SENSOR,
        jobs=[job, queue_job],
        minimum_interval_seconds=settings.raw_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Materializes, in one run, the daily partitions of the raw assets and their "
            "curation (validated_feedback, feedback_quarantine, attributed_examples) whose "
            "events changed since the last request (new or late events of that date), "
            "from the oldest changed date to the newest plus the days whose pending "
            "feedback may now find its prediction; then refreshes the labeling queue. "
            "While a run of the job for some of those dates is queued or running it waits: "
            "the dates are requested once that run has ended."
        ),
    )
    def raw_partitions_sensor(
        context: dg.SensorEvaluationContext, event_log: EventLogResource
    ) -> dg.SensorResult:
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        fingerprints = event_log.log().partition_fingerprints()
        valid = set(partitions.get_partition_keys(dynamic_partitions_store=context.instance))
        changed, outside = changed_partitions(fingerprints, seen, valid)
        if not changed:
            note = f"; {len(outside)} event date(s) before {settings.partition_start_date}"
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    "no event date changed since the last request" + (note if outside else "")
                )
            )
        first, last = refresh_range(changed, [d for d in fingerprints if d in valid], after)
        busy = overlapping_run_in_flight(context.instance, job.name, first, last)
        if busy is not None:  # the cursor stays: these dates are requested after it
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"run {busy.run_id} of {job.name} ({_describe(run_dates(dict(busy.tags)))}) "
                    f"is {busy.status.value.lower()}; {first}..{last} wait for it to end"
                )
            )
        digest = hashlib.sha256(
            json.dumps({day: fingerprints[day] for day in changed}, sort_keys=True).encode()
        ).hexdigest()[:16]
        tags = {
            keys.RUN_TAG_TRIGGER: "events",
            keys.RUN_TAG_REASON: (
                f"events of {len(changed)} date(s) changed: {', '.join(changed[:10])}"
            ),
        }
        if first == last:
            request = dg.RunRequest(
                run_key=f"raw-{first}-{digest}", partition_key=first, tags=tags, job_name=job.name
            )
        else:  # one run for the whole range (the assets' backfill policy is single-run)
            tags[ASSET_PARTITION_RANGE_START_TAG] = first
            tags[ASSET_PARTITION_RANGE_END_TAG] = last
            request = dg.RunRequest(
                run_key=f"raw-{first}-{last}-{digest}", tags=tags, job_name=job.name
            )
        queue = dg.RunRequest(run_key=f"queue-{digest}", job_name=queue_job.name, tags=tags)
        for day in changed:
            seen[day] = fingerprints[day]
        return dg.SensorResult(
            run_requests=[request, queue], cursor=json.dumps(seen, sort_keys=True)
        )

    return raw_partitions_sensor

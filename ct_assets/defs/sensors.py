"""Sensors that launch retrain runs, each explaining its decision."""

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from ct_assets import keys
from ct_assets.curation import CONTEXT_DAYS
from ct_assets.data.attribution import LabelPolicy, labeled_feedback
from ct_assets.defs.lineage import latest_metadata
from ct_assets.defs.resources import CurationResource, EventLogResource
from ct_assets.eventlog import EventLog
from ct_assets.schema import EventKind
from ct_assets.settings import Settings
from ct_assets.triggers import volume_decision

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def newest_dates(log: EventLog, rows: int, kind: EventKind | None = None) -> list[str]:
    """The newest event dates holding at least ``rows`` events of ``kind`` (both kinds
    when None), fewer if the log is short; in date order."""
    counts = log.counts_by_date()
    chosen: list[str] = []
    total = 0
    for day in sorted(counts, reverse=True):
        chosen.append(day)
        day_counts = counts[day]
        if kind != "prediction":
            total += day_counts.feedback
        if kind != "feedback":
            total += day_counts.prediction
        if total >= rows:
            break
    return sorted(chosen)


def labeled_between(log: EventLog, start: int, end: int, policy: LabelPolicy) -> int:
    """Feedback events at log offsets in [``start``, ``end``) that the label policy labels
    (explicit labels, and implicit signals it maps), whatever their event date. Only the
    frames holding those offsets are read."""
    if end <= start:
        return 0
    events = log.read("feedback", limit=end, since=start)
    return labeled_feedback(events, policy).height if events.height else 0


class LabeledCounter:
    """Counts the labeled feedback events from a baseline offset to the log's position,
    reading only the events added since the previous count: committed events never
    change, so the count up to a position stays true. Keyed by the log, the label policy
    and the baseline; only the latest key is kept."""

    def __init__(self) -> None:
        self._counted: dict[tuple[Path, LabelPolicy, int], tuple[int, int]] = {}

    def count(self, log: EventLog, baseline: int, position: int, policy: LabelPolicy) -> int:
        key = (log.root.resolve(), policy, baseline)
        upto, labeled = self._counted.get(key, (baseline, 0))
        if upto > position:  # a log read afresh (replaced): count again
            upto, labeled = baseline, 0
        labeled += labeled_between(log, upto, position, policy)
        self._counted = {key: (position, labeled)}
        return labeled


def retrain_request(
    trigger: str, reason: str, mode: str, evidence: str, tags: dict[str, str] | None = None
) -> dg.RunRequest:
    """A run of the retrain job, keyed by its evidence so it is never requested twice;
    ``tags``: more run tags (e.g. the change point the dataset starts at)."""
    return dg.RunRequest(
        run_key=f"{trigger}-{evidence}",
        tags={
            **(tags or {}),
            keys.TAG_TRIGGER: trigger,
            keys.TAG_REASON: reason[:1000],
            keys.TAG_MODE: mode,
            keys.TAG_JOB: keys.RETRAIN_JOB,
        },
    )


def retrain_in_flight(instance: dg.DagsterInstance) -> str | None:
    """The id of a retrain run queued or running, if any: triggers wait for it."""
    runs = instance.get_runs(
        dg.RunsFilter(tags={keys.TAG_JOB: keys.RETRAIN_JOB}, statuses=IN_FLIGHT), limit=1
    )
    return runs[0].run_id if runs else None


def build_volume_sensor(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    threshold = settings.volume_threshold
    mode = settings.volume_mode
    counter = LabeledCounter()

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
        context: dg.SensorEvaluationContext,
        event_log: EventLogResource,
        curation: CurationResource,
    ) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        last_requested = int(cursor.get("requested_upto", 0))
        champion = latest_metadata(context.instance, keys.CHAMPION_MODEL) or {}
        cutoff = int(champion.get(keys.META_LOG_POSITION, 0))
        log = event_log.log()
        position = log.counts().feedback
        baseline = max(cutoff, last_requested)
        labeled = counter.count(log, baseline, position, curation.policy())
        decision = volume_decision(position, cutoff, last_requested, threshold, labeled)
        if not decision.fire:
            return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason))
        running = retrain_in_flight(context.instance)
        if running is not None:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{decision.reason}, but retrain run {running} is in flight"
                )
            )
        return dg.SensorResult(
            run_requests=[retrain_request("volume", decision.reason, mode, str(position))],
            cursor=json.dumps({"requested_upto": position}),
        )

    return volume_sensor


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
            "feedback may now find its prediction; then refreshes the labeling queue."
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
        digest = hashlib.sha256(
            json.dumps({day: fingerprints[day] for day in changed}, sort_keys=True).encode()
        ).hexdigest()[:16]
        tags = {
            keys.TAG_TRIGGER: "events",
            keys.TAG_REASON: f"events of {len(changed)} date(s) changed: {', '.join(changed[:10])}",
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

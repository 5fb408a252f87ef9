"""Daily-partitioned raw assets and the sensor that keeps their partitions fresh."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG as RANGE_END,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_START_TAG as RANGE_START,
)

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.defs.ingestion import changed_partitions, refresh_range, run_dates
from ct_assets.eventlog import EventLog
from ct_assets.schema import FeedbackEvent, PredictionEvent
from ct_assets.settings import Settings

DAY1 = datetime(2026, 3, 1, 12, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def _feedback(n: int, when: datetime) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=f"fb-{n}",
        timestamp=when + timedelta(seconds=n),
        feedback_type="explicit",
        features={"x": float(n)},
        label=n % 2,
    )


def _prediction(n: int, when: datetime) -> PredictionEvent:
    return PredictionEvent(
        event_id=f"pe-{n}",
        prediction_id=f"p-{n}",
        timestamp=when + timedelta(seconds=n),
        features={"x": float(n)},
        prediction=1,
        model_version="3",
    )


def _materialize(defs: dg.Definitions, instance: dg.DagsterInstance, day: str) -> dict[str, dict]:  # type: ignore[type-arg]
    job = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB)
    result = job.execute_in_process(instance=instance, partition_key=day)
    assert result.success
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        assert materialization.partition == day
        out[materialization.asset_key.to_user_string()] = {
            k: getattr(v, "value", v) for k, v in materialization.metadata.items()
        }
    return out


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):  # type: ignore[no-untyped-def]
    sensor = defs.resolve_sensor_def(keys.RAW_PARTITIONS_SENSOR)
    context = dg.build_sensor_context(
        instance=instance,
        resources=defs.resources,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
    )
    return sensor.evaluate_tick(context)


def test_each_partition_holds_exactly_the_events_of_its_date(settings: Settings) -> None:
    log = EventLog.from_settings(settings)
    log.append([_feedback(i, DAY1) for i in range(5)] + [_feedback(i, DAY2) for i in range(5, 8)])
    log.append([_prediction(i, DAY2) for i in range(4)])
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        day1 = _materialize(defs, instance, "2026-03-01")
        day2 = _materialize(defs, instance, "2026-03-02")
        empty = _materialize(defs, instance, "2026-03-03")
    assert day1[keys.RAW_FEEDBACK]["dagster/row_count"] == 5
    assert day1[keys.RAW_FEEDBACK]["labeled"] == 5
    assert day1[keys.RAW_PREDICTIONS]["dagster/row_count"] == 0
    assert day2[keys.RAW_FEEDBACK]["dagster/row_count"] == 3
    assert day2[keys.RAW_FEEDBACK]["log_offset_range"] == "5 .. 7"
    assert day2[keys.RAW_PREDICTIONS]["dagster/row_count"] == 4
    assert day2[keys.RAW_PREDICTIONS]["by_model_version"] == {"3": 4}
    assert empty[keys.RAW_FEEDBACK]["dagster/row_count"] == 0


def test_partition_data_version_changes_only_with_its_own_events(settings: Settings) -> None:
    log = EventLog.from_settings(settings)
    log.append([_feedback(0, DAY1), _feedback(1, DAY2)])
    defs = build_definitions(settings)

    def versions(instance: dg.DagsterInstance) -> dict[str, str]:
        out = {}
        for day in ("2026-03-01", "2026-03-02"):
            job = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB)
            result = job.execute_in_process(instance=instance, partition_key=day)
            (event,) = [
                e
                for e in result.get_asset_materialization_events()
                if e.materialization.asset_key == dg.AssetKey(keys.RAW_FEEDBACK)
            ]
            out[day] = event.materialization.tags["dagster/data_version"]  # type: ignore[index]
        return out

    with dg.instance_for_test() as instance:
        before = versions(instance)
        assert versions(instance) == before, "same events, same version"
        log.append([_feedback(2, DAY2)])  # a late event for day 2 only
        after = versions(instance)
    assert after["2026-03-01"] == before["2026-03-01"]
    assert after["2026-03-02"] != before["2026-03-02"]


def test_sensor_requests_changed_dates_once_and_again_after_late_events(
    settings: Settings,
) -> None:
    log = EventLog.from_settings(settings)
    log.append([_feedback(0, DAY1), _feedback(1, DAY2)])
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        first = _tick(defs, instance, None)
        request, queue = first.run_requests  # one run for the whole range of changed dates
        assert request.job_name == keys.RAW_PARTITIONS_JOB
        assert queue.job_name == keys.LABELING_QUEUE_JOB
        assert request.tags[RANGE_START] == "2026-03-01"
        assert request.tags[RANGE_END] == "2026-03-02"
        assert request.run_key and request.run_key.startswith("raw-2026-03-01-2026-03-02-")
        assert "2 date(s) changed" in request.tags[keys.RUN_TAG_REASON]

        quiet = _tick(defs, instance, first.cursor)
        assert not quiet.run_requests
        assert "no event date changed" in (quiet.skip_message or "")

        log.append([_feedback(2, DAY2)])
        late = _tick(defs, instance, first.cursor)
        again = late.run_requests[0]
        # curating a date looks at its neighbours' feedback too, so 03-01 is refreshed
        assert (again.tags[RANGE_START], again.tags[RANGE_END]) == ("2026-03-01", "2026-03-02")
        assert "1 date(s) changed: 2026-03-02" in again.tags[keys.RUN_TAG_REASON]
        assert again.run_key != request.run_key

        duplicate = log.append([_feedback(2, DAY2)])
        assert duplicate.duplicates == 1
        assert not _tick(defs, instance, late.cursor).run_requests, "a duplicate changes nothing"


def test_a_range_run_materializes_each_date_with_its_own_figures(settings: Settings) -> None:
    log = EventLog.from_settings(settings)
    log.append([_feedback(i, DAY1) for i in range(3)] + [_feedback(i, DAY2) for i in range(3, 10)])
    defs = build_definitions(settings)
    job = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, tags={RANGE_START: "2026-02-28", RANGE_END: "2026-03-02"}
        )
        assert result.success
        assert len(instance.get_runs()) == 1
        rows = {
            (e.materialization.asset_key.to_user_string(), e.materialization.partition): (
                e.materialization.metadata["dagster/row_count"].value
            )
            for e in result.get_asset_materialization_events()
        }
    assert rows[(keys.RAW_FEEDBACK, "2026-02-28")] == 0
    assert rows[(keys.RAW_FEEDBACK, "2026-03-01")] == 3
    assert rows[(keys.RAW_FEEDBACK, "2026-03-02")] == 7
    assert len(rows) == 15, "each of the five per-date assets, each date, once"


def test_sensor_names_event_dates_before_the_first_partition(settings: Settings) -> None:
    settings = replace(settings, partition_start_date="2026-03-02")
    log = EventLog.from_settings(settings)
    log.append([_feedback(0, DAY1)])
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        tick = _tick(defs, instance, None)
    assert not tick.run_requests
    assert "before 2026-03-02" in (tick.skip_message or "")


def test_changed_partitions_splits_known_and_unknown_dates() -> None:
    fingerprints = {"2026-01-01": "a", "2026-01-02": "b", "2019-12-31": "c"}
    seen = {"2026-01-01": "a", "2026-01-02": "old"}
    valid = {"2026-01-01", "2026-01-02"}
    assert changed_partitions(fingerprints, seen, valid) == (["2026-01-02"], ["2019-12-31"])
    assert changed_partitions({}, seen, valid) == ([], [])


def test_refresh_range_covers_the_neighbours_a_changed_date_affects() -> None:
    days = [f"2026-01-{d:02d}" for d in (1, 2, 3, 5, 9, 10, 20)]
    # 3 days of curation context before, `after` days past the last change, dates with events
    assert refresh_range(["2026-01-05"], days, after=3) == ("2026-01-02", "2026-01-05")
    assert refresh_range(["2026-01-05"], days, after=5) == ("2026-01-02", "2026-01-10")
    assert refresh_range(["2026-01-01", "2026-01-09"], days, after=3) == (
        "2026-01-01",
        "2026-01-10",
    )
    assert refresh_range(["2026-01-20"], days, after=3) == ("2026-01-20", "2026-01-20")


def test_sensor_waits_while_a_run_for_the_same_dates_is_in_flight(settings: Settings) -> None:
    log = EventLog.from_settings(settings)
    log.append([_feedback(0, DAY1)])
    defs = build_definitions(settings)
    job = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB)
    with dg.instance_for_test() as instance:
        first = _tick(defs, instance, None)
        assert first.run_requests
        busy = instance.create_run_for_job(
            job_def=job,
            status=dg.DagsterRunStatus.STARTED,
            tags={RANGE_START: "2026-02-27", RANGE_END: "2026-03-01"},
        )
        # 03-02 got events: its range (from 02-27, its curation context) overlaps the run
        log.append([_feedback(1, DAY2)])
        waiting = _tick(defs, instance, first.cursor)
        assert not waiting.run_requests
        assert busy.run_id in (waiting.skip_message or "")
        assert "2026-03-01..2026-03-02 wait for it to end" in (waiting.skip_message or "")
        assert waiting.cursor == first.cursor, "the changed date stays unrequested"

        # a run of other dates does not hold it back
        instance.report_run_canceled(busy)
        instance.create_run_for_job(
            job_def=job,
            status=dg.DagsterRunStatus.STARTING,
            tags={"dagster/partition": "2026-04-01"},
        )
        after = _tick(defs, instance, first.cursor)
        request = after.run_requests[0]
        assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2026-03-01", "2026-03-02")
        assert "1 date(s) changed: 2026-03-02" in request.tags[keys.RUN_TAG_REASON]


def test_run_dates_reads_a_range_a_partition_or_nothing() -> None:
    assert run_dates({RANGE_START: "2026-01-01", RANGE_END: "2026-01-04"}) == (
        "2026-01-01",
        "2026-01-04",
    )
    assert run_dates({"dagster/partition": "2026-01-02"}) == ("2026-01-02", "2026-01-02")
    assert run_dates({"other": "x"}) is None

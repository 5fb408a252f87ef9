"""The curation assets on a real Dagster instance: validated feedback, quarantine,
attributed examples, the training dataset and the labeling queue."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG as RANGE_END,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_START_TAG as RANGE_START,
)

from ct_assets import keys
from ct_assets.data.reference import ReferenceSchema
from ct_assets.defs import build_definitions
from ct_assets.eventlog import EventLog
from ct_assets.pipeline.curation import load_reference
from ct_assets.schema import convert_record, validate_events
from ct_assets.settings import Settings
from ct_assets.simulate import SimulationSpec, simulate_events
from ct_assets.status import collect_status


def _stream(rows: int, seed: int = 3) -> list[dict[str, Any]]:
    spec = SimulationSpec(rows=rows, seed=seed, drift="none", kind="both", days=4, n_users=60)
    return list(simulate_events(spec))


def _flipper(events: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """A user who answers the opposite of what the model confidently predicted."""
    predictions = [e for e in events if e["kind"] == "prediction"]
    out = []
    for i, p in enumerate(predictions[:count]):
        confident = max(p["scores"].values())
        if confident < 0.9:
            continue
        out.append(
            {
                "kind": "feedback",
                "event_id": f"flip-{i}",
                "timestamp": (
                    datetime.fromisoformat(p["timestamp"]) + timedelta(seconds=5)
                ).isoformat(),
                "feedback_type": "explicit",
                "prediction_id": p["prediction_id"],
                "label": 1 - int(p["prediction"]),
                "user_id": "user-flipper",
                "source": "simulator",
            }
        )
    return out


def _ingest(settings: Settings, events: list[dict[str, Any]]) -> None:
    valid = validate_events([convert_record(e, i) for i, e in enumerate(events)])
    EventLog.from_settings(settings).append(valid)


def _materialize_days(defs: dg.Definitions, instance: dg.DagsterInstance, days: list[str]):  # type: ignore[no-untyped-def]
    job = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB)
    result = job.execute_in_process(
        instance=instance, tags={RANGE_START: days[0], RANGE_END: days[-1]}
    )
    assert result.success
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        m = event.materialization
        out[(m.asset_key.to_user_string(), str(m.partition))] = {
            k: getattr(v, "value", v) for k, v in m.metadata.items()
        }
    return out


def test_every_feedback_event_ends_in_exactly_one_state_per_partition(
    settings: Settings,
) -> None:
    events = _stream(2400)
    flips = _flipper(events, 600)
    assert len(flips) >= 40
    _ingest(settings, events + flips)
    log = EventLog.from_settings(settings)
    days = list(log.counts_by_date())
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        figures = _materialize_days(defs, instance, days)
    store_root = settings.tables_dir
    quarantined_ids: set[str] = set()
    for day in days:
        raw = figures[(keys.RAW_FEEDBACK, day)]["dagster/row_count"]
        validated = figures[(keys.VALIDATED_FEEDBACK, day)]
        states = {k: v for k, v in validated.items() if k.startswith("status/")}
        assert sum(states.values()) == raw == validated["dagster/row_count"], day
        table = pl.read_parquet(store_root / keys.VALIDATED_FEEDBACK / f"date={day}.parquet")
        assert table.height == raw
        assert set(table["status"].unique()) <= {"accepted", "quarantined", "pending", "expired"}
        assert table.filter(pl.col("status") != "accepted")["reason"].null_count() == 0
        quarantine = figures[(keys.FEEDBACK_QUARANTINE, day)]
        assert quarantine["dagster/row_count"] == states.get("status/quarantined", 0)
        q = pl.read_parquet(store_root / keys.FEEDBACK_QUARANTINE / f"date={day}.parquet")
        quarantined_ids |= set(q["event_id"].to_list())
        examples = figures[(keys.ATTRIBUTED_EXAMPLES, day)]
        assert examples["dagster/row_count"] <= states.get("status/accepted", 0)
    states = collect_status(settings)["feedback_states"]
    assert sum(states.values()) == log.counts().feedback
    assert states["quarantined"] == len(quarantined_ids)
    flip_ids = {f["event_id"] for f in flips}
    assert len(flip_ids & quarantined_ids) >= 0.9 * len(flip_ids), "the flipper is quarantined"
    clean = sum(1 for e in events if e["kind"] == "feedback")
    assert len(quarantined_ids - flip_ids) <= 0.02 * clean, "clean feedback stays accepted"


def _materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """The metadata of each asset the run materialized, by asset key."""
    return {
        e.materialization.asset_key.to_user_string(): {
            k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def test_dataset_version_is_reproducible_and_moves_with_one_more_event(
    settings: Settings,
) -> None:
    events = _stream(1500, seed=5)
    _ingest(settings, events)
    defs = build_definitions(settings)
    job = dg.define_asset_job("dataset_only", selection=[keys.TRAINING_DATASET]).resolve(
        asset_graph=defs.resolve_asset_graph()
    )

    def version(instance: dg.DagsterInstance) -> tuple[str, dict[str, Any]]:
        result = job.execute_in_process(instance=instance, resources=defs.resources)
        assert result.success
        materialized = _materialized(result)
        assert set(materialized) == {keys.TRAINING_DATASET, keys.REFERENCE_SCHEMA}
        meta = materialized[keys.TRAINING_DATASET]
        # the reference schema inferred from this dataset, the one the next curation reads
        reference = materialized[keys.REFERENCE_SCHEMA]
        assert reference[keys.META_DATASET_VERSION] == meta[keys.META_DATASET_VERSION]
        assert reference["reference_version"] == meta["reference_version"]
        assert Path(reference["path"]) == settings.reference_dir / "latest.json"
        for file in (reference["path"], reference["dataset_copy"]):
            assert ReferenceSchema.load(Path(file)).version == meta["reference_version"]
        read = load_reference(settings.reference_dir)
        assert read is not None and read.version == meta["reference_version"]
        assert reference["checked_features"] == len(read.checked_features()) > 0
        checks = {
            e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        }
        assert checks["not_empty"] and checks["class_balance"] and checks["quarantine_rate"]
        return str(meta[keys.META_DATASET_VERSION]), meta

    with dg.instance_for_test() as instance:
        first, meta = version(instance)
        again, _ = version(instance)
        assert again == first
        assert meta["source_partition_count"] >= 4
        assert meta["feedback_status"]["accepted"] > 0
        assert (settings.reference_dir / "latest.json").exists()
        last = max(e["timestamp"] for e in events if e["kind"] == "feedback")
        extra = {
            "kind": "feedback",
            "event_id": "one-more",
            "timestamp": last,
            "feedback_type": "explicit",
            "features": {"x0": 0.1, "x1": 0.2, "channel": "web"},
            "label": 1,
        }
        _ingest(settings, [extra])
        moved, _ = version(instance)
    assert moved != first


def _unanswered(events: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` more predictions, copies of the stream's under new ids: nobody answers them."""
    return [
        {**e, "event_id": f"{e['event_id']}-open", "prediction_id": f"{e['prediction_id']}-open"}
        for e in events
        if e["kind"] == "prediction"
    ][:count]


def test_labeling_queue_ranks_unanswered_predictions(settings: Settings) -> None:
    settings = replace(settings, labeling_budget=25)
    events = _stream(800, seed=9)
    answered = {e["prediction_id"] for e in events if e["kind"] == "feedback"}
    unanswered = _unanswered(events, 200)
    _ingest(settings, events + unanswered)
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(keys.LABELING_QUEUE_JOB).execute_in_process(instance=instance)
        assert result.success
    document = json.loads(settings.labeling_queue_path.read_text())
    items = document["items"]
    assert len(items) == 25 and document["method"] == "margin"
    assert not {i["prediction_id"] for i in items} & answered
    margins = [i["uncertainty"] for i in items]
    assert margins == sorted(margins), "most uncertain (smallest margin) first"


def test_labeling_queue_reads_the_current_raw_tables_not_the_log(settings: Settings) -> None:
    settings = replace(settings, labeling_budget=25)
    events = _stream(400, seed=9)
    open_ones = _unanswered(events, 100)
    _ingest(settings, events + open_ones)
    days = list(EventLog.from_settings(settings).counts_by_date())
    defs = build_definitions(settings)
    queue_job = defs.resolve_job_def(keys.LABELING_QUEUE_JOB)
    with dg.instance_for_test() as instance:
        _materialize_days(defs, instance, days)  # every date's raw tables are current
        assert queue_job.execute_in_process(instance=instance).success
        before = json.loads(settings.labeling_queue_path.read_text())["items"]
        # the log's segments of every date are gone: only the tables can answer
        for day in days:
            for segment in (settings.eventlog_dir / "segments" / day).iterdir():
                segment.write_bytes(b"")
        assert queue_job.execute_in_process(instance=instance).success
    after = json.loads(settings.labeling_queue_path.read_text())["items"]
    assert len(before) == 25
    assert [i["prediction_id"] for i in after] == [i["prediction_id"] for i in before]


def test_late_feedback_waits_for_its_prediction_then_is_attributed(settings: Settings) -> None:
    events = _stream(300, seed=11)
    predictions = [e for e in events if e["kind"] == "prediction"]
    feedback = [e for e in events if e["kind"] == "feedback"]
    late = predictions[-1]
    early = [f for f in feedback if f["prediction_id"] == late["prediction_id"]]
    assert early
    _ingest(settings, predictions[:-1] + feedback)  # the feedback arrives first
    log = EventLog.from_settings(settings)
    days = list(log.counts_by_date())
    defs = build_definitions(settings)
    store = settings.tables_dir

    def status_of(event_id: str) -> tuple[str, str | None, int]:
        frames = [
            pl.read_parquet(store / keys.VALIDATED_FEEDBACK / f"date={d}.parquet") for d in days
        ]
        row = pl.concat(frames, how="diagonal_relaxed").filter(pl.col("event_id") == event_id)
        examples = pl.concat(
            [pl.read_parquet(store / keys.ATTRIBUTED_EXAMPLES / f"date={d}.parquet") for d in days],
            how="diagonal_relaxed",
        )
        found = examples.filter(pl.col("event_id") == event_id).height
        return str(row["status"][0]), row["reason"][0], found

    with dg.instance_for_test() as instance:
        _materialize_days(defs, instance, days)
        assert status_of(early[0]["event_id"]) == ("pending", "awaiting_prediction", 0)
        for table in (keys.RAW_FEEDBACK, keys.RAW_PREDICTIONS):
            raw = pl.read_parquet(store / table / f"date={days[-1]}.parquet")
            assert raw.height == log.counts([days[-1]]).of(
                "feedback" if table == keys.RAW_FEEDBACK else "prediction"
            )
        _ingest(settings, [late])
        _materialize_days(defs, instance, list(EventLog.from_settings(settings).counts_by_date()))
        assert status_of(early[0]["event_id"]) == ("accepted", None, 1)


def test_training_dataset_curates_again_only_the_dates_a_late_event_touches(
    settings: Settings,
) -> None:
    """The dataset compiles from the per-date tables; tables whose inputs changed in the log
    since they were written (here: one late event) are curated again first, the rest are
    reused as they are."""
    spec = SimulationSpec(rows=900, seed=8, drift="none", kind="both", days=10, n_users=60)
    events = list(simulate_events(spec))
    _ingest(settings, events)
    defs = build_definitions(settings)
    days = sorted(EventLog.from_settings(settings).counts_by_date())
    _materialize_days(defs, dg.DagsterInstance.ephemeral(), days)
    job = dg.define_asset_job("dataset_only", selection=[keys.TRAINING_DATASET]).resolve(
        asset_graph=defs.resolve_asset_graph()
    )

    def materialize(instance: dg.DagsterInstance) -> dict[str, Any]:
        result = job.execute_in_process(instance=instance, resources=defs.resources)
        assert result.success
        return _materialized(result)[keys.TRAINING_DATASET]

    with dg.instance_for_test() as instance:
        first = materialize(instance)
        assert first["refreshed_partitions"] == "(none)"  # the daily run wrote them all
        last = max(e["timestamp"] for e in events if e["kind"] == "feedback")
        late = {
            "kind": "feedback",
            "event_id": "late-one",
            "timestamp": last,
            "feedback_type": "explicit",
            "features": {"x0": 0.1, "x1": 0.2, "channel": "web"},
            "label": 1,
        }
        _ingest(settings, [late])
        second = materialize(instance)
    refreshed = second["refreshed_partitions"].split(", ")
    late_day = last[:10]
    assert late_day in refreshed
    # a date more than CONTEXT_DAYS before the late event does not read it
    assert days[0] not in refreshed and len(refreshed) < len(days)
    assert second[keys.META_DATASET_VERSION] != first[keys.META_DATASET_VERSION]
    dataset = pl.read_parquet(str(second[keys.META_DATASET_PATH]))
    assert "late-one" in dataset["event_id"].to_list()
    assert dataset.filter(pl.col("event_id") == "late-one")["x0"].to_list() == [0.1]


def test_daily_checks_report_each_run_dates_against_the_thresholds(settings: Settings) -> None:
    events = _stream(2400)
    flips = _flipper(events, 600)
    _ingest(settings, events + flips)
    days = list(EventLog.from_settings(settings).counts_by_date())

    def checks(run_settings: Settings) -> dict[tuple[str, str], Any]:
        defs = build_definitions(run_settings)
        job = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB)
        result = job.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            tags={RANGE_START: days[0], RANGE_END: days[-1]},
        )
        assert result.success  # warnings never fail the run
        out = {}
        for event in result.all_events:
            if event.event_type_value == "ASSET_CHECK_EVALUATION":
                data = event.asset_check_evaluation_data
                out[(data.asset_key.to_user_string(), data.check_name)] = data
        return out

    lenient = checks(replace(settings, max_quarantine_rate=0.99))
    assert set(lenient) == {
        (keys.VALIDATED_FEEDBACK, "quarantine_rate"),
        (keys.ATTRIBUTED_EXAMPLES, "null_rates"),
        (keys.ATTRIBUTED_EXAMPLES, "schema_vs_reference"),
    }
    assert all(c.passed for c in lenient.values()), {
        k: (c.passed, c.metadata) for k, c in lenient.items()
    }
    rate = lenient[(keys.VALIDATED_FEEDBACK, "quarantine_rate")].metadata
    assert 0 < rate["worst_rate"].value < 0.99  # the flipper's labels are quarantined
    assert rate["worst_date"].value in days

    strict = checks(replace(settings, max_quarantine_rate=rate["worst_rate"].value / 2))
    failed = strict[(keys.VALIDATED_FEEDBACK, "quarantine_rate")]
    assert not failed.passed
    assert failed.severity == dg.AssetCheckSeverity.WARN
    assert rate["worst_date"].value in failed.metadata["dates_over"].value


def test_feedback_citing_a_prediction_never_served_is_quarantined_with_its_reason(
    settings: Settings,
) -> None:
    """Feedback for prediction ids no prediction ever carried (made up, or mistyped) waits
    while its prediction could still arrive, then lands in the quarantine as
    ``unknown_prediction`` and never becomes an example."""
    events = _stream(600)
    first = min(datetime.fromisoformat(e["timestamp"]) for e in events)
    # an hour into the stream, all three within one date whatever the time of day
    forged_at = (first + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    forged = [
        {
            "kind": "feedback",
            "event_id": f"forged-{i}",
            "timestamp": (forged_at + timedelta(seconds=i)).isoformat(),
            "feedback_type": "explicit",
            "prediction_id": f"never-served-{i}",
            "label": 1,
            "user_id": "user-forger",
            "source": "simulator",
        }
        for i in range(3)
    ]
    _ingest(settings, events + forged)
    days = list(EventLog.from_settings(settings).counts_by_date())
    forged_day = forged_at.date().isoformat()
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        figures = _materialize_days(defs, instance, days)
    validated = figures[(keys.VALIDATED_FEEDBACK, forged_day)]
    assert validated["reason/unknown_prediction"] == 3, validated
    store_root = settings.tables_dir
    quarantine = pl.read_parquet(
        store_root / keys.FEEDBACK_QUARANTINE / f"date={forged_day}.parquet"
    ).filter(pl.col("event_id").str.starts_with("forged-"))
    assert quarantine.height == 3
    assert set(quarantine["reason"].to_list()) == {"unknown_prediction"}
    assert all("was never served" in d for d in quarantine["reason_detail"].to_list())
    examples = pl.read_parquet(store_root / keys.ATTRIBUTED_EXAMPLES / f"date={forged_day}.parquet")
    assert not examples.filter(pl.col("event_id").str.starts_with("forged-")).height

"""The drift and performance sensors on a real instance, event log and MLflow registry:
silent on a stationary stream, firing on one that needs a retrain, explaining both, never
requesting twice for the same evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._core.utils import make_new_run_id

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.defs.metadata import latest_metadata
from ct_assets.registry import CHAMPION, Registry
from ct_assets.settings import Settings
from ct_assets.simulate import SimulationSpec, simulate_rows

from .conftest import ingest, simulated_events


def _serve(
    settings: Settings, drift: str, rows: int, seed: int, start: int, minutes_ago: float = 5
) -> None:
    """The champion scores simulated rows, one a second up to ``minutes_ago``; predictions
    and their labels are logged, as the serving path and users would log them."""
    import polars as pl

    registry = Registry.from_settings(settings)
    champion = registry.alias(CHAMPION)
    assert champion is not None
    model = registry.load_model(champion.version)
    spec = SimulationSpec(rows=rows, seed=seed, drift=drift, drift_at=0.0)  # type: ignore[arg-type]
    sim = list(simulate_rows(spec))
    frame = pl.DataFrame([r["features"] for r in sim], infer_schema_length=None)
    proba = model.predict_proba(frame)
    now = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    events: list[dict[str, Any]] = []
    for i, (row, p) in enumerate(zip(sim, proba, strict=True)):
        pid = f"srv-{start + i}"
        at = (now - timedelta(seconds=rows - i)).isoformat()
        events.append(
            {
                "kind": "prediction",
                "event_id": f"srv-pe-{start + i}",
                "prediction_id": pid,
                "timestamp": at,
                "model_version": champion.version,
                "features": row["features"],
                "prediction": model.spec.classes[int(p.argmax())],
                "scores": {c: float(v) for c, v in zip(model.spec.classes, p, strict=True)},
            }
        )
        events.append(
            {
                "kind": "feedback",
                "event_id": f"srv-fb-{start + i}",
                "prediction_id": pid,
                "timestamp": at,
                "feedback_type": "explicit",
                "label": row["label"],
            }
        )
    ingest(settings, events)


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None):  # type: ignore[no-untyped-def]
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(
        instance=instance, resources=defs.resources, cursor=cursor
    ) as context:
        return sensor.evaluate_tick(context)


@pytest.fixture
def trained(settings: Settings) -> Settings:
    settings = replace(
        settings,
        drift_window=600,
        drift_min_window=300,
        drift_cooldown_predictions=2000,
        performance_window=400,
        performance_min_samples=200,
    )
    ingest(settings, simulated_events(3000, drift_at=1.0))
    return settings


def test_drift_sensor_is_silent_on_a_stationary_stream_and_fires_once_on_covariate_drift(
    trained: Settings,
) -> None:
    settings = trained
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance).success
        tick = _tick(defs, instance, keys.DRIFT_SENSOR, None)
        assert not tick.run_requests and "< 300" in (tick.skip_message or "")

        _serve(settings, "none", 600, seed=11, start=0)
        quiet = _tick(defs, instance, keys.DRIFT_SENSOR, None)
        assert not quiet.run_requests, quiet.skip_message
        assert (quiet.skip_message or "").startswith("no drift:")
        assert "p=" in (quiet.skip_message or "") or "p " in (quiet.skip_message or "")

        _serve(settings, "covariate", 600, seed=12, start=10_000)
        running = DagsterRun(
            job_name=keys.RETRAIN_JOB,
            run_id=make_new_run_id(),
            status=DagsterRunStatus.STARTED,
            tags={keys.RUN_TAG_JOB: keys.RETRAIN_JOB},
        )
        instance.add_run(running)
        waiting = _tick(defs, instance, keys.DRIFT_SENSOR, quiet.cursor)
        assert not waiting.run_requests
        assert "retrain is in flight" in (waiting.skip_message or "")
        assert waiting.cursor == quiet.cursor, "the evidence waits for the run to end"
        instance.delete_run(running.run_id)
        fired = _tick(defs, instance, keys.DRIFT_SENSOR, waiting.cursor)
        assert len(fired.run_requests) == 1, fired.skip_message
        request = fired.run_requests[0]
        assert request.tags[keys.RUN_TAG_TRIGGER] == "drift"
        assert request.tags[keys.RUN_TAG_MODE] == "full"
        assert "feature drift" in request.tags[keys.RUN_TAG_REASON]
        events = [e for e in fired.asset_events if e.asset_key == dg.AssetKey(keys.DRIFT_MONITOR)]
        assert events and events[0].metadata["fire"].value is True

        same = _tick(defs, instance, keys.DRIFT_SENSOR, fired.cursor)
        assert not same.run_requests, "the same evidence never launches a second run"

        _serve(settings, "covariate", 600, seed=13, start=20_000)
        storm = _tick(defs, instance, keys.DRIFT_SENSOR, fired.cursor)
        assert not storm.run_requests
        assert "drift persists" in (storm.skip_message or "")
        assert "cooldown 2000" in (storm.skip_message or "")


def test_performance_sensor_fires_on_a_concept_change_and_not_on_a_stationary_stream(
    trained: Settings,
) -> None:
    settings = trained
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance).success
        champion = latest_metadata(instance, keys.CHAMPION_MODEL) or {}
        baseline = champion[keys.META_BASELINE_ACCURACY]
        assert 0.6 < baseline <= 1.0, "the gate's holdout accuracy becomes the baseline"
        _serve(settings, "none", 400, seed=21, start=0)
        quiet = _tick(defs, instance, keys.PERFORMANCE_SENSOR, None)
        assert not quiet.run_requests, quiet.skip_message
        assert (quiet.skip_message or "").startswith("no decay:")
        assert "baseline" in (quiet.skip_message or "")

        _serve(settings, "sudden", 400, seed=22, start=10_000)
        fired = _tick(defs, instance, keys.PERFORMANCE_SENSOR, quiet.cursor)
        assert len(fired.run_requests) == 1, fired.skip_message
        tags = fired.run_requests[0].tags
        assert tags[keys.RUN_TAG_TRIGGER] == "performance" and tags[keys.RUN_TAG_MODE] == "full"
        assert "baseline" in tags[keys.RUN_TAG_REASON]
        again = _tick(defs, instance, keys.PERFORMANCE_SENSOR, fired.cursor)
        assert not again.run_requests


def test_a_change_point_starts_the_retrains_dataset_there(trained: Settings) -> None:
    """The performance sensor finds where the champion's error rate rose (ADWIN's cut
    test); the retrain it requests compiles its dataset from that point on, and the
    version records it, so the next retrains keep to the new concept too."""
    import polars as pl

    from ct_assets.registry import TAG_WINDOW_START

    settings = trained
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def(keys.RETRAIN_JOB)
        assert job.execute_in_process(instance=instance).success
        served = datetime.now(UTC)
        _serve(settings, "none", 600, seed=31, start=0, minutes_ago=30)
        _serve(settings, "sudden", 600, seed=32, start=10_000, minutes_ago=5)
        fired = _tick(defs, instance, keys.PERFORMANCE_SENSOR, None)
        assert len(fired.run_requests) == 1, fired.skip_message
        tags = dict(fired.run_requests[0].tags)
        assert "change point at" in tags[keys.RUN_TAG_REASON]
        change = datetime.fromisoformat(tags[keys.RUN_TAG_WINDOW_START])
        # at the boundary, within the cut test's stride of 16 rows (one row a second): the
        # stationary stream was served until 30 minutes ago, the sudden one from 15 minutes
        # ago on, and nothing in between
        ended, began = served - timedelta(minutes=30), served - timedelta(minutes=15)
        assert ended - timedelta(seconds=60) < change < began + timedelta(seconds=60)
        [event] = [e for e in fired.asset_events if e.asset_key.path == [keys.PERFORMANCE_MONITOR]]
        assert event.metadata["change_found"].value is True
        assert 400 <= event.metadata["change_rows_since"].value <= 700

        assert job.execute_in_process(instance=instance, tags=tags).success
        dataset = latest_metadata(instance, keys.TRAINING_DATASET) or {}
        assert dataset[keys.META_WINDOW_START] == tags[keys.RUN_TAG_WINDOW_START]
        rows = dataset["train_rows"] + dataset["holdout_rows"]
        assert settings.change_min_rows <= rows <= 700, rows
        frame = pl.read_parquet(str(dataset[keys.META_DATASET_PATH]))
        assert frame["timestamp"].min() >= change
        candidate = latest_metadata(instance, keys.CANDIDATE_MODEL) or {}
        version = Registry.from_settings(settings).version(str(candidate[keys.META_MODEL_VERSION]))
        assert version.tags[TAG_WINDOW_START] == tags[keys.RUN_TAG_WINDOW_START]


def test_a_champion_bad_all_its_life_retrains_on_what_it_served(trained: Settings) -> None:
    """The concept changed before the champion served anything: no cut in its outcomes,
    but the decay test fires, and the dataset starts at its first served outcome."""
    settings = trained
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance).success
        served = datetime.now(UTC)
        _serve(settings, "sudden", 400, seed=41, start=0, minutes_ago=10)
        fired = _tick(defs, instance, keys.PERFORMANCE_SENSOR, None)
        assert len(fired.run_requests) == 1, fired.skip_message
        tags = dict(fired.run_requests[0].tags)
        assert "no change point within its 400 outcomes" in tags[keys.RUN_TAG_REASON]
        first = datetime.fromisoformat(tags[keys.RUN_TAG_WINDOW_START])
        # the first of the 400 rows served one a second up to 10 minutes ago
        expected = served - timedelta(minutes=10, seconds=400)
        assert abs((first - expected).total_seconds()) < 60


def test_volume_sensor_counts_only_feedback_the_label_policy_labels(trained: Settings) -> None:
    settings = trained
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance).success
        at = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
        features = {"x0": 0.1, "channel": "web"}
        hovers = [
            {
                "kind": "feedback",
                "event_id": f"hover-{i}",
                "timestamp": at,
                "feedback_type": "implicit",
                "signal": "hover",
                "features": features,
            }
            for i in range(50)
        ]
        labels = [
            {
                "kind": "feedback",
                "event_id": f"label-{i}",
                "timestamp": at,
                "feedback_type": "explicit",
                "label": i % 2,
                "features": features,
            }
            for i in range(30)
        ]
        ingest(settings, hovers + labels)
        tick = _tick(defs, instance, keys.VOLUME_SENSOR, None)
        assert not tick.run_requests
        assert (tick.skip_message or "").startswith("30 new labeled feedback events"), tick


def test_labeled_counter_adds_new_events_to_its_count_and_equals_a_fresh_count(
    settings: Settings,
) -> None:
    """The volume sensor's count of labeled feedback since a baseline is kept between ticks
    and extended with the events appended since; it equals counting from scratch, also
    for events on older dates and implicit signals the policy does not label."""
    from ct_assets.data.attribution import LabelPolicy
    from ct_assets.eventlog import EventLog
    from ct_assets.triggers.evidence import LabeledCounter, labeled_between

    log = EventLog.from_settings(settings)
    policy = LabelPolicy()
    now = datetime.now(UTC) - timedelta(minutes=2)

    def events(prefix: str, n: int, days_ago: int = 0) -> list[dict[str, Any]]:
        at = (now - timedelta(days=days_ago)).isoformat()
        return [
            {
                "kind": "feedback",
                "event_id": f"{prefix}-{i}",
                "timestamp": at,
                "feedback_type": "explicit" if i % 3 else "implicit",
                **({"label": i % 2} if i % 3 else {"signal": "hover"}),
                "features": {"x0": 0.1, "channel": "web"},
            }
            for i in range(n)
        ]

    counter = LabeledCounter()
    ingest(settings, events("a", 30))
    baseline = 10
    first = counter.count(log, baseline, log.counts().feedback, policy)
    assert first == labeled_between(log, baseline, log.counts().feedback, policy) == 14
    ingest(settings, events("b", 20) + events("late", 9, days_ago=3))
    position = log.counts().feedback
    assert counter.count(log, baseline, position, policy) == first + 13 + 6
    assert LabeledCounter().count(log, baseline, position, policy) == first + 19
    # another baseline (a new champion or request) counts from there
    assert counter.count(log, 30, position, policy) == 19
    assert counter.count(log, position, position, policy) == 0

"""The loop's objects on a real S3-compatible server (SeaweedFS): the retrain job compiles
its dataset onto the store and trains from it; another machine (an empty local folder)
reproduces and traces the version from the store alone; drift references are kept there;
with the server down the run fails cleanly and, once it is back, a rerun succeeds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.data.dataset import DatasetInfo
from ct_assets.data.dataset_objects import dataset_key
from ct_assets.defs import build_definitions
from ct_assets.lineage.datasets import describe_dataset
from ct_assets.pipeline.reproduce import reproduce
from ct_assets.registry import CHAMPION, Registry
from ct_assets.settings import Settings
from ct_assets.status import collect_status
from ct_assets.storage import S3Store, store_from_settings
from ct_assets.triggers.drift import DriftReference, clear_cache, get_or_build
from ct_assets_tests.object_store_helpers import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    SeaweedServer,
    seaweed,
)

from .conftest import ingest, simulated_events
from .test_trigger_sensors import _serve as serve
from .test_trigger_sensors import _tick as sensor_tick


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    yield from seaweed(tmp_path_factory)


def error_text(error: Any) -> str:
    """A Dagster error's message and those of its causes."""
    parts = []
    while error is not None:
        parts.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    return "\n".join(parts)


def on_s3(settings: Settings, server: SeaweedServer, prefix: str) -> Settings:
    return replace(
        settings,
        storage_uri=f"s3://{BUCKET}/{prefix}",
        s3_endpoint_url=server.endpoint_url,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
    )


def test_store_is_chosen_by_settings_and_shown_redacted(
    settings: Settings, weed: SeaweedServer
) -> None:
    s3 = on_s3(settings, weed, "status")
    store = store_from_settings(s3)
    assert isinstance(store, S3Store) and store.uri == f"s3://{BUCKET}/status"
    backends = collect_status(s3)["backends"]
    assert backends["object_store"] == f"s3://{BUCKET}/status"
    assert backends["dataset_root"] == f"s3://{BUCKET}/status/datasets"
    assert SECRET_KEY not in json.dumps(backends)
    local = collect_status(settings)["backends"]
    assert local["dataset_root"] == str(settings.datasets_dir)


@pytest.mark.slow
def test_retrain_keeps_its_dataset_on_s3_and_survives_the_server_going_down(
    settings: Settings, weed: SeaweedServer, tmp_path: Path
) -> None:
    s3 = replace(on_s3(settings, weed, "loop"), drift_window=600, drift_min_window=300)
    store = store_from_settings(s3)
    ingest(s3, simulated_events(2500, drift_at=1.0))
    defs = build_definitions(s3)
    job = defs.resolve_job_def(keys.RETRAIN_JOB)
    registry = Registry.from_settings(s3)
    with dg.instance_for_test() as instance:
        weed.stop()  # the store is down: the run fails cleanly, nothing is registered
        try:
            failed = job.execute_in_process(instance=instance, raise_on_error=False)
        finally:
            weed.start()
        assert not failed.success
        errors = [
            error_text(e.event_specific_data.error)  # type: ignore[union-attr]
            for e in failed.all_events
            if e.event_type_value == "STEP_FAILURE"
        ]
        assert any(
            "StorageError" in text and f"S3 store at {weed.endpoint_url} failed" in text
            for text in errors
        ), errors
        assert registry.alias(CHAMPION) is None
        assert not store.list("datasets")

        assert job.execute_in_process(instance=instance).success  # the rerun
        champion = registry.alias(CHAMPION)
        assert champion is not None
        # the drift sensor builds the champion's reference from the dataset on the store
        # and keeps it there
        clear_cache()
        serve(s3, "none", 400, seed=11, start=0)
        tick = sensor_tick(defs, instance, keys.DRIFT_SENSOR, None)
        assert (tick.skip_message or "").startswith("no drift:"), tick.skip_message
        assert store.list(f"drift/{champion.version}") == [
            f"drift/{champion.version}/reference.json",
            f"drift/{champion.version}/reference.npz",
        ]
        assert not s3.drift_dir.exists()
        clear_cache()
    version = champion.dataset_version
    assert store.list("datasets") == sorted(
        dataset_key(version, suffix) for suffix in (".json", ".parquet", ".reference.json")
    )
    manifest = DatasetInfo.from_json(store.read_bytes(dataset_key(version, ".json")).decode())
    assert manifest.path == f"s3://{BUCKET}/loop/datasets/{version}.parquet"
    run = registry.client.get_run(champion.run_id)
    assert run.data.tags["ct.dataset_path"] == manifest.path
    assert json.loads(run.inputs.dataset_inputs[0].dataset.source)["uri"] == manifest.path

    # another machine: nothing on its disk, the same store
    other = s3.with_home(tmp_path / "other-machine")
    shutil.copytree(s3.eventlog_dir, other.eventlog_dir)  # lineage reads the event log
    result = reproduce(Registry.from_settings(s3), champion.version, other.datasets_dir, store)
    assert result.identical, result
    described = describe_dataset(other, version)
    assert described["dataset"]["rows"] == manifest.rows
    assert sum(p["rows"] for p in described["partitions"]) == manifest.rows
    frame = pl.read_parquet(other.datasets_dir / f"{version}.parquet")
    assert frame.height == manifest.rows


def test_drift_reference_is_saved_and_loaded_on_s3(weed: SeaweedServer, tmp_path: Path) -> None:
    store = weed.store(prefix="drift-test")
    rng = np.random.default_rng(3)
    built = DriftReference(
        version="4",
        feature_names=["a", "b"],
        categories={"b": ["x", "y"]},
        classes=["0", "1"],
        x_ref=rng.normal(size=(50, 2)),
        scores_ref=rng.uniform(size=(40, 2)),
        score_source="holdout",
        meta={"dataset_version": "abc"},
    )
    calls: list[int] = []

    def builder() -> DriftReference:
        calls.append(1)
        return built

    clear_cache()
    folder = tmp_path / "drift"
    first = get_or_build(folder, "4", builder, store)
    assert calls == [1] and first is built
    assert store.list("drift") == ["drift/4/reference.json", "drift/4/reference.npz"]
    assert not folder.exists()  # nothing on the local disk
    clear_cache()  # a fresh process
    loaded = get_or_build(folder, "4", builder, store)
    assert calls == [1], "loaded from the store, not built again"
    assert np.array_equal(loaded.x_ref, built.x_ref)
    assert loaded.scores_ref is not None and np.array_equal(loaded.scores_ref, built.scores_ref)
    assert (loaded.feature_names, loaded.categories, loaded.meta) == (
        built.feature_names,
        built.categories,
        built.meta,
    )
    # an unreadable stored reference is rebuilt
    store.write_chunks("drift/4/reference.json", [b"{not json"])
    clear_cache()
    get_or_build(folder, "4", builder, store)
    assert calls == [1, 1]
    assert json.loads(store.read_bytes("drift/4/reference.json"))["version"] == "4"
    clear_cache()


@pytest.mark.slow
def test_hand_offs_on_the_store_reach_a_run_on_another_machine(
    settings: Settings, weed: SeaweedServer, tmp_path: Path
) -> None:
    """A run on one machine compiles the dataset and trains the candidate; a run on another
    machine, whose disk holds no hand-off, judges that candidate from the store's record."""
    s3 = replace(on_s3(settings, weed, "handoffs"), num_boost_round=20, report_plots=False)
    store = store_from_settings(s3)
    ingest(s3, simulated_events(2000, drift_at=1.0))

    def asset_job(on: Settings, *assets: str) -> tuple[Any, Any]:
        defs = build_definitions(on)
        job = dg.define_asset_job(f"only_{len(assets)}", selection=list(assets))
        return job.resolve(asset_graph=defs.resolve_asset_graph()), defs.resources

    job, resources = asset_job(s3, keys.TRAINING_DATASET, keys.CANDIDATE_MODEL)
    with dg.instance_for_test() as instance:
        first = job.execute_in_process(instance=instance, resources=resources)
    assert first.success
    candidate = json.loads(store.read_bytes("handoffs/candidate_model.json"))
    assert store.list(f"handoffs/{keys.CANDIDATE_MODEL}/runs") == [
        f"handoffs/{keys.CANDIDATE_MODEL}/runs/{first.run_id}.json"
    ]
    assert store.exists("handoffs/training_dataset.json")

    # the same registry (as a tracking server would be), nothing else of the first's disk
    other = replace(s3.with_home(tmp_path / "other-machine"), tracking_uri_override=s3.tracking_uri)
    job, resources = asset_job(other, keys.VALIDATION_REPORT)
    with dg.instance_for_test() as instance:
        second = job.execute_in_process(instance=instance, resources=resources)
    assert second.success
    judged = next(
        e.materialization.metadata[keys.META_MODEL_VERSION]
        for e in second.all_events
        if e.is_step_materialization and e.asset_key.to_user_string() == keys.VALIDATION_REPORT
    )
    assert str(getattr(judged, "value", judged)) == str(candidate["model_version"])
    assert not (other.handoffs_dir / "candidate_model.json").exists(), "read from the store"
    assert (other.handoffs_dir / "validation_report.json").exists()
    assert store.exists("handoffs/validation_report.json")

"""``ct-assets gc`` with ``CT_STORAGE_URI`` on a real S3 server (SeaweedFS): a deleted
version's dataset, validation report, drift reference and its run's hand-offs leave the
store as well as the disk, a kept version's stay, and checkpoints of trainings never
resumed are deleted from the store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.data.dataset_objects import dataset_key
from ct_assets.defs import build_definitions
from ct_assets.registry import TAG_PREVIOUS_CHAMPION, Registry
from ct_assets.retention import run_gc
from ct_assets.retention.files import checkpoint_items
from ct_assets.settings import Settings
from ct_assets.storage import store_from_settings, write_bytes
from ct_assets_tests.object_store_helpers import BUCKET, SeaweedServer, seaweed

from .conftest import ingest, simulated_events
from .test_s3_loop import on_s3

SUFFIXES = (".json", ".parquet", ".reference.json")


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    yield from seaweed(tmp_path_factory)


@pytest.mark.slow
def test_gc_deletes_what_deleted_versions_left_on_the_store(
    settings: Settings, weed: SeaweedServer
) -> None:
    s3 = replace(
        on_s3(settings, weed, "gc"),
        num_boost_round=20,
        report_plots=False,
        training_window=1500,
        keep_versions=1,
    )
    store = store_from_settings(s3)
    events = simulated_events(3000, drift_at=1.0)
    job = build_definitions(s3).resolve_job_def(keys.RETRAIN_JOB)
    registry = Registry.from_settings(s3)
    with dg.instance_for_test() as instance:
        for n in range(3):
            ingest(s3, events[n * 1000 : (n + 1) * 1000])
            tags = {keys.RUN_TAG_TRIGGER: "manual", keys.RUN_TAG_MODE: "full"}
            job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    versions = registry.versions()
    assert sorted(versions, key=int) == ["1", "2", "3"]
    # champion v3, its rollback target v2: v1 goes
    registry.promote("3", "test")
    registry.set_version_tag("3", TAG_PREVIOUS_CHAMPION, "2")
    datasets = {v: str(i.dataset_version) for v, i in versions.items()}
    assert len(set(datasets.values())) == 3
    for version in datasets:
        assert all(store.exists(dataset_key(datasets[version], s)) for s in SUFFIXES)
        write_bytes(store, f"drift/{version}/reference.json", b"{}")
    # the gate published each report beside its local file
    assert store.list("reports") == [f"reports/validation-v{v}.json" for v in ("1", "2", "3")]
    local_report = s3.reports_dir / "validation-v1.json"
    assert store.read_bytes("reports/validation-v1.json") == local_report.read_bytes()
    # each run's hand-offs are on the store: v1's run's three name v1 or its dataset
    runs = [k for k in store.list("handoffs") if "/runs/" in k]
    assert len(runs) == 9

    def names_v1(key: str) -> bool:
        record = json.loads(store.read_bytes(key))
        return record.get("model_version") == "1" or datasets["1"] in (
            record.get("version"),
            record.get("dataset_version"),
        )

    of_v1 = [k for k in runs if names_v1(k)]
    assert len(of_v1) == 3
    # a training killed and never resumed, its checkpoint only on the store
    write_bytes(store, "checkpoints/stale-job/model-0000010.txt", b"tree")
    write_bytes(store, "checkpoints/stale-job/state.json", b"{}")
    later = datetime.now(UTC) + timedelta(hours=s3.gc_checkpoint_age_hours + 1)
    kept_now, deleted_now = checkpoint_items(s3, store=store)
    kept_later, deleted_later = checkpoint_items(s3, now=later, store=store)
    assert [i.id for i in kept_now] == ["stale-job"] and not deleted_now
    assert [i.id for i in deleted_later] == ["stale-job"] and not kept_later
    assert deleted_later[0].paths == [
        f"s3://{BUCKET}/gc/checkpoints/stale-job/state.json",
        f"s3://{BUCKET}/gc/checkpoints/stale-job/model-0000010.txt",
    ]

    time.sleep(1.1)  # the checkpoint's objects are now over 0 h old
    plan = run_gc(replace(s3, gc_checkpoint_age_hours=0), registry, dry_run=False)
    deleted = {(i.what, i.id): i.paths for i in plan.deleted}
    assert set(deleted) >= {
        ("model_version", "1"),
        ("dataset", datasets["1"]),
        ("drift_reference", "1"),
        ("report", "1"),
        ("checkpoint", "stale-job"),
    }
    assert deleted[("report", "1")] == [
        str(local_report),
        f"s3://{BUCKET}/gc/reports/validation-v1.json",
    ]
    assert f"s3://{BUCKET}/gc/{dataset_key(datasets['1'])}" in deleted[("dataset", datasets["1"])]
    assert set(registry.versions()) == {"2", "3"}
    assert not any(store.exists(dataset_key(datasets["1"], s)) for s in SUFFIXES)
    assert not list(s3.datasets_dir.glob(f"{datasets['1']}.*")), "its local copy too"
    for version in ("2", "3"):
        assert all(store.exists(dataset_key(datasets[version], s)) for s in SUFFIXES)
    assert store.list("drift") == ["drift/2/reference.json", "drift/3/reference.json"]
    assert store.list("reports") == ["reports/validation-v2.json", "reports/validation-v3.json"]
    assert not local_report.exists()
    assert store.list("checkpoints") == []
    assert sorted(k for k in store.list("handoffs") if "/runs/" in k) == sorted(
        set(runs) - set(of_v1)
    )
    assert len([i for i in plan.deleted if i.what == "handoff"]) == 3
    # a second gc finds nothing more to delete on the store
    again = run_gc(s3, registry, dry_run=False)
    assert not [i for i in again.deleted if any(p.startswith("s3://") for p in i.paths)]

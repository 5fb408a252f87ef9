"""Per-date tables written by several processes at once: raw-partition runs and a retrain's
refresh of the same dates, writers killed mid-write, a lock held too long.

Every writer is a real process (spawned, so Polars' threads are never forked) calling
the functions the assets call, or the assets themselves through Dagster."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG as RANGE_END
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_START_TAG as RANGE_START
from polars.testing import assert_frame_equal

from ct_assets import keys
from ct_assets.data.table_files import SOURCE_KEY, TableLockTimeout
from ct_assets.data.tables import TableStore
from ct_assets.defs import build_definitions
from ct_assets.defs.ingestion import raw_materialization
from ct_assets.defs.resources import CurationResource, resources_from_settings
from ct_assets.eventlog import EventLog
from ct_assets.pipeline.curation import (
    CURATED_TABLES,
    curate,
    curated_source,
    curation_key,
    load_reference,
    log_as_of,
    refresh_tables,
    write_curated,
)
from ct_assets.schema import convert_record, validate_events
from ct_assets.settings import Settings
from ct_assets.simulate import SimulationSpec, simulate_events

SPAWN = multiprocessing.get_context("spawn")
RAW_TABLES = (keys.RAW_FEEDBACK, keys.RAW_PREDICTIONS)
ALL_TABLES = (*RAW_TABLES, *CURATED_TABLES)


def _ingest(settings: Settings, days: int = 4) -> list[str]:
    spec = SimulationSpec(rows=600, seed=5, drift="none", kind="both", days=days, n_users=40)
    events = list(simulate_events(spec))
    valid = validate_events([convert_record(e, i) for i, e in enumerate(events)])
    log = EventLog.from_settings(settings)
    log.append(valid)
    return sorted(log.counts_by_date())


def _curation(settings: Settings) -> CurationResource:
    resource = resources_from_settings(settings)["curation"]
    assert isinstance(resource, CurationResource)
    return resource


def _daily_run(settings: Settings, days: list[str], store: TableStore) -> None:
    """What one run of ``daily_events`` writes for ``days``, through the same functions."""
    log = EventLog.from_settings(settings)
    curation = _curation(settings)
    rules, policy = curation.rules(), curation.policy()
    reference = load_reference(curation.rules_folder())
    as_of = log_as_of(log)
    fingerprints = log.partition_fingerprints()
    for day in days:
        for table, kind in zip(RAW_TABLES, ("feedback", "prediction"), strict=True):
            raw_materialization(
                dg.AssetKey(table),
                log,
                kind,  # type: ignore[arg-type]
                day,
                fingerprints.get(day, ""),
                store,
            )
        curated = curate(log, [day], rules, policy, reference, as_of)
        key = curation_key(day, fingerprints, rules, policy)
        write_curated(store, day, curated, curated_source(key, curated))


def _retrain_refresh(settings: Settings, days: list[str], store: TableStore) -> list[str]:
    """What a retrain's ``training_dataset`` does to the tables before compiling."""
    log = EventLog.from_settings(settings)
    curation = _curation(settings)
    as_of = log_as_of(log)
    assert as_of is not None
    return refresh_tables(
        log,
        store,
        days,
        curation.rules(),
        curation.policy(),
        load_reference(curation.rules_folder()),
        as_of,
        log.partition_fingerprints(),
    )


def _writer(role: str, settings: Settings, days: list[str], start: Barrier, rounds: int) -> None:
    store = TableStore(settings.tables_dir, lock_timeout=120)
    start.wait()
    for _ in range(rounds):
        if role == "daily":
            _daily_run(settings, days, store)
        else:
            _retrain_refresh(settings, days, store)


def _run_all(processes: list[Any], timeout: float = 240) -> None:
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout)
    codes = [process.exitcode for process in processes]
    assert codes == [0] * len(processes), f"writer exit codes: {codes}"


def _assert_same_tables(settings: Settings, actual: TableStore, days: list[str]) -> None:
    """``actual`` holds what a serial run writes, byte for byte, and each table's source (in
    its Parquet metadata) is its inputs."""
    expected = TableStore(settings.home / "serial-tables")
    _daily_run(settings, days, expected)
    log = EventLog.from_settings(settings)
    fingerprints = log.partition_fingerprints()
    curation = _curation(settings)
    for table in ALL_TABLES:
        assert actual.days(table) == days
        for day in days:
            got, want = actual.read(table, day), expected.read(table, day)
            assert got is not None and want is not None
            assert_frame_equal(got, want)
            assert actual.path(table, day).read_bytes() == expected.path(table, day).read_bytes()
            assert actual.source(table, day) == expected.source(table, day)
            if table in RAW_TABLES:
                assert actual.source(table, day) == fingerprints[day]
            else:
                recorded = json.loads(actual.source(table, day) or "{}")
                key = curation_key(day, fingerprints, curation.rules(), curation.policy())
                assert recorded["key"] == key
            metadata = pl.read_parquet_metadata(actual.path(table, day))
            assert metadata[SOURCE_KEY] == actual.source(table, day)
    leftovers = [
        p.name
        for p in settings.tables_dir.rglob("*")
        if p.name.endswith((".tmp", ".source")) and p.is_file()
    ]
    assert leftovers == []


def test_raw_partition_runs_and_a_retrain_refresh_at_once_equal_a_serial_run(
    settings: Settings,
) -> None:
    days = _ingest(settings)
    start = SPAWN.Barrier(3)
    writers = [
        SPAWN.Process(target=_writer, args=("daily", settings, days, start, 3)),
        SPAWN.Process(target=_writer, args=("daily", settings, list(reversed(days)), start, 3)),
        SPAWN.Process(target=_writer, args=("retrain", settings, days, start, 1)),
    ]
    _run_all(writers)
    store = TableStore(settings.tables_dir)
    _assert_same_tables(settings, store, days)
    # everything is current now: a retrain's refresh curates nothing again
    assert _retrain_refresh(settings, days, store) == []


def _dagster_run(role: str, settings: Settings, days: list[str], start: Barrier) -> None:
    defs = build_definitions(settings)
    if role == "daily":
        job = defs.resolve_job_def(keys.RAW_PARTITIONS_JOB)
        tags = {RANGE_START: days[0], RANGE_END: days[-1]}
    else:
        job = dg.define_asset_job("dataset_only", selection=[keys.TRAINING_DATASET]).resolve(
            asset_graph=defs.resolve_asset_graph()
        )
        tags = {}
    start.wait()
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, tags=tags, resources=defs.resources)
    assert result.success


def test_dagster_raw_partition_runs_and_a_retrain_dataset_at_once_equal_a_serial_run(
    settings: Settings,
) -> None:
    days = _ingest(settings)
    # the reference schema a first dataset leaves behind: in place before the runs
    # start, so every curation judges against the same one
    _dagster_run("retrain", settings, days, SPAWN.Barrier(1))
    reference = (settings.reference_dir / "latest.json").read_bytes()
    shutil.rmtree(settings.tables_dir)
    start = SPAWN.Barrier(3)
    runs = [
        SPAWN.Process(target=_dagster_run, args=(role, settings, days, start))
        for role in ("daily", "daily", "retrain")
    ]
    _run_all(runs, timeout=400)
    assert (settings.reference_dir / "latest.json").read_bytes() == reference
    _assert_same_tables(settings, TableStore(settings.tables_dir), days)


def _write_then_die(root: Path, day: str, die_at: str, ready: Event) -> None:
    """Write a new raw_predictions table of ``day``, and be SIGKILLed while holding its
    lock: right after the temporary file is written and synced (``replace``), or while
    waiting to be killed by the parent (``hold``)."""
    store = TableStore(root)
    frame = pl.DataFrame({"prediction_id": ["new-1", "new-2"], "score": [0.1, 0.2]})
    if die_at == "replace":

        def killed(*_: object) -> None:
            ready.set()
            os.kill(os.getpid(), signal.SIGKILL)

        os.replace = killed  # type: ignore[assignment]
        store.write(keys.RAW_PREDICTIONS, "2024-01-02", frame, "new-fingerprint")
    else:
        with store.locked([keys.RAW_PREDICTIONS], day):
            ready.set()
            time.sleep(120)


@pytest.mark.parametrize("die_at", ["replace", "hold"])
def test_a_writer_killed_holding_the_lock_leaves_the_table_whole_and_does_not_block(
    tmp_path: Path, die_at: str
) -> None:
    day = "2024-01-02"
    store = TableStore(tmp_path / "tables", lock_timeout=0.5)
    before = pl.DataFrame({"prediction_id": ["old-1"], "score": [0.9]})
    store.write(keys.RAW_PREDICTIONS, day, before, "old-fingerprint")
    ready = SPAWN.Event()
    child = SPAWN.Process(target=_write_then_die, args=(store.root, day, die_at, ready))
    child.start()
    assert ready.wait(60)
    if die_at == "hold":
        # alive and holding: the next writer waits, then says why it gave up
        with pytest.raises(TableLockTimeout, match="still held by another writer"):
            store.write(keys.RAW_PREDICTIONS, day, before, "other")
        os.kill(child.pid or 0, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    folder = store.path(keys.RAW_PREDICTIONS, day).parent
    leftovers = [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == (1 if die_at == "replace" else 0)
    # the previous table is intact, readable and still says what it was built from
    assert store.days(keys.RAW_PREDICTIONS) == [day]
    assert_frame_equal(store.read(keys.RAW_PREDICTIONS, day), before)  # type: ignore[arg-type]
    assert store.source(keys.RAW_PREDICTIONS, day) == "old-fingerprint"
    # the kernel released the dead writer's lock: the next writer goes straight in
    after = pl.DataFrame({"prediction_id": ["next-1"], "score": [0.5]})
    started = time.monotonic()
    store.write(keys.RAW_PREDICTIONS, day, after, "next-fingerprint")
    assert time.monotonic() - started < 0.5
    assert_frame_equal(store.read(keys.RAW_PREDICTIONS, day), after)  # type: ignore[arg-type]
    assert store.source(keys.RAW_PREDICTIONS, day) == "next-fingerprint"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # cleaned up


def _hammer(root: Path, writer: int, rounds: int, start: Barrier) -> None:
    store = TableStore(root, lock_timeout=60)
    start.wait()
    for n in range(rounds):
        value = writer * 1000 + n
        frame = pl.DataFrame({"value": [value] * (1000 + 37 * writer)})
        store.write(keys.RAW_FEEDBACK, "2024-01-01", frame, str(value))


def test_a_reader_never_sees_a_partial_table_or_a_source_of_another_writer(
    tmp_path: Path,
) -> None:
    store = TableStore(tmp_path / "tables")
    path = store.path(keys.RAW_FEEDBACK, "2024-01-01")
    store.write(keys.RAW_FEEDBACK, "2024-01-01", pl.DataFrame({"value": [-1]}), "-1")
    start = SPAWN.Barrier(3)
    writers = [SPAWN.Process(target=_hammer, args=(store.root, w, 40, start)) for w in (1, 2)]
    for process in writers:
        process.start()
    start.wait()
    reads = 0
    while any(p.is_alive() for p in writers) or reads == 0:
        with open(path, "rb") as handle:  # one file: its rows and its source together
            data = handle.read()
        frame = pl.read_parquet(data)
        source = pl.read_parquet_metadata(data)[SOURCE_KEY]
        assert frame["value"].n_unique() == 1
        assert str(frame["value"][0]) == source
        reads += 1
    for process in writers:
        process.join(60)
        assert process.exitcode == 0
    assert store.source(keys.RAW_FEEDBACK, "2024-01-01") in {"1039", "2039"}
    assert reads > 1


def test_tables_of_earlier_versions_with_a_source_file_are_rebuilt(settings: Settings) -> None:
    """A table whose source sits in a ``.source`` file beside it (earlier versions) reads as
    stale: the next refresh rebuilds it with the source inside, and drops the old file."""
    days = _ingest(settings)
    store = TableStore(settings.tables_dir)
    _daily_run(settings, days, store)
    for table in ALL_TABLES:
        for day in days:
            path = store.path(table, day)
            source = store.source(table, day)
            pl.read_parquet(path).write_parquet(path)  # no metadata, as before
            path.with_name(f"date={day}.source").write_text(source or "")
            (path.parent / f"{path.name}.tmp").write_bytes(b"half a fi")  # the old fixed name
    assert sorted(_retrain_refresh(settings, days, store)) == days
    # raw feedback is not read by a refresh: only the dates' predictions and curation
    for table in (keys.RAW_PREDICTIONS, *CURATED_TABLES):
        folder = settings.tables_dir / table
        assert not list(folder.glob("*.source")) and not list(folder.glob("*.tmp"))
        assert all(store.source(table, day) for day in days)

"""``CT_RETENTION_DAYS`` with ``CT_STORAGE_URI`` on a real S3 server (SeaweedFS): old
segments leave the log's disk for the object store and are read from there exactly as
before; a store that is down fails a read naming it; a gc killed after the upload and
before the pointer is finished by the next."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ct_assets.cli import main
from ct_assets.eventlog import CorruptLogError, EventLog
from ct_assets.eventlog.archive import archive_file, archive_old_segment, old_segments
from ct_assets.eventlog.archive_store import pointer_file, stored_key
from ct_assets.settings import Settings
from ct_assets.storage import ObjectStore, StorageError, put_file, store_from_settings
from ct_assets_tests.object_store_helpers import SeaweedServer, seaweed

from .test_segment_archive import CUTOFF, DATES, _everything, _old_events, _recent, _same


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    yield from seaweed(tmp_path_factory)


def _gc(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["gc", "--json"]) == 0
    return [
        i for i in json.loads(capsys.readouterr().out)["deleted"] if i["what"] == "event_segment"
    ]


@pytest.mark.slow
def test_old_segments_move_to_the_store_and_read_as_before(
    settings: Settings,
    weed: SeaweedServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in weed.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CT_HOME", str(settings.home))
    monkeypatch.setenv("CT_RETENTION_DAYS", "30")
    store = store_from_settings(Settings.from_env())
    log = EventLog(settings.eventlog_dir, segment_max_bytes=1500)
    events = _old_events(300)
    for i in range(0, 300, 20):
        log.append(events[i : i + 20])
    log.append(_recent(10))
    log.writer.close()
    before = _everything(log.root, settings.home)
    keys = [key for key, _end in old_segments(log.root, CUTOFF)]

    # killed after an upload, before its pointer: the local archive and the object are there
    archive_old_segment(log.root, keys[0])
    assert put_file(store, stored_key(keys[0]), archive_file(log.root, keys[0]), once=True)

    moved = _gc(capsys)
    assert sorted(str(i["id"]) for i in moved) == sorted(keys)
    assert all(str(i["detail"]["archive"]).startswith("s3://") for i in moved)  # type: ignore[index]
    for key in keys:
        assert not (log.root / "segments" / key).exists()
        assert not archive_file(log.root, key).exists()
        assert pointer_file(log.root, key).exists()
        assert store.exists(stored_key(key))
    assert not list((log.root / "archive").rglob("*.parquet"))
    assert _gc(capsys) == []  # nothing left to do
    assert main(["status", "--json"]) == 0
    disk = json.loads(capsys.readouterr().out)["event_log"]
    assert (disk["archived_segments"], disk["stored_archives"]) == (0, len(keys))
    _same(before, _everything(log.root, settings.home))
    # a late event of an archived date starts a new segment, moved by the next gc
    assert EventLog(log.root).append(_old_events(301)[300:]).accepted == 1
    late = _gc(capsys)
    assert len(late) == 1 and str(late[0]["id"]) not in keys

    # the store down: a read of an archived date fails naming it, not as damage
    weed.stop()
    try:
        copy = settings.home / "while-down"
        shutil.copytree(log.root, copy)
        with pytest.raises(StorageError) as failed:
            EventLog(copy).read("feedback", dates=[DATES[0]])
        assert not isinstance(failed.value, CorruptLogError)
        assert weed.endpoint_url.split("//")[1] in str(failed.value) or "s3://" in str(failed.value)
    finally:
        weed.start()
    _until_readable(store, stored_key(keys[0]))
    assert EventLog(copy).read("feedback", dates=[DATES[0]]).equals(before[f"feedback:{DATES[0]}"])

    # an object that does not rebuild its segment is damage, named by its URI
    store.delete(stored_key(keys[1]))
    put_file(store, stored_key(keys[1]), _other_archive(settings.home, keys[1]))
    damaged = settings.home / "damaged"
    shutil.copytree(log.root, damaged)
    day = keys[1].split("/")[0]
    with pytest.raises(CorruptLogError, match=stored_key(keys[1])):
        EventLog(damaged).read("feedback", dates=[day])
        EventLog(damaged).read("prediction", dates=[day])


def _until_readable(store: ObjectStore, key: str) -> None:
    """Right after a restart the filer may still be joining its master (internal errors)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            store.read_bytes(key)
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _other_archive(home: Path, key: str) -> Path:
    """A valid archive of another log's segment under the same key."""
    other = EventLog(home / "other-log", segment_max_bytes=1500)
    other.append(_recent(3))
    fresh = next(k for k, _ in old_segments(other.root, "9999-12-31"))
    archive_old_segment(other.root, fresh)
    return archive_file(other.root, fresh)

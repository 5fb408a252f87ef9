"""Retention of the event log's segments (``CT_RETENTION_DAYS``): an old date's segments are
replaced by their columnar archive, from which every reader rebuilds them exactly; a crash
at any point leaves a log that reads the same, and the next gc finishes the job."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from ct_assets.cli import main
from ct_assets.eventlog import CorruptLogError, EventLog
from ct_assets.eventlog.archive import (
    archive_file,
    archive_old_segment,
    archive_segment,
    old_segments,
)
from ct_assets.eventlog.export import export_events
from ct_assets.eventlog.layout import log_lock
from ct_assets.eventlog.reader import read_lines
from ct_assets.retention import KILL_AFTER_ENV, tombstones_path
from ct_assets.schema import FeedbackEvent, PredictionEvent, decode_json_event
from ct_assets.settings import PROJECT_ROOT, Settings

DAY = datetime(2026, 3, 1, tzinfo=UTC)
DATES = [(DAY + timedelta(days=d)).date().isoformat() for d in range(5)]
CUTOFF = DATES[3]  # dates 0-2 are archived, 3-4 kept


def _event(rng: random.Random, n: int, day: int) -> FeedbackEvent | PredictionEvent:
    when = DAY + timedelta(days=day, seconds=rng.randrange(86_000))
    if rng.random() < 0.5:
        features: dict[str, object] = {"x": rng.random(), "c": rng.choice(["a", "b", None])}
        if rng.random() < 0.2:
            features["late"] = rng.randrange(5)
        return PredictionEvent(
            event_id=f"pe-{n}",
            prediction_id=f"p-{n}",
            timestamp=when,
            features=features,
            prediction=rng.randrange(2),
            model_version="1",
        )
    return FeedbackEvent(
        event_id=f"fb-{n}",
        timestamp=when,
        feedback_type="explicit",
        prediction_id=f"p-{rng.randrange(max(n, 1))}",
        label=rng.choice([0, 1, "yes", 2.5]),
    )


def _random_log(root: Path, seed: int, commits: int = 60) -> EventLog:
    """Commits of 1-8 events over five dates, in segments of at most 1,500 bytes."""
    rng = random.Random(seed)
    log = EventLog(root, segment_max_bytes=1500)
    n = 0
    for _ in range(commits):
        batch = []
        for _ in range(rng.randint(1, 8)):
            batch.append(_event(rng, n, rng.randrange(len(DATES))))
            n += 1
        log.append(batch)
    return log


def _everything(root: Path, out: Path) -> dict[str, Any]:
    """What readers answer about a log, read by a fresh copy (no cache of this process)."""
    fresh = out / f"read-{len(list(out.glob('read-*')))}"
    shutil.copytree(root, fresh)
    log = EventLog(fresh)
    found: dict[str, Any] = {
        "counts": log.counts_by_date(),
        "fingerprints": log.partition_fingerprints(),
    }
    for kind in ("feedback", "prediction"):
        for day in DATES:
            found[f"{kind}:{day}"] = log.read(kind, dates=[day])  # type: ignore[arg-type]
        found[f"{kind}:all"] = log.read(kind)  # type: ignore[arg-type]
        export = out / f"{fresh.name}-{kind}.ndjson"
        export_events(fresh, kind, export)  # type: ignore[arg-type]
        found[f"{kind}:export"] = export.read_bytes()
    return found


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], pl.DataFrame):
            assert a[key].equals(b[key]), key
        else:
            assert a[key] == b[key], key


def _archive_all(root: Path, before: str = CUTOFF) -> list[str]:
    done = []
    for key, _end in old_segments(root, before):
        done.append(archive_old_segment(root, key).segment)
    return done


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_archived_segments_read_exactly_as_the_segments_did(tmp_path: Path, seed: int) -> None:
    log = _random_log(tmp_path / "log", seed)
    before = _everything(log.root, tmp_path)
    segments_before = sorted((log.root / "segments").rglob("*.ctlog"))
    archived = _archive_all(log.root)
    assert len(archived) >= 6  # several segments a date: the size limit is small
    left = sorted((log.root / "segments").rglob("*.ctlog"))
    assert all(p.parent.name >= CUTOFF for p in left)
    assert len(left) == len(segments_before) - len(archived)
    _same(before, _everything(log.root, tmp_path))
    # the archive is a table: its ids are the date's, one row per event
    con = duckdb.connect()
    glob = str(log.root / "archive" / "*" / "*.parquet")
    rows = con.execute(
        f"select kind, count(*), count(distinct event_id) from read_parquet('{glob}') group by 1"
    ).fetchall()
    held = {kind: count for kind, count, distinct in rows if count == distinct}
    old = [d for d in DATES if d < CUTOFF]
    assert held == {
        "feedback": sum(before["counts"][d].feedback for d in old),
        "prediction": sum(before["counts"][d].prediction for d in old),
    }


def test_a_late_event_of_an_archived_date_starts_a_new_segment_and_ids_stay_known(
    tmp_path: Path,
) -> None:
    log = _random_log(tmp_path / "log", 7)
    _archive_all(log.root)
    rng = random.Random(99)
    late = [_event(rng, 10_000 + i, 0) for i in range(5)]
    # a writer that knew the archived segment as its date's current one
    assert log.append(late).accepted == 5
    day = DATES[0]
    on_disk = sorted(p.name for p in (log.root / "segments" / day).iterdir())
    archived = sorted(p.name for p in (log.root / "archive" / day).iterdir())
    assert len(on_disk) == 1
    assert int(on_disk[0][4:12]) == int(archived[-1][4:12]) + 1
    # read with its archived part; archived again with the rest
    expected = _everything(log.root, tmp_path)
    _archive_all(log.root)
    assert not list((log.root / "segments" / day).iterdir())
    _same(expected, _everything(log.root, tmp_path))
    # re-sent ids of archived dates are duplicates, in a new writer and with the id index
    # rebuilt from the journal (which reads the archived frames)
    resent = [_first_event(log.root, DATES[0]), _first_event(log.root, DATES[2])]
    assert EventLog(log.root).append(resent).duplicates == 2
    for index in log.root.glob("event_ids.sqlite*"):
        index.unlink()
    assert EventLog(log.root).append(resent + late).duplicates == 7


def _first_event(root: Path, day: str) -> FeedbackEvent | PredictionEvent:
    line = read_lines(root, "feedback", dates=[day])[0]
    event = decode_json_event(line, 0, "feedback")
    assert isinstance(event, FeedbackEvent)
    return event


@pytest.mark.parametrize("damage", ["cut", "changed_event", "missing"])
def test_a_damaged_archive_is_reported_naming_it(tmp_path: Path, damage: str) -> None:
    import pyarrow.parquet as pq

    log = _random_log(tmp_path / "log", 4)
    _archive_all(log.root)
    target = archive_file(log.root, old_segments_of(log.root, DATES[1])[0])
    if damage == "cut":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "changed_event":  # a readable table that does not rebuild the segment
        table = pq.read_table(target)
        events = table.column("event").to_pylist()
        at = events[0].index(b'"event_id":"') + len(b'"event_id":"')
        events[0] = events[0][:at] + b"Z" + events[0][at + 1 :]  # same length, other bytes
        changed = table.set_column(table.schema.get_field_index("event"), "event", [events])
        pq.write_table(changed.replace_schema_metadata(table.schema.metadata), target)
    else:
        target.unlink()
    fresh = tmp_path / "fresh"
    shutil.copytree(log.root, fresh)
    where = str(target.relative_to(log.root)) if damage != "missing" else "seg-"
    with pytest.raises(CorruptLogError, match=where):
        EventLog(fresh).read("feedback", dates=[DATES[1]])
        EventLog(fresh).read("prediction", dates=[DATES[1]])
    with pytest.raises(CorruptLogError):
        export_events(fresh, "feedback", tmp_path / "out.ndjson")
        export_events(fresh, "prediction", tmp_path / "out.ndjson")


def old_segments_of(root: Path, day: str) -> list[str]:
    return sorted(f"{day}/{p.stem}.ctlog" for p in (root / "archive" / day).glob("*.parquet"))


def test_archiving_killed_before_the_segment_is_deleted_is_finished_later(
    tmp_path: Path,
) -> None:
    log = _random_log(tmp_path / "log", 5)
    before = _everything(log.root, tmp_path)
    keys = [key for key, _ in old_segments(log.root, CUTOFF)]
    # an archive written and fsynced, the process killed before the segment went: both
    # are there (a copy of the log archived, its archive put beside the segment)
    twin = tmp_path / "twin"
    shutil.copytree(log.root, twin)
    archive_old_segment(twin, keys[0])
    archive_file(log.root, keys[0]).parent.mkdir(parents=True)
    shutil.copy(archive_file(twin, keys[0]), archive_file(log.root, keys[0]))
    # an archive of another segment that does not rebuild it (written for fewer bytes)
    with log_lock(twin):
        archive_segment(twin, keys[1], _first_frame_end(twin, keys[1]))
    archive_file(log.root, keys[1]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(archive_file(twin, keys[1]), archive_file(log.root, keys[1]))
    # and a temporary file of a write that never finished
    target = archive_file(log.root, keys[2])
    torn = target.with_name(f".{target.name}.999999.tmp")
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(b"PAR1 half")
    _same(before, _everything(log.root, tmp_path))
    assert sorted(_archive_all(log.root)) == sorted(keys)
    assert not torn.exists()
    _same(before, _everything(log.root, tmp_path))


def _first_frame_end(root: Path, key: str) -> int:
    from ct_assets.eventlog.frames import scan_segment
    from ct_assets.eventlog.layout import segment_file

    return scan_segment(segment_file(root, key)).frames[0].end


def _old_events(n: int) -> list[FeedbackEvent | PredictionEvent]:
    rng = random.Random(11)
    return [_event(rng, i, i % 3) for i in range(n)]


def _recent(n: int) -> list[FeedbackEvent]:
    now = datetime.now(UTC)
    return [
        FeedbackEvent(
            event_id=f"now-{i}",
            timestamp=now - timedelta(minutes=i),
            feedback_type="explicit",
            prediction_id=f"p-{i}",
            label=1,
        )
        for i in range(n)
    ]


def _segment_items(out: str) -> list[dict[str, Any]]:
    return [i for i in json.loads(out)["deleted"] if i["what"] == "event_segment"]


def test_gc_archives_old_dates_and_a_killed_gc_is_finished_by_the_next(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    log = EventLog(settings.eventlog_dir, segment_max_bytes=1500)
    for i in range(0, 300, 20):
        log.append(_old_events(300)[i : i + 20])
    log.append(_recent(10))
    before = _everything(log.root, settings.home)
    old = [key for key, _ in old_segments(log.root, CUTOFF)]
    assert len(old) >= 4

    # off by default: nothing planned
    capsys.readouterr()
    assert main(["gc", "--dry-run", "--json"]) == 0
    assert not _segment_items(capsys.readouterr().out)

    monkeypatch.setenv("CT_RETENTION_DAYS", "30")
    assert main(["gc", "--dry-run", "--json"]) == 0
    planned = _segment_items(capsys.readouterr().out)
    assert sorted(i["id"] for i in planned) == sorted(old)  # today's date is kept
    assert all("CT_RETENTION_DAYS 30" in i["why"][0] for i in planned)
    assert all(Path(i["paths"][0]).exists() for i in planned)

    env = {**os.environ, KILL_AFTER_ENV: "2", "PYTHONPATH": str(PROJECT_ROOT)}
    killed = subprocess.run(
        [sys.executable, "-m", "ct_assets.cli", "gc"], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert len(list((log.root / "archive").rglob("*.parquet"))) == 2
    _same(before, _everything(log.root, settings.home))

    assert main(["gc", "--json"]) == 0
    done = _segment_items(capsys.readouterr().out)
    assert sorted(i["id"] for i in done) == sorted(old[2:])
    assert not any(list((log.root / "segments" / d).glob("*.ctlog")) for d in DATES[:3])
    _same(before, _everything(log.root, settings.home))
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    disk = json.loads(capsys.readouterr().out)["event_log"]
    assert disk["archived_segments"] == len(old) and disk["stored_archives"] == 0
    assert disk["segments"] == len(list((log.root / "segments").rglob("*.ctlog")))
    assert disk["retention_days"] == 30 and disk["archive_bytes"] > 0
    gone = [json.loads(line) for line in tombstones_path(settings).read_text().splitlines()]
    assert {t["id"] for t in gone if t["what"] == "event_segment"} == set(old)
    # the log takes new events of an archived date and of today
    assert EventLog.from_settings(settings).append(_recent(12)).accepted == 2


def test_lineage_of_an_archived_event_answers_as_before(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ct_assets.eventlog.layout import index_path

    log = EventLog(settings.eventlog_dir, segment_max_bytes=1500)
    events = _old_events(120)
    for i in range(0, 120, 10):
        log.append(events[i : i + 10])
    log.writer.close()
    wanted = [events[5].event_id, events[64].event_id, events[119].event_id]

    def lineage(event_id: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "ct_assets.cli", "lineage", "--event", event_id, "--json"],
            env={**os.environ, "CT_HOME": str(settings.home), "PYTHONPATH": str(PROJECT_ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    expected = {e: lineage(e) for e in wanted}
    assert all(found["log"]["date"] < CUTOFF for found in expected.values())
    _archive_all(settings.eventlog_dir)
    assert not list((settings.eventlog_dir / "segments").rglob("*.ctlog"))
    assert {e: lineage(e) for e in wanted} == expected
    index_path(settings.eventlog_dir).unlink()  # every date searched, through the archives
    assert {e: lineage(e) for e in wanted} == expected

"""Finding one event's dates through the event id index, without walking the log."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.data.tables import TableStore
from ct_assets.defs.ingestion import raw_materialization
from ct_assets.eventlog import CorruptLogError, EventLog
from ct_assets.eventlog.frames import HEADER
from ct_assets.eventlog.layout import index_path, journal_path
from ct_assets.eventlog.locate import locate
from ct_assets.lineage.answers import event_lineage
from ct_assets.schema import FeedbackEvent
from ct_assets.settings import Settings

DAY = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _feedback(event_id: str, days: int) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=event_id,
        timestamp=DAY + timedelta(days=days),
        feedback_type="explicit",
        features={"x": float(days)},
        label=days % 2,
    )


def _written(root: Path) -> EventLog:
    log = EventLog(root)
    log.append([_feedback("a", 0), _feedback("b", 2)])  # one commit over two dates
    log.append([_feedback("c", 5)])
    log.writer.close()  # flushes its ids to the index
    return log


def indexed_dates(root: Path, event_id: str) -> list[str] | None:
    """The dates :func:`locate` names (None: it cannot tell)."""
    located = locate(root, event_id)
    return located.dates if located is not None else None


def test_an_indexed_event_names_the_dates_of_its_commit(tmp_path: Path) -> None:
    _written(tmp_path)
    assert indexed_dates(tmp_path, "a") == ["2026-03-03", "2026-03-01"]
    assert indexed_dates(tmp_path, "c") == ["2026-03-06"]
    assert indexed_dates(tmp_path, "nowhere") == [], "every commit indexed: not in the log"


def test_past_the_index_only_the_newest_commits_dates_are_searched(tmp_path: Path) -> None:
    log = _written(tmp_path)
    log.append([_feedback("d", 9)])  # still in the writer's tail, not yet in the index
    assert indexed_dates(tmp_path, "d") == ["2026-03-10"]
    assert indexed_dates(tmp_path, "nowhere") == ["2026-03-10"]
    assert indexed_dates(tmp_path, "a") == ["2026-03-03", "2026-03-01"]


def test_without_an_index_that_matches_the_journal_it_cannot_tell(tmp_path: Path) -> None:
    assert indexed_dates(tmp_path, "a") is None, "no log at all"
    _written(tmp_path / "one")
    other = tmp_path / "other"
    other_log = EventLog(other)
    other_log.append([_feedback("z", 1)])
    other_log.writer.close()
    # an index built for another journal
    shutil.copy(index_path(tmp_path / "one"), index_path(other))
    assert indexed_dates(other, "a") is None
    assert indexed_dates(other, "z") is None
    # a damaged index
    index_path(other).write_bytes(b"not a database" * 100)
    assert indexed_dates(other, "z") is None
    # none
    index_path(other).unlink()
    assert indexed_dates(other, "z") is None


def test_lineage_of_an_event_reads_only_the_dates_the_index_names(settings: Settings) -> None:
    log = _written(settings.eventlog_dir)
    log.append([_feedback("d", 9)])
    log.writer.close()
    expected = event_lineage(settings, None, "c")
    assert expected["log"]["date"] == "2026-03-06"
    # damage the segment of a newer date: a search of every date (newest first) reads it
    damaged = next(
        p for p in (settings.eventlog_dir / "segments" / "2026-03-10").iterdir() if p.is_file()
    )
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert event_lineage(settings, None, "c") == expected
    index_path(settings.eventlog_dir).unlink()
    with pytest.raises(CorruptLogError, match="2026-03-10"):
        event_lineage(settings, None, "c")  # without the index: every date, newest first


def _lineage_cli(settings: Settings, event_id: str) -> subprocess.CompletedProcess[str]:
    """``ct-assets lineage --event`` in a fresh process (no journal read cached)."""
    return subprocess.run(
        [sys.executable, "-m", "ct_assets.cli", "lineage", "--event", event_id, "--json"],
        env={**os.environ, "CT_HOME": str(settings.home)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lineage_of_an_event_in_the_tables_does_not_read_the_journals_history(
    settings: Settings,
) -> None:
    log = _written(settings.eventlog_dir)
    log.append([_feedback("d", 9)])
    log.writer.close()
    store = TableStore(settings.tables_dir)
    fingerprints = log.partition_fingerprints()
    for day in ("2026-03-06", "2026-03-10"):  # the raw tables of c's and d's dates
        raw_materialization(
            dg.AssetKey(keys.RAW_FEEDBACK), log, "feedback", day, fingerprints[day], store
        )
    expected = _lineage_cli(settings, "c")
    assert expected.returncode == 0, expected.stderr
    assert json.loads(expected.stdout)["log"]["log_offset"] == 2
    # damage the journal's first record (the commit of a and b): a walk of the history fails
    journal = journal_path(settings.eventlog_dir)
    data = bytearray(journal.read_bytes())
    data[HEADER.size + 2] ^= 0xFF
    journal.write_bytes(bytes(data))
    answered = _lineage_cli(settings, "c")
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == json.loads(expected.stdout)
    # without a table holding its log offset, the journal is read: the damage is found
    store.path(keys.RAW_FEEDBACK, "2026-03-06").unlink()
    walked = _lineage_cli(settings, "c")
    assert walked.returncode != 0 and "journal" in walked.stderr.lower(), walked.stderr


def test_lineage_of_an_event_in_no_table_reads_its_commit_not_its_date(
    settings: Settings,
) -> None:
    from ct_assets.eventlog import counts
    from ct_assets.eventlog.layout import segment_file
    from ct_assets.lineage.events import find_in_log

    log = EventLog(settings.eventlog_dir)
    for n in range(30):  # thirty commits on one date
        log.append([_feedback(f"e{n}-{i}", 1) for i in range(n % 3 + 1)])
    log.writer.close()
    day = "2026-03-02"
    offsets = dict(log.read("feedback", dates=[day]).select("event_id", "log_offset").iter_rows())
    # damage another commit's frame of the same date: a read of the whole date fails
    frames = list(counts.dated_parts(settings.eventlog_dir, [day]))
    damaged = frames[3].part
    path = segment_file(settings.eventlog_dir, damaged.segment)
    data = bytearray(path.read_bytes())
    data[damaged.offset + damaged.length // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError):
        find_in_log(settings, "e20-1", [day])
    for event_id in ("e20-1", "e29-2", "e0-0"):
        answered = _lineage_cli(settings, event_id)
        assert answered.returncode == 0, answered.stderr
        assert json.loads(answered.stdout)["log"]["log_offset"] == offsets[event_id]

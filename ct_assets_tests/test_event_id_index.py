"""The event id index (ct_assets.eventlog.idindex): deduplication without every id in memory.

The journal stays the source of truth; the index is a SQLite cache of it that each commit
updates after its journal record is fsynced. Under test: a re-sent id is a duplicate after a
restart (new writer, new process); a writer killed between its journal record and its index
update leaves the index behind, and the next writer catches it up from the journal's tail;
an index ahead of its journal, another journal's, deleted or damaged is repaired or rebuilt;
starting a writer reads no segment, whatever the log holds.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import ct_assets.eventlog.writer as writer_module
from ct_assets.eventlog import EventLog
from ct_assets.eventlog.frames import Frame
from ct_assets.eventlog.idindex import EventIdIndex
from ct_assets.eventlog.journal import Part, scan_journal
from ct_assets.eventlog.layout import index_path, journal_path
from ct_assets.eventlog.writer import EventLogWriter
from ct_assets.schema import Event, FeedbackEvent, PredictionEvent

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def event(n: int, step: timedelta = timedelta(hours=5)) -> Event:
    """Event ``n``: predictions and feedback alternate, ``step`` apart (by default spread
    over several UTC dates)."""
    at = T0 + step * n
    if n % 2:
        return FeedbackEvent(
            event_id=f"ev-{n}",
            timestamp=at,
            feedback_type="explicit",
            prediction_id=f"pred-{n}",
            label=n % 3,
        )
    return PredictionEvent(
        event_id=f"ev-{n}",
        prediction_id=f"pred-{n}",
        timestamp=at,
        features={"x": float(n)},
        prediction=1,
        scores={"0": 0.3, "1": 0.7},
        model_version="1",
    )


def events(ns: range) -> list[Event]:
    return [event(n) for n in ns]


def stored_ids(root: Path) -> list[str]:
    """Every committed id, by a full read of the log (not the index)."""
    log = EventLog(root)
    return [
        *log.read("prediction")["event_id"].to_list(),
        *log.read("feedback")["event_id"].to_list(),
    ]


def index_rows(root: Path) -> set[str]:
    with sqlite3.connect(index_path(root)) as db:
        return {row[0] for row in db.execute("SELECT event_id FROM event_ids")}


def settle(root: Path) -> None:
    """Fold the index's WAL into its database file and remove the WAL (as when the last
    connection closes), so that the file alone is the index."""
    gc.collect()
    with contextlib.closing(sqlite3.connect(index_path(root))) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        Path(f"{index_path(root)}{suffix}").unlink(missing_ok=True)


def covered_end(root: Path) -> int:
    return EventIdIndex(root).covered().journal_end


def count_frame_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every committed frame a writer reads (to index it) and every segment it
    checks."""
    reads: list[str] = []
    read_part = EventLogWriter._read_part
    verify = EventLogWriter._verify

    def counting_read(self: EventLogWriter, part: Part) -> Frame:
        reads.append(part.segment)
        return read_part(self, part)

    def counting_verify(self: EventLogWriter, key: str, end: int) -> None:
        reads.append(key)
        verify(self, key, end)

    monkeypatch.setattr(EventLogWriter, "_read_part", counting_read)
    monkeypatch.setattr(EventLogWriter, "_verify", counting_verify)
    return reads


# --- restarts ---------------------------------------------------------------------------------


def _append_in_child(root: str, ns: list[int], out: object) -> None:
    result = EventLog(Path(root)).append([event(n) for n in ns])
    out.put((result.accepted_ids, result.duplicates))  # type: ignore[attr-defined]


def test_a_duplicate_sent_after_a_restart_is_still_a_duplicate(tmp_path: Path) -> None:
    EventLog(tmp_path).append(events(range(10)))
    # a new writer object in this process
    again = EventLog(tmp_path).append(events(range(5, 12)))
    assert (again.accepted_ids, again.duplicates) == (["ev-10", "ev-11"], 5)
    # a new process
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_append_in_child, args=(str(tmp_path), [3, 11, 12], out))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert out.get(timeout=10) == (["ev-12"], 2)
    assert sorted(stored_ids(tmp_path)) == sorted(f"ev-{n}" for n in range(13))
    assert index_rows(tmp_path) == set(stored_ids(tmp_path))
    assert covered_end(tmp_path) == journal_path(tmp_path).stat().st_size


# --- a crash between the journal record and the index update ----------------------------------


def _commit_then_die(root: str, ns: list[int]) -> None:
    """Commit (journal record fsynced) and be killed before the index records it."""

    def die(self: EventLogWriter, record: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    EventLogWriter._index_commit = die  # type: ignore[method-assign]
    EventLog(Path(root)).append([event(n) for n in ns])


def test_a_writer_killed_before_its_index_update_is_caught_up_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    EventLog(tmp_path).append(events(range(20)))
    indexed = covered_end(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_commit_then_die, args=(str(tmp_path), list(range(15, 40))))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    # the commit is durable (journal), the index is behind it
    assert len(scan_journal(tmp_path).commits) == 2
    assert journal_path(tmp_path).stat().st_size > indexed == covered_end(tmp_path)
    assert "ev-30" not in index_rows(tmp_path)
    assert sorted(stored_ids(tmp_path)) == sorted(f"ev-{n}" for n in range(40))

    # the next writer reads only the frames of the commit past the index
    reads = count_frame_reads(monkeypatch)
    writer = EventLogWriter(tmp_path)
    writer.refresh()
    last = scan_journal(tmp_path).commits[-1]
    assert sorted(reads) == sorted(part.segment for part in last.parts)
    assert covered_end(tmp_path) == journal_path(tmp_path).stat().st_size
    assert index_rows(tmp_path) == set(stored_ids(tmp_path))
    result = writer.append(events(range(30, 45)))
    assert (result.accepted_ids, result.duplicates) == ([f"ev-{n}" for n in range(40, 45)], 10)
    stored = stored_ids(tmp_path)
    assert sorted(stored) == sorted(f"ev-{n}" for n in range(45))  # each exactly once
    assert "ev-44" not in index_rows(tmp_path)  # in the writer's tail, written lazily
    assert writer.knows("ev-44") and writer.contains("ev-44")
    writer.flush()
    assert index_rows(tmp_path) == set(stored)
    assert covered_end(tmp_path) == journal_path(tmp_path).stat().st_size


def test_knows_learns_a_commit_the_index_missed_when_the_lock_is_free(tmp_path: Path) -> None:
    EventLog(tmp_path).append(events(range(4)))
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_commit_then_die, args=(str(tmp_path), [7]))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    writer = EventLogWriter(tmp_path)
    assert writer.knows("ev-3") and not writer.knows("ev-7")
    writer.learn_committed()
    assert writer.knows("ev-7")


def _commit_unflushed_then_die(root: str, ns: list[int]) -> None:
    """Commit several times (each acknowledged), then be killed before any flush."""
    log = EventLog(Path(root))
    for start in range(0, len(ns), 10):
        log.append([event(n) for n in ns[start : start + 10]])
    (Path(root) / "covered-before-kill").write_text(str(covered_end(Path(root))))
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_crash_with_an_unflushed_tail_loses_no_duplicate_detection(tmp_path: Path) -> None:
    EventLog(tmp_path).append(events(range(10)))  # flushed when dropped
    indexed = covered_end(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=_commit_unflushed_then_die, args=(str(tmp_path), list(range(10, 50)))
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == -signal.SIGKILL
    assert (
        int((tmp_path / "covered-before-kill").read_text()) == indexed
    )  # four acknowledged commits, none in the index
    assert covered_end(tmp_path) == indexed
    assert not index_rows(tmp_path) & {f"ev-{n}" for n in range(10, 50)}
    # a new process: every acknowledged id is a duplicate, lock-free knows() included
    out = ctx.Queue()
    child = ctx.Process(target=_append_in_child, args=(str(tmp_path), list(range(5, 55)), out))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert out.get(timeout=10) == ([f"ev-{n}" for n in range(50, 55)], 45)
    writer = EventLogWriter(tmp_path)
    writer.learn_committed()
    assert all(writer.knows(f"ev-{n}") for n in range(55))
    assert sorted(stored_ids(tmp_path)) == sorted(f"ev-{n}" for n in range(55))
    writer.close()
    assert index_rows(tmp_path) == set(stored_ids(tmp_path))
    assert covered_end(tmp_path) == journal_path(tmp_path).stat().st_size


# --- start cost -------------------------------------------------------------------------------


def test_starting_a_writer_reads_no_segment_whatever_the_log_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    EventLog(small).append(events(range(10)))
    log = EventLog(large)
    for start in range(0, 20_000, 2_000):  # two days
        log.append([event(n, timedelta(seconds=10)) for n in range(start, start + 2_000)])
    log.writer.close()  # its tail is in the index
    reads = count_frame_reads(monkeypatch)
    for root in (small, large):
        writer = EventLogWriter(root)
        writer.refresh()
        assert writer.contains("ev-3") and not writer.contains("ev-999999")
        assert writer.knows("ev-5")
    assert reads == []
    # the first append checks the segments it appends to, and nothing else
    result = EventLogWriter(large).append([event(20_000, timedelta(seconds=10))])
    assert result.accepted == 1
    assert len(reads) == 1


# --- repairs ----------------------------------------------------------------------------------


def test_a_deleted_index_is_rebuilt_from_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    EventLog(tmp_path).append(events(range(30)))
    writer = EventLogWriter(tmp_path)
    writer.refresh()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index_path(tmp_path)}{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger=writer_module.__name__):
        result = writer.append(events(range(25, 35)))
    assert (result.accepted, result.duplicates) == (5, 5)
    assert "rebuilding it from the journal" in caplog.text or "building it" in caplog.text
    writer.close()
    assert index_rows(tmp_path) == set(stored_ids(tmp_path))
    assert sorted(stored_ids(tmp_path)) == sorted(f"ev-{n}" for n in range(35))
    # and a new writer in place of one that disappears with it
    index_path(tmp_path).unlink()
    again = EventLog(tmp_path).append(events(range(34, 36)))
    assert (again.accepted_ids, again.duplicates) == (["ev-35"], 1)


def test_a_damaged_index_is_rebuilt_from_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    EventLog(tmp_path).append(events(range(30)))
    settle(tmp_path)
    index_path(tmp_path).write_bytes(b"not a database at all" * 200)
    with caplog.at_level(logging.WARNING, logger=writer_module.__name__):
        result = EventLog(tmp_path).append(events(range(28, 32)))
    assert (result.accepted_ids, result.duplicates) == (["ev-30", "ev-31"], 2)
    assert "unreadable" in caplog.text and "rebuilding it from the journal" in caplog.text
    assert index_rows(tmp_path) == set(stored_ids(tmp_path))


def test_an_index_ahead_of_its_journal_is_cut_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = EventLog(tmp_path)
    log.append(events(range(10)))
    kept = journal_path(tmp_path).read_bytes()
    log.append(events(range(10, 20)))
    log.writer.flush()
    # the journal loses its last record (restored from an older copy) but the index had it
    journal_path(tmp_path).write_bytes(kept)
    with caplog.at_level(logging.WARNING, logger=writer_module.__name__):
        result = EventLog(tmp_path).append(events(range(5, 15)))
    assert "dropped the 10 ids" in caplog.text
    assert (result.accepted_ids, result.duplicates) == ([f"ev-{n}" for n in range(10, 15)], 5)
    assert sorted(stored_ids(tmp_path)) == sorted(f"ev-{n}" for n in range(15))
    assert index_rows(tmp_path) == set(stored_ids(tmp_path))


def test_an_index_of_another_journal_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    EventLog(first).append(events(range(10)))
    EventLog(second).append(events(range(100, 103)))
    settle(first)
    settle(second)
    index_path(second).write_bytes(index_path(first).read_bytes())  # the wrong cache
    with caplog.at_level(logging.WARNING, logger=writer_module.__name__):
        result = EventLog(second).append([event(3), event(101)])
    assert "does not match the journal" in caplog.text
    assert (result.accepted_ids, result.duplicates) == (["ev-3"], 1)
    assert index_rows(second) == set(stored_ids(second))


def test_ids_with_any_character_are_duplicates_after_a_restart(tmp_path: Path) -> None:
    """An id may hold NUL, astral-plane and control characters: a new writer, reading the
    index, finds every one of them."""
    from ct_assets.schema import convert_record, validate_events
    from ct_assets.simulate import SimulationSpec, simulate_events

    odd = ["a\x00b", "nul-at-end\x00", "fz-\u00db\U000845aa:\x9f\u00a1", "emoji-\U0001f600", "a"]
    events = list(simulate_events(SimulationSpec(rows=len(odd), seed=3)))
    for event, event_id in zip(events, odd, strict=True):
        event["event_id"] = event_id
    records = validate_events([convert_record(e, i) for i, e in enumerate(events)])
    root = tmp_path / "log"
    first = EventLog(root)
    assert first.append(records).accepted == len(odd)
    first.writer.close()  # its tail is in the index: the next writer looks ids up there
    again = EventLog(root).append(records)
    assert again.accepted == 0 and again.duplicates == len(odd)
    assert EventLog(root).counts().feedback == len(odd)

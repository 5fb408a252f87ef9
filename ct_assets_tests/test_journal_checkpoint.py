"""The checkpoint of the journal summary: a new process starts from it and reads only the
journal records past it, and whatever the checkpoint's state (behind, ahead, another
log's, damaged, partly written) every count, fingerprint and read of some dates equals
the summary of the whole journal."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import ct_assets.eventlog.counts as counts
import ct_assets.eventlog.decoded as decoded
import ct_assets.eventlog.journal as journal
from ct_assets.eventlog import CorruptLogError, EventLog
from ct_assets.eventlog.checkpoint import HEAD_NAME, load_head
from ct_assets.eventlog.layout import journal_path, summary_dir
from ct_assets.schema import Event
from ct_assets_tests.test_eventlog import KINDS, T0, feedback, prediction, rows

DAYS = [T0 + timedelta(days=d, hours=1) for d in range(5)]
ISO_DAYS = [d.date().isoformat() for d in DAYS]


def forget_process_state() -> None:
    """What a new process does not hold: the journal, its summary, decoded frames."""
    with counts._SUMMARIES_LOCK:
        counts._SUMMARIES.clear()
    with journal._CACHE_LOCK:
        journal._CACHE.clear()
    decoded.DECODED._cache = decoded._Bounded(decoded.DECODED_CACHE_ROWS)
    decoded.DATES._cache = decoded._Bounded(decoded.DECODED_CACHE_ROWS)


def append_random(log: EventLog, rng: random.Random, commits: int, start: int) -> int:
    n = start
    for _ in range(commits):
        batch: list[Event] = []
        for _ in range(rng.randint(1, 4)):
            at = rng.choice(DAYS) + timedelta(seconds=n)
            batch.append((prediction if rng.random() < 0.5 else feedback)(n, at=at))
            n += 1
        log.append(batch)
    return n


def whole_journal_answers(root: Path) -> dict[str, object]:
    """Counts, fingerprints and the frames of each date, summarized from the journal's
    start in this process (the checkpoint not read)."""
    with counts._SUMMARIES_LOCK:
        summary = counts._current(root, from_start=True)
        parts = {day: list(summary.parts.get(day, [])) for day in ISO_DAYS}
        counts._SUMMARIES.clear()
    return {"parts": parts, **answers(root, with_parts=False)}


def answers(root: Path, with_parts: bool = True) -> dict[str, object]:
    out: dict[str, object] = {
        "by_date": counts.counts_by_date(root),
        "total": counts.count_events(root),
        "some": counts.count_events(root, ISO_DAYS[1:3]),
        "fingerprints": counts.partition_fingerprints(root),
    }
    if with_parts:
        out["parts"] = {day: list(counts.dated_parts(root, [day])) for day in ISO_DAYS}
    return out


def check_reads(log: EventLog, rng: random.Random) -> None:
    """Reads of some dates (from the summary) equal the whole log read and filtered."""
    for kind in KINDS:
        whole = log.read(kind)
        day_of = dict(zip(whole["event_id"], whole["timestamp"].dt.date(), strict=True))
        chosen = sorted(rng.sample(DAYS, rng.randint(1, 3)))
        wanted = {d.date() for d in chosen}
        since = rng.randint(0, max(0, whole.height - 1))
        expected = [(i, o) for i, o in rows(whole) if day_of[i] in wanted and o >= since]
        dates = [d.date().isoformat() for d in chosen]
        assert rows(log.read(kind, dates=dates, since=since)) == expected
        # without dates: the journal is read from the summary's mark before ``since``
        limit = rng.choice([None, rng.randint(since, whole.height + 1)])
        expected = [(i, o) for i, o in rows(whole) if o >= since and (limit is None or o < limit)]
        assert rows(log.read(kind, since=since, limit=limit)) == expected


def assert_a_new_process_answers_as_the_whole_journal(log: EventLog, seed: int) -> None:
    """Counts, fingerprints, per-date frames and reads of a process holding nothing equal
    the summary of the whole journal and the whole log read and filtered."""
    forget_process_state()
    assert answers(log.root) == whole_journal_answers(log.root)
    forget_process_state()
    check_reads(log, random.Random(seed))


@pytest.mark.parametrize("seed", range(5))
def test_a_new_process_starts_from_the_checkpoint_and_answers_as_the_whole_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setattr(counts, "CHECKPOINT_COMMITS", 7)
    monkeypatch.setattr(counts, "MARK_EVERY", 3)
    scans: list[int] = []
    original = journal.scan_journal

    def recorded_scan(root: Path, start: int = 0, stop: int | None = None) -> journal.JournalScan:
        scans.append(start)
        return original(root, start, stop)

    monkeypatch.setattr(journal, "scan_journal", recorded_scan)
    rng = random.Random(seed)
    log = EventLog(tmp_path)
    n = 0
    checkpoints = set()
    for _ in range(6):
        n = append_random(log, rng, rng.randint(1, 12), n)
        forget_process_state()
        found = load_head(tmp_path)
        scans.clear()
        counts.count_events(tmp_path)
        # started from the checkpoint on disk (when there was one), not the journal's start
        assert scans[:1] == ([found.journal_end] if found is not None else [0])
        if found is not None:
            checkpoints.add(found.commits)
        if rng.random() < 0.5:  # some processes read dates first, some count first
            check_reads(log, rng)
        assert answers(tmp_path) == whole_journal_answers(tmp_path)
        check_reads(log, rng)
    assert len(checkpoints) >= 2, "checkpoints were written and taken up"


def test_the_records_before_the_checkpoint_are_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counts, "CHECKPOINT_COMMITS", 5)
    rng = random.Random(1)
    log = EventLog(tmp_path)
    n = append_random(log, rng, 12, 0)
    counts.count_events(tmp_path)  # 12 records summarized (>= 5): a checkpoint of them
    head = load_head(tmp_path)
    assert head is not None and head.commits == 12
    n = append_random(log, rng, 3, n)
    expected = answers(tmp_path)
    # damage the journal's first record's payload (not its header): only a read of the
    # whole journal finds it
    path = journal_path(tmp_path)
    data = bytearray(path.read_bytes())
    data[30] ^= 0x40
    path.write_bytes(bytes(data))
    forget_process_state()
    assert answers(tmp_path) == expected
    forget_process_state()
    with pytest.raises(CorruptLogError, match="journal"):
        log.read("prediction")


def damage_head(root: Path) -> None:
    (summary_dir(root) / HEAD_NAME).write_bytes(b"\x00not a checkpoint")


def damage_chunk(root: Path) -> None:
    chunk = sorted(p for p in summary_dir(root).rglob("*.msgpack") if p.name != HEAD_NAME)[0]
    chunk.write_bytes(chunk.read_bytes()[:-3])


def remove_chunk(root: Path) -> None:
    chunk = sorted(p for p in summary_dir(root).rglob("*.msgpack") if p.name != HEAD_NAME)[-1]
    chunk.unlink()


def other_logs_checkpoint(root: Path) -> None:
    other = root.parent / "other"
    log = EventLog(other)
    append_random(log, random.Random(9), 12, 1000)
    counts.count_events(other)
    shutil.rmtree(summary_dir(root))
    shutil.copytree(summary_dir(other), summary_dir(root))


def garble_chunk_column(root: Path) -> None:
    """A chunk that decodes as msgpack but whose packed column is not zlib data."""
    import msgspec

    from ct_assets.eventlog.checkpoint import Chunk

    path = sorted(p for p in summary_dir(root).rglob("*.msgpack") if p.name != HEAD_NAME)[0]
    chunk = msgspec.msgpack.decode(path.read_bytes(), type=Chunk)
    columns = [b"not zlib", *chunk.columns[1:]]
    path.write_bytes(msgspec.msgpack.encode(msgspec.structs.replace(chunk, columns=columns)))


@pytest.mark.parametrize(
    "spoil",
    [damage_head, damage_chunk, garble_chunk_column, remove_chunk, other_logs_checkpoint],
)
def test_a_checkpoint_that_cannot_be_used_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spoil: object
) -> None:
    monkeypatch.setattr(counts, "CHECKPOINT_COMMITS", 5)
    root = tmp_path / "log"
    log = EventLog(root)
    n = append_random(log, random.Random(3), 12, 0)
    counts.count_events(root)
    append_random(log, random.Random(4), 4, n)
    assert load_head(root) is not None
    spoil(root)  # type: ignore[operator]
    assert_a_new_process_answers_as_the_whole_journal(log, 5)


def test_a_checkpoint_ahead_of_its_journal_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journal restored from an older copy: the checkpoint summarizes records it lacks."""
    monkeypatch.setattr(counts, "CHECKPOINT_COMMITS", 5)
    log = EventLog(tmp_path)
    n = append_random(log, random.Random(6), 4, 0)
    older = journal_path(tmp_path).read_bytes()
    append_random(log, random.Random(7), 8, n)
    counts.count_events(tmp_path)
    head = load_head(tmp_path)
    assert head is not None and head.journal_end > len(older)
    log.writer.close()
    journal_path(tmp_path).write_bytes(older)
    forget_process_state()
    assert answers(tmp_path) == whole_journal_answers(tmp_path)
    assert counts.count_events(tmp_path) == counts.count_events(tmp_path, ISO_DAYS)


def test_a_process_that_cannot_write_the_checkpoint_goes_on_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counts, "CHECKPOINT_COMMITS", 5)
    log = EventLog(tmp_path)
    summary_dir(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    summary_dir(tmp_path).write_bytes(b"")  # a file where the directory would go
    append_random(log, random.Random(8), 12, 0)
    forget_process_state()
    assert answers(tmp_path) == whole_journal_answers(tmp_path)
    check_reads(log, random.Random(2))


_READER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import ct_assets.eventlog.counts as counts
    from ct_assets.eventlog import EventLog
    from ct_assets.eventlog.tally import feedback_tally
    from ct_assets_tests.test_journal_checkpoint import ISO_DAYS, forget_process_state
    counts.CHECKPOINT_COMMITS, counts.MARK_EVERY = 3, 2
    root = Path(sys.argv[1])
    log = EventLog(root)
    for _ in range(int(sys.argv[2])):
        forget_process_state()
        total = log.counts().feedback
        feedback_tally(root, total // 3, total)
        log.read("prediction", dates=ISO_DAYS[:2])
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_processes_writing_checkpoints_while_the_log_grows_leave_a_usable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two reader processes start afresh again and again, each writing checkpoints, while
    a writer appends: a new process then answers as the whole journal does."""
    monkeypatch.setattr(counts, "CHECKPOINT_COMMITS", 3)
    monkeypatch.setattr(counts, "MARK_EVERY", 2)
    log = EventLog(tmp_path)
    n = append_random(log, random.Random(11), 5, 0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", _READER, str(tmp_path), "40"], env=env, stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    rng = random.Random(12)
    while any(reader.poll() is None for reader in readers):
        n = append_random(log, rng, 1, n)
    for reader in readers:
        out, _ = reader.communicate()
        assert reader.returncode == 0 and out.strip() == b"done"
    assert load_head(tmp_path) is not None
    assert_a_new_process_answers_as_the_whole_journal(log, 13)


def test_chunks_no_head_names_are_removed_once_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk left by a process whose head was replaced (or that was killed before its
    head) is removed by a later checkpoint of its date once older than STALE_SECONDS;
    the chunks the head names, and young unnamed ones, stay."""
    monkeypatch.setattr(counts, "CHECKPOINT_COMMITS", 3)
    log = EventLog(tmp_path)
    day = (T0 + timedelta(hours=1)).date().isoformat()
    folder = summary_dir(tmp_path) / day
    folder.mkdir(parents=True)
    old, young = folder / "000000000000-000000000099.msgpack", folder / ".left.tmp"
    for path in (old, young):
        path.write_bytes(b"left behind")
    os.utime(old, (1, 1))
    for k in range(4):
        log.append([prediction(k, at=T0 + timedelta(hours=1, seconds=k))])
    counts.count_events(tmp_path)
    head = load_head(tmp_path)
    assert head is not None and [r.name for r in head.chunks[day]]
    assert not old.exists() and young.exists()
    assert all((folder / ref.name).exists() for ref in head.chunks[day])


@pytest.mark.parametrize("block", [40, 300, 5000])
def test_the_journal_is_summarized_in_blocks_as_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """Blocks shorter than a record, cutting records, or holding many: the same summary;
    a torn tail is left out and damage in front of valid records is reported."""
    log = EventLog(tmp_path)
    append_random(log, random.Random(21), 15, 0)
    log.writer.close()
    expected = whole_journal_answers(tmp_path)
    monkeypatch.setattr(journal, "SCAN_BYTES", block)
    forget_process_state()
    assert answers(tmp_path) == expected
    path = journal_path(tmp_path)
    committed_bytes = path.read_bytes()
    path.write_bytes(committed_bytes + b"CTJ1\xff\x00")  # a record begun, never completed
    forget_process_state()
    assert answers(tmp_path) == expected
    damaged = bytearray(committed_bytes)
    damaged[len(damaged) // 2] ^= 0x40  # inside a record that valid ones follow
    path.write_bytes(bytes(damaged))
    forget_process_state()
    with pytest.raises(CorruptLogError, match="damaged journal record"):
        counts.count_events(tmp_path)


def test_chunk_columns_round_trip_and_take_a_few_bytes_a_frame() -> None:
    """Columns are stored as zlib-compressed differences: any int64 values round-trip
    (wrapping at the extremes), and a date's growing columns shrink many times."""
    import numpy as np

    from ct_assets.eventlog.checkpoint import pack_columns, unpack_columns

    rng = np.random.default_rng(5)
    extremes = np.array([2**63 - 1, -(2**63), 0, -1, 2**63 - 1], dtype="<i8")
    noise = rng.integers(-(2**63), 2**63 - 1, size=1000, dtype="<i8")
    n = 100_000
    growing = [
        np.cumsum(rng.integers(1, 30, size=n)),  # commit numbers
        np.cumsum(rng.integers(200, 900, size=n)),  # offsets, log offsets
        1_700_000_000_000_000 + np.cumsum(rng.integers(0, 5_000, size=n)),  # times (us)
        rng.integers(1, 10, size=n),  # counts
    ]
    columns = [c.astype("<i8").tobytes() for c in [extremes, noise, *growing, np.zeros(0)]]
    assert unpack_columns(pack_columns(columns)) == columns
    packed = pack_columns([c.astype("<i8").tobytes() for c in growing])
    assert sum(map(len, packed)) < 0.3 * sum(c.nbytes for c in growing)
    assert unpack_columns([b"\x78\x9cgarbage"]) is None

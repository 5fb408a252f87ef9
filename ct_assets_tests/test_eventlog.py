"""Unit tests of the journaled, date-partitioned event log (ct_assets.eventlog).

Layout under test: ``<root>/journal.ctj`` holds the commit records (the commit
point), ``<root>/segments/<UTC date>/seg-<n>.ctlog`` the event frames. Crashes are
simulated precisely: by cutting files at chosen bytes, or by making the writer's
low-level append fail at a chosen call.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import polars as pl
import pytest

import ct_assets.eventlog.writer as writer_module
from ct_assets.eventlog import CorruptLogError, EventLog, LayoutError
from ct_assets.eventlog.committer import CommitterClosedError, GroupCommitter, GroupStats
from ct_assets.eventlog.counts import count_events
from ct_assets.eventlog.frames import (
    HEADER,
    JOURNAL_MAGIC,
    SEGMENT_MAGIC,
    SEGMENT_SUFFIX,
    encode_frame,
    frame_at,
    scan_bytes,
    scan_segment,
)
from ct_assets.eventlog.journal import Commit, Part, committed, encode_commit, scan_journal
from ct_assets.eventlog.layout import (
    INDEX_NAME,
    JOURNAL_NAME,
    SEGMENTS_DIR,
    all_segments,
    date_segments,
    index_path,
    journal_path,
    key_date,
    segment_file,
    segment_key,
    segment_name,
)
from ct_assets.eventlog.reader import read_lines
from ct_assets.eventlog.writer import (
    AppendResult,
    EventLogWriter,
    PreparedBatch,
    prepare_batch,
)
from ct_assets.schema import (
    Event,
    EventKind,
    EventValidationError,
    FeedbackEvent,
    PredictionEvent,
    encode_event,
    kind_of,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
# Three instants on three UTC dates; the second is written with a +05:00 offset whose
# local date (2024-01-03) is not its UTC date (2024-01-02).
AT_1 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
AT_2 = datetime(2024, 1, 3, 2, 30, tzinfo=timezone(timedelta(hours=5)))
AT_3 = datetime(2024, 1, 2, 20, 0, tzinfo=timezone(timedelta(hours=-8)))
KINDS: tuple[EventKind, EventKind] = ("prediction", "feedback")


# --- helpers ----------------------------------------------------------------------------------


def utc_date(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


D1, D2, D3 = utc_date(AT_1), utc_date(AT_2), utc_date(AT_3)


def prediction(
    n: int, event_id: str | None = None, at: datetime | None = None, **features: object
) -> PredictionEvent:
    return PredictionEvent(
        event_id=event_id or f"pe-{n}",
        prediction_id=f"pred-{n}",
        timestamp=at or T0 + timedelta(seconds=n),
        features={"x": float(n), "channel": "web", **features},  # type: ignore[dict-item]
        prediction=n % 2,
        scores={"0": 0.4, "1": 0.6},
        model_version="1",
    )


def feedback(n: int, event_id: str | None = None, at: datetime | None = None) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=event_id or f"fb-{n}",
        timestamp=at or T0 + timedelta(seconds=n, milliseconds=500),
        feedback_type="explicit",
        prediction_id=f"pred-{n}",
        label=n % 3,
    )


def event_for(event_id: str) -> Event:
    """A deterministic event for an id: ``pe-<n>`` a prediction, ``fb-<n>`` feedback, spread
    over several UTC dates so that concurrent commits span dates."""
    kind, n = event_id.split("-")
    at = T0 + timedelta(hours=7 * int(n))
    return prediction(int(n), at=at) if kind == "pe" else feedback(int(n), at=at)


def id_of(line: bytes) -> str:
    event_id: str = msgspec.json.decode(line)["event_id"]
    return event_id


def ids(log: EventLog, kind: EventKind, dates: Sequence[str] | None = None) -> list[str]:
    return log.read(kind, dates=dates).get_column("event_id").to_list()


def rows(frame: pl.DataFrame) -> list[tuple[str, int]]:
    return list(zip(frame["event_id"].to_list(), frame["log_offset"].to_list(), strict=True))


def committed_frames(root: Path) -> list[tuple[Part, list[bytes]]]:
    """Every frame the journal names with its lines, read straight from the files (no reader
    code, no cache)."""
    scan = scan_journal(root)
    assert not scan.corrupt
    out: list[tuple[Part, list[bytes]]] = []
    for commit in scan.commits:
        for part in commit.parts:
            data = segment_file(root, part.segment).read_bytes()
            frame = frame_at(data, part.offset, SEGMENT_MAGIC)
            assert frame is not None and frame.length == part.length, part
            out.append((part, frame.payload.split(b"\n")[:-1]))
    return out


def committed_ids(root: Path) -> list[str]:
    """Every committed event id, in commit order."""
    return [id_of(line) for _, lines in committed_frames(root) for line in lines]


def committed_ids_by_date(root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part, lines in committed_frames(root):
        out.setdefault(key_date(part.segment), []).extend(map(id_of, lines))
    return out


def disk_ids_by_date(root: Path) -> dict[str, list[str]]:
    """Ids in every whole frame of every segment, committed or not, per date directory."""
    out: dict[str, list[str]] = {}
    for key in all_segments(root):
        for frame in scan_segment(segment_file(root, key)).frames:
            out.setdefault(key_date(key), []).extend(map(id_of, frame.lines()))
    return out


def committed_extents(root: Path) -> dict[str, int]:
    extents: dict[str, int] = {}
    for commit in scan_journal(root).commits:
        for part in commit.parts:
            extents[part.segment] = max(extents.get(part.segment, 0), part.offset + part.length)
    return extents


def segment_sizes(root: Path) -> dict[str, int]:
    return {key: segment_file(root, key).stat().st_size for key in all_segments(root)}


def file_bytes(root: Path) -> dict[str, bytes]:
    """The bytes of the log's files: not the event id index's (a cache of the journal, whose
    SQLite files change when merely read)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(INDEX_NAME)
    }


def journal_records(root: Path) -> list[tuple[int, int]]:
    """(offset, end) of every whole journal record."""
    scan = scan_segment(journal_path(root), magic=JOURNAL_MAGIC)
    return [(frame.offset, frame.end) for frame in scan.frames]


def frame_bytes(events: Sequence[Event]) -> bytes:
    lines = [encode_event(e) for e in events]
    n_pred = sum(isinstance(e, PredictionEvent) for e in events)
    return encode_frame(lines, n_pred, len(lines) - n_pred)


def snapshot(log: EventLog) -> tuple[object, ...]:
    """Everything a reader can observe of the log."""
    return (
        rows(log.read("prediction")),
        rows(log.read("feedback")),
        log.counts(),
        log.counts_by_date(),
        [log.partition_fingerprint(day) for day in (D1, D2, D3)],
    )


# --- frames, journal records and layout -------------------------------------------------------


def test_encode_frame_header_and_scan(tmp_path: Path) -> None:
    lines = [b'{"a":1}', b'{"b":2}']
    data = encode_frame(lines, 1, 1)
    magic, length, _crc, n_pred, n_fb = HEADER.unpack_from(data)
    assert (magic, n_pred, n_fb) == (SEGMENT_MAGIC, 1, 1)
    assert length == len(data) - HEADER.size == len(b'{"a":1}\n{"b":2}\n')

    path = tmp_path / segment_name(1)
    path.write_bytes(data + encode_frame([b'{"c":3}'], 0, 1))
    scan = scan_segment(path)
    assert not scan.torn and not scan.corrupt
    assert scan.valid_end == scan.file_size == path.stat().st_size
    assert [f.lines() for f in scan.frames] == [lines, [b'{"c":3}']]
    assert [f.offset for f in scan.frames] == [0, len(data)]
    assert scan.frames[0].end == len(data) == scan.frames[1].offset
    later = scan_segment(path, start=len(data))  # absolute offsets from a frame boundary
    assert [f.offset for f in later.frames] == [len(data)]
    assert later.valid_end == path.stat().st_size
    # a segment frame is not a journal record, and the other way round
    assert scan_bytes(data, magic=JOURNAL_MAGIC).frames == []


def test_scan_tells_a_torn_tail_from_damage() -> None:
    first, second = encode_frame([b'{"a":1}'], 1, 0), encode_frame([b'{"b":2}'], 1, 0)
    torn = scan_bytes(first + second[:-3])
    assert [f.offset for f in torn.frames] == [0]
    assert torn.torn and not torn.corrupt and torn.valid_end == len(first)

    damaged = bytearray(first + second)
    damaged[HEADER.size + 2] ^= 0x01  # inside the first payload: a valid frame follows
    scan = scan_bytes(bytes(damaged))
    assert scan.frames == [] and scan.valid_end == 0
    assert scan.torn and scan.corrupt


def test_journal_records_round_trip(tmp_path: Path) -> None:
    commits = [
        Commit(1, 10, [Part(segment_key(D1, 1), 0, 40, 1, 2)]),
        Commit(
            2, 20, [Part(segment_key(D1, 1), 40, 50, 0, 1), Part(segment_key(D2, 3), 0, 9, 2, 0)]
        ),
    ]
    records = [encode_commit(c) for c in commits]
    assert [HEADER.unpack_from(r)[3:] for r in records] == [(1, 2), (2, 1)]
    journal_path(tmp_path).write_bytes(b"".join(records))
    scan = scan_journal(tmp_path)
    assert scan.commits == commits
    assert not scan.torn and not scan.corrupt and scan.valid_end == sum(map(len, records))
    assert scan_journal(tmp_path, len(records[0])).commits == commits[1:]
    journal_path(tmp_path).write_bytes(records[0] + records[1][:-1])
    torn = scan_journal(tmp_path)
    assert torn.commits == commits[:1] and torn.torn and torn.valid_end == len(records[0])
    assert scan_journal(tmp_path / "missing").commits == []


def test_segment_keys_sort_in_sequence_order_and_ignore_other_files(tmp_path: Path) -> None:
    assert all_segments(tmp_path / "missing") == [] == date_segments(tmp_path, D1)
    for day, seq in ((D2, 10), (D2, 2), (D1, 1), (D2, 1)):
        path = segment_file(tmp_path, segment_key(day, seq))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    (tmp_path / SEGMENTS_DIR / D2 / "notes.txt").touch()
    (tmp_path / SEGMENTS_DIR / D2 / (segment_name(3) + ".tmp")).touch()
    (tmp_path / SEGMENTS_DIR / "not-a-date").mkdir()
    (tmp_path / SEGMENTS_DIR / "not-a-date" / segment_name(1)).touch()
    assert date_segments(tmp_path, D2) == [segment_key(D2, s) for s in (1, 2, 10)]
    assert all_segments(tmp_path) == [segment_key(D1, 1)] + [segment_key(D2, s) for s in (1, 2, 10)]
    assert segment_name(7) == f"seg-00000007{SEGMENT_SUFFIX}"
    assert segment_file(tmp_path, segment_key(D1, 1)) == (
        tmp_path / SEGMENTS_DIR / D1 / segment_name(1)
    )


def test_old_single_directory_layout_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / segment_name(1)).write_bytes(frame_bytes([prediction(0)]))
    before = file_bytes(old)
    with pytest.raises(LayoutError):
        EventLog(old)
    with pytest.raises(LayoutError):
        EventLogWriter(old)
    assert file_bytes(old) == before  # nothing created or changed
    # the new layout itself is accepted again and again
    EventLog(tmp_path / "new").append([prediction(0)])
    assert ids(EventLog(tmp_path / "new"), "prediction") == ["pe-0"]


# --- append and read --------------------------------------------------------------------------


def test_append_and_read_roundtrip(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log")
    batch: list[Event] = [prediction(0), feedback(0), prediction(1), feedback(1), prediction(2)]
    before = datetime.now(UTC)
    result = log.append(batch)
    after = datetime.now(UTC)
    assert (result.accepted, result.duplicates) == (5, 0)
    assert result.accepted_ids == [e.event_id for e in batch]

    preds = log.read("prediction")
    assert preds.height == 3
    assert preds["event_id"].to_list() == ["pe-0", "pe-1", "pe-2"]
    assert preds["log_offset"].to_list() == [0, 1, 2]
    assert preds["kind"].to_list() == ["prediction"] * 3
    assert preds["prediction_id"].to_list() == ["pred-0", "pred-1", "pred-2"]
    assert preds["prediction"].to_list() == ["0", "1", "0"]  # labels/predictions are strings
    assert preds["model_version"].to_list() == ["1"] * 3
    assert preds["timestamp"].dtype == pl.Datetime("us", "UTC")
    assert preds["timestamp"].to_list() == [T0 + timedelta(seconds=i) for i in range(3)]
    assert preds["features"].to_list() == [{"x": float(i), "channel": "web"} for i in range(3)]
    assert preds["scores"].to_list() == [{"0": 0.4, "1": 0.6}] * 3
    assert all(before <= r <= after for r in preds["received_at"].to_list())

    fb = log.read("feedback")
    assert fb["event_id"].to_list() == ["fb-0", "fb-1"]
    assert fb["log_offset"].to_list() == [0, 1]
    assert fb["label"].to_list() == ["0", "1"]
    assert fb["feedback_type"].to_list() == ["explicit"] * 2
    assert fb["prediction_id"].to_list() == ["pred-0", "pred-1"]
    assert all(before <= r <= after for r in fb["received_at"].to_list())


def test_log_offset_counts_events_of_one_kind_across_batches(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0), feedback(0)])
    log.append([feedback(1)])
    log.append([prediction(1), prediction(2), feedback(2)])
    assert rows(log.read("prediction")) == [("pe-0", 0), ("pe-1", 1), ("pe-2", 2)]
    assert rows(log.read("feedback")) == [("fb-0", 0), ("fb-1", 1), ("fb-2", 2)]


def _fresh_read(log: EventLog, kind: EventKind) -> pl.DataFrame:
    """The events of ``kind`` decoded at once, without the process's decoded frames."""
    from ct_assets.eventlog.decode import decode_entries
    from ct_assets.eventlog.decoded import piece_entries as _entries
    from ct_assets.eventlog.reader import _pieces

    return decode_entries(_entries(_pieces(log.root, kind, None, None)), kind)


def test_reads_of_frames_with_and_without_features_equal_a_fresh_decode(tmp_path: Path) -> None:
    """Feedback carrying its features next to feedback without (a null column in its own
    frame), and features missing from a whole frame: reads built from the frames decoded
    one by one equal decoding all the lines at once."""
    log = EventLog(tmp_path)
    with_features = [
        msgspec.structs.replace(feedback(n), features={"x": float(n), "channel": "web"})
        for n in range(3)
    ]
    log.append(with_features)
    log.append([feedback(3), feedback(4)])
    log.append([prediction(5), prediction(6, x=None)])
    log.append([prediction(7, x=None), prediction(8, x=None)])
    log.append([msgspec.structs.replace(feedback(9), features={"x": 9.0, "channel": "app"})])
    for kind in KINDS:
        log.read(kind)  # decoded frame by frame, and kept
        fresh = _fresh_read(log, kind)
        assert log.read(kind).equals(fresh), kind
        assert log.read(kind).schema == fresh.schema, kind
    features = log.read("feedback")["features"].to_list()
    assert features[3] is None and features[0] == {"x": 0.0, "channel": "web"}


def test_reads_of_growing_dates_equal_a_fresh_decode_after_every_commit(tmp_path: Path) -> None:
    """Each date's rows are kept concatenated and only the frames committed since are
    appended: after every commit (commits spanning dates, out of date order, features null
    in some frames), reads of every set of dates equal decoding their lines at once, in
    commit order, with global offsets."""
    from ct_assets.eventlog.decode import decode_entries
    from ct_assets.eventlog.decoded import piece_entries as _entries
    from ct_assets.eventlog.reader import _pieces

    log = EventLog(tmp_path)
    days = {D1: AT_1, D2: AT_2, D3: AT_3}
    order = [D2, D1, D3, D1, D2, D3, D2, D1]
    for n, day in enumerate(order):
        other = order[(n + 1) % len(order)]
        batch = [
            prediction(10 * n, at=days[day], x=None if n % 3 == 0 else float(n)),
            prediction(10 * n + 1, at=days[other]),
            feedback(10 * n, at=days[day]),
            msgspec.structs.replace(
                feedback(10 * n + 1, at=days[other]), features={"x": float(n), "channel": "web"}
            ),
        ]
        log.append(batch)
        for kind in KINDS:
            for dates in ([D1], [D2, D3], [D1, D2, D3], None):
                fresh = decode_entries(_entries(_pieces(log.root, kind, None, dates)), kind)
                read = log.read(kind, dates=dates)
                assert read.equals(fresh), (n, kind, dates)
                assert read.schema == fresh.schema, (n, kind, dates)
                offsets = read["log_offset"].to_list()
                assert offsets == sorted(offsets), (n, kind, dates)


def test_small_decoded_caches_evict_and_still_read_what_a_fresh_decode_reads(
    tmp_path: Path,
) -> None:
    """Caches holding fewer rows than a date drop their oldest entries (or keep nothing):
    reads through them stay equal to decoding the lines at once."""
    from ct_assets.eventlog.decode import decode_entries
    from ct_assets.eventlog.decoded import DateFrames, DecodedFrames
    from ct_assets.eventlog.decoded import piece_entries as _entries
    from ct_assets.eventlog.reader import _pieces

    log = EventLog(tmp_path)
    root = str(tmp_path.resolve())
    for max_rows in (1, 3, 5):
        dates = DateFrames(max_rows, DecodedFrames(max_rows))
        for n in range(6):
            at = AT_1 if n % 2 else AT_2
            log.append([prediction(100 * max_rows + 2 * n, at=at), feedback(100 * max_rows + n)])
            for kind in KINDS:
                for wanted in ([D1], [D2], None):
                    pieces = _pieces(log.root, kind, None, wanted)
                    fresh = decode_entries(_entries(pieces), kind)
                    read = dates.read(root, kind, pieces)
                    if not pieces:
                        assert read is None  # nothing to read: the reader decodes nothing
                        continue
                    assert read is not None and read.equals(fresh), (max_rows, n, kind, wanted)
        assert dates._cache.rows <= max_rows


def test_read_limit_returns_the_first_events(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    for i in range(5):
        log.append([prediction(2 * i), prediction(2 * i + 1), feedback(i)])
    assert ids(log, "prediction") == [f"pe-{i}" for i in range(10)]
    for limit in (1, 3, 4, 9, 10, 50):
        limited = log.read("prediction", limit=limit)
        n = min(limit, 10)
        assert limited["event_id"].to_list() == [f"pe-{i}" for i in range(n)], limit
        assert limited["log_offset"].to_list() == list(range(n))
    assert log.read("feedback", limit=0).height == 0
    assert [id_of(x) for x in read_lines(tmp_path, "feedback", limit=2)] == ["fb-0", "fb-1"]


def test_empty_log_reads_as_empty_frames(tmp_path: Path) -> None:
    full = EventLog(tmp_path / "full")
    full.append([prediction(0), feedback(0)])
    log = EventLog(tmp_path / "new")
    assert (tmp_path / "new").is_dir()
    for kind in KINDS:
        frame, reference = log.read(kind), full.read(kind)
        assert frame.height == 0 and reference.height == 1
        # every column a non-empty read has (structs get their fields from data)
        assert frame.columns == reference.columns
        structs = ("features", "scores")
        expected = {c: t for c, t in reference.schema.items() if c not in structs}
        assert {c: t for c, t in frame.schema.items() if c not in structs} == expected
    assert (log.counts().prediction, log.counts().feedback) == (0, 0)
    assert log.counts_by_date() == {}
    assert log.partition_fingerprint(D1) == log.partition_fingerprint(D2)
    assert log.append([]).accepted == 0
    assert all_segments(tmp_path / "new") == []
    assert scan_journal(tmp_path / "new").commits == []


def test_received_at_is_the_commit_time_recorded_by_the_log(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    client_claim = msgspec.structs.replace(prediction(0), received_at=T0)
    before = datetime.now(UTC)
    log.append([client_claim, feedback(0), prediction(1, at=AT_2)])
    middle = datetime.now(UTC)
    raw = encode_event(msgspec.structs.replace(feedback(1), received_at=T0))  # as a client sent it
    log.writer.commit([prepare_batch([feedback(1)], raw_lines=[raw])])
    after = datetime.now(UTC)
    first, second = (
        datetime.fromtimestamp(0, UTC) + timedelta(microseconds=c.committed_at_us)
        for c in scan_journal(tmp_path).commits
    )
    assert before <= first <= middle <= second <= after
    for reader in (log, EventLog(tmp_path)):
        assert reader.read("prediction")["received_at"].to_list() == [first, first]
        assert reader.read("feedback")["received_at"].to_list() == [first, second]
        assert reader.read("feedback", dates=[D1])["received_at"].to_list() == [first, second]
    # what the log encodes itself carries no client claim
    for line in read_lines(tmp_path, "prediction"):
        assert msgspec.json.decode(line).get("received_at") is None


def test_counts_per_kind(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0), prediction(1), feedback(0)])
    log.append([feedback(1), feedback(2), feedback(3)])
    commits = len(scan_journal(tmp_path).commits)
    log.append([prediction(1), feedback(3)])  # duplicates only: no commit
    assert len(scan_journal(tmp_path).commits) == commits
    counts = log.counts()
    assert (counts.prediction, counts.feedback) == (2, 4)
    assert counts.of("prediction") == 2 and counts.of("feedback") == 4
    assert count_events(tmp_path) == counts == EventLog(tmp_path).counts()
    assert len(log.read("prediction")) == counts.prediction
    assert len(log.read("feedback")) == counts.feedback


def test_mixed_kind_batches_and_a_feature_named_kind(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    batch: list[Event] = [
        prediction(0, kind="feedback"),
        feedback(0),
        feedback(1),
        prediction(1, kind="prediction"),
        prediction(2),
        feedback(2),
    ]
    log.append(batch)
    parts = scan_journal(tmp_path).commits[0].parts
    assert sum(p.n_prediction for p in parts) == 3 and sum(p.n_feedback for p in parts) == 3
    assert {key_date(p.segment) for p in parts} == {D1}
    assert rows(log.read("prediction")) == [("pe-0", 0), ("pe-1", 1), ("pe-2", 2)]
    assert rows(log.read("feedback")) == [("fb-0", 0), ("fb-1", 1), ("fb-2", 2)]
    assert log.read("prediction")["features"].to_list()[0]["kind"] == "feedback"
    assert log.read("prediction", limit=2)["event_id"].to_list() == ["pe-0", "pe-1"]
    assert log.read("feedback", limit=1)["event_id"].to_list() == ["fb-0"]


def test_a_raw_line_holding_a_carriage_return_is_one_event(tmp_path: Path) -> None:
    """A line kept as the client sent it may hold ``\\r`` as JSON whitespace: frames split on
    ``\\n`` only, or the frame would read back as more lines than events."""
    events: list[Event] = [feedback(0), feedback(1)]
    raws = [encode_event(e) for e in events]
    raws[0] = raws[0].replace(b",", b",\r", 1)  # whitespace, as an NDJSON client may send it
    assert msgspec.json.decode(raws[0], type=FeedbackEvent) == events[0]
    EventLogWriter(tmp_path).commit([prepare_batch(events, raw_lines=raws)])
    assert EventLogWriter(tmp_path).contains("fb-1")
    assert ids(EventLog(tmp_path), "feedback") == ["fb-0", "fb-1"]
    assert read_lines(tmp_path, "feedback") == raws  # stored as sent


# --- date partitioning ------------------------------------------------------------------------


def dated_batches() -> list[list[Event]]:
    return [
        [prediction(0, at=AT_1), feedback(0, at=AT_2), prediction(1, at=AT_3)],
        [feedback(1, at=AT_1), prediction(2, at=AT_2), prediction(3, at=AT_2)],
        [feedback(2, at=AT_3), prediction(4, at=AT_1), feedback(3, at=AT_2)],
    ]


def test_events_land_in_the_segment_of_their_utc_date(tmp_path: Path) -> None:
    assert len({D1, D2, D3}) == 3 and AT_2.date().isoformat() != D2  # the offset matters
    log = EventLog(tmp_path)
    batches = dated_batches()
    for batch in batches:
        log.append(batch)
    expected: dict[str, list[str]] = {}
    for batch in batches:
        for event in batch:
            expected.setdefault(utc_date(event.timestamp), []).append(event.event_id)
    folders = sorted(p.name for p in (tmp_path / SEGMENTS_DIR).iterdir())
    assert folders == sorted(expected)
    for day in expected:
        assert [p.name for p in (tmp_path / SEGMENTS_DIR / day).iterdir()] == [segment_name(1)]
    assert disk_ids_by_date(tmp_path) == expected
    assert committed_ids_by_date(tmp_path) == expected
    # a batch spanning three dates is one commit with one frame per date
    commits = scan_journal(tmp_path).commits
    assert [c.sequence for c in commits] == [1, 2, 3]
    assert [{key_date(p.segment) for p in c.parts} for c in commits] == [
        {utc_date(e.timestamp) for e in batch} for batch in batches
    ]


def test_counts_by_date(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    events = [e for batch in dated_batches() for e in batch]
    for batch in dated_batches():
        log.append(batch)
    by_date = log.counts_by_date()
    assert list(by_date) == sorted({D1, D2, D3})
    for day, counts in by_date.items():
        on_day = [e for e in events if utc_date(e.timestamp) == day]
        n_pred = sum(isinstance(e, PredictionEvent) for e in on_day)
        assert (counts.prediction, counts.feedback) == (n_pred, len(on_day) - n_pred), day
        assert log.counts([day]) == counts
    both = log.counts([D1, D3])
    assert both.prediction == by_date[D1].prediction + by_date[D3].prediction
    assert both.feedback == by_date[D1].feedback + by_date[D3].feedback
    assert log.counts(["1999-01-01"]).prediction == 0
    total = log.counts()
    assert total.prediction == sum(c.prediction for c in by_date.values())
    assert total.feedback == sum(c.feedback for c in by_date.values())


def test_read_of_dates_returns_their_events_with_global_offsets(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    for batch in dated_batches():
        log.append(batch)
    for kind in KINDS:
        full = log.read(kind)
        assert full["log_offset"].to_list() == list(range(full.height))
        day_of = {
            event_id: utc_date(ts)
            for event_id, ts in zip(full["event_id"], full["timestamp"], strict=True)
        }
        for chosen in ([D1], [D2], [D3], [D1, D3], [D1, D2, D3], ["1999-01-01"]):
            part = log.read(kind, dates=chosen)
            expected = [(i, o) for i, o in rows(full) if day_of[i] in chosen]
            assert rows(part) == expected, (kind, chosen)
            for limit in (0, 2, 4):  # with dates, a limit bounds the global offset
                limited = rows(log.read(kind, limit=limit, dates=chosen))
                assert limited == [(i, o) for i, o in expected if o < limit], (kind, chosen)
        assert log.read(kind, dates=[]).height == 0


@pytest.mark.parametrize("seed", range(6))
def test_dated_reads_equal_a_filtered_full_read_over_random_commits(
    tmp_path: Path, seed: int
) -> None:
    """Reads of some dates find their frames through the per-date index of the journal:
    whatever the commits (of one or several dates, of either kind) and the reads in
    between (which extend the index and the caches), they equal the whole log read afresh
    and filtered, with the same global offsets, for any ``since`` and ``limit``."""
    rng = random.Random(seed)
    days = [T0 + timedelta(days=d, hours=1) for d in range(5)]
    log = EventLog(tmp_path)
    n = 0
    for _ in range(12):
        batch: list[Event] = []
        for _ in range(rng.randint(1, 6)):
            at = rng.choice(days) + timedelta(minutes=n)
            make = prediction if rng.random() < 0.5 else feedback
            batch.append(make(n, at=at))
            n += 1
        log.append(batch)
        full = {kind: read_lines(tmp_path, kind) for kind in KINDS}
        for kind in KINDS:
            whole = log.read(kind)
            assert len(full[kind]) == whole.height
            day_of = dict(zip(whole["event_id"], whole["timestamp"].dt.date(), strict=True))
            chosen = sorted(rng.sample(days, rng.randint(1, 3)))
            wanted = {d.date() for d in chosen}
            dates = sorted(d.date().isoformat() for d in chosen)
            since = rng.randint(0, whole.height)
            limit = rng.choice([None, rng.randint(0, whole.height + 1)])
            expected = [
                (i, o)
                for i, o in rows(whole)
                if day_of[i] in wanted and o >= since and (limit is None or o < limit)
            ]
            assert rows(log.read(kind, limit=limit, dates=dates, since=since)) == expected
            assert rows(log.read(kind, dates=dates)) == [
                (i, o) for i, o in rows(whole) if day_of[i] in wanted
            ]


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_reading_one_date_does_not_open_other_dates(tmp_path: Path, damage: str) -> None:
    log = EventLog(tmp_path)
    for batch in dated_batches():
        log.append(batch)
    full = {kind: rows(log.read(kind)) for kind in KINDS}
    d1_rows = {kind: rows(log.read(kind, dates=[D1])) for kind in KINDS}
    counts = log.counts_by_date()
    (victim_key,) = date_segments(tmp_path, D2)
    victim = segment_file(tmp_path, victim_key)
    if damage == "deleted":
        victim.unlink()
    else:
        victim.write_bytes(b"\xff" * victim.stat().st_size)

    for reader in (log, EventLog(tmp_path)):
        for kind in KINDS:
            assert rows(reader.read(kind, dates=[D1])) == d1_rows[kind]
            on_d1_d3 = rows(reader.read(kind, dates=[D1, D3]))
            assert set(on_d1_d3) < set(full[kind]) and on_d1_d3
            if damage == "deleted":  # found at once, though the rows are held in process
                with pytest.raises(CorruptLogError, match=re.escape(str(victim))):
                    reader.read(kind)
            else:  # overwritten in place: this process answers from the rows it checked
                assert rows(reader.read(kind)) == full[kind]
        assert reader.counts_by_date() == counts  # from the journal alone
    for kind in KINDS:  # a process that holds no rows reads the frames, and finds the damage
        assert str(victim) in read_error_in_fresh_process(tmp_path, kind)


def read_error_in_fresh_process(root: Path, kind: EventKind) -> str:
    """The CorruptLogError a new process gets reading every event of ``kind`` ('' if none)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from ct_assets.eventlog import CorruptLogError, EventLog\n"
        "try:\n"
        "    EventLog(Path(sys.argv[1])).read(sys.argv[2])\n"
        "except CorruptLogError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root), kind], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_partition_fingerprint_changes_only_with_its_date(tmp_path: Path) -> None:
    log = EventLog(tmp_path, segment_max_bytes=2048)
    empty = log.partition_fingerprint(D3)
    log.append([prediction(0, at=AT_1), prediction(1, at=AT_2)])
    seen = {D1: [log.partition_fingerprint(D1)], D2: [log.partition_fingerprint(D2)]}

    def check(changed: str | None) -> None:
        for day in (D1, D2):
            now = log.partition_fingerprint(day)
            assert now == EventLog(tmp_path).partition_fingerprint(day)  # stable across readers
            if day == changed:
                assert now not in seen[day], f"{day} got an event; fingerprint must change"
                seen[day].append(now)
            else:
                assert now == seen[day][-1], f"{day} unchanged; fingerprint must not change"

    log.append([feedback(2, at=AT_2)])
    check(D2)
    log.append([prediction(0, at=AT_1), feedback(2, at=AT_2)])  # duplicates: nothing committed
    check(None)
    for i in range(3, 30):  # also across segment rotation
        log.append([prediction(i, at=AT_1 + timedelta(minutes=i))])
        check(D1)
    assert len(date_segments(tmp_path, D1)) > 1
    log.append([feedback(40, at=AT_3)])
    check(None)
    assert log.partition_fingerprint(D3) != empty


# --- idempotence ------------------------------------------------------------------------------


def test_duplicate_within_a_batch_is_stored_once(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    result = log.append([prediction(0), prediction(0), feedback(0), prediction(1), feedback(0)])
    assert (result.accepted, result.duplicates) == (3, 2)
    assert result.accepted_ids == ["pe-0", "fb-0", "pe-1"]
    assert sorted(committed_ids(tmp_path)) == ["fb-0", "pe-0", "pe-1"]
    assert (log.counts().prediction, log.counts().feedback) == (2, 1)


def test_duplicates_within_one_commit_of_one_date_and_kind_are_stored_once(tmp_path: Path) -> None:
    writer = EventLogWriter(tmp_path)
    single = writer.append([prediction(0), prediction(1), prediction(0)])
    assert (single.accepted, single.duplicates, single.accepted_ids) == (2, 1, ["pe-0", "pe-1"])
    results = writer.commit(
        [
            prepare_batch([prediction(2), prediction(3)]),
            prepare_batch([prediction(3), prediction(4)]),  # pe-3 came with the batch before
            prepare_batch([prediction(5), prediction(1)]),  # pe-1 is already in the log
            prepare_batch([feedback(2), feedback(2)]),
        ]
    )
    assert [(r.accepted_ids, r.duplicates) for r in results] == [
        (["pe-2", "pe-3"], 0),
        (["pe-4"], 1),
        (["pe-5"], 1),
        (["fb-2"], 1),
    ]
    assert sorted(committed_ids(tmp_path)) == sorted([*(f"pe-{i}" for i in range(6)), "fb-2"])
    assert ids(EventLog(tmp_path), "prediction") == [f"pe-{i}" for i in range(6)]


def test_duplicate_across_batches_is_stored_once_and_first_copy_wins(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0), prediction(1)])
    # the second copy has another feature and another date: neither is stored
    again = log.append([prediction(1, at=AT_2, x_extra=99.0), prediction(2)])
    assert (again.accepted, again.duplicates, again.accepted_ids) == (1, 1, ["pe-2"])
    assert ids(log, "prediction") == ["pe-0", "pe-1", "pe-2"]
    assert "x_extra" not in log.read("prediction")["features"].struct.fields
    assert D2 not in log.counts_by_date()
    sizes = segment_sizes(tmp_path)
    journal = journal_path(tmp_path).read_bytes()
    everything = log.append([prediction(0), prediction(1), prediction(2)])
    assert (everything.accepted, everything.duplicates, everything.accepted_ids) == (0, 3, [])
    assert segment_sizes(tmp_path) == sizes  # nothing was written
    assert journal_path(tmp_path).read_bytes() == journal


def test_duplicates_are_detected_after_reopening(tmp_path: Path) -> None:
    EventLog(tmp_path).append([prediction(0, at=AT_1), feedback(0, at=AT_2), prediction(1)])
    before = file_bytes(tmp_path)

    reopened = EventLog(tmp_path)
    result = reopened.append([feedback(0, at=AT_2), prediction(1), prediction(0, at=AT_1)])
    assert (result.accepted, result.duplicates) == (0, 3)
    assert file_bytes(tmp_path) == before

    result = EventLog(tmp_path).append([prediction(2), feedback(0), feedback(1)])
    assert (result.accepted, result.duplicates, result.accepted_ids) == (2, 1, ["pe-2", "fb-1"])
    assert sorted(committed_ids(tmp_path)) == sorted(["pe-0", "fb-0", "pe-1", "pe-2", "fb-1"])


def test_writer_learns_ids_appended_by_another_writer(tmp_path: Path) -> None:
    first, second = EventLogWriter(tmp_path), EventLogWriter(tmp_path)
    first.append([prediction(0, at=AT_2)])
    assert second.contains("pe-0") and not second.contains("pe-1")
    second.append([prediction(1, at=AT_3)])
    assert first.contains("pe-1")
    result = first.append([prediction(0), prediction(1), prediction(2)])
    assert result.accepted_ids == ["pe-2"]
    assert committed_ids(tmp_path) == ["pe-0", "pe-1", "pe-2"]
    assert [c.sequence for c in scan_journal(tmp_path).commits] == [1, 2, 3]


def test_threads_sharing_a_directory_store_each_id_once(tmp_path: Path) -> None:
    logs = [EventLog(tmp_path), EventLog(tmp_path)]
    accepted: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        log = logs[n % 2]
        try:
            for start in range(n * 10, n * 10 + 40, 4):
                result = log.append([event_for(f"pe-{i}") for i in range(start, start + 4)])
                accepted[n].extend(result.accepted_ids)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = committed_ids(tmp_path)
    assert sorted(stored) == sorted(f"pe-{i}" for i in range(70))
    assert len(stored) == len(set(stored))
    assert sorted(i for batch in accepted for i in batch) == sorted(stored)
    assert [c.sequence for c in scan_journal(tmp_path).commits] == list(
        range(1, len(scan_journal(tmp_path).commits) + 1)
    )
    assert rows(EventLog(tmp_path).read("prediction")) == [(i, n) for n, i in enumerate(stored)]


def _process_writer(
    root: str, event_ids: list[str], batch: int, barrier: object, queue: object
) -> None:
    log = EventLog(Path(root), segment_max_bytes=4096)
    barrier.wait(timeout=60)  # type: ignore[attr-defined]
    accepted: list[str] = []
    duplicates = 0
    for start in range(0, len(event_ids), batch):
        result = log.append([event_for(i) for i in event_ids[start : start + batch]])
        accepted.extend(result.accepted_ids)
        duplicates += result.duplicates
    queue.put((os.getpid(), accepted, duplicates))  # type: ignore[attr-defined]


def test_concurrent_processes_store_every_id_exactly_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    n_proc = 4
    per_process = [
        [f"pe-{i}" if i % 3 else f"fb-{i}" for i in range(p * 30, p * 30 + 90)]
        for p in range(n_proc)
    ]
    universe = sorted({i for ids_ in per_process for i in ids_})
    barrier = ctx.Barrier(n_proc)
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_process_writer, args=(str(tmp_path), ids_, 3, barrier, queue))
        for ids_ in per_process
    ]
    for proc in procs:
        proc.start()
    for proc in procs:  # the results are small: joining before draining the queue is safe
        proc.join(timeout=90)
        assert proc.exitcode == 0, f"writer process exited with {proc.exitcode}"
    results = [queue.get(timeout=10) for _ in procs]

    accepted = [i for _, acc, _ in results for i in acc]
    assert sorted(accepted) == universe  # each id acknowledged as new exactly once
    assert sum(dup for _, _, dup in results) == sum(map(len, per_process)) - len(universe)
    stored = committed_ids(tmp_path)
    assert sorted(stored) == universe
    assert len(stored) == len(set(stored))
    scan = scan_journal(tmp_path)
    assert not scan.torn and [c.sequence for c in scan.commits] == list(
        range(1, len(scan.commits) + 1)
    )
    assert segment_sizes(tmp_path) == committed_extents(tmp_path)  # no orphan bytes
    assert len(committed_ids_by_date(tmp_path)) > 1
    log = EventLog(tmp_path)
    n_pred = sum(i.startswith("pe-") for i in universe)
    assert (log.counts().prediction, log.counts().feedback) == (n_pred, len(universe) - n_pred)
    preds = log.read("prediction")
    assert preds["event_id"].to_list() == [i for i in stored if i.startswith("pe-")]
    assert preds["log_offset"].to_list() == list(range(n_pred))


# --- crash safety -----------------------------------------------------------------------------

# Two events per date; the retry after the crash sends them in two commits, the first with
# smaller frames than the crashed ones (so that leftovers past a new frame would show).
CRASHING: list[Event] = [
    prediction(10, at=AT_1),
    feedback(12, at=AT_1),
    feedback(10, at=AT_2),
    prediction(12, at=AT_2),
    prediction(11, at=AT_3),
    feedback(11, at=AT_3),
]
RETRY_FIRST: list[Event] = [CRASHING[0], CRASHING[2], CRASHING[5]]
RETRY_REST: list[Event] = [CRASHING[1], CRASHING[3], CRASHING[4]]


class CrashingAppend:
    """Stands in for the writer's synced append; the ``fail_at``-th call (0-based) writes half of
    its bytes (``torn``) or none and raises, as a crash at that point would leave the files.
    With ``fail_at=None`` it only records the calls: (path, offset, length)."""

    def __init__(self, fail_at: int | None, torn: bool = False) -> None:
        self.real = writer_module._append_synced
        self.fail_at = fail_at
        self.torn = torn
        self.calls: list[tuple[Path, int, int]] = []

    def __call__(self, path: Path, data: bytes, expected_size: int) -> None:
        self.calls.append((path, expected_size, len(data)))
        if len(self.calls) - 1 != self.fail_at:
            self.real(path, data, expected_size)
            return
        if self.torn:
            self.real(path, data[: len(data) // 2], expected_size)
        raise OSError(f"simulated crash writing {path}")


def writes_of_a_commit(root: Path, events: Sequence[Event], scratch: Path) -> int:
    """How many synced appends committing ``events`` to a copy of ``root`` takes."""
    shutil.copytree(root, scratch)
    counter = CrashingAppend(None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writer_module, "_append_synced", counter)
        EventLog(scratch).append(events)
    shutil.rmtree(scratch)
    assert counter.calls[-1][0].name == JOURNAL_NAME  # the journal record comes last
    return len(counter.calls)


@pytest.mark.parametrize("writer", ["same", "new"])
@pytest.mark.parametrize("torn", [False, True], ids=["clean", "torn"])
@pytest.mark.parametrize("crash_at", ["first_frame", "middle_frame", "journal"])
def test_commit_interrupted_before_its_journal_record_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, torn: bool, crash_at: str
) -> None:
    root = tmp_path / "log"
    log = EventLog(root)
    log.append([prediction(0, at=AT_1), feedback(0, at=AT_2)])
    log.append([prediction(1, at=AT_1), feedback(1, at=AT_2)])  # D3 has no commit yet
    observed = snapshot(log)
    extents = committed_extents(root)
    journal = journal_path(root).read_bytes()
    committed_before = committed_ids(root)
    n_writes = writes_of_a_commit(root, CRASHING, tmp_path / "scratch")
    assert n_writes > 3  # frames on three dates, then the journal record
    fail_at = {"first_frame": 0, "middle_frame": (n_writes - 1) // 2, "journal": n_writes - 1}

    crash = CrashingAppend(fail_at[crash_at], torn)
    monkeypatch.setattr(writer_module, "_append_synced", crash)
    with pytest.raises(OSError, match="simulated crash"):
        log.append(CRASHING)
    monkeypatch.setattr(writer_module, "_append_synced", crash.real)

    # the crash left whole frames of the writes that completed (and half of the torn one)
    *done, (failed_path, failed_at, failed_len) = crash.calls
    assert len(done) == fail_at[crash_at]
    orphan_frames = 0
    orphan_ids: list[str] = []
    for key, size in segment_sizes(root).items():
        path = segment_file(root, key)
        ends = [extents.get(key, 0)] + [at + n for p, at, n in done if p == path]
        if torn and failed_path == path:
            ends.append(failed_at + failed_len // 2)
        assert size == max(ends), key
        past = scan_segment(path, start=extents.get(key, 0))
        assert past.torn == (torn and failed_path == path)
        orphan_frames += len(past.frames)
        orphan_ids += [id_of(line) for frame in past.frames for line in frame.lines()]
    assert orphan_frames == len(done)
    assert set(orphan_ids) <= {e.event_id for e in CRASHING} and len(orphan_ids) >= len(done)
    new_journal = journal_path(root).read_bytes()
    assert new_journal.startswith(journal)
    assert (len(new_journal) > len(journal)) == (torn and crash_at == "journal")

    # readers see nothing of it
    for reader in (log, EventLog(root)):
        assert snapshot(reader) == observed
    assert committed_ids(root) == committed_before

    # the next writer: the ids were never acknowledged, and the orphan bytes go
    appender = log if writer == "same" else EventLog(root)
    for event in CRASHING:
        assert not appender.writer.contains(event.event_id)
    if writer == "new":  # its first look at the log cut everything not committed
        appender.writer.refresh()
        assert segment_sizes(root) == {k: extents.get(k, 0) for k in segment_sizes(root)}
        assert journal_path(root).read_bytes() == journal
    first = appender.append(RETRY_FIRST)
    assert (first.accepted, first.duplicates) == (len(RETRY_FIRST), 0)
    for part in scan_journal(root).commits[-1].parts:  # nothing left past the new frames
        assert segment_file(root, part.segment).stat().st_size == part.offset + part.length
    rest = appender.append(RETRY_REST)
    assert (rest.accepted, rest.duplicates) == (len(RETRY_REST), 0)

    scan = scan_journal(root)
    assert not scan.torn and len(scan.commits) == 4
    final = segment_sizes(root)
    assert final == {k: committed_extents(root).get(k, 0) for k in final}
    retried = [e.event_id for e in RETRY_FIRST + RETRY_REST]
    assert sorted(committed_ids(root)) == sorted(committed_before + retried)
    assert disk_ids_by_date(root) == committed_ids_by_date(root)
    for reader in (log, EventLog(root)):
        assert sorted(ids(reader, "prediction")) == ["pe-0", "pe-1", "pe-10", "pe-11", "pe-12"]
        assert sorted(ids(reader, "feedback")) == ["fb-0", "fb-1", "fb-10", "fb-11", "fb-12"]
        assert ids(reader, "feedback", dates=[D3]) == ["fb-11"]
        assert reader.counts_by_date()[D3].prediction == 1
    again = EventLog(root).append(CRASHING)
    assert (again.accepted, again.duplicates) == (0, len(CRASHING))


@pytest.mark.parametrize("content", ["empty", "orphan"])
def test_a_segment_left_behind_by_a_rotation_crash_is_reused(tmp_path: Path, content: str) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0, at=AT_1)])
    # a crash after rotation created the next segment of D1 (and the first one of D2)
    leftovers = [
        segment_file(tmp_path, segment_key(D1, 2)),
        segment_file(tmp_path, segment_key(D2, 1)),
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"" if content == "empty" else frame_bytes([prediction(99)]))
    assert ids(EventLog(tmp_path), "prediction") == ["pe-0"]
    result = EventLog(tmp_path).append(
        [prediction(1, at=AT_1), feedback(1, at=AT_2), prediction(99)]
    )
    assert result.accepted_ids == ["pe-1", "fb-1", "pe-99"]
    log = EventLog(tmp_path)
    assert sorted(ids(log, "prediction")) == ["pe-0", "pe-1", "pe-99"]
    assert ids(log, "feedback", dates=[D2]) == ["fb-1"]
    final = segment_sizes(tmp_path)
    assert final == {k: committed_extents(tmp_path).get(k, 0) for k in final}
    assert disk_ids_by_date(tmp_path) == committed_ids_by_date(tmp_path)


def build_three_commits(root: Path) -> list[list[Event]]:
    log = EventLog(root)
    batches = dated_batches()
    for batch in batches:
        log.append(batch)
    return batches


def test_journal_torn_in_its_last_record_at_every_offset(tmp_path: Path) -> None:
    source = tmp_path / "source"
    batches = build_three_commits(source)
    data = journal_path(source).read_bytes()
    records = journal_records(source)
    assert len(records) == 3 and records[-1][1] == len(data)
    last_start = records[-1][0]
    kept = [e for batch in batches[:-1] for e in batch]
    kept_ids = {kind: [e.event_id for e in kept if kind_of(e) == kind] for kind in KINDS}
    all_ids = [e.event_id for batch in batches for e in batch]

    for k in range(last_start, len(data)):
        crashed = tmp_path / f"cut-{k}"
        shutil.copytree(source, crashed)
        journal_path(crashed).write_bytes(data[:k])
        reader = EventLog(crashed)
        for kind in KINDS:
            assert sorted(ids(reader, kind)) == sorted(kept_ids[kind]), f"cut at byte {k}"
        assert sum(c.prediction + c.feedback for c in reader.counts_by_date().values()) == len(kept)
        result = EventLog(crashed).append(batches[-1])
        assert (result.accepted, result.duplicates) == (len(batches[-1]), 0), f"cut at byte {k}"
        scan = scan_journal(crashed)
        assert not scan.torn and not scan.corrupt and len(scan.commits) == 3
        assert scan.valid_end == journal_path(crashed).stat().st_size
        assert sorted(committed_ids(crashed)) == sorted(all_ids)
        final = segment_sizes(crashed)
        assert final == {key: committed_extents(crashed).get(key, 0) for key in final}
        shutil.rmtree(crashed)


@pytest.mark.parametrize("order", ["growing", "shrinking"])
def test_journal_cut_at_every_offset_shows_a_prefix_of_whole_commits(
    tmp_path: Path, order: str
) -> None:
    source = tmp_path / "source"
    batches = build_three_commits(source)
    data = journal_path(source).read_bytes()
    ends = [end for _, end in journal_records(source)]
    crashed = tmp_path / "crashed"
    shutil.copytree(source, crashed)
    cuts = range(len(data) + 1) if order == "growing" else range(len(data), -1, -1)
    for k in cuts:  # rewritten in place: the reader's journal cache must follow
        journal_path(crashed).write_bytes(data[:k])
        whole = sum(end <= k for end in ends)
        survivors = [e for batch in batches[:whole] for e in batch]
        for kind in KINDS:
            expect = sorted(e.event_id for e in survivors if kind_of(e) == kind)
            got = sorted(id_of(line) for line in read_lines(crashed, kind))
            assert got == expect, f"cut at byte {k}"
        assert len(committed(crashed)) == whole
        counts = count_events(crashed)
        assert counts.prediction + counts.feedback == len(survivors)
        if k in ends:
            frame = EventLog(crashed).read("prediction")
            assert frame["log_offset"].to_list() == list(range(frame.height))


@pytest.mark.parametrize("how", ["rewritten_in_place", "deleted_and_recreated"])
def test_a_journal_recreated_at_the_same_path_is_read_afresh(tmp_path: Path, how: str) -> None:
    """The per-process journal cache must tell another log's journal from a grown one."""
    other = tmp_path / "other"
    other_log = EventLog(other)
    other_log.append([prediction(50, at=AT_2), feedback(50, at=AT_2)])
    other_log.append([prediction(51, at=AT_3), feedback(51, at=AT_3), prediction(52, at=AT_3)])
    root = tmp_path / "log"
    EventLog(root).append([prediction(0, at=AT_1), feedback(0, at=AT_1)])
    log = EventLog(root)
    assert ids(log, "prediction") == ["pe-0"]  # the journal is now cached
    replacement = journal_path(other).read_bytes()
    assert len(replacement) > journal_path(root).stat().st_size
    shutil.rmtree(root / SEGMENTS_DIR)
    shutil.copytree(other / SEGMENTS_DIR, root / SEGMENTS_DIR)
    if how == "deleted_and_recreated":
        journal_path(root).unlink()
    journal_path(root).write_bytes(replacement)
    for kind in KINDS:
        assert rows(log.read(kind)) == rows(other_log.read(kind))
    assert log.counts_by_date() == other_log.counts_by_date()


_POSITIONS: dict[str, Callable[[int], int]] = {
    "payload": lambda start: start + HEADER.size + 5,
    "length": lambda start: start + 4,
    "magic": lambda start: start,
    "checksum": lambda start: start + 8,
}


def flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x40
    path.write_bytes(bytes(data))


def kinds_in(part: Part) -> list[EventKind]:
    return [k for k, n in zip(KINDS, (part.n_prediction, part.n_feedback), strict=True) if n]


@pytest.mark.parametrize("where", sorted(_POSITIONS))
def test_damaged_committed_segment_frame_is_reported_not_cut(tmp_path: Path, where: str) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0, at=AT_1), feedback(0, at=AT_1), prediction(5, at=AT_2)])
    log.append([prediction(1, at=AT_1), feedback(1, at=AT_1)])
    log.append([prediction(2, at=AT_1), feedback(2, at=AT_1), feedback(5, at=AT_2)])
    log.writer.close()  # its commits are in the event id index now
    on_d2 = {kind: rows(log.read(kind, dates=[D2])) for kind in KINDS}
    (key,) = date_segments(tmp_path, D1)
    segment = segment_file(tmp_path, key)
    in_d1 = sorted(
        (p for c in scan_journal(tmp_path).commits for p in c.parts if p.segment == key),
        key=lambda p: p.offset,
    )
    victim = in_d1[1]  # committed frames follow it
    flip(segment, _POSITIONS[where](victim.offset))
    damaged = file_bytes(tmp_path)

    for reader in (log, EventLog(tmp_path)):
        for kind in kinds_in(victim):
            with pytest.raises(CorruptLogError, match=re.escape(str(segment))):
                reader.read(kind)
            with pytest.raises(CorruptLogError):
                reader.read(kind, dates=[D1])
        for kind in KINDS:
            assert rows(reader.read(kind, dates=[D2])) == on_d2[kind]
    # a writer checks a segment's committed frames before it first appends after them
    with pytest.raises(CorruptLogError, match=re.escape(str(segment))):
        EventLog(tmp_path).append([prediction(9, at=AT_1)])
    # a writer starting from the event id index reads no frame; one that rebuilds the
    # index from the journal reads them all, and refuses
    assert EventLogWriter(tmp_path).contains("pe-0")
    index_path(tmp_path).unlink()
    with pytest.raises(CorruptLogError):
        EventLogWriter(tmp_path).contains("pe-0")
    assert file_bytes(tmp_path) == damaged, "acknowledged frames after the damage are kept"


@pytest.mark.parametrize("replacement", ["fewer_lines", "same_lines_other_bytes"])
def test_committed_frame_replaced_by_another_valid_frame_is_reported(
    tmp_path: Path, replacement: str
) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0), feedback(0)])
    log.append([prediction(1), feedback(1), prediction(2), feedback(2)])
    (key,) = date_segments(tmp_path, D1)
    segment = segment_file(tmp_path, key)
    last = max(scan_journal(tmp_path).commits[-1].parts, key=lambda p: p.offset)
    data = segment.read_bytes()
    assert len(data) == last.offset + last.length
    frame = frame_at(data, last.offset)
    assert frame is not None and len(frame.lines()) > 1
    # whole and checksummed, but not the frame that was committed
    if replacement == "fewer_lines":
        other = encode_frame(frame.lines()[:1], min(last.n_prediction, 1), min(last.n_feedback, 1))
    else:
        lines = [line.replace(b",", b", ", 1) for line in frame.lines()]
        other = encode_frame(lines, last.n_prediction, last.n_feedback)
    segment.write_bytes(data[: last.offset] + other)
    damaged = file_bytes(tmp_path)
    for reader in (log, EventLog(tmp_path)):
        for kind in kinds_in(last):
            with pytest.raises(CorruptLogError, match=re.escape(str(segment))):
                reader.read(kind)
    with pytest.raises(CorruptLogError, match=re.escape(str(segment))):
        EventLog(tmp_path).append([prediction(9)])
    assert file_bytes(tmp_path) == damaged


def test_frame_holding_other_counts_than_its_commit_is_reported(tmp_path: Path) -> None:
    """A journal record is trusted for counts and offsets only if its frame agrees with it."""
    lines = [encode_event(prediction(i)) for i in range(3)]
    frame = encode_frame(lines, 3, 0)
    key = segment_key(D1, 1)
    segment_file(tmp_path, key).parent.mkdir(parents=True)
    segment_file(tmp_path, key).write_bytes(frame)
    commit = Commit(1, 1_700_000_000_000_000, [Part(key, 0, len(frame), 2, 0)])
    journal_path(tmp_path).write_bytes(encode_commit(commit))
    assert EventLog(tmp_path).counts().prediction == 2  # what the journal says
    with pytest.raises(CorruptLogError, match=re.escape(str(segment_file(tmp_path, key)))):
        EventLog(tmp_path).read("prediction")


@pytest.mark.parametrize("where", sorted(_POSITIONS))
def test_damaged_journal_record_before_valid_ones_stops_readers_and_writers(
    tmp_path: Path, where: str
) -> None:
    build_three_commits(tmp_path)  # written only: no reader of this process cached the journal
    records = journal_records(tmp_path)
    flip(journal_path(tmp_path), _POSITIONS[where](records[1][0]))
    damaged = file_bytes(tmp_path)

    log = EventLog(tmp_path)
    for kind in KINDS:
        with pytest.raises(CorruptLogError, match=JOURNAL_NAME):
            log.read(kind)
    with pytest.raises(CorruptLogError):
        log.counts()
    with pytest.raises(CorruptLogError):
        log.counts_by_date()
    # a writer reads the journal only past what the event id index covers (damage before
    # that is for readers to report, as above); one that rebuilds the index reads it all
    index_path(tmp_path).unlink()
    with pytest.raises(CorruptLogError, match=JOURNAL_NAME):
        log.append([prediction(9)])
    with pytest.raises(CorruptLogError):
        EventLog(tmp_path).append([prediction(1, at=AT_2)])
    assert file_bytes(tmp_path) == damaged  # nothing cut, nothing written
    assert {p: len(b) for p, b in file_bytes(tmp_path).items()} == {
        p: len(b) for p, b in damaged.items()
    }


# --- segments ---------------------------------------------------------------------------------


def test_segment_rotation_keeps_every_event_readable_in_order(tmp_path: Path) -> None:
    log = EventLog(tmp_path, segment_max_bytes=4096)
    expected_pred: list[str] = []
    expected_fb: list[str] = []
    closed: dict[str, str] = {}  # key -> sha256 of a segment that is no longer the newest
    for i in range(60):
        at = AT_1 if i % 3 else AT_2
        log.append([prediction(i, at=at), feedback(i, at=at)])
        expected_pred.append(f"pe-{i}")
        expected_fb.append(f"fb-{i}")
        for day in (D1, D2):
            for key in date_segments(tmp_path, day)[:-1]:
                digest = hashlib.sha256(segment_file(tmp_path, key).read_bytes()).hexdigest()
                assert closed.setdefault(key, digest) == digest, f"{key} changed after closing"
    for day in (D1, D2):
        keys = date_segments(tmp_path, day)
        assert len(keys) >= 2, day
        assert keys == [segment_key(day, n + 1) for n in range(len(keys))]
        for key in keys:
            path = segment_file(tmp_path, key)
            assert path.stat().st_size <= 4096
            scan = scan_segment(path)
            assert not scan.torn and scan.frames
    assert len(closed) >= 4

    assert ids(log, "prediction") == expected_pred
    assert ids(log, "feedback") == expected_fb
    assert log.read("prediction")["log_offset"].to_list() == list(range(60))
    assert (log.counts().prediction, log.counts().feedback) == (60, 60)

    # a fresh writer knows the ids of every segment, not only the newest, and leaves closed
    # segments alone
    reopened = EventLog(tmp_path, segment_max_bytes=4096)
    result = reopened.append(
        [prediction(0, at=AT_2), feedback(30), prediction(59), prediction(60, at=AT_2)]
    )
    assert result.accepted_ids == ["pe-60"]
    assert ids(reopened, "prediction") == [*expected_pred, "pe-60"]
    for key, digest in closed.items():
        assert hashlib.sha256(segment_file(tmp_path, key).read_bytes()).hexdigest() == digest


def test_a_frame_larger_than_a_segment_still_gets_written(tmp_path: Path) -> None:
    log = EventLog(tmp_path, segment_max_bytes=4096)
    log.append([prediction(0)])
    big = [prediction(i, note="y" * 200) for i in range(1, 40)]
    assert len(frame_bytes(big)) > 4096
    assert log.append(big).accepted == 39
    log.append([prediction(100)])
    assert ids(log, "prediction") == [f"pe-{i}" for i in range(40)] + ["pe-100"]
    assert date_segments(tmp_path, D1) == [segment_key(D1, n) for n in (1, 2, 3)]


# --- limits and export ------------------------------------------------------------------------


def test_oversized_event_rejects_the_batch_and_writes_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path, max_event_bytes=600)
    huge = prediction(1, at=AT_2, blob="z" * 1000)
    with pytest.raises(EventValidationError) as info:
        log.append([prediction(0), huge, feedback(0, at=AT_3)])
    assert [(e.index, e.field, e.reason) for e in info.value.errors] == [(1, "$", "too_large")]
    assert "600" in info.value.errors[0].message
    assert all_segments(tmp_path) == []
    assert not journal_path(tmp_path).exists()
    assert (log.counts().prediction, log.counts().feedback) == (0, 0)

    log.append([prediction(0)])
    before = file_bytes(tmp_path)
    with pytest.raises(EventValidationError):
        log.append([prediction(2, at=AT_3), huge])
    assert file_bytes(tmp_path) == before
    assert ids(log, "prediction") == ["pe-0"]
    assert not EventLogWriter(tmp_path).contains("pe-2")


def test_max_event_bytes_boundary(tmp_path: Path) -> None:
    event = prediction(0)
    size = len(encode_event(event))
    with pytest.raises(EventValidationError) as info:
        EventLogWriter(tmp_path / "small", max_event_bytes=size - 1).append([event])
    assert [e.reason for e in info.value.errors] == ["too_large"]
    assert all_segments(tmp_path / "small") == []
    result = EventLogWriter(tmp_path / "exact", max_event_bytes=size).append([event])
    assert result.accepted == 1
    assert committed_ids(tmp_path / "exact") == ["pe-0"]
    # a line kept as the client sent it is measured as sent
    raw = encode_event(event).replace(b",", b", ")
    with pytest.raises(EventValidationError):
        prepare_batch([event], len(raw) - 1, raw_lines=[raw])
    writer = EventLogWriter(tmp_path / "raw")
    writer.commit([prepare_batch([event], len(raw), raw_lines=[raw])])
    assert read_lines(tmp_path / "raw", "prediction") == [raw]
    assert ids(EventLog(tmp_path / "raw"), "prediction") == ["pe-0"]


def test_export_writes_one_parquet_row_per_event(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log")
    log.append([prediction(0), feedback(0), prediction(1)])
    log.append([prediction(1), prediction(2, at=AT_2), feedback(1, at=AT_3)])
    out = tmp_path / "exports" / "nested" / "predictions.parquet"
    assert log.export("prediction", out) == 3
    frame = pl.read_parquet(out)
    assert frame.height == 3
    assert frame["event_id"].to_list() == ["pe-0", "pe-1", "pe-2"]
    assert frame["log_offset"].to_list() == [0, 1, 2]
    assert frame["features"].to_list()[2] == {"x": 2.0, "channel": "web"}
    assert [p.name for p in out.parent.iterdir()] == ["predictions.parquet"]

    fb_out = tmp_path / "exports" / "feedback.parquet"
    assert log.export("feedback", fb_out) == 2
    assert pl.read_parquet(fb_out)["event_id"].to_list() == ["fb-0", "fb-1"]

    log.append([prediction(3)])  # exporting again replaces the file with the current content
    assert log.export("prediction", out) == 4
    assert pl.read_parquet(out)["event_id"].to_list() == ["pe-0", "pe-1", "pe-2", "pe-3"]


# --- group commit -----------------------------------------------------------------------------


class GatedWriter(EventLogWriter):
    """Holds every commit until ``gate`` opens, so batches queue up behind it; can fail the
    commit of any group holding the id ``fail_on``."""

    def __init__(self, root: Path, fail_on: str | None = None) -> None:
        super().__init__(root)
        self.fail_on = fail_on
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.groups: list[list[PreparedBatch]] = []

    def commit(self, batches: Sequence[PreparedBatch]) -> list[AppendResult]:
        self.groups.append(list(batches))
        self.entered.set()
        assert self.gate.wait(timeout=30), "the test never opened the gate"
        if self.fail_on is not None and any(self.fail_on in b.ids for b in batches):
            raise RuntimeError(f"simulated failure committing {self.fail_on}")
        return super().commit(batches)


def batch_of(*event_ids: str) -> PreparedBatch:
    return prepare_batch([event_for(i) for i in event_ids])


def test_group_committer_groups_concurrent_batches(tmp_path: Path) -> None:
    writer = GatedWriter(tmp_path)
    stats: list[GroupStats] = []
    committer = GroupCommitter(writer, on_group=stats.append)
    submitted: list[tuple[list[str], Future[AppendResult]]] = []  # in queue order
    order_lock = threading.Lock()

    def client(n: int) -> None:
        for j in range(5):
            # overlapping ids: thread n repeats two ids of thread n-1, and one of its own
            event_ids = [f"pe-{n * 10 + j}", f"fb-{n * 10 + j}", f"pe-{(n + 7) % 8 * 10 + j}"]
            if j == 4:
                event_ids.append(f"pe-{n * 10}")
            with order_lock:
                submitted.append((event_ids, committer.submit(batch_of(*event_ids))))

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        writer.gate.set()
    results = [future.result(timeout=30) for _, future in submitted]
    committer.close()

    seen: set[str] = set()  # batches are committed in the order they were queued
    for (event_ids, _), result in zip(submitted, results, strict=True):
        expected = [i for i in dict.fromkeys(event_ids) if i not in seen]
        seen.update(event_ids)
        assert result.accepted_ids == expected
        assert (result.accepted, result.duplicates) == (
            len(expected),
            len(event_ids) - len(expected),
        )
    stored = committed_ids(tmp_path)
    assert sorted(stored) == sorted(seen) and len(stored) == len(set(stored))
    n_commits = len(scan_journal(tmp_path).commits)
    assert n_commits == len(writer.groups) < len(submitted)  # batches were grouped
    assert sum(s.batches for s in stats) == len(submitted)
    assert sum(s.events for s in stats) == sum(len(i) for i, _ in submitted)
    assert [len(g) for g in writer.groups] == [s.batches for s in stats]


def test_group_committer_failure_reaches_every_waiter_of_the_group(tmp_path: Path) -> None:
    writer = GatedWriter(tmp_path, fail_on="pe-2")
    committer = GroupCommitter(writer)
    try:
        first = committer.submit(batch_of("pe-0"))
        assert writer.entered.wait(timeout=10)  # the committer holds the first group
        group = [committer.submit(batch_of(*i)) for i in (["pe-1"], ["pe-2", "fb-2"], ["fb-3"])]
    finally:
        writer.gate.set()
    assert first.result(timeout=30).accepted_ids == ["pe-0"]
    errors = [future.exception(timeout=30) for future in group]
    assert all(isinstance(e, RuntimeError) and "pe-2" in str(e) for e in errors), errors
    assert committed_ids(tmp_path) == ["pe-0"]
    # the committer keeps working, and the failed batches were never acknowledged
    retry = committer.submit(batch_of("pe-1", "fb-3", "pe-4"))
    assert retry.result(timeout=30).accepted_ids == ["pe-1", "fb-3", "pe-4"]
    committer.close()
    assert sorted(committed_ids(tmp_path)) == ["fb-3", "pe-0", "pe-1", "pe-4"]
    assert [len(g) for g in writer.groups] == [1, 3, 1]


def test_group_committer_close_commits_what_was_submitted(tmp_path: Path) -> None:
    writer = GatedWriter(tmp_path)
    committer = GroupCommitter(writer)
    futures: list[Future[AppendResult]] = []
    closer = threading.Thread(target=committer.close)
    try:
        futures.append(committer.submit(batch_of("pe-0")))
        assert writer.entered.wait(timeout=10)
        futures += [committer.submit(batch_of(f"pe-{n}", f"fb-{n}")) for n in (1, 2, 3)]
        closer.start()
        for n in range(100, 10_000):  # until close() shuts the door; earlier batches still count
            try:
                futures.append(committer.submit(batch_of(f"pe-{n}")))
            except CommitterClosedError:
                break
            time.sleep(0.001)
        else:
            pytest.fail("submit never raised CommitterClosedError while closing")
        assert not any(f.done() for f in futures[1:])
    finally:
        writer.gate.set()
    closer.join(timeout=30)
    assert not closer.is_alive()
    assert all(f.done() for f in futures)  # close() returned after committing everything
    accepted = [i for f in futures for i in f.result().accepted_ids]
    assert sorted(committed_ids(tmp_path)) == sorted(accepted)
    assert len(accepted) == 1 + 2 * 3 + (len(futures) - 4)  # every id of every batch
    with pytest.raises(CommitterClosedError):
        committer.submit(batch_of("pe-9999"))
    committer.close()  # a second close is harmless


def test_group_committer_reports_whether_it_is_alive(tmp_path: Path) -> None:
    committer = GroupCommitter(EventLogWriter(tmp_path))
    assert committer.alive
    committer.submit(batch_of("pe-0")).result(timeout=30)
    committer.close()
    assert not committer.alive


def test_a_failing_on_group_callback_does_not_stop_the_committer(tmp_path: Path) -> None:
    groups: list[GroupStats] = []

    def observe(stats: GroupStats) -> None:
        groups.append(stats)
        if len(groups) == 1:
            raise RuntimeError("metrics backend unavailable")

    committer = GroupCommitter(EventLogWriter(tmp_path), on_group=observe)
    try:
        assert committer.submit(batch_of("pe-0")).result(timeout=30).accepted_ids == ["pe-0"]
        later = committer.submit(batch_of("pe-1"))
        assert later.result(timeout=2).accepted_ids == ["pe-1"]
    finally:
        committer.close(timeout=2)


@pytest.mark.parametrize("where", ["payload", "checksum", "magic"])
def test_a_complete_last_journal_record_with_a_bad_checksum_is_corruption(
    tmp_path: Path, where: str
) -> None:
    """Only a short write is a torn tail: a last record that is all there but fails its
    checksum was acknowledged once, and is reported rather than cut."""
    build_three_commits(tmp_path)
    last_start, last_end = journal_records(tmp_path)[-1]
    journal = journal_path(tmp_path)
    assert last_end == journal.stat().st_size
    flip(journal, _POSITIONS[where](last_start))
    damaged = file_bytes(tmp_path)
    message = re.escape(f"{journal.resolve()}: damaged journal record at byte {last_start}")

    scan = scan_journal(tmp_path)
    assert scan.corrupt and scan.valid_end == last_start and len(scan.commits) == 2
    for kind in KINDS:
        with pytest.raises(CorruptLogError, match=message):
            EventLog(tmp_path).read(kind)
    with pytest.raises(CorruptLogError, match=re.escape(f"{journal}: damaged journal record")):
        EventLog(tmp_path).append([prediction(9)])
    assert file_bytes(tmp_path) == damaged  # nothing cut, nothing written


@pytest.mark.parametrize("keep", ["header_part", "header", "header_and_part_of_payload"])
def test_a_short_write_of_the_last_journal_record_is_a_torn_tail_to_cut(
    tmp_path: Path, keep: str
) -> None:
    batches = build_three_commits(tmp_path)
    last_start, last_end = journal_records(tmp_path)[-1]
    journal = journal_path(tmp_path)
    cut = {
        "header_part": last_start + 3,
        "header": last_start + HEADER.size,
        "header_and_part_of_payload": last_end - 1,
    }[keep]
    with open(journal, "r+b") as handle:
        handle.truncate(cut)
    kept = [e for batch in batches[:-1] for e in batch]

    scan = scan_journal(tmp_path)
    assert scan.torn and not scan.corrupt and scan.valid_end == last_start
    log = EventLog(tmp_path)
    assert sum(c.prediction + c.feedback for c in log.counts_by_date().values()) == len(kept)
    result = log.append(batches[-1])  # the writer cuts the tail and commits again
    assert (result.accepted, result.duplicates) == (len(batches[-1]), 0)
    again = scan_journal(tmp_path)
    assert not again.torn and not again.corrupt and len(again.commits) == 3


class FsyncRecorder:
    """Stands in for ``os.fsync``: notes which file or directory each call was for (by the
    descriptor's path), then really syncs it."""

    def __init__(self, steps: list[tuple[str, str]]) -> None:
        self.real = os.fsync
        self.steps = steps

    def __call__(self, fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        self.steps.append(("fsync-dir" if path.is_dir() else "fsync", str(path)))
        self.real(fd)


def test_a_commit_fsyncs_its_segment_frames_then_the_journal_then_acknowledges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = EventLogWriter(tmp_path)
    writer.append([prediction(0, at=AT_1)])  # the log, its journal and D1's segment exist
    committer = GroupCommitter(writer)
    steps: list[tuple[str, str]] = []
    monkeypatch.setattr(os, "fsync", FsyncRecorder(steps))
    # frames on two dates, one of them new (its segment file and folder are created)
    batch = prepare_batch([prediction(1, at=AT_1), feedback(1, at=AT_1), prediction(2, at=AT_2)])
    try:
        future = committer.submit(batch)
        future.add_done_callback(lambda done: steps.append(("ack", repr(done.result()))))
        result = future.result(timeout=30)
    finally:
        monkeypatch.undo()
        committer.close()

    assert (result.accepted, result.duplicates) == (3, 0)
    journal = str(journal_path(tmp_path).resolve())
    frames = [
        str(segment_file(tmp_path, part.segment).resolve())
        for part in scan_journal(tmp_path).commits[-1].parts
    ]
    assert len(frames) == 3 and len(set(frames)) == 2  # two frames on D1's segment, one on D2's
    files = [(step, path) for step, path in steps if step != "fsync-dir"]
    # each frame's segment synced once per frame, in the commit's order; then the journal;
    # then the caller hears of it; nothing is synced after the acknowledgement
    assert files[:-2] == [("fsync", path) for path in frames]
    assert files[-2] == ("fsync", journal)
    assert files[-1][0] == "ack" and steps[-1] == files[-1]
    # a new segment's directory entries are durable before the journal names it
    directories = [i for i, (step, _) in enumerate(steps) if step == "fsync-dir"]
    assert directories and max(directories) < steps.index(("fsync", journal))

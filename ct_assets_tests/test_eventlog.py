"""Unit tests of the framed, append-only event log (ct_assets.eventlog)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import polars as pl
import pytest

from ct_assets.eventlog import CorruptLogError, EventLog
from ct_assets.eventlog.frames import (
    HEADER,
    MAGIC,
    SEGMENT_SUFFIX,
    encode_frame,
    iter_frames,
    scan_segment,
    segment_name,
    segment_paths,
)
from ct_assets.eventlog.reader import count_events, read_lines
from ct_assets.eventlog.writer import EventLogWriter
from ct_assets.schema import (
    Event,
    EventValidationError,
    FeedbackEvent,
    PredictionEvent,
    encode_event,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def prediction(n: int, event_id: str | None = None, **features: object) -> PredictionEvent:
    return PredictionEvent(
        event_id=event_id or f"pe-{n}",
        prediction_id=f"pred-{n}",
        timestamp=T0 + timedelta(seconds=n),
        features={"x": float(n), "channel": "web", **features},  # type: ignore[dict-item]
        prediction=n % 2,
        scores={"0": 0.4, "1": 0.6},
        model_version="1",
    )


def feedback(n: int, event_id: str | None = None) -> FeedbackEvent:
    return FeedbackEvent(
        event_id=event_id or f"fb-{n}",
        timestamp=T0 + timedelta(seconds=n, milliseconds=500),
        feedback_type="explicit",
        prediction_id=f"pred-{n}",
        label=n % 3,
    )


def event_for(event_id: str) -> Event:
    """A deterministic event for an id: ``pe-<n>`` is a prediction, ``fb-<n>`` feedback."""
    kind, n = event_id.split("-")
    return prediction(int(n)) if kind == "pe" else feedback(int(n))


def ids(log: EventLog, kind: str) -> list[str]:
    return log.read(kind).get_column("event_id").to_list()  # type: ignore[arg-type]


def all_ids(root: Path) -> list[str]:
    """Every stored event id in append order, straight from the frames."""
    out: list[str] = []
    for frame in iter_frames(root):
        out.extend(msgspec.json.decode(line)["event_id"] for line in frame.lines())
    return out


def only_segment(root: Path) -> Path:
    paths = segment_paths(root)
    assert len(paths) == 1, paths
    return paths[0]


def frame_bytes(events: Sequence[Event]) -> bytes:
    lines = [encode_event(msgspec.structs.replace(e, received_at=T0)) for e in events]
    n_pred = sum(isinstance(e, PredictionEvent) for e in events)
    return encode_frame(lines, n_pred, len(lines) - n_pred)


# --- frames -----------------------------------------------------------------------------------


def test_encode_frame_header_and_scan(tmp_path: Path) -> None:
    lines = [b'{"a":1}', b'{"b":2}']
    data = encode_frame(lines, 1, 1)
    magic, length, _crc, n_pred, n_fb = HEADER.unpack_from(data)
    assert (magic, n_pred, n_fb) == (MAGIC, 1, 1)
    assert length == len(data) - HEADER.size == len(b'{"a":1}\n{"b":2}\n')

    path = tmp_path / segment_name(1)
    path.write_bytes(data + encode_frame([b'{"c":3}'], 0, 1))
    scan = scan_segment(path)
    assert not scan.torn and scan.valid_end == scan.file_size == path.stat().st_size
    assert [f.lines() for f in scan.frames] == [lines, [b'{"c":3}']]
    assert [f.offset for f in scan.frames] == [0, len(data)]
    assert scan.frames[0].end == len(data) == scan.frames[1].offset
    # scanning from a frame boundary sees the frames after it, with absolute offsets
    later = scan_segment(path, start=len(data))
    assert [f.offset for f in later.frames] == [len(data)]
    assert later.valid_end == path.stat().st_size


def test_scan_stops_at_a_torn_frame(tmp_path: Path) -> None:
    good = encode_frame([b'{"a":1}'], 1, 0)
    path = tmp_path / segment_name(1)
    path.write_bytes(good + encode_frame([b'{"b":2}'], 1, 0)[:-3])
    scan = scan_segment(path)
    assert len(scan.frames) == 1
    assert scan.torn and scan.valid_end == len(good) < scan.file_size


def test_segment_names_sort_in_append_order_and_ignore_other_files(tmp_path: Path) -> None:
    assert segment_paths(tmp_path / "missing") == []
    for seq in (10, 2, 1):
        (tmp_path / segment_name(seq)).touch()
    (tmp_path / ".lock").touch()
    (tmp_path / "notes.txt").touch()
    (tmp_path / (segment_name(3) + ".tmp")).touch()
    assert [p.name for p in segment_paths(tmp_path)] == [
        segment_name(1),
        segment_name(2),
        segment_name(10),
    ]
    assert segment_name(7) == f"seg-00000007{SEGMENT_SUFFIX}"


# --- append and read --------------------------------------------------------------------------


def test_append_and_read_roundtrip(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log")
    batch: list[Event] = [prediction(0), feedback(0), prediction(1), feedback(1), prediction(2)]
    before = datetime.now(UTC)
    result = log.append(batch)
    after = datetime.now(UTC)
    assert (result.accepted, result.duplicates) == (5, 0)
    assert result.accepted_ids == ["pe-0", "fb-0", "pe-1", "fb-1", "pe-2"]

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
    received = preds["received_at"].to_list()
    assert all(before <= r <= after for r in received)

    fb = log.read("feedback")
    assert fb["event_id"].to_list() == ["fb-0", "fb-1"]
    assert fb["log_offset"].to_list() == [0, 1]
    assert fb["label"].to_list() == ["0", "1"]
    assert fb["feedback_type"].to_list() == ["explicit"] * 2
    assert fb["prediction_id"].to_list() == ["pred-0", "pred-1"]


def test_log_offset_counts_events_of_one_kind_across_batches(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0), feedback(0)])
    log.append([feedback(1)])
    log.append([prediction(1), prediction(2), feedback(2)])
    preds, fb = log.read("prediction"), log.read("feedback")
    assert list(zip(preds["event_id"], preds["log_offset"], strict=True)) == [
        ("pe-0", 0),
        ("pe-1", 1),
        ("pe-2", 2),
    ]
    assert list(zip(fb["event_id"], fb["log_offset"], strict=True)) == [
        ("fb-0", 0),
        ("fb-1", 1),
        ("fb-2", 2),
    ]


def test_read_limit_returns_the_first_events(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    for i in range(5):
        log.append([prediction(2 * i), prediction(2 * i + 1), feedback(i)])
    assert ids(log, "prediction") == [f"pe-{i}" for i in range(10)]
    limited = log.read("prediction", limit=3)
    assert limited["event_id"].to_list() == ["pe-0", "pe-1", "pe-2"]
    assert limited["log_offset"].to_list() == [0, 1, 2]
    assert log.read("feedback", limit=0).height == 0


def test_empty_log_reads_as_empty_frames(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "new")
    assert (tmp_path / "new").is_dir()
    for kind in ("prediction", "feedback"):
        frame = log.read(kind)  # type: ignore[arg-type]
        assert frame.height == 0
        assert {"event_id", "log_offset", "timestamp", "kind"} <= set(frame.columns)
    counts = log.counts()
    assert (counts.prediction, counts.feedback) == (0, 0)
    assert log.append([]).accepted == 0
    assert segment_paths(tmp_path / "new") == []


def test_received_at_is_stamped_by_the_log(tmp_path: Path) -> None:
    stamped = datetime(2030, 1, 1, tzinfo=UTC)
    writer = EventLogWriter(tmp_path)
    client_claim = msgspec.structs.replace(prediction(0), received_at=T0)
    writer.append([client_claim, feedback(0)], received_at=stamped)
    log = EventLog(tmp_path)
    assert log.read("prediction")["received_at"].to_list() == [stamped]
    assert log.read("feedback")["received_at"].to_list() == [stamped]


def test_counts_per_kind(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0), prediction(1), feedback(0)])
    log.append([feedback(1), feedback(2), feedback(3)])
    log.append([prediction(1), feedback(3)])  # duplicates only: no frame
    counts = log.counts()
    assert (counts.prediction, counts.feedback) == (2, 4)
    assert counts.of("prediction") == 2 and counts.of("feedback") == 4
    assert count_events(tmp_path) == counts
    assert len(log.read("prediction")) == counts.prediction
    assert len(log.read("feedback")) == counts.feedback


# --- idempotence ------------------------------------------------------------------------------


def test_duplicate_within_a_batch_is_stored_once(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    result = log.append([prediction(0), prediction(0), feedback(0), prediction(1), feedback(0)])
    assert (result.accepted, result.duplicates) == (3, 2)
    assert result.accepted_ids == ["pe-0", "fb-0", "pe-1"]
    assert all_ids(tmp_path) == ["pe-0", "fb-0", "pe-1"]
    assert (log.counts().prediction, log.counts().feedback) == (2, 1)


def test_duplicate_across_batches_is_stored_once_and_first_copy_wins(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0), prediction(1)])
    again = log.append([prediction(1, x_extra=99.0), prediction(2)])
    assert (again.accepted, again.duplicates, again.accepted_ids) == (1, 1, ["pe-2"])
    assert ids(log, "prediction") == ["pe-0", "pe-1", "pe-2"]
    assert "x_extra" not in log.read("prediction")["features"].struct.fields
    everything = log.append([prediction(0), prediction(1), prediction(2)])
    assert (everything.accepted, everything.duplicates, everything.accepted_ids) == (0, 3, [])
    assert len(scan_segment(only_segment(tmp_path)).frames) == 2  # nothing was written


def test_duplicates_are_detected_after_reopening(tmp_path: Path) -> None:
    EventLog(tmp_path).append([prediction(0), feedback(0), prediction(1)])
    size = only_segment(tmp_path).stat().st_size

    reopened = EventLog(tmp_path)
    result = reopened.append([feedback(0), prediction(1), prediction(0)])
    assert (result.accepted, result.duplicates) == (0, 3)
    assert only_segment(tmp_path).stat().st_size == size

    result = EventLog(tmp_path).append([prediction(2), feedback(0), feedback(1)])
    assert (result.accepted, result.duplicates, result.accepted_ids) == (2, 1, ["pe-2", "fb-1"])
    assert all_ids(tmp_path) == ["pe-0", "fb-0", "pe-1", "pe-2", "fb-1"]


def test_writer_learns_ids_appended_by_another_writer(tmp_path: Path) -> None:
    first, second = EventLogWriter(tmp_path), EventLogWriter(tmp_path)
    first.append([prediction(0)])
    assert second.contains("pe-0") and not second.contains("pe-1")
    second.append([prediction(1)])
    assert first.contains("pe-1")
    result = first.append([prediction(0), prediction(1), prediction(2)])
    assert result.accepted_ids == ["pe-2"]
    assert all_ids(tmp_path) == ["pe-0", "pe-1", "pe-2"]


def test_threads_sharing_a_directory_store_each_id_once(tmp_path: Path) -> None:
    logs = [EventLog(tmp_path), EventLog(tmp_path)]
    accepted: list[list[str]] = [[] for _ in range(4)]

    def work(n: int) -> None:
        log = logs[n % 2]
        for start in range(n * 10, n * 10 + 40, 4):
            result = log.append([event_for(f"pe-{i}") for i in range(start, start + 4)])
            accepted[n].extend(result.accepted_ids)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = all_ids(tmp_path)
    assert sorted(stored) == sorted(f"pe-{i}" for i in range(70))
    assert len(stored) == len(set(stored))
    assert sorted(i for batch in accepted for i in batch) == sorted(stored)


# --- segments ---------------------------------------------------------------------------------


def test_segment_rotation_keeps_every_event_readable_in_order(tmp_path: Path) -> None:
    log = EventLog(tmp_path, segment_max_bytes=4096)
    expected_pred: list[str] = []
    expected_fb: list[str] = []
    for i in range(60):
        log.append([prediction(i), feedback(i)])
        expected_pred.append(f"pe-{i}")
        expected_fb.append(f"fb-{i}")
    paths = segment_paths(tmp_path)
    assert len(paths) >= 4
    assert [p.name for p in paths] == [segment_name(i + 1) for i in range(len(paths))]
    for path in paths:
        assert path.stat().st_size <= 4096
        scan = scan_segment(path)
        assert not scan.torn and scan.frames

    assert ids(log, "prediction") == expected_pred
    assert ids(log, "feedback") == expected_fb
    assert log.read("prediction")["log_offset"].to_list() == list(range(60))
    assert (log.counts().prediction, log.counts().feedback) == (60, 60)

    # a fresh writer knows the ids of every segment, not only the newest
    reopened = EventLog(tmp_path, segment_max_bytes=4096)
    result = reopened.append([prediction(0), feedback(30), prediction(59), prediction(60)])
    assert result.accepted_ids == ["pe-60"]
    assert ids(reopened, "prediction") == [*expected_pred, "pe-60"]


def test_a_frame_larger_than_a_segment_still_gets_written(tmp_path: Path) -> None:
    log = EventLog(tmp_path, segment_max_bytes=4096)
    log.append([prediction(0)])
    big = [prediction(i, note="y" * 200) for i in range(1, 40)]
    assert len(frame_bytes(big)) > 4096
    assert log.append(big).accepted == 39
    log.append([prediction(100)])
    assert ids(log, "prediction") == [f"pe-{i}" for i in range(40)] + ["pe-100"]
    assert len(segment_paths(tmp_path)) == 3


def test_damaged_closed_segment_stops_writers(tmp_path: Path) -> None:
    log = EventLog(tmp_path, segment_max_bytes=4096)
    for i in range(40):
        log.append([prediction(i)])
    paths = segment_paths(tmp_path)
    assert len(paths) >= 2
    data = bytearray(paths[0].read_bytes())
    data[HEADER.size + 5] ^= 0xFF
    paths[0].write_bytes(bytes(data))
    sizes = [p.stat().st_size for p in paths]

    with pytest.raises(CorruptLogError):
        EventLog(tmp_path, segment_max_bytes=4096).append([prediction(1000)])
    assert [p.stat().st_size for p in segment_paths(tmp_path)] == sizes  # nothing modified


# --- crash safety -----------------------------------------------------------------------------


def _torn_tails() -> dict[str, bytes]:
    frame = frame_bytes([prediction(10), feedback(10), prediction(11)])
    corrupt = bytearray(frame)
    corrupt[HEADER.size + 3] ^= 0x01
    return {
        "half_frame": frame[: len(frame) // 2],
        "all_but_last_byte": frame[:-1],
        "header_only": frame[: HEADER.size],
        "partial_header": frame[:7],
        "bad_checksum": bytes(corrupt),
        "garbage": b"\x13\x37garbage\xff\xfe" * 9,
        "zeros": b"\x00" * 512,
    }


@pytest.mark.parametrize("tail_name", sorted(_torn_tails()))
@pytest.mark.parametrize("writer", ["same", "new"])
def test_torn_tail_is_invisible_and_cut_off_by_the_next_append(
    tmp_path: Path, tail_name: str, writer: str
) -> None:
    log = EventLog(tmp_path)
    batch_a: list[Event] = [prediction(0), feedback(0), prediction(1)]
    log.append(batch_a)
    segment = only_segment(tmp_path)
    size_a = segment.stat().st_size
    with open(segment, "ab") as handle:  # the crashed write of batch B (10, 11)
        handle.write(_torn_tails()[tail_name])
    assert segment.stat().st_size > size_a

    for reader in (log, EventLog(tmp_path)):
        assert ids(reader, "prediction") == ["pe-0", "pe-1"]
        assert ids(reader, "feedback") == ["fb-0"]
        assert (reader.counts().prediction, reader.counts().feedback) == (2, 1)

    # The batch was never acknowledged: retrying it stores it, as new events.
    appender = log if writer == "same" else EventLog(tmp_path)
    result = appender.append([prediction(10), feedback(10), prediction(11)])
    assert (result.accepted, result.duplicates) == (3, 0)
    scan = scan_segment(segment)
    assert not scan.torn
    assert len(scan.frames) == 2 and scan.frames[1].offset == size_a
    for reader in (log, EventLog(tmp_path)):
        assert ids(reader, "prediction") == ["pe-0", "pe-1", "pe-10", "pe-11"]
        assert ids(reader, "feedback") == ["fb-0", "fb-10"]
    assert only_segment(tmp_path) == segment


@pytest.mark.parametrize("where", ["payload", "length", "magic", "checksum"])
def test_damaged_frame_before_acknowledged_ones_is_reported_not_cut(
    tmp_path: Path, where: str
) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0), feedback(0)])
    first_end = only_segment(tmp_path).stat().st_size
    log.append([prediction(1), feedback(1)])
    log.append([prediction(2), feedback(2)])
    segment = only_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    position = {
        "payload": first_end + HEADER.size + 20,
        "length": first_end + 4,
        "magic": first_end,
        "checksum": first_end + 8,
    }[where]
    data[position] ^= 0x40
    segment.write_bytes(bytes(data))

    damaged = segment.read_bytes()
    for reader in (log, EventLog(tmp_path)):
        with pytest.raises(CorruptLogError):
            reader.read("prediction")
        with pytest.raises(CorruptLogError):
            reader.counts()
    # a writer that has not yet read past the damage refuses to append after it
    with pytest.raises(CorruptLogError):
        EventLog(tmp_path).append([prediction(9)])
    assert segment.read_bytes() == damaged, "acknowledged frames after the damage are kept"


def test_crash_at_every_write_offset_leaves_a_prefix_of_whole_batches(tmp_path: Path) -> None:
    source = tmp_path / "source"
    log = EventLog(source)
    batches: list[list[Event]] = [
        [prediction(0), feedback(0)],
        [prediction(1)],
        [feedback(1), feedback(2), prediction(2), prediction(3)],
        [feedback(3)],
        [prediction(4), feedback(4), prediction(5)],
    ]
    ends: list[int] = []
    for batch in batches:
        log.append(batch)
        ends.append(only_segment(source).stat().st_size)
    data = only_segment(source).read_bytes()
    assert ends[-1] == len(data)

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    segment = crashed / segment_name(1)
    for k in range(len(data) + 1):
        segment.write_bytes(data[:k])
        whole = sum(end <= k for end in ends)
        survivors = [e for batch in batches[:whole] for e in batch]
        expect_pred = [e.event_id for e in survivors if isinstance(e, PredictionEvent)]
        expect_fb = [e.event_id for e in survivors if isinstance(e, FeedbackEvent)]
        got_pred = [msgspec.json.decode(x)["event_id"] for x in read_lines(crashed, "prediction")]
        got_fb = [msgspec.json.decode(x)["event_id"] for x in read_lines(crashed, "feedback")]
        assert (got_pred, got_fb) == (expect_pred, expect_fb), f"cut at byte {k}"
        counts = count_events(crashed)
        assert (counts.prediction, counts.feedback) == (len(expect_pred), len(expect_fb))
        if k in ends or k % 41 == 0:
            frame = EventLog(crashed).read("prediction")
            assert frame["event_id"].to_list() == expect_pred
            assert frame["log_offset"].to_list() == list(range(len(expect_pred)))


def test_recovery_after_a_crash_at_sampled_offsets(tmp_path: Path) -> None:
    source = tmp_path / "source"
    log = EventLog(source)
    batches: list[list[Event]] = [[prediction(0), feedback(0)], [prediction(1), feedback(1)]]
    ends = []
    for batch in batches:
        log.append(batch)
        ends.append(only_segment(source).stat().st_size)
    data = only_segment(source).read_bytes()
    # k = 0 (an empty segment) is covered by test_append_to_an_empty_newest_segment
    cuts = sorted({1, HEADER.size, *ends, *(e - 1 for e in ends), *range(37, len(data), 37)})
    for k in cuts:
        crashed = tmp_path / f"crashed-{k}"
        crashed.mkdir()
        (crashed / segment_name(1)).write_bytes(data[:k])
        whole = sum(end <= k for end in ends)
        kept = [e.event_id for batch in batches[:whole] for e in batch]
        lost = [e for batch in batches[whole:] for e in batch]
        retry = EventLog(crashed).append([*lost, prediction(9)])
        assert retry.accepted_ids == [*(e.event_id for e in lost), "pe-9"], f"cut at byte {k}"
        assert all_ids(crashed) == [*kept, *retry.accepted_ids]
        assert not scan_segment(crashed / segment_name(1)).torn
        shutil.rmtree(crashed)


@pytest.mark.parametrize("earlier_segments", [0, 1])
def test_append_to_an_empty_newest_segment(tmp_path: Path, earlier_segments: int) -> None:
    # A crash right after rotation created (touched) the next segment leaves it empty.
    if earlier_segments:
        EventLog(tmp_path).append([prediction(0)])
    (tmp_path / segment_name(earlier_segments + 1)).touch()
    result = EventLog(tmp_path).append([prediction(1), feedback(1)])
    assert result.accepted_ids == ["pe-1", "fb-1"]
    assert all_ids(tmp_path) == ["pe-0", "pe-1", "fb-1"][1 - earlier_segments :]


# --- limits and export ------------------------------------------------------------------------


def test_oversized_event_rejects_the_batch_and_writes_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path, max_event_bytes=600)
    huge = prediction(1, blob="z" * 1000)
    with pytest.raises(EventValidationError) as info:
        log.append([prediction(0), huge, feedback(0)])
    assert [(e.index, e.field, e.reason) for e in info.value.errors] == [(1, "$", "too_large")]
    assert "600" in info.value.errors[0].message
    assert segment_paths(tmp_path) == []
    assert (log.counts().prediction, log.counts().feedback) == (0, 0)

    log.append([prediction(0)])
    size = only_segment(tmp_path).stat().st_size
    with pytest.raises(EventValidationError):
        log.append([prediction(2), huge])
    assert only_segment(tmp_path).stat().st_size == size
    assert ids(log, "prediction") == ["pe-0"]
    assert not EventLogWriter(tmp_path).contains("pe-2")


def test_max_event_bytes_boundary(tmp_path: Path) -> None:
    stamp = datetime(2024, 2, 2, tzinfo=UTC)
    event = prediction(0)
    size = len(encode_event(msgspec.structs.replace(event, received_at=stamp)))
    with pytest.raises(EventValidationError):
        EventLogWriter(tmp_path / "small", max_event_bytes=size - 1).append([event], stamp)
    result = EventLogWriter(tmp_path / "exact", max_event_bytes=size).append([event], stamp)
    assert result.accepted == 1


def test_export_writes_one_parquet_row_per_event(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log")
    log.append([prediction(0), feedback(0), prediction(1)])
    log.append([prediction(1), prediction(2), feedback(1)])
    out = tmp_path / "exports" / "nested" / "predictions.parquet"
    assert log.export("prediction", out) == 3
    frame = pl.read_parquet(out)
    assert frame.height == 3
    assert frame["event_id"].to_list() == ["pe-0", "pe-1", "pe-2"]
    assert frame["features"].to_list()[2] == {"x": 2.0, "channel": "web"}
    assert [p.name for p in out.parent.iterdir()] == ["predictions.parquet"]

    fb_out = tmp_path / "exports" / "feedback.parquet"
    assert log.export("feedback", fb_out) == 2
    assert pl.read_parquet(fb_out)["event_id"].to_list() == ["fb-0", "fb-1"]

    # exporting again replaces the file with the current content
    log.append([prediction(3)])
    assert log.export("prediction", out) == 4
    assert pl.read_parquet(out).height == 4


# --- many processes ---------------------------------------------------------------------------


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
    stored = all_ids(tmp_path)
    assert sorted(stored) == universe
    assert len(stored) == len(set(stored))
    for path in segment_paths(tmp_path):
        assert not scan_segment(path).torn
    log = EventLog(tmp_path)
    n_pred = sum(i.startswith("pe-") for i in universe)
    assert (log.counts().prediction, log.counts().feedback) == (n_pred, len(universe) - n_pred)
    assert sorted(ids(log, "prediction")) == sorted(i for i in universe if i.startswith("pe-"))


# --- known bugs -------------------------------------------------------------------------------


def test_feature_named_kind_does_not_confuse_the_reader(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.append([prediction(0, kind="feedback"), feedback(0)])
    assert ids(log, "feedback") == ["fb-0"]
    assert ids(log, "prediction") == ["pe-0"]

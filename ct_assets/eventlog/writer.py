"""Durable, idempotent, append-only writes to the event log.

Guarantees:

* a commit (one batch, or a group of batches from :mod:`.committer`) is atomic:
  after a crash it is wholly present or wholly absent, whatever dates it spans;
* :meth:`EventLogWriter.commit` returns only after the event frames and the
  journal record that commits them are fsynced;
* an ``event_id`` already in the log (or earlier in the same commit) is
  acknowledged as a duplicate and not stored again, across restarts and across
  processes: writers serialise on an exclusive ``flock`` and, holding it, look the
  commit's ids up in the event id index (:mod:`.idindex`, on disk), which every
  commit updates inside that lock right after its journal record is fsynced
  (what a writer knows of the ids committed, and the index's repairs: :mod:`.dedup`);
* the index is a cache of the journal, never its master: a writer holding the lock
  first checks it against the journal and catches it up from the journal's tail
  (a writer killed between its journal record and the index update), cuts what it
  holds past the journal's end, and rebuilds it from the journal when it is
  missing, damaged or another journal's. So a writer starts in constant time and
  memory whatever the log holds: it reads no segment to start;
* before its first append to a segment, a writer checks the committed frames of
  that segment (once, at most ``segment_max_bytes``): it never appends after damage
  (:mod:`.segments`);
* closed segments are never modified; bytes past the committed end of a
  segment (a write whose commit never happened) are cut off before the next
  write to it, and by every writer when it starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec

from ct_assets.eventlog.archive import archived_segments, is_archived
from ct_assets.eventlog.dedup import IdDedup
from ct_assets.eventlog.frames import HEADER, CorruptLogError, encode_frame, fsync_dir
from ct_assets.eventlog.idindex import Indexed
from ct_assets.eventlog.journal import Commit, Part, encode_commit
from ct_assets.eventlog.layout import (
    LOCK_NAME,
    SEGMENTS_DIR,
    check_layout,
    date_segments,
    journal_path,
    key_sequence,
    log_lock,
    segment_file,
    segment_key,
)
from ct_assets.eventlog.tally import Tally, merge, tally_lines
from ct_assets.schema import (
    Event,
    EventValidationError,
    FieldError,
    PredictionEvent,
    ReasonCode,
    encode_event,
)


@dataclass(frozen=True)
class AppendResult:
    accepted: int
    duplicates: int
    accepted_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PreparedBatch:
    """A validated batch, encoded for the log: what a commit needs and nothing more.

    ``lines`` are the events' JSON, one line each. ``received_at`` is not part of
    them: the log records when each commit became durable and readers report that.
    """

    ids: list[str]
    lines: list[bytes]
    is_prediction: list[bool]
    dates: list[str]

    def __len__(self) -> int:
        return len(self.ids)


_DAY_NAMES: dict[int, str] = {}
_EPOCH = date(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def event_date(timestamp: datetime) -> str:
    """The UTC date of an event, ``YYYY-MM-DD``: the segment directory and daily partition."""
    day = (timestamp - _EPOCH_UTC).days  # exact: timedelta arithmetic, floor for negatives
    name = _DAY_NAMES.get(day)
    if name is None:
        name = _DAY_NAMES.setdefault(day, (_EPOCH + timedelta(days=day)).isoformat())
    return name


def _oversized(lines: Sequence[bytes], max_event_bytes: int) -> None:
    oversized = [
        FieldError(
            i,
            "$",
            f"event is {len(raw)} bytes; limit {max_event_bytes}",
            ReasonCode.TOO_LARGE.value,
        )
        for i, raw in enumerate(lines)
        if len(raw) > max_event_bytes
    ]
    if oversized:
        raise EventValidationError(oversized)


def prepare_batch(
    events: Sequence[Event],
    max_event_bytes: int = 32768,
    raw_lines: Sequence[bytes] | None = None,
) -> PreparedBatch:
    """Encode each event (or keep ``raw_lines``, the exact JSON each was decoded from, one
    line each), check its size; :class:`EventValidationError` if any is too large."""
    if raw_lines is not None and len(raw_lines) == len(events):
        lines = list(raw_lines)
    else:
        replace = msgspec.structs.replace
        lines = [
            encode_event(replace(e, received_at=None) if e.received_at is not None else e)
            for e in events
        ]
    _oversized(lines, max_event_bytes)
    return PreparedBatch(
        ids=[e.event_id for e in events],
        lines=lines,
        is_prediction=[isinstance(e, PredictionEvent) for e in events],
        dates=[event_date(e.timestamp) for e in events],
    )


@dataclass
class _Pending:
    lines: list[bytes] = field(default_factory=list)
    is_prediction: bool = False


class EventLogWriter(IdDedup):
    """Appends batches of validated events to the log under ``root``."""

    def __init__(
        self, root: Path, segment_max_bytes: int = 64 * 1024 * 1024, max_event_bytes: int = 32768
    ) -> None:
        super().__init__(root)
        self.segment_max_bytes = segment_max_bytes
        self.max_event_bytes = max_event_bytes
        self._thread_lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        check_layout(root)

    def append(self, events: Sequence[Event]) -> AppendResult:
        """Store the events not already in the log; durable when this returns."""
        return self.commit([prepare_batch(events, self.max_event_bytes)])[0]

    def commit(self, batches: Sequence[PreparedBatch]) -> list[AppendResult]:
        """Commit several batches at once (one fsync per touched file); one result per batch."""
        with self._thread_lock, self._exclusive():
            self._catch_up()
            known = self._lookup([event_id for batch in batches for event_id in batch.ids])
            pending: dict[tuple[str, bool], _Pending] = {}
            seen: set[str] = set()
            results = [self._stage(batch, known, seen, pending) for batch in batches]
            if pending:
                self._write_commit(pending, seen)
            self._maybe_flush()
        return results

    def _stage(
        self,
        batch: PreparedBatch,
        known: set[str],
        seen: set[str],
        pending: dict[tuple[str, bool], _Pending],
    ) -> AppendResult:
        """Queue the batch's new events into one frame per (date, kind); skip duplicates."""
        ids = batch.ids
        if (
            known.isdisjoint(ids)
            and seen.isdisjoint(ids)
            and len(set(ids)) == len(ids)
            and len(set(batch.dates)) == 1
            and len(set(batch.is_prediction)) == 1
        ):  # the common case, at C speed: all new, one date, one kind
            slot_key = (batch.dates[0], batch.is_prediction[0])
            slot = pending.get(slot_key) or pending.setdefault(
                slot_key, _Pending(is_prediction=slot_key[1])
            )
            slot.lines.extend(batch.lines)
            seen.update(ids)
            return AppendResult(len(ids), 0, list(ids))
        accepted: list[str] = []
        for event_id, line, is_prediction, day in zip(
            ids, batch.lines, batch.is_prediction, batch.dates, strict=True
        ):
            if event_id in known or event_id in seen:
                continue
            seen.add(event_id)
            accepted.append(event_id)
            slot_key = (day, is_prediction)
            slot = pending.get(slot_key) or pending.setdefault(
                slot_key, _Pending(is_prediction=is_prediction)
            )
            slot.lines.append(line)
        return AppendResult(len(accepted), len(batch) - len(accepted), accepted)

    def refresh(self) -> None:
        """Catch up with the log now (recovering it after a crash), not at the first commit,
        and write what this writer knows past the index's coverage to it."""
        with self._thread_lock, self._exclusive():
            self._catch_up()
            self._flush()

    def flush(self) -> None:
        """Write the ids this writer knows are committed past the index's coverage to it."""
        with self._thread_lock:
            if not self._tail_extents:
                return
            with self._exclusive():
                self._catch_up()
                self._flush()

    def contains(self, event_id: str) -> bool:
        with self._thread_lock, self._exclusive():
            self._catch_up()
            return event_id in self._lookup([event_id])

    def learn_committed(self) -> None:
        """Bring the event id index up to the journal if a writer left it behind (killed
        between its journal record and its index update), without waiting: only if the
        log's lock is free (a writer holding it catches the index up itself), and never
        while this writer is committing. Every commit updates the index, so this is
        usually a single look at two numbers."""
        if not self._thread_lock.acquire(blocking=False):
            return
        try:
            try:
                size = os.stat(journal_path(self.root)).st_size
            except FileNotFoundError:
                return
            known = self._journal_end if self._loaded else 0
            if size <= max(known, self._index.covered_end()):
                if self._tail_extents and self._flush_due():
                    self._unlocked_flush()
                return
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
                try:
                    self._catch_up()
                    self._maybe_flush()
                except CorruptLogError:
                    return  # the next commit reports it
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            self._thread_lock.release()

    def knows(self, event_id: str) -> bool:
        """Whether ``event_id`` is committed, as far as this writer knows without the lock:
        its tail (its own commits and those it caught up, not yet in the index), then one
        indexed lookup. The index lags the journal by the other writers' tails: see
        :meth:`learn_committed`. False when the index cannot be read."""
        return event_id in self._tail or self._index.knows(event_id)

    def close(self) -> None:
        """Write the tail to the index and close its connections (reopened if the writer is
        used again)."""
        with self._thread_lock:
            try:
                if self._tail_extents:
                    self._unlocked_flush()
            finally:
                self._index.close()

    def __del__(self) -> None:
        # a writer dropped without close(): still hand its tail to the index if it can
        # (nothing is lost if not: the next writer catches up from the journal)
        with contextlib.suppress(Exception):
            if self._tail_extents and self._thread_lock.acquire(blocking=False):
                try:
                    self._unlocked_flush()
                finally:
                    self._thread_lock.release()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with log_lock(self.root):
            yield

    # -- writing ---------------------------------------------------------------------------

    def _write_commit(self, pending: dict[tuple[str, bool], _Pending], ids: set[str]) -> None:
        parts: list[Part] = []
        new_extents: dict[str, int] = {}
        labels: Tally | None = {}
        for day, is_prediction in sorted(pending):
            slot = pending[(day, is_prediction)]
            n_pred = len(slot.lines) if is_prediction else 0
            n_fb = len(slot.lines) - n_pred
            if n_fb and labels is not None:
                tally = tally_lines(slot.lines)
                labels = None if tally is None else merge(labels, tally)
            frame = encode_frame(slot.lines, n_pred, n_fb)
            key = self._segment_for(day, len(frame), new_extents)
            offset = new_extents.get(key, self._extent.get(key, 0))
            if key not in self._verified and key not in new_extents:
                self._verify(key, offset)
            _append_synced(segment_file(self.root, key), frame, offset)
            parts.append(Part(key, offset, len(frame), n_pred, n_fb))
            new_extents[key] = offset + len(frame)
        commit = Commit(self._sequence + 1, time.time_ns() // 1000, parts, labels)
        record = encode_commit(commit)
        journal = journal_path(self.root)
        if not journal.exists():
            journal.touch()
            fsync_dir(self.root)
        at = self._journal_end
        _append_synced(journal, record, at)
        if at == 0:
            self._head = record[: HEADER.size]
        crc = HEADER.unpack_from(record)[2]
        self._index_commit(
            Indexed(at, at + len(record), commit.sequence, crc, list(ids), new_extents)
        )

    def _index_commit(self, record: Indexed) -> None:
        """Take a commit whose journal record is durable into the tail (the index gets it
        at the next flush; a writer killed before then loses nothing: the next one catches
        the index up from the journal)."""
        self._add_to_tail(record)

    def _segment_for(self, day: str, frame_size: int, uncommitted: dict[str, int]) -> str:
        """The segment of ``day`` to append ``frame_size`` bytes to (a new one if it is full)."""
        key = self._current.get(day)
        if key is None:
            existing = date_segments(self.root, day) + archived_segments(self.root, day)
            key = max(existing, key=key_sequence) if existing else segment_key(day, 1)
        path = segment_file(self.root, key)
        if not path.exists():
            while is_archived(self.root, key):  # closed by retention: never appended to
                key = segment_key(day, key_sequence(key) + 1)
            path = segment_file(self.root, key)
        extent = uncommitted.get(key, self._extent.get(key, 0))
        if extent > 0 and extent + frame_size > self.segment_max_bytes:
            key = segment_key(day, key_sequence(key) + 1)
            path = segment_file(self.root, key)
        if not path.exists():
            folder = path.parent
            if not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
                fsync_dir(self.root / SEGMENTS_DIR)
            path.touch()
            fsync_dir(folder)
        self._current[day] = key
        return key


def _append_synced(path: Path, data: bytes, expected_size: int) -> None:
    """Write ``data`` at ``expected_size`` (cutting anything a crashed writer left after it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != expected_size:
            os.ftruncate(fd, expected_size)
        view = memoryview(data)
        position = expected_size
        while view:
            written = os.pwrite(fd, view, position)
            view = view[written:]
            position += written
        os.fsync(fd)
    finally:
        os.close(fd)

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
  commit updates inside that lock right after its journal record is fsynced;
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
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec

from ct_assets.eventlog.frames import (
    HEADER,
    JOURNAL_MAGIC,
    CorruptLogError,
    encode_frame,
    frame_at,
    fsync_dir,
)
from ct_assets.eventlog.idindex import Covered, EventIdIndex, Indexed
from ct_assets.eventlog.journal import Commit, JournalScan, Part, encode_commit, scan_journal
from ct_assets.eventlog.layout import (
    LOCK_NAME,
    SEGMENTS_DIR,
    check_layout,
    date_segments,
    journal_path,
    key_sequence,
    segment_file,
    segment_key,
)
from ct_assets.eventlog.segments import SegmentChecks, truncate_synced
from ct_assets.schema import (
    Event,
    EventValidationError,
    FieldError,
    PredictionEvent,
    ReasonCode,
    encode_event,
)


class _EventId(msgspec.Struct):
    event_id: str


_IDS_DECODER = msgspec.json.Decoder(list[_EventId])
_LOG = logging.getLogger(__name__)

#: Ids a writer keeps in memory past the index's coverage (its own commits and those it
#: caught up from the journal's tail) before writing them to the index in one transaction:
#: bounds its memory (a few MiB) and makes each id's index insert cheap.
FLUSH_IDS = 50_000
#: The longest a writer leaves committed ids out of the index (checked at each commit and
#: :meth:`EventLogWriter.learn_committed`; an idle writer flushes when closed).
FLUSH_SECONDS = 5.0


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


class EventLogWriter(SegmentChecks):
    """Appends batches of validated events to the log under ``root``."""

    def __init__(
        self, root: Path, segment_max_bytes: int = 64 * 1024 * 1024, max_event_bytes: int = 32768
    ) -> None:
        super().__init__(root)
        self.segment_max_bytes = segment_max_bytes
        self.max_event_bytes = max_event_bytes
        self._thread_lock = threading.Lock()
        self._index = EventIdIndex(root)
        self._loaded = False  # whether the state below is the index's plus the tail
        self._journal_end = 0
        self._head = b""  # the journal's first record header
        self._sequence = 0
        self._last_at = 0  # offset and checksum of the journal's last record known here
        self._last_crc = 0
        # the tail: what this writer knows is committed past the index's coverage
        self._indexed_end = 0  # the journal byte the index covered when last looked at
        self._tail: dict[str, int] = {}  # id -> offset of the record committing it
        self._tail_extents: dict[str, tuple[int, int]] = {}  # segment -> (end, record offset)
        self._tail_since = 0.0  # monotonic time of the oldest unflushed commit
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
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- reading what is committed (all with the log's lock held) ----------------------------

    def _catch_up(self) -> None:
        """Bring this writer and the id index up to the journal: check the index against
        the journal (repairing it), take the state it records, then index the commits past
        it (reading only their frames); cut torn journal tails and orphan segment bytes."""
        path = journal_path(self.root)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            size = 0
        try:
            if self._loaded and not self._position_holds(size):
                self._loaded = False
            covered = self._checked_index(size)
            self._load(covered)
            if size != self._journal_end:
                scan = scan_journal(self.root, self._journal_end)
                if scan.corrupt:
                    raise CorruptLogError(
                        f"{path}: damaged journal record at byte {scan.valid_end}; "
                        "refusing to append"
                    )
                self._index_scan(scan)
                if scan.torn:
                    truncate_synced(path, scan.valid_end)
        except BaseException:
            self._loaded = False  # start again from what the index holds
            raise
        self._sweep()

    def _checked_index(self, journal_size: int) -> Covered:
        """What the index covers, once it agrees with the journal (repaired or emptied for a
        rebuild if it did not; a damaged or missing index is made anew)."""
        try:
            covered = self._index_covered()
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            self._reset_index(f"unreadable ({exc})")
            return self._index_covered()
        self._head = _journal_head(self.root)
        if covered.journal_end == 0:
            if journal_size > 0 and not self._loaded:
                _LOG.warning(
                    "event log %s: the event id index is empty; building it from the journal",
                    self.root,
                )
            return covered
        if self._head != covered.head:
            self._rebuild_index("it was built for another journal")
            return Covered()
        if journal_size < covered.journal_end:
            return self._cut_index(covered)
        if not _record_matches(self.root, covered):
            self._rebuild_index(
                f"the journal's record at byte {covered.last_at} is not the one it indexed"
            )
            return Covered()
        return covered

    def _index_covered(self) -> Covered:
        fresh = not self._index.path.exists()
        self._index.open()
        if fresh and self._loaded:
            _LOG.warning(
                "event log %s: the event id index %s disappeared; rebuilding it from the journal",
                self.root,
                self._index.path,
            )
            self._loaded = False
        return self._index.covered()

    def _reset_index(self, why: str) -> None:
        _LOG.warning(
            "event log %s: the event id index %s is %s; deleting it and rebuilding it from "
            "the journal",
            self.root,
            self._index.path,
            why,
        )
        self._index.remove()
        self._index.open()
        self._loaded = False

    def _rebuild_index(self, why: str) -> None:
        _LOG.warning(
            "event log %s: the event id index does not match the journal (%s); rebuilding it "
            "from the journal",
            self.root,
            why,
        )
        self._index.clear()
        self._loaded = False

    def _cut_index(self, covered: Covered) -> Covered:
        """The index is ahead of the journal (the journal lost records it indexed): keep what
        the journal still holds, drop the rest."""
        scan = scan_journal(self.root)
        if scan.corrupt:
            raise CorruptLogError(
                f"{journal_path(self.root)}: damaged journal record at byte "
                f"{scan.valid_end}; refusing to append"
            )
        extents: dict[str, tuple[int, int]] = {}
        for commit, (at, _end, _crc) in zip(scan.commits, scan.records, strict=True):
            for part in commit.parts:
                extents[part.segment] = (part.offset + part.length, at)
        if scan.commits:
            at, end, crc = scan.records[-1]
            kept = Covered(end, scan.commits[-1].sequence, at, crc, self._head)
        else:
            kept = Covered()
        dropped = self._index.cut(kept, extents)
        _LOG.warning(
            "event log %s: the event id index covered the journal up to byte %d but the "
            "journal ends at byte %d; dropped the %d ids committed past it",
            self.root,
            covered.journal_end,
            kept.journal_end,
            dropped,
        )
        self._loaded = False
        return kept

    def _position_holds(self, journal_size: int) -> bool:
        """Whether the journal still holds the last record this writer knows (it was not
        cut back or replaced since): then its tail is still true."""
        if self._journal_end == 0:
            return True
        if journal_size < self._journal_end:
            return False
        here = Covered(self._journal_end, self._sequence, self._last_at, self._last_crc)
        return _record_matches(self.root, here)

    def _load(self, covered: Covered) -> None:
        """Take the state the index records, and drop the tail it now holds (only what
        changed since this writer looked, when both only moved forward)."""
        if self._loaded and self._indexed_end <= covered.journal_end <= self._journal_end:
            # the index holds at most what this writer knows: its tail covers the rest
            self._indexed_end = covered.journal_end
            return
        if self._loaded and covered.journal_end > self._journal_end:
            changed = self._index.extents(since=self._journal_end)
        else:
            self._extent, self._current, changed = {}, {}, self._index.extents()
        for key, end in changed.items():
            self._extended(key, end)
        self._drop_tail()
        self._journal_end = self._indexed_end = covered.journal_end
        self._sequence = covered.sequence
        self._last_at, self._last_crc = covered.last_at, covered.last_crc
        self._loaded = True

    def _drop_tail(self) -> None:
        self._tail = {}
        self._tail_extents = {}

    def _index_scan(self, scan: JournalScan) -> None:
        """Add the scanned commits (past what this writer knows) to the tail: read their
        frames; flush whenever the tail is full (a rebuild's memory stays bounded)."""
        self._head = self._head or _journal_head(self.root)
        for commit, (at, end, crc) in zip(scan.commits, scan.records, strict=True):
            ids: list[str] = []
            extents: dict[str, int] = {}
            for part in commit.parts:
                frame = self._read_part(part)
                if frame.payload:
                    decoded = _IDS_DECODER.decode(b"[" + b",".join(frame.lines()) + b"]")
                    ids.extend(i.event_id for i in decoded)
                extents[part.segment] = part.offset + part.length
            self._add_to_tail(Indexed(at, end, commit.sequence, crc, ids, extents))
            if len(self._tail) >= FLUSH_IDS:
                self._flush()
        self._journal_end = scan.valid_end

    def _add_to_tail(self, record: Indexed) -> None:
        if not self._tail_extents:
            self._tail_since = time.monotonic()
        self._tail.update(dict.fromkeys(record.ids, record.at))
        for key, end in record.extents.items():
            self._tail_extents[key] = (end, record.at)
            self._extended(key, end)
        self._journal_end = record.end
        self._sequence = record.sequence
        self._last_at, self._last_crc = record.at, record.crc

    def _flush_due(self) -> bool:
        return len(self._tail) >= FLUSH_IDS or (
            time.monotonic() - self._tail_since >= FLUSH_SECONDS
        )

    def _maybe_flush(self) -> None:
        if self._tail_extents and self._flush_due():
            self._flush()

    def _unlocked_flush(self) -> None:
        """:meth:`_flush`, taking the log's lock (the thread lock is held)."""
        with self._exclusive():
            self._catch_up()
            self._flush()

    def _flush(self) -> None:
        """Write the tail to the index in one transaction (the log's lock held, caught up).
        If that fails nothing is lost: the journal holds the commits, and the next look
        at the log catches the index up from it."""
        if not self._tail_extents or not self._loaded:
            return
        covered = Covered(
            self._journal_end, self._sequence, self._last_at, self._last_crc, self._head
        )
        try:
            self._index.flush(self._tail, self._tail_extents, covered)
        except sqlite3.Error:
            _LOG.exception(
                "event log %s: could not write %d committed ids to the event id index; "
                "the next commit catches the index up from the journal",
                self.root,
                len(self._tail),
            )
            self._loaded = False
            self._drop_tail()
            return
        self._indexed_end = covered.journal_end
        self._drop_tail()

    def _lookup(self, event_ids: Sequence[str]) -> set[str]:
        """Those of ``event_ids`` already committed: the tail's, then the index's (rebuilt
        if found damaged)."""
        known = self._tail.keys() & event_ids
        rest = [event_id for event_id in event_ids if event_id not in known]
        try:
            return known | self._index.existing(rest)
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            self._reset_index(f"unreadable ({exc})")
            self._catch_up()
            known = self._tail.keys() & event_ids
            return known | self._index.existing(
                [event_id for event_id in event_ids if event_id not in known]
            )

    # -- writing ---------------------------------------------------------------------------

    def _write_commit(self, pending: dict[tuple[str, bool], _Pending], ids: set[str]) -> None:
        parts: list[Part] = []
        new_extents: dict[str, int] = {}
        for day, is_prediction in sorted(pending):
            slot = pending[(day, is_prediction)]
            n_pred = len(slot.lines) if is_prediction else 0
            n_fb = len(slot.lines) - n_pred
            frame = encode_frame(slot.lines, n_pred, n_fb)
            key = self._segment_for(day, len(frame), new_extents)
            offset = new_extents.get(key, self._extent.get(key, 0))
            if key not in self._verified and key not in new_extents:
                self._verify(key, offset)
            _append_synced(segment_file(self.root, key), frame, offset)
            parts.append(Part(key, offset, len(frame), n_pred, n_fb))
            new_extents[key] = offset + len(frame)
        commit = Commit(self._sequence + 1, time.time_ns() // 1000, parts)
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
            existing = date_segments(self.root, day)
            key = existing[-1] if existing else segment_key(day, 1)
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


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the index file is damaged or not an index (not merely busy)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    message = str(exc)
    return message.startswith(("no such table", "no such column")) or "malformed" in message


def _journal_head(root: Path) -> bytes:
    """The journal's first record header (b"" while it has none)."""
    try:
        with open(journal_path(root), "rb") as handle:
            return handle.read(HEADER.size)
    except FileNotFoundError:
        return b""


def _record_matches(root: Path, covered: Covered) -> bool:
    """Whether the journal's record ending at ``covered.journal_end`` is the one indexed."""
    length = covered.journal_end - covered.last_at
    try:
        with open(journal_path(root), "rb") as handle:
            data = os.pread(handle.fileno(), length, covered.last_at)
    except FileNotFoundError:
        return False
    frame = frame_at(data, 0, JOURNAL_MAGIC)
    return frame is not None and frame.length == length and frame.crc == covered.last_crc


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

"""Deduplication of event ids for a writer holding the log's lock.

The ids committed are in the event id index (:mod:`.idindex`, on disk) up to the journal
byte it covers, and past it in the writer's tail: the ids of its own commits and of those
it caught up from the journal, kept in memory and written to the index in one sorted
transaction every :data:`FLUSH_IDS` ids or :data:`FLUSH_SECONDS` (and on refresh and close).
A lookup checks the tail, then the index.

The index is a cache of the journal, never its master: before using it a writer checks
it against the journal and catches it up from the journal's tail (a writer killed before
flushing its tail), cuts what it holds past the journal's end, and rebuilds it from the
journal when it is missing, damaged or another journal's.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import msgspec

from ct_assets.eventlog.frames import HEADER, JOURNAL_MAGIC, CorruptLogError, frame_at
from ct_assets.eventlog.idindex import Covered, EventIdIndex, Indexed
from ct_assets.eventlog.journal import JournalScan, scan_journal
from ct_assets.eventlog.layout import journal_path
from ct_assets.eventlog.segments import SegmentChecks, truncate_synced


class _EventId(msgspec.Struct):
    event_id: str


_IDS_DECODER = msgspec.json.Decoder(list[_EventId])
_LOG = logging.getLogger("ct_assets.eventlog.writer")  # the writer's: it reports these

#: Ids a writer keeps in memory past the index's coverage (its own commits and those it
#: caught up from the journal's tail) before writing them to the index in one transaction:
#: bounds its memory (a few MiB) and makes each id's index insert cheap.
FLUSH_IDS = 50_000
#: The longest a writer leaves committed ids out of the index (checked at each commit and
#: :meth:`EventLogWriter.learn_committed`; an idle writer flushes when closed).
FLUSH_SECONDS = 5.0


class IdDedup(SegmentChecks):
    """A writer's knowledge of the ids committed to the log under ``root``: the index, the
    tail past it, and the journal position both reach."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
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

    def _exclusive(self) -> AbstractContextManager[None]:
        """The log's lock (the writer's)."""
        raise NotImplementedError

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
        self._head = journal_head(self.root)
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
        if not record_matches(self.root, covered):
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
        return record_matches(self.root, here)

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
        self._head = self._head or journal_head(self.root)
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


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the index file is damaged or not an index (not merely busy)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    message = str(exc)
    return message.startswith(("no such table", "no such column")) or "malformed" in message


def journal_head(root: Path) -> bytes:
    """The journal's first record header (b"" while it has none)."""
    try:
        with open(journal_path(root), "rb") as handle:
            return handle.read(HEADER.size)
    except FileNotFoundError:
        return b""


def record_matches(root: Path, covered: Covered) -> bool:
    """Whether the journal's record ending at ``covered.journal_end`` is the one indexed."""
    length = covered.journal_end - covered.last_at
    try:
        with open(journal_path(root), "rb") as handle:
            data = os.pread(handle.fileno(), length, covered.last_at)
    except FileNotFoundError:
        return False
    frame = frame_at(data, 0, JOURNAL_MAGIC)
    return frame is not None and frame.length == length and frame.crc == covered.last_crc

"""The event id index: which event ids the log holds, on disk, for deduplication.

A SQLite database in WAL mode beside the journal (``<root>/event_ids.sqlite``):

    event_ids(event_id PRIMARY KEY, commit_at)   every committed id, and the journal
                                                 byte offset of the record committing it
    segments(segment PRIMARY KEY, extent, commit_at)
                                                 each segment's committed end, and the
                                                 record that last extended it
    covered(journal_end, sequence, last_at, last_crc, head)
                                                 the journal prefix the index holds: its
                                                 end, the last record's sequence, offset
                                                 and checksum, the journal's first header

The journal stays the only source of truth; the index is a cache of it that a
writer updates inside the log's lock, in one SQLite transaction per commit, after
the journal record is fsynced. So the index never holds more than the journal,
and is at worst behind it (a writer killed between the two, or a power loss:
``synchronous=NORMAL`` does not sync each transaction), which the next writer
catches up from the journal's tail. An index that does not match the journal (or
is ahead of it, or is missing or damaged) is repaired or rebuilt by the writer
(:mod:`.writer`), which owns those decisions; this module only stores and answers.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ct_assets.eventlog.layout import index_path

#: Page cache of each connection, KiB: bounds the index's memory whatever its size.
CACHE_KIB = 8 * 1024
#: Waiting for another process's SQLite lock (readers and checkpoints), ms.
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS event_ids (
    event_id TEXT PRIMARY KEY NOT NULL,
    commit_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS segments (
    segment TEXT PRIMARY KEY NOT NULL,
    extent INTEGER NOT NULL,
    commit_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS covered (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    journal_end INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    last_crc INTEGER NOT NULL,
    head BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class Covered:
    """The journal prefix the index holds: up to byte ``journal_end``, whose last record
    (commit ``sequence``) starts at ``last_at`` and has checksum ``last_crc``; ``head``
    is the journal's first record header (tells another journal from this one)."""

    journal_end: int = 0
    sequence: int = 0
    last_at: int = 0
    last_crc: int = 0
    head: bytes = b""


@dataclass(frozen=True)
class Indexed:
    """One journal record to add: where it is, and what it committed."""

    at: int
    end: int
    sequence: int
    crc: int
    ids: Sequence[str]
    extents: dict[str, int]


#: Ids looked up per query (each a bound parameter).
LOOKUP_CHUNK = 500


class _Connection:
    """A SQLite connection to the index file, reopened after a fork or when the file was
    replaced or removed (another writer rebuilt it); ``lock`` serialises its use."""

    def __init__(self, path: Path, create: bool) -> None:
        self.path = path
        self.create = create
        self.lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0
        self._inode: tuple[int, int] | None = None

    def get(self) -> sqlite3.Connection:
        try:
            stat = os.stat(self.path)
            inode: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            inode = None
        if self._db is not None and self._pid == os.getpid() and inode == self._inode:
            return self._db
        self.close()
        if inode is None and not self.create:
            raise sqlite3.OperationalError(f"{self.path}: no event id index")
        mode = "rwc" if self.create else "rw"
        db = sqlite3.connect(
            f"file:{self.path}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            if self.create:
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] < 3:
                    db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        stat = os.stat(self.path)
        self._db, self._pid, self._inode = db, os.getpid(), (stat.st_dev, stat.st_ino)
        return db

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None
        self._inode = None


class EventIdIndex:
    """The id index of the log at ``root``. Writes only from a writer holding the log's
    lock; :meth:`knows` from any thread, without it."""

    def __init__(self, root: Path) -> None:
        self.path = index_path(root)
        self._write = _Connection(self.path, create=True)
        self._read = _Connection(self.path, create=False)

    # -- what a writer holding the log's lock uses -----------------------------------------

    def open(self) -> None:
        """Open (creating it if need be); raises :class:`sqlite3.DatabaseError` if damaged."""
        with self._write.lock:
            self._write.get().execute("SELECT journal_end FROM covered").fetchall()

    def covered(self) -> Covered:
        with self._write.lock:
            row = (
                self._write.get()
                .execute("SELECT journal_end, sequence, last_at, last_crc, head FROM covered")
                .fetchone()
            )
        if row is None:
            return Covered()
        return Covered(int(row[0]), int(row[1]), int(row[2]), int(row[3]), bytes(row[4]))

    def extents(self, since: int = 0) -> dict[str, int]:
        """Committed segment ends, of segments extended by records at or after ``since``."""
        with self._write.lock:
            rows = (
                self._write.get()
                .execute("SELECT segment, extent FROM segments WHERE commit_at >= ?", (since,))
                .fetchall()
            )
        return dict(rows)

    def existing(self, event_ids: Iterable[str]) -> set[str]:
        """Those of ``event_ids`` the index holds (one query per :data:`LOOKUP_CHUNK` ids).

        The ids are bound as parameters, never passed through SQLite's JSON functions:
        those cut a string at an escaped NUL, and an id may hold any character."""
        wanted = list(dict.fromkeys(event_ids))
        found: set[str] = set()
        with self._write.lock:
            connection = self._write.get()
            for start in range(0, len(wanted), LOOKUP_CHUNK):
                chunk = wanted[start : start + LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT event_id FROM event_ids WHERE event_id IN ({marks})", chunk
                )
                found.update(row[0] for row in rows)
        return found

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The write connection inside one immediate transaction, committed on success and
        rolled back on any error."""
        with self._write.lock:
            db = self._write.get()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    @staticmethod
    def _set_covered(db: sqlite3.Connection, covered: Covered) -> None:
        db.execute(
            "INSERT OR REPLACE INTO covered VALUES (1, ?, ?, ?, ?, ?)",
            (
                covered.journal_end,
                covered.sequence,
                covered.last_at,
                covered.last_crc,
                covered.head,
            ),
        )

    def flush(
        self,
        ids: dict[str, int],
        extents: dict[str, tuple[int, int]],
        covered: Covered,
    ) -> None:
        """Record many commits at once, in one transaction: ``ids`` (id -> offset of the
        journal record committing it), ``extents`` (segment -> (committed end, offset of the
        record that last extended it)); the index then covers the journal up to
        ``covered``. Ids are inserted in key order (far fewer B-tree pages touched)."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO event_ids VALUES (?, ?)",
                [(event_id, ids[event_id]) for event_id in sorted(ids)],
            )
            db.executemany(
                "INSERT OR REPLACE INTO segments VALUES (?, ?, ?)",
                [(key, end, at) for key, (end, at) in sorted(extents.items())],
            )
            self._set_covered(db, covered)

    def cut(self, covered: Covered, extents: dict[str, tuple[int, int]]) -> int:
        """Forget every id committed at or after ``covered.journal_end`` (an index ahead of
        its journal) and set the segment ends (``extents``: segment -> (end, offset of the
        record that last extended it)); returns how many ids were dropped."""
        with self._transaction() as db:
            dropped = db.execute(
                "DELETE FROM event_ids WHERE commit_at >= ?", (covered.journal_end,)
            ).rowcount
            db.execute("DELETE FROM segments")
            db.executemany(
                "INSERT INTO segments VALUES (?, ?, ?)",
                [(key, end, at) for key, (end, at) in sorted(extents.items())],
            )
            db.execute("DELETE FROM covered")
            if covered.journal_end:
                self._set_covered(db, covered)
        return int(dropped)

    def clear(self) -> None:
        with self._transaction() as db:
            for table in ("event_ids", "segments", "covered"):
                db.execute(f"DELETE FROM {table}")

    def remove(self) -> None:
        """Delete the index files (a damaged index, to be rebuilt)."""
        with self._write.lock, self._read.lock:
            self._write.close()
            self._read.close()
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")

    # -- lock-free lookups -----------------------------------------------------------------

    def knows(self, event_id: str) -> bool:
        """Whether the index holds ``event_id`` (False when there is no readable index)."""
        return self.commit_of(event_id) is not None

    def commit_of(self, event_id: str) -> int | None:
        """The journal byte offset of the record that committed ``event_id``, if the index
        holds it (None too when there is no readable index)."""
        try:
            with self._read.lock:
                row = (
                    self._read.get()
                    .execute("SELECT commit_at FROM event_ids WHERE event_id = ?", (event_id,))
                    .fetchone()
                )
        except sqlite3.Error:
            return None
        return None if row is None else int(row[0])

    def covered_end(self) -> int:
        """The journal byte the index covers up to, as last committed (0 if unreadable)."""
        try:
            with self._read.lock:
                row = self._read.get().execute("SELECT journal_end FROM covered").fetchone()
        except sqlite3.Error:
            return 0
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        with self._write.lock, self._read.lock:
            self._write.close()
            self._read.close()

"""The journal: the commit order of the log and the only source of what is committed.

A commit appends event frames to the segments of their dates, fsyncs them, then
appends one journal record naming every frame it wrote (segment key, offset,
length, counts), with a tally of its feedback for label counts (:mod:`.tally`),
and fsyncs the journal. The journal record is the commit point:

* a frame that no journal record names was never acknowledged; readers never
  look at it and the next writer cuts it off;
* a group of batches spread over several dates is committed all at once or not
  at all, so readers never see part of a batch;
* the journal orders events globally: the n-th feedback event is the same event
  for every reader, which is what ``ct/log_position`` counts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ct_assets.eventlog.frames import (
    HEADER,
    JOURNAL_MAGIC,
    CorruptLogError,
    encode_record,
    frame_at,
    scan_bytes,
)
from ct_assets.eventlog.layout import journal_path


class Part(msgspec.Struct, array_like=True, frozen=True):
    """One event frame written by a commit."""

    segment: str
    offset: int
    length: int
    n_prediction: int
    n_feedback: int


class Commit(msgspec.Struct, array_like=True, frozen=True):
    sequence: int
    committed_at_us: int
    parts: list[Part]
    #: what its feedback could be labeled from (:mod:`.tally`); None in older records
    labels: dict[str, list[int]] | None = None


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Commit)


def encode_commit(commit: Commit) -> bytes:
    n_pred = sum(p.n_prediction for p in commit.parts)
    n_fb = sum(p.n_feedback for p in commit.parts)
    return encode_record(_ENCODER.encode(commit), n_pred, n_fb, JOURNAL_MAGIC)


@dataclass(frozen=True)
class JournalScan:
    commits: list[Commit]
    valid_end: int
    torn: bool
    corrupt: bool
    #: (offset, end, crc) of each commit's record, in the same order as ``commits``
    records: list[tuple[int, int, int]] = field(default_factory=list)


def scan_journal(root: Path, start: int = 0, stop: int | None = None) -> JournalScan:
    """Commits recorded from byte ``start`` on (to byte ``stop``, a record boundary, if
    given), stopping at a torn tail (an incomplete last record) or at damage
    (``corrupt``: a complete record that fails its checksum, or an invalid record
    followed by valid ones)."""
    path = journal_path(root)
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read() if stop is None else handle.read(max(0, stop - start))
    except FileNotFoundError:
        return JournalScan([], 0, False, False)
    scan = scan_bytes(data, start, JOURNAL_MAGIC, strict_tail=True)
    commits = [_DECODER.decode(frame.payload) for frame in scan.frames]
    records = [(frame.offset, frame.end, frame.crc) for frame in scan.frames]
    return JournalScan(commits, scan.valid_end, scan.torn, scan.corrupt, records)


def commits_between(root: Path, start: int, stop: int | None = None) -> list[Commit]:
    """The commits recorded from byte ``start`` to byte ``stop`` (record boundaries; to
    the end without ``stop``, a torn tail left out); :class:`CorruptLogError` if a record
    between them is damaged."""
    scan = scan_journal(root, start, stop)
    if scan.corrupt:
        raise CorruptLogError(
            f"{journal_path(root)}: damaged journal record at byte {scan.valid_end}"
        )
    return scan.commits


#: Journal bytes read and decoded at a time by :func:`scan_blocks`.
SCAN_BYTES = 16 * 1024 * 1024


def scan_blocks(root: Path, start: int = 0, block: int | None = None) -> Iterator[JournalScan]:
    """The committed records from byte ``start`` on, a block of about ``block`` bytes
    (default :data:`SCAN_BYTES`) at a time, so a long journal is never held at once; a
    record cut by a block's end is read with the next. Stops at a torn tail; damage in
    front of valid records raises :class:`CorruptLogError`."""
    path = journal_path(root)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return
    size_now = block or SCAN_BYTES
    while size > start:
        stop = min(size, start + size_now)
        scan = scan_journal(root, start, stop)
        if scan.corrupt:
            raise CorruptLogError(f"{path}: damaged journal record at byte {scan.valid_end}")
        if not scan.commits:
            if stop == size:
                return  # a torn tail: a commit in progress, or one that never completed
            size_now *= 2  # a record longer than the block
            continue
        yield scan
        start = scan.valid_end


def commit_at(root: Path, offset: int) -> Commit | None:
    """The commit whose journal record starts at byte ``offset`` (as the event id index
    records it), or None when no complete, checksummed record starts there."""
    try:
        with open(journal_path(root), "rb") as handle:
            handle.seek(offset)
            header = handle.read(HEADER.size)
            if len(header) < HEADER.size:
                return None
            data = header + handle.read(HEADER.unpack(header)[1])
    except FileNotFoundError:
        return None
    frame = frame_at(data, 0, JOURNAL_MAGIC)
    return None if frame is None else _DECODER.decode(frame.payload)


@dataclass
class _Cached:
    inode: int
    head: bytes  # the first record's header: tells a recreated journal from a grown one
    end: int
    commits: list[Commit] = field(default_factory=list)


_CACHE: dict[Path, _Cached] = {}
_CACHE_LOCK = threading.Lock()


def committed(root: Path) -> list[Commit]:
    """Every commit of the log at ``root`` in order, read incrementally (cached per process).

    A torn journal tail (an incomplete last record) is a commit in progress or one that
    never completed: it is not visible. A complete record that fails its checksum, or
    damage in front of valid records, raises :class:`CorruptLogError`.
    """
    path = journal_path(root).resolve()
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            head = handle.read(HEADER.size)
    except FileNotFoundError:
        with _CACHE_LOCK:
            _CACHE.pop(path, None)
        return []
    with _CACHE_LOCK:
        cached = _CACHE.get(path)
        if (
            cached is None
            or cached.inode != stat.st_ino
            or cached.head != head
            or stat.st_size < cached.end
        ):
            cached = _Cached(stat.st_ino, head, 0)
            _CACHE[path] = cached
        if stat.st_size > cached.end:
            scan = scan_journal(root, cached.end)
            if scan.corrupt:
                raise CorruptLogError(f"{path}: damaged journal record at byte {scan.valid_end}")
            cached.commits.extend(scan.commits)
            cached.end = scan.valid_end
        return list(cached.commits)

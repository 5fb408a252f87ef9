"""A checkpoint of the journal summary on disk, so a new process starts from it and reads
only the journal records past it, not the whole journal.

    <root>/summary/head.msgpack                     what the journal up to a byte adds up to
    <root>/summary/<YYYY-MM-DD>/<first>-<end>.msgpack   a date's frames of commits [first, end)

The head holds the summary's totals (events of each kind per date, each segment's
committed end, the log's event counts) and, per date, the chunk files holding that
date's frames with their log offsets, in commit order. A chunk is written once, with
the frames of the commits since the previous checkpoint, and never rewritten; the head
is written last, atomically (write, fsync, rename), so a head only names chunks already
on disk. Like the event id index, it is a cache of the journal, never its master: a
process takes a head only when the journal's first record header and its record
ending at the head's byte are the ones recorded, and a chunk only when it belongs to
that journal and holds what the head says; otherwise it summarizes the journal from
its start, as without a checkpoint. Any process that summarized enough new records
writes one (a process that cannot write there goes on without)."""

from __future__ import annotations

import bisect
import os
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import msgspec

from ct_assets.eventlog.frame_columns import FrameColumns
from ct_assets.eventlog.layout import summary_dir
from ct_assets.storage.local import atomic_file

#: Bumped when the files' content changes meaning (3: chunk columns delta-coded, zlib).
CHECKPOINT_VERSION = 3
#: zlib level of the chunks' columns: the fastest; the deltas of a date's frames are small.
_ZLIB_LEVEL = 1
HEAD_NAME = "head.msgpack"


class ChunkRef(msgspec.Struct, array_like=True, frozen=True):
    """One chunk file of a date: its name and how many frames it holds."""

    name: str
    parts: int


class Mark(msgspec.Struct, array_like=True, frozen=True):
    """The summary at a commit boundary: the commit's position and journal offset, the
    log offsets of its first prediction and feedback events, and what the feedback
    before it adds up to: commits counted by their tallies, the sum of those tallies,
    and how many ranges of untallied feedback there were (``Head.undecided``)."""

    commit: int
    at: int
    prediction_base: int
    feedback_base: int
    tallied: int
    tally: dict[str, list[int]]
    undecided: int


def stop_at(
    marks: Sequence[Mark], bases: Sequence[int], after: int, offset: int | None
) -> int | None:
    """Where a journal read from mark ``after`` may stop and still hold every event below
    log offset ``offset``: the journal byte of the first later mark whose base (in
    ``bases``, one per mark) is at or past it; None (the journal's end) without one or
    without ``offset``."""
    if offset is None:
        return None
    following = bisect.bisect_left(bases, offset, after + 1)
    return marks[following].at if following < len(marks) else None


class Head(msgspec.Struct, frozen=True):
    version: int
    #: the journal's first record header (tells this journal from another)
    journal_head: bytes
    #: the journal prefix summarized: its end, and its last record's offset and checksum
    journal_end: int
    last_at: int
    last_crc: int
    commits: int
    predictions: int
    feedback: int
    totals: dict[str, list[int]]
    extents: dict[str, dict[str, int]]
    chunks: dict[str, list[ChunkRef]]
    #: the feedback tallies summed (:mod:`.tally`), and the ranges recorded without one
    tallied: int
    tally: dict[str, list[int]]
    undecided: list[tuple[int, int]]
    marks: list[Mark]


class Chunk(msgspec.Struct, frozen=True):
    """A date's frames of some commits: the columns of
    :class:`~ct_assets.eventlog.frame_columns.FrameColumns`, each as the differences of its
    consecutive ``int64`` values, zlib-compressed (:func:`pack_columns`): a date's commit
    numbers, offsets, log offsets and times grow by small steps, so 72 bytes a frame become
    a few."""

    journal_head: bytes
    day: str
    segments: list[str]
    columns: list[bytes]


_HEAD_DECODER = msgspec.msgpack.Decoder(Head)
_CHUNK_DECODER = msgspec.msgpack.Decoder(Chunk)
_ENCODER = msgspec.msgpack.Encoder()


def chunk_name(first: int, end: int) -> str:
    return f"{first:012d}-{end:012d}.msgpack"


def load_head(root: Path) -> Head | None:
    """The head on disk, or None when there is none or it cannot be read as one."""
    try:
        data = (summary_dir(root) / HEAD_NAME).read_bytes()
        head = _HEAD_DECODER.decode(data)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return head if head.version == CHECKPOINT_VERSION else None


def load_chunks(
    root: Path, journal_head: bytes, day: str, refs: list[ChunkRef]
) -> FrameColumns | None:
    """The frames of ``day`` its chunks ``refs`` hold, in commit order; None when a chunk
    is missing, unreadable, of another journal or date, or holds another number of
    frames than its reference says."""
    out = FrameColumns()
    for ref in refs:
        try:
            chunk = _CHUNK_DECODER.decode((summary_dir(root) / day / ref.name).read_bytes())
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        if chunk.journal_head != journal_head or chunk.day != day:
            return None
        columns = unpack_columns(chunk.columns)
        frames = None if columns is None else FrameColumns.from_bytes(chunk.segments, columns)
        if frames is None or len(frames) != ref.parts:
            return None
        out = out.extended(frames) if len(out) else frames
    return out


def chunk_of(journal_head: bytes, day: str, frames: FrameColumns) -> Chunk:
    return Chunk(journal_head, day, list(frames.segments), pack_columns(frames.to_bytes()))


def pack_columns(columns: list[bytes]) -> list[bytes]:
    """Each little-endian ``int64`` column as its first value and the differences of the
    next ones (wrapping, so any values round-trip), zlib-compressed."""
    import numpy as np

    out = []
    for data in columns:
        values = np.frombuffer(data, dtype="<i8")
        steps = np.diff(values, prepend=np.zeros(1, dtype="<i8")) if len(values) else values
        out.append(zlib.compress(steps.astype("<i8").tobytes(), _ZLIB_LEVEL))
    return out


def unpack_columns(packed: list[bytes]) -> list[bytes] | None:
    """The columns :func:`pack_columns` packed; None when one cannot be (damaged)."""
    import numpy as np

    out = []
    for data in packed:
        try:
            raw = zlib.decompress(data)
        except zlib.error:
            return None
        if len(raw) % 8:
            return None
        out.append(np.cumsum(np.frombuffer(raw, dtype="<i8"), dtype="<i8").tobytes())
    return out


def write_checkpoint(root: Path, head: Head, new_chunks: dict[str, tuple[str, Chunk]]) -> bool:
    """Write the chunks (date -> (name, chunk)), then the head naming them; False when the
    directory cannot be written (the checkpoint is a cache: readers go on without)."""
    try:
        for day, (name, chunk) in sorted(new_chunks.items()):
            atomic_file(summary_dir(root) / day / name, [_ENCODER.encode(chunk)])
        atomic_file(summary_dir(root) / HEAD_NAME, [_ENCODER.encode(head)])
    except OSError:
        return False
    for day in new_chunks:
        remove_stale_files(summary_dir(root) / day, {ref.name for ref in head.chunks[day]})
    return True


#: A chunk no head names (written by a process whose head another one replaced, or by one
#: killed before its head), or a temporary file, is removed once this old: younger ones
#: may belong to a checkpoint another process is writing.
STALE_SECONDS = 3600.0


def remove_stale_files(folder: Path, named: set[str]) -> list[Path]:
    """Remove the files of a date's chunk folder that ``named`` does not hold and that
    are older than :data:`STALE_SECONDS`; returns them."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if entry.name in named or not entry.is_file():
            continue
        try:
            if now - entry.stat().st_mtime > STALE_SECONDS:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed

"""Reading the event log: raw lines and Polars frames, in append order (the counts, from
the journal alone: :mod:`ct_assets.eventlog.counts`; decoding: :mod:`ct_assets.eventlog.decode`).

Readers take no lock. They read the journal first and then only the frames it
names, so they see every commit that was complete when they looked and never a
partial one. Reading the events of some dates opens only those dates' segments (an
archived segment is rebuilt from its archive: :mod:`ct_assets.eventlog.archive`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ct_assets.eventlog.archive import segment_bytes, segment_size
from ct_assets.eventlog.counts import (
    LogCounts,
    count_events,
    counts_by_date,
    dated_parts,
    located_parts,
    partition_fingerprint,
    partition_fingerprints,
    parts_between,
)
from ct_assets.eventlog.decode import (
    EVENT_FIELDS,
    Entries,
    decode_entries,
    events_to_frame,
    received_time,
)
from ct_assets.eventlog.decoded import (
    DATES,
    DECODED,
    DECODED_CACHE_ROWS,
    Piece,
    piece_entries,
    same_schema,
)
from ct_assets.eventlog.frame_columns import DatedPart
from ct_assets.eventlog.frames import SEGMENT_MAGIC, CorruptLogError, Frame, frame_at
from ct_assets.eventlog.journal import Part, committed, scan_blocks
from ct_assets.eventlog.layout import segment_file
from ct_assets.schema import EventKind

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "DECODED_CACHE_ROWS",
    "EVENT_FIELDS",
    "Entries",
    "LogCounts",
    "count_events",
    "counts_by_date",
    "events_to_frame",
    "partition_fingerprint",
    "partition_fingerprints",
    "read_entries",
    "read_events",
    "read_lines",
    "received_time",
]


class _SegmentCache:
    """Reads the frames one read takes: per segment, from the first frame it needs to the
    segment's end, in one read (its other frames come after it, in commit order)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._data: dict[str, tuple[int, bytes]] = {}

    def frame(self, part: Part) -> Frame:
        path = segment_file(self.root, part.segment)
        start, data = self._data.get(part.segment, (0, b""))
        if part.offset < start or len(data) < part.offset - start + part.length:
            start, data = part.offset, segment_bytes(self.root, part.segment, part.offset)
            self._data[part.segment] = (start, data)
        return _checked_frame(data, part.offset - start, part, path)


def _pieces(
    root: Path,
    kind: EventKind,
    limit: int | None,
    dates: Collection[str] | None,
    since: int = 0,
) -> list[Piece]:
    """The frames of ``kind`` a read takes, in commit order (see :func:`read_entries`);
    each frame is read and checked when its lines are first needed."""
    out: list[Piece] = []
    segments = _SegmentCache(root)

    def loader(part: Part, wanted: int) -> Callable[[], Frame]:
        def load() -> Frame:
            frame = segments.frame(part)
            _check_lines(root, part, frame, wanted, kind)
            return frame

        return load

    if dates is not None:
        located: Iterable[DatedPart] = dated_parts(root, dates)
    elif since > 0 or limit is not None:
        located = parts_between(root, kind, since, limit)
    else:  # every event: the whole journal, its damage anywhere reported
        located = located_parts(committed(root))
    for found in located:
        part = found.part
        base = found.base(kind)
        if limit is not None and base >= limit:
            break
        wanted = part.n_prediction if kind == "prediction" else part.n_feedback
        if wanted == 0 or base + wanted <= since:
            continue
        count = wanted if limit is None else min(wanted, limit - base)
        skip = max(0, since - base)
        if skip >= count:
            break  # ``limit`` ends before ``since``
        load = loader(part, wanted)
        out.append(Piece(part, load, base, count, found.committed_at_us, skip))
    _check_present(root, out)
    return out


def _check_present(root: Path, pieces: list[Piece]) -> None:
    """Every segment the pieces name is there and holds their frames' bytes, though a
    frame whose rows are cached is not read again: a deleted or cut segment is found
    at once, by one ``stat`` per segment (:class:`CorruptLogError` if not)."""
    last: dict[str, Part] = {}
    for piece in pieces:
        part = piece.part
        if part.segment not in last or part.offset > last[part.segment].offset:
            last[part.segment] = part
    for segment, part in last.items():
        if segment_size(root, segment) < part.offset + part.length:
            raise CorruptLogError(
                f"{segment_file(root, segment)}: committed frame at byte {part.offset} "
                "is missing or damaged"
            )


def _line_count(frame: Frame) -> int:
    return frame.payload.count(b"\n")


def read_entries(
    root: Path, kind: EventKind, limit: int | None = None, dates: Collection[str] | None = None
) -> Entries:
    """JSON lines of ``kind`` in commit order with their log offsets (position among all
    committed events of that kind). Only events on ``dates`` if given; only offsets below
    ``limit`` if given (without ``dates``: the first ``limit`` events)."""
    return piece_entries(_pieces(root, kind, limit, dates))


def read_lines(
    root: Path, kind: EventKind, limit: int | None = None, dates: Collection[str] | None = None
) -> list[bytes]:
    """JSON lines of ``kind`` in commit order; see :func:`read_entries`."""
    return read_entries(root, kind, limit, dates).lines


def event_chunks(root: Path, kind: EventKind, chunk: int) -> Iterator[pl.DataFrame]:
    """Every committed event of ``kind`` in log order, as frames of about ``chunk`` events
    (a chunk ends with the frame that reaches it), each decoded in one pass and kept in no
    cache: for one pass over the whole log (an export). The commits are walked once and
    each frame is read and checked on its own, so memory follows the chunk, not the log."""
    pieces: list[Piece] = []
    rows = base = 0
    commits = (commit for scan in scan_blocks(root) for commit in scan.commits)
    with _FrameReader(root) as frames:
        for commit in commits:
            for part in commit.parts:
                wanted = part.n_prediction if kind == "prediction" else part.n_feedback
                if wanted == 0:
                    continue
                frame = frames.frame(part)
                _check_lines(root, part, frame, wanted, kind)
                pieces.append(Piece(part, _loaded(frame), base, wanted, commit.committed_at_us))
                base += wanted
                rows += wanted
                if rows >= chunk:
                    yield decode_entries(piece_entries(pieces), kind)
                    pieces, rows = [], 0
    if pieces:
        yield decode_entries(piece_entries(pieces), kind)


def _loaded(frame: Frame) -> Callable[[], Frame]:
    return lambda: frame


def read_frame(root: Path, part: Part) -> Frame:
    """One committed frame, read on its own and checked (:class:`CorruptLogError` if not)."""
    with _FrameReader(root) as frames:
        return frames.frame(part)


class _FrameReader:
    """Reads single committed frames (each checked), one open file per segment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, BinaryIO] = {}

    def __enter__(self) -> _FrameReader:
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def frame(self, part: Part) -> Frame:
        handle = self._files.get(part.segment)
        path = segment_file(self.root, part.segment)
        if handle is None:
            try:
                handle = self._files[part.segment] = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                handle = None
        if handle is not None:
            data = os.pread(handle.fileno(), part.length, part.offset)
        else:  # archived (or missing: then empty)
            data = segment_bytes(self.root, part.segment, part.offset, part.length)
        return _checked_frame(data, 0, part, path)


def _checked_frame(data: bytes, pos: int, part: Part, path: Path) -> Frame:
    """The committed frame ``part`` found at ``pos`` of ``data`` (read from ``path``),
    complete and checksummed, else :class:`CorruptLogError`."""
    frame = frame_at(data, pos, SEGMENT_MAGIC)
    if frame is None or frame.length != part.length:
        raise CorruptLogError(
            f"{path}: committed frame at byte {part.offset} is missing or damaged"
        )
    return frame


def _check_lines(root: Path, part: Part, frame: Frame, wanted: int, kind: EventKind) -> None:
    if part.n_prediction + part.n_feedback != wanted or _line_count(frame) != wanted:
        raise CorruptLogError(
            f"{segment_file(root, part.segment)}: frame at byte {part.offset} holds "
            f"{_line_count(frame)} lines, its commit says {wanted} {kind} events"
        )


def read_events(
    root: Path,
    kind: EventKind,
    limit: int | None = None,
    dates: Collection[str] | None = None,
    since: int = 0,
) -> pl.DataFrame:
    """Events of ``kind`` as a frame, one row each, with ``log_offset`` = position among its kind.
    Only events on ``dates`` if given, offsets below ``limit`` if given, and offsets at or
    after ``since`` (frames wholly before it are not read).

    ``features`` (and ``scores``) are structs; labels and predictions are strings,
    so one column can hold any label type without guessing.

    Every frame read is checked against its checksum, as always; a committed frame never
    changes, so its decoded rows are kept in process (:mod:`ct_assets.eventlog.decoded`),
    and so are each date's rows concatenated: a later read of a date reads, checks,
    decodes and appends only the frames committed since (damage to a frame whose rows a
    process holds is found by the next process that reads it, and by writers). When the
    frames' schemas differ (a feature added to an event's features) the whole result is
    built at once, as it would be without the caches.
    """
    import polars as pl

    pieces = _pieces(root, kind, limit, dates, since)
    if not pieces:
        return decode_entries(Entries([], [], []), kind)
    key = str(root.resolve())
    if limit is None and since == 0:
        whole = DATES.read(key, kind, pieces)
        if whole is not None:
            return whole
    decoded = [DECODED.get(key, piece, kind) for piece in pieces]
    frames = same_schema(decoded)
    if frames is None:
        return decode_entries(piece_entries(pieces), kind)
    frames = [
        f if p.skip == 0 and p.count == f.height else f.slice(p.skip, p.count - p.skip)
        for f, p in zip(frames, pieces, strict=True)
    ]
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="vertical", rechunk=True)

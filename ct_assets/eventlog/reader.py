"""Reading the event log: raw lines and Polars frames, in append order (the counts, from
the journal alone: :mod:`ct_assets.eventlog.counts`; decoding: :mod:`ct_assets.eventlog.decode`).

Readers take no lock. They read the journal first and then only the frames it
names, so they see every commit that was complete when they looked and never a
partial one. Reading the events of some dates opens only those dates' segments.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ct_assets.eventlog.counts import (
    LogCounts,
    count_events,
    counts_by_date,
    partition_fingerprint,
    partition_fingerprints,
)
from ct_assets.eventlog.decode import (
    EVENT_FIELDS,
    Entries,
    decode_entries,
    events_to_frame,
    received_time,
)
from ct_assets.eventlog.frames import SEGMENT_MAGIC, CorruptLogError, Frame, frame_at
from ct_assets.eventlog.journal import Part, committed
from ct_assets.eventlog.layout import key_date, segment_file
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
    """Reads each segment once per call, up to what is committed, and checks every frame."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._data: dict[str, bytes] = {}

    def frame(self, part: Part) -> Frame:
        data = self._data.get(part.segment)
        if data is None or len(data) < part.offset + part.length:
            path = segment_file(self.root, part.segment)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                data = b""
            self._data[part.segment] = data
        frame = frame_at(data, part.offset, SEGMENT_MAGIC)
        if frame is None or frame.length != part.length:
            raise CorruptLogError(
                f"{segment_file(self.root, part.segment)}: committed frame at byte "
                f"{part.offset} is missing or damaged"
            )
        return frame


@dataclass(frozen=True)
class _Piece:
    """The lines of one committed frame that a read takes: those from ``skip`` to ``count``,
    log offsets from ``base``, committed at ``received_us``."""

    segment: str
    frame: Frame
    base: int
    count: int
    received_us: int
    skip: int = 0


def _pieces(
    root: Path,
    kind: EventKind,
    limit: int | None,
    dates: Collection[str] | None,
    since: int = 0,
) -> list[_Piece]:
    """The checked frames of ``kind`` a read takes, in commit order (see :func:`read_entries`)."""
    out: list[_Piece] = []
    base = 0
    segments = _SegmentCache(root)
    for commit in committed(root):
        for part in commit.parts:
            if limit is not None and base >= limit:
                return out
            wanted = part.n_prediction if kind == "prediction" else part.n_feedback
            if wanted == 0:
                continue
            if base + wanted <= since or (
                dates is not None and key_date(part.segment) not in dates
            ):
                base += wanted
                continue
            frame = segments.frame(part)
            if part.n_prediction + part.n_feedback != wanted or _line_count(frame) != wanted:
                raise CorruptLogError(
                    f"{segment_file(root, part.segment)}: frame at byte {part.offset} holds "
                    f"{_line_count(frame)} lines, its commit says {wanted} {kind} events"
                )
            count = wanted if limit is None else min(wanted, limit - base)
            skip = max(0, since - base)
            if skip >= count:
                return out  # ``limit`` ends before ``since``
            out.append(_Piece(part.segment, frame, base, count, commit.committed_at_us, skip))
            base += wanted
    return out


def _line_count(frame: Frame) -> int:
    return frame.payload.count(b"\n")


def read_entries(
    root: Path, kind: EventKind, limit: int | None = None, dates: Collection[str] | None = None
) -> Entries:
    """JSON lines of ``kind`` in commit order with their log offsets (position among all
    committed events of that kind). Only events on ``dates`` if given; only offsets below
    ``limit`` if given (without ``dates``: the first ``limit`` events)."""
    return _entries(_pieces(root, kind, limit, dates))


def _entries(pieces: Sequence[_Piece]) -> Entries:
    out = Entries([], [], [])
    for piece in pieces:
        lines = piece.frame.lines()[piece.skip : piece.count]
        out.offsets.extend(range(piece.base + piece.skip, piece.base + piece.count))
        out.lines.extend(lines)
        out.received_us.extend([piece.received_us] * len(lines))
    return out


def read_lines(
    root: Path, kind: EventKind, limit: int | None = None, dates: Collection[str] | None = None
) -> list[bytes]:
    """JSON lines of ``kind`` in commit order; see :func:`read_entries`."""
    return read_entries(root, kind, limit, dates).lines


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
    changes, so its decoded rows are kept in process (:class:`_DecodedFrames`) and a
    later read of the same frame only concatenates them. When the frames' schemas differ
    (a feature added, a column null in one of them) the whole result is built at once,
    as it would be without the cache.
    """
    import polars as pl

    pieces = _pieces(root, kind, limit, dates, since)
    if not pieces:
        return decode_entries(Entries([], [], []), kind)
    key = str(root.resolve())
    decoded = [_DECODED.get(key, piece, kind) for piece in pieces]
    frames = _same_schema(decoded)
    if frames is None:
        return decode_entries(_entries(pieces), kind)
    frames = [
        f if p.skip == 0 and p.count == f.height else f.slice(p.skip, p.count - p.skip)
        for f, p in zip(frames, pieces, strict=True)
    ]
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="vertical", rechunk=True)


def _same_schema(decoded: Sequence[_Decoded]) -> list[pl.DataFrame] | None:
    """The frames with one schema, as decoding all their lines at once would give it, or
    None when that takes decoding them again. Frames whose schemas differ only in columns
    that are all null in some of them (``Null``: e.g. feedback without features next to
    feedback carrying them) get those columns cast to the one type the others agree on."""
    import polars as pl

    keys = {d.schema_key for d in decoded}
    if len(keys) == 1:
        return [d.frame for d in decoded]
    typed: dict[str, pl.DataType] = {}
    for schema in {d.schema_key: d.frame.schema for d in decoded}.values():
        for name, dtype in schema.items():
            if dtype == pl.Null:
                continue
            if typed.setdefault(name, dtype) != dtype:
                return None  # two different types: decoding again decides the supertype
    return [
        d.frame.with_columns(
            pl.col(name).cast(typed[name])
            for name, dtype in d.frame.schema.items()
            if dtype == pl.Null and name in typed
        )
        for d in decoded
    ]


@dataclass(frozen=True)
class _Decoded:
    """The rows of one committed frame, and its schema as text: frames are concatenated
    only when these are equal (comparing text is much cheaper than comparing schemas)."""

    frame: pl.DataFrame
    schema_key: str

    @classmethod
    def of(cls, frame: pl.DataFrame) -> _Decoded:
        return cls(frame, repr(frame.schema))


class _DecodedFrames:
    """Decoded committed frames, newest used kept, up to ``max_rows`` rows in all.

    A frame's rows are a function of its bytes, its kind, its first log offset and its
    commit time, which is what the key holds (the bytes through their length and the
    CRC its header records, which the read checked)."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self._frames: OrderedDict[tuple[Any, ...], _Decoded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, root: str, piece: _Piece, kind: EventKind) -> _Decoded:
        frame = piece.frame
        key = (
            root,
            kind,
            piece.segment,
            frame.offset,
            len(frame.payload),
            frame.crc,
            piece.base,
            piece.received_us,
        )
        with self._lock:
            cached = self._frames.get(key)
            if cached is not None:
                self._frames.move_to_end(key)
                return cached
        lines = frame.lines()
        decoded = _Decoded.of(
            decode_entries(
                Entries(
                    list(range(piece.base, piece.base + len(lines))),
                    lines,
                    [piece.received_us] * len(lines),
                ),
                kind,
            )
        )
        height = decoded.frame.height
        with self._lock:
            if key not in self._frames and height <= self.max_rows:
                self._frames[key] = decoded
                self.rows += height
                while self.rows > self.max_rows:
                    _, evicted = self._frames.popitem(last=False)
                    self.rows -= evicted.frame.height
        return decoded

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self.rows = 0


#: Rows of decoded frames kept per process (a few hundred bytes each).
DECODED_CACHE_ROWS = 250_000
_DECODED = _DecodedFrames(DECODED_CACHE_ROWS)

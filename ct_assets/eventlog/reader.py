"""Reading the event log: counts, raw lines and Polars frames, in append order.

Readers take no lock. They read the journal first and then only the frames it
names, so they see every commit that was complete when they looked and never a
partial one. Reading the events of some dates opens only those dates' segments.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ct_assets.eventlog.frames import SEGMENT_MAGIC, CorruptLogError, Frame, frame_at
from ct_assets.eventlog.journal import Commit, Part, committed
from ct_assets.eventlog.layout import key_date, segment_file
from ct_assets.schema import EVENT_TYPES, EventKind, FeedbackEvent, PredictionEvent

if TYPE_CHECKING:
    import polars as pl

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Columns every frame of a kind has, in order, besides `features` (a struct).
_COMMON = ["log_offset", "event_id", "kind", "schema_version", "timestamp", "received_at"]
_COLUMNS: dict[EventKind, list[str]] = {
    "prediction": [
        *_COMMON,
        "prediction_id",
        "model_name",
        "model_version",
        "arm",
        "entity_id",
        "prediction",
    ],
    "feedback": [
        *_COMMON,
        "feedback_type",
        "prediction_id",
        "entity_id",
        "user_id",
        "source",
        "signal",
        "value",
        "label",
    ],
}


#: The fields of an event of each kind besides those every event has.
EVENT_FIELDS: dict[EventKind, tuple[str, ...]] = {
    kind: tuple(columns[len(_COMMON) :]) for kind, columns in _COLUMNS.items()
}


def received_time(received_us: int) -> datetime:
    """When the log received an event, from the microseconds it stores."""
    return _EPOCH + timedelta(microseconds=received_us)


@dataclass(frozen=True)
class LogCounts:
    prediction: int
    feedback: int

    def of(self, kind: EventKind) -> int:
        return self.prediction if kind == "prediction" else self.feedback


@dataclass
class _Summary:
    """What the commits of one journal add up to, per event date: events of each kind and
    the committed extent of every segment. Commits are only ever appended, so the summary
    of a longer journal adds the new commits to that of its prefix."""

    commits: int = 0
    last: Commit | None = None
    totals: dict[str, list[int]] = field(default_factory=dict)
    extents: dict[str, dict[str, int]] = field(default_factory=dict)

    def follows(self, commits: Sequence[Commit]) -> bool:
        """Whether ``commits`` extend the ones summed (the same objects: a journal read
        afresh, e.g. recreated, gives new ones)."""
        return self.commits <= len(commits) and (
            self.commits == 0 or commits[self.commits - 1] is self.last
        )

    def add(self, commits: Sequence[Commit]) -> None:
        for commit in commits[self.commits :]:
            for part in commit.parts:
                day = key_date(part.segment)
                slot = self.totals.setdefault(day, [0, 0])
                slot[0] += part.n_prediction
                slot[1] += part.n_feedback
                self.extents.setdefault(day, {})[part.segment] = part.offset + part.length
        self.commits = len(commits)
        self.last = commits[-1] if commits else None


_SUMMARIES: dict[Path, _Summary] = {}
_SUMMARIES_LOCK = threading.Lock()


def _summary(root: Path) -> _Summary:
    """The summary of every commit of the log at ``root`` (kept per process, extended with
    the commits added since; built anew when the journal was replaced)."""
    commits = committed(root)
    key = root.resolve()
    with _SUMMARIES_LOCK:
        summary = _SUMMARIES.get(key)
        if summary is None or not summary.follows(commits):
            summary = _SUMMARIES[key] = _Summary()
        summary.add(commits)
        return _Summary(
            summary.commits,
            summary.last,
            {day: list(slot) for day, slot in summary.totals.items()},
            {day: dict(ends) for day, ends in summary.extents.items()},
        )


def count_events(root: Path, dates: Collection[str] | None = None) -> LogCounts:
    """Committed events of each kind (on ``dates`` only, if given), from the journal alone."""
    totals = _summary(root).totals
    chosen = totals.values() if dates is None else [totals[d] for d in set(dates) if d in totals]
    return LogCounts(sum(slot[0] for slot in chosen), sum(slot[1] for slot in chosen))


def counts_by_date(root: Path) -> dict[str, LogCounts]:
    """Committed events of each kind per event date (``YYYY-MM-DD``), in date order."""
    totals = _summary(root).totals
    return {day: LogCounts(*totals[day]) for day in sorted(totals)}


def partition_fingerprints(root: Path) -> dict[str, str]:
    """Per event date, a string that changes whenever events of that date are committed
    (the committed extents of its segments)."""
    extents = _summary(root).extents
    return {
        day: ",".join(f"{key.split('/', 1)[1]}:{end}" for key, end in sorted(ends.items()))
        for day, ends in sorted(extents.items())
    }


def partition_fingerprint(root: Path, day: str) -> str:
    """The fingerprint of one date ("" when it has no events)."""
    return partition_fingerprints(root).get(day, "")


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
class Entries:
    """Committed lines of one kind with their log offsets and commit times (unix µs)."""

    offsets: list[int]
    lines: list[bytes]
    received_us: list[int]


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
        return _decode(Entries([], [], []), kind)
    key = str(root.resolve())
    decoded = [_DECODED.get(key, piece, kind) for piece in pieces]
    frames = _same_schema(decoded)
    if frames is None:
        return _decode(_entries(pieces), kind)
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


def _decode(entries: Entries, kind: EventKind) -> pl.DataFrame:
    event_type: Any = EVENT_TYPES[kind]
    events = msgspec.json.Decoder(list[event_type]).decode(b"[" + b",".join(entries.lines) + b"]")
    received = [received_time(us) for us in entries.received_us]
    events = [
        msgspec.structs.replace(event, received_at=at)
        for event, at in zip(events, received, strict=True)
    ]
    return events_to_frame(events, kind, entries.offsets)


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
            _decode(
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


def events_to_frame(
    events: Sequence[FeedbackEvent | PredictionEvent],
    kind: EventKind,
    offsets: Sequence[int] | None = None,
) -> pl.DataFrame:
    import polars as pl

    columns = _COLUMNS[kind]
    rows: list[dict[str, Any]] = []
    for offset, event in enumerate(events):
        row = {name: getattr(event, name, None) for name in columns[1:]}
        row["kind"] = kind
        row["log_offset"] = offsets[offset] if offsets is not None else offset
        for name in ("label", "prediction"):
            if row.get(name) is not None:
                row[name] = str(row[name])
        row["features"] = getattr(event, "features", None)
        if kind == "prediction":
            row["scores"] = getattr(event, "scores", None)
        rows.append(row)
    schema: dict[str, Any] = {
        "log_offset": pl.Int64,
        "event_id": pl.String,
        "kind": pl.String,
        "schema_version": pl.Int32,
        "timestamp": pl.Datetime("us", "UTC"),
        "received_at": pl.Datetime("us", "UTC"),
    }
    for name in columns[len(_COMMON) :]:
        schema[name] = pl.Float64 if name == "value" else pl.String
    if not rows:
        structs = ["features", "scores"] if kind == "prediction" else ["features"]
        return pl.DataFrame(schema={**schema, **dict.fromkeys(structs, pl.Null)})
    frame = pl.from_dicts(rows, infer_schema_length=None)
    frame = frame.with_columns(
        [pl.col(name).cast(dtype) for name, dtype in schema.items() if name in frame.columns]
    )
    structs = ["features", "scores"] if kind == "prediction" else ["features"]
    for name in structs:
        dtype = frame.schema.get(name)
        if isinstance(dtype, pl.Struct) and not dtype.fields:
            # only empty objects: a struct without fields cannot be written to Parquet
            frame = frame.with_columns(pl.lit(None, dtype=pl.Null).alias(name))
    return frame.select(*schema, *structs)  # the same columns, in the same order, as empty

"""Decoded committed frames kept in process: a committed frame never changes, so its rows
are decoded once; and each date's rows, concatenated, so a later read of the date only
appends the frames committed since. A read takes each frame's bytes from its segment,
and checks them, only when its rows are not held here
(:func:`ct_assets.eventlog.reader.read_events`): the rows held were checked when they
were decoded, and a committed frame is never rewritten."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ct_assets.eventlog.decode import Entries, decode_entries
from ct_assets.eventlog.frames import Frame
from ct_assets.eventlog.journal import Part
from ct_assets.eventlog.layout import key_date
from ct_assets.schema import EventKind

if TYPE_CHECKING:
    import polars as pl

#: Rows of decoded frames kept per process, per cache (a few hundred bytes each).
DECODED_CACHE_ROWS = 250_000


@dataclass(frozen=True)
class Piece:
    """The lines of one committed frame (``part``, as its commit names it) that a read
    takes: those from ``skip`` to ``count``, log offsets from ``base``, committed at
    ``received_us``. ``load`` reads and checks the frame; it is called once, when the
    frame's lines are first needed (not at all when its rows are cached)."""

    part: Part
    load: Callable[[], Frame] = field(compare=False, repr=False)
    base: int = 0
    count: int = 0
    received_us: int = 0
    skip: int = 0

    @property
    def segment(self) -> str:
        return self.part.segment

    @cached_property
    def frame(self) -> Frame:
        return self.load()

    def key(self, root: str, kind: EventKind) -> tuple[Any, ...]:
        """What the frame's rows are a function of: the committed frame (its segment,
        offset and length as the journal records them: a committed frame is never
        rewritten, and the read that decoded it checked it), kind, first log offset
        and commit time."""
        part = self.part
        return (root, kind, part.segment, part.offset, part.length, self.base, self.received_us)


@dataclass(frozen=True)
class Decoded:
    """Rows and their schema as text: frames are concatenated only when these are equal
    (comparing text is much cheaper than comparing schemas)."""

    frame: pl.DataFrame
    schema_key: str

    @classmethod
    def of(cls, frame: pl.DataFrame) -> Decoded:
        return cls(frame, repr(frame.schema))


def same_schema(decoded: Sequence[Decoded]) -> list[pl.DataFrame] | None:
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


class _Bounded:
    """An LRU of decoded frames holding up to ``max_rows`` rows in all."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.rows = 0
        self._items: OrderedDict[tuple[Any, ...], tuple[Any, Decoded]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[Any, Decoded] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], tag: Any, decoded: Decoded) -> None:
        height = decoded.frame.height
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.rows -= old[1].frame.height
            if height > self.max_rows:
                return
            self._items[key] = (tag, decoded)
            self.rows += height
            while self.rows > self.max_rows:
                _, (_, evicted) = self._items.popitem(last=False)
                self.rows -= evicted.frame.height


class DecodedFrames:
    """Decoded committed frames, newest used kept (see :meth:`Piece.key`)."""

    def __init__(self, max_rows: int) -> None:
        self._cache = _Bounded(max_rows)

    def get(self, root: str, piece: Piece, kind: EventKind) -> Decoded:
        key = piece.key(root, kind)
        cached = self._cache.get(key)
        if cached is not None:
            return cached[1]
        lines = piece.frame.lines()
        decoded = Decoded.of(
            decode_entries(
                Entries(
                    list(range(piece.base, piece.base + len(lines))),
                    lines,
                    [piece.received_us] * len(lines),
                ),
                kind,
            )
        )
        self._cache.put(key, None, decoded)
        return decoded


def piece_entries(pieces: Sequence[Piece]) -> Entries:
    """The lines ``pieces`` take, with their log offsets and commit times."""
    out = Entries([], [], [])
    for piece in pieces:
        lines = piece.frame.lines()[piece.skip : piece.count]
        out.offsets.extend(range(piece.base + piece.skip, piece.base + piece.count))
        out.lines.extend(lines)
        out.received_us.extend([piece.received_us] * len(lines))
    return out


def decode_at_once(pieces: Sequence[Piece], kind: EventKind) -> Decoded:
    """The lines ``pieces`` take, decoded in one pass: the rows an uncached read gives."""
    return Decoded.of(decode_entries(piece_entries(pieces), kind))


class DateFrames:
    """Each date's decoded rows of a kind, concatenated: when a read of the date takes the
    frames of the previous read and more, only the new frames are decoded and appended."""

    def __init__(self, max_rows: int, frames: DecodedFrames) -> None:
        self._cache = _Bounded(max_rows)
        self._frames = frames

    def read(self, root: str, kind: EventKind, pieces: Sequence[Piece]) -> pl.DataFrame | None:
        """The rows of whole ``pieces`` (in commit order), as the frames decoded one by one
        and concatenated give them; None when there are none or their schemas need
        decoding them at once (the caller decodes then)."""
        import polars as pl

        if not pieces:
            return None

        by_date: dict[str, list[Piece]] = {}
        for piece in pieces:
            by_date.setdefault(key_date(piece.segment), []).append(piece)
        dates = []
        for day, day_pieces in by_date.items():
            decoded = self._date(root, kind, day, day_pieces)
            if decoded is None:
                return None
            dates.append(decoded)
        frames = same_schema(dates)
        if frames is None:
            return None
        if len(frames) == 1:
            return frames[0]
        # log offsets grow with commit order: sorting by them restores it across dates
        return pl.concat(frames, how="vertical", rechunk=True).sort("log_offset")

    def _date(
        self, root: str, kind: EventKind, day: str, pieces: Sequence[Piece]
    ) -> Decoded | None:
        import polars as pl

        keys = tuple(p.key(root, kind) for p in pieces)
        cache_key = (root, kind, day)
        cached = self._cache.get(cache_key)
        parts: list[Decoded] = []
        new = pieces
        if cached is not None:
            held, decoded = cached
            if keys[: len(held)] == held:
                if len(held) == len(keys):
                    return decoded  # type: ignore[no-any-return]
                parts, new = [decoded], pieces[len(held) :]
        if len(new) == 1:
            parts.append(self._frames.get(root, new[0], kind))
        else:  # many frames (a first read): one decoding pass, not one per frame
            parts.append(decode_at_once(new, kind))
        frames = same_schema(parts)
        if frames is None:
            return None
        whole = Decoded.of(
            frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical", rechunk=True)
        )
        self._cache.put(cache_key, keys, whole)
        return whole


DECODED = DecodedFrames(DECODED_CACHE_ROWS)
DATES = DateFrames(DECODED_CACHE_ROWS, DECODED)

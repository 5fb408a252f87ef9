"""A date's committed frames, in commit order, held as columns of machine integers.

The journal summary keeps, per event date, where each committed frame of that date is
and where it stands in the log (:class:`DatedPart`). A long log holds millions of
frames; as Python objects each took about 500 bytes, as columns they take 72 (eight
``int64`` columns and a segment number), and a checkpoint chunk stores the columns'
bytes, read back without decoding frame by frame."""

from __future__ import annotations

import bisect
import itertools
import sys
from array import array
from collections.abc import Iterator
from typing import NamedTuple

from ct_assets.eventlog.journal import Part
from ct_assets.schema import EventKind


class DatedPart(NamedTuple):
    """One committed frame with where it stands in the log: its commit's position in the
    journal, the log offsets of its first prediction and first feedback event, and its
    commit time."""

    commit: int
    part: Part
    prediction_base: int
    feedback_base: int
    committed_at_us: int

    def base(self, kind: EventKind) -> int:
        return self.prediction_base if kind == "prediction" else self.feedback_base


#: The integer columns, in the order chunks store them.
_COLUMNS = (
    "commit",
    "segment",
    "offset",
    "length",
    "n_prediction",
    "n_feedback",
    "prediction_base",
    "feedback_base",
    "committed_at_us",
)


class FrameColumns:
    """The frames of one date in commit order: ``segments`` names each segment once and
    the ``segment`` column holds positions in it."""

    __slots__ = ("_numbers", "segments", *_COLUMNS)
    commit: array[int]
    segment: array[int]
    offset: array[int]
    length: array[int]
    n_prediction: array[int]
    n_feedback: array[int]
    prediction_base: array[int]
    feedback_base: array[int]
    committed_at_us: array[int]

    def __init__(self, segments: list[str] | None = None) -> None:
        self.segments: list[str] = segments if segments is not None else []
        self._numbers = {name: i for i, name in enumerate(self.segments)}
        for name in _COLUMNS:
            setattr(self, name, array("q"))

    def __len__(self) -> int:
        return len(self.commit)

    def append(self, dated: DatedPart) -> None:
        self.add(dated.commit, dated.part, *dated[2:])

    def add(
        self,
        commit: int,
        part: Part,
        prediction_base: int,
        feedback_base: int,
        committed_at_us: int,
    ) -> None:
        """Append the frame ``part`` of commit ``commit`` (see :class:`DatedPart`)."""
        number = self._numbers.get(part.segment)
        if number is None:
            number = self._numbers[part.segment] = len(self.segments)
            self.segments.append(part.segment)
        self.commit.append(commit)
        self.segment.append(number)
        self.offset.append(part.offset)
        self.length.append(part.length)
        self.n_prediction.append(part.n_prediction)
        self.n_feedback.append(part.n_feedback)
        self.prediction_base.append(prediction_base)
        self.feedback_base.append(feedback_base)
        self.committed_at_us.append(committed_at_us)

    def __getitem__(self, i: int) -> DatedPart:
        c = [getattr(self, name)[i] for name in _COLUMNS]
        part = Part(self.segments[c[1]], c[2], c[3], c[4], c[5])
        return DatedPart(c[0], part, c[6], c[7], c[8])

    def __iter__(self) -> Iterator[DatedPart]:
        return self.upto(len(self))

    def upto(self, n: int) -> Iterator[DatedPart]:
        """The first ``n`` frames, made one at a time (frames appended meanwhile, by
        another thread, are not among them)."""
        columns = [getattr(self, name) for name in _COLUMNS]
        segments = self.segments
        for c in itertools.islice(zip(*columns, strict=False), n):
            yield DatedPart(c[0], Part(segments[c[1]], c[2], c[3], c[4], c[5]), c[6], c[7], c[8])

    def find(self, part: Part) -> DatedPart | None:
        """The frame ``part`` names (its segment and offset), if it is one of these."""
        number = self._numbers.get(part.segment)
        if number is None:
            return None
        start = 0
        while True:
            try:
                i = self.offset.index(part.offset, start)
            except ValueError:
                return None
            if self.segment[i] == number:
                return self[i]
            start = i + 1

    def first_commit(self) -> int | None:
        return self.commit[0] if len(self) else None

    def _from(self, start: int, stop: int) -> FrameColumns:
        out = FrameColumns(list(self.segments))
        for name in _COLUMNS:
            setattr(out, name, getattr(self, name)[start:stop])
        return out

    def before(self, commit: int) -> FrameColumns:
        """The frames of commits before ``commit``."""
        return self._from(0, bisect.bisect_left(self.commit, commit))

    def since(self, commit: int) -> FrameColumns:
        """The frames of commit ``commit`` and later ones."""
        return self._from(bisect.bisect_left(self.commit, commit), len(self))

    def extended(self, later: FrameColumns) -> FrameColumns:
        """These frames followed by ``later``'s (of later commits)."""
        out = self._from(0, len(self))
        remap = array("q")
        for name in later.segments:
            number = out._numbers.get(name)
            if number is None:
                number = out._numbers[name] = len(out.segments)
                out.segments.append(name)
            remap.append(number)
        for name in _COLUMNS:
            if name != "segment":
                getattr(out, name).extend(getattr(later, name))
        if list(remap) == list(range(len(remap))):
            out.segment.extend(later.segment)
        else:
            out.segment.extend(array("q", (remap[n] for n in later.segment)))
        return out

    def to_bytes(self) -> list[bytes]:
        """The columns as little-endian ``int64`` bytes, in :data:`_COLUMNS` order."""
        out = []
        for name in _COLUMNS:
            column = getattr(self, name)
            if sys.byteorder != "little":
                column = array("q", column)
                column.byteswap()
            out.append(column.tobytes())
        return out

    @classmethod
    def from_bytes(cls, segments: list[str], columns: list[bytes]) -> FrameColumns | None:
        """The frames :meth:`to_bytes` wrote; None when the columns do not fit together
        (a count, a length or a segment number that cannot be)."""
        if len(columns) != len(_COLUMNS) or any(len(c) % 8 for c in columns):
            return None
        out = cls(list(segments))
        for name, data in zip(_COLUMNS, columns, strict=True):
            column = array("q")
            column.frombytes(data)
            if sys.byteorder != "little":
                column.byteswap()
            setattr(out, name, column)
        lengths = {len(getattr(out, name)) for name in _COLUMNS}
        numbers = out.segment
        if len(lengths) != 1:
            return None
        if len(numbers) and not (min(numbers) >= 0 and max(numbers) < len(segments)):
            return None
        return out

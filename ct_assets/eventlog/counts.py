"""How many events the log holds, per kind and per event date, a fingerprint of each
date's committed extents, and where each date's frames are: from the journal alone,
without reading a segment."""

from __future__ import annotations

import bisect
import heapq
import os
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ct_assets.eventlog.checkpoint import (
    CHECKPOINT_VERSION,
    Chunk,
    ChunkRef,
    Head,
    Mark,
    chunk_name,
    chunk_of,
    load_chunks,
    load_head,
    stop_at,
    write_checkpoint,
)
from ct_assets.eventlog.dedup import record_matches
from ct_assets.eventlog.frame_columns import DatedPart, FrameColumns
from ct_assets.eventlog.frames import HEADER
from ct_assets.eventlog.idindex import Covered
from ct_assets.eventlog.journal import (
    Commit,
    JournalScan,
    Part,
    commits_between,
    scan_blocks,
)
from ct_assets.eventlog.layout import journal_path, key_date
from ct_assets.schema import EventKind


@dataclass(frozen=True)
class LogCounts:
    prediction: int
    feedback: int

    def of(self, kind: EventKind) -> int:
        return self.prediction if kind == "prediction" else self.feedback


def located_parts(
    commits: Sequence[Commit], first: int = 0, predictions: int = 0, feedback: int = 0
) -> Iterator[DatedPart]:
    """Every frame of ``commits`` in commit order: the journal's from its start, or from
    commit ``first`` where the log offsets of its first events are ``predictions`` and
    ``feedback``."""
    for index, commit in enumerate(commits, start=first):
        for part in commit.parts:
            yield DatedPart(index, part, predictions, feedback, commit.committed_at_us)
            predictions += part.n_prediction
            feedback += part.n_feedback


def parts_between(
    root: Path, kind: EventKind, since: int, limit: int | None
) -> Iterator[DatedPart]:
    """The frames a read of ``kind`` at log offsets in [``since``, ``limit``) takes, and
    some before and after: the journal is read from the summary's last mark at or before
    ``since`` to its first mark at or after ``limit`` (to its end without one)."""
    marks = summary_marks(root)
    bases = [mark.prediction_base if kind == "prediction" else mark.feedback_base for mark in marks]
    i = max(0, bisect.bisect_right(bases, since) - 1)
    mark = marks[i]
    commits = commits_between(root, mark.at, stop_at(marks, bases, i, limit))
    yield from located_parts(commits, mark.commit, mark.prediction_base, mark.feedback_base)


@dataclass
class _Summary:
    """What the journal up to byte ``end`` adds up to, per event date: events of each kind,
    the committed extent of every segment, and the date's frames in commit order. Records
    are only ever appended, so the summary of a longer journal adds the new records to
    that of its prefix. Started from a checkpoint (:mod:`.checkpoint`), the frames of
    the dates it covers stay on disk (``unloaded``) until a read asks for them."""

    inode: int = 0
    head: bytes = b""  # the journal's first record header
    end: int = 0
    last_at: int = 0
    last_crc: int = 0
    commits: int = 0
    predictions: int = 0
    feedback: int = 0
    totals: dict[str, list[int]] = field(default_factory=dict)
    extents: dict[str, dict[str, int]] = field(default_factory=dict)
    parts: dict[str, FrameColumns] = field(default_factory=dict)
    #: per date, the checkpoint's chunks holding its frames of commits < ``checkpointed``
    chunks: dict[str, list[ChunkRef]] = field(default_factory=dict)
    #: dates whose frames in ``chunks`` are not read yet (their ``parts`` hold only later ones)
    unloaded: set[str] = field(default_factory=set)
    checkpointed: int = 0
    #: the number of records at which this process writes the next checkpoint
    next_checkpoint: int = 0
    #: commits whose feedback tally is summed in ``tally``; ranges of feedback recorded
    #: without one (in commit order); a :class:`Mark` every :data:`MARK_EVERY` commits
    tallied: int = 0
    tally: dict[str, list[int]] = field(default_factory=dict)
    undecided: list[tuple[int, int]] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    def mark(self, at: int) -> Mark:
        """The summary now, before the commit recorded at journal byte ``at``."""
        return Mark(
            self.commits,
            at,
            self.predictions,
            self.feedback,
            self.tallied,
            {key: list(slot) for key, slot in self.tally.items()},
            len(self.undecided),
        )

    def add(self, scan: JournalScan) -> None:
        for commit, (at, _end, crc) in zip(scan.commits, scan.records, strict=True):
            index = self.commits
            if index % MARK_EVERY == 0:
                self.marks.append(self.mark(at))
            feedback_before = self.feedback
            for part in commit.parts:
                day = key_date(part.segment)
                slot = self.totals.setdefault(day, [0, 0])
                slot[0] += part.n_prediction
                slot[1] += part.n_feedback
                self.extents.setdefault(day, {})[part.segment] = part.offset + part.length
                frames = self.parts.get(day)
                if frames is None:
                    frames = self.parts[day] = FrameColumns()
                frames.add(index, part, self.predictions, self.feedback, commit.committed_at_us)
                self.predictions += part.n_prediction
                self.feedback += part.n_feedback
            if self.feedback > feedback_before:
                if commit.labels is None:
                    self.undecided.append((feedback_before, self.feedback))
                else:
                    self.tallied += 1
                    for key, (n, with_value) in commit.labels.items():
                        slot = self.tally.setdefault(key, [0, 0])
                        slot[0] += n
                        slot[1] += with_value
            self.commits += 1
            self.last_at, self.last_crc = at, crc
        self.end = scan.valid_end


@dataclass(frozen=True)
class TallyMarks:
    """Marks of the journal summary (:meth:`_Summary.mark`), the last one at its end, and
    the ranges of feedback recorded without a tally the marks count."""

    marks: list[Mark]
    undecided: list[tuple[int, int]]


def tally_marks(root: Path) -> TallyMarks:
    """The summary's marks, ending with one at the end of the journal as now committed:
    where to start reading the journal for the feedback from a log offset on, and the
    tallies of all feedback before each (:func:`ct_assets.eventlog.tally.feedback_tally`)."""
    with _SUMMARIES_LOCK:
        summary = _current(root)
        return TallyMarks([*summary.marks, summary.mark(summary.end)], list(summary.undecided))


def summary_marks(root: Path) -> list[Mark]:
    """The marks of :func:`tally_marks`, without the untallied ranges."""
    with _SUMMARIES_LOCK:
        summary = _current(root)
        return [*summary.marks, summary.mark(summary.end)]


#: A process that summarized this many journal records past the checkpoint writes one.
CHECKPOINT_COMMITS = 10_000
#: Commits between two marks of the summary (a read from a log offset starts at one).
MARK_EVERY = 1_000

_SUMMARIES: dict[Path, _Summary] = {}
_SUMMARIES_LOCK = threading.Lock()


def _from_checkpoint(root: Path, head: bytes, size: int) -> _Summary:
    """A summary started from the checkpoint on disk when it is this journal's (its first
    header, and the record ending where the checkpoint ends, as recorded), else empty."""
    found = load_head(root)
    if (
        found is None
        or found.journal_head != head
        or size < found.journal_end
        or not record_matches(
            root, Covered(found.journal_end, 0, found.last_at, found.last_crc, head)
        )
    ):
        return _Summary(head=head, next_checkpoint=CHECKPOINT_COMMITS)
    return _Summary(
        head=head,
        end=found.journal_end,
        last_at=found.last_at,
        last_crc=found.last_crc,
        commits=found.commits,
        predictions=found.predictions,
        feedback=found.feedback,
        totals={day: list(slot) for day, slot in found.totals.items()},
        extents={day: dict(ends) for day, ends in found.extents.items()},
        chunks={day: list(refs) for day, refs in found.chunks.items()},
        unloaded=set(found.chunks),
        checkpointed=found.commits,
        next_checkpoint=found.commits + CHECKPOINT_COMMITS,
        tallied=found.tallied,
        tally={key: list(slot) for key, slot in found.tally.items()},
        undecided=list(found.undecided),
        marks=list(found.marks),
    )


def _current(root: Path, *, from_start: bool = False) -> _Summary:
    """The summary of every committed record of the log at ``root``: kept per process and
    extended with the records added since; started from the checkpoint on disk (or, with
    ``from_start`` or without a usable one, from the journal's start) when the process
    has none or the journal was replaced. A torn tail is not committed; damage raises
    :class:`CorruptLogError`. Call with ``_SUMMARIES_LOCK`` held, and copy what is kept."""
    path = journal_path(root)
    key = root.resolve()
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            head = handle.read(HEADER.size)
    except FileNotFoundError:
        _SUMMARIES.pop(key, None)
        return _Summary()
    summary = _SUMMARIES.get(key)
    if (
        from_start
        or summary is None
        or summary.inode != stat.st_ino
        or summary.head != head
        or stat.st_size < summary.end
    ):
        if from_start:
            summary = _Summary(head=head, next_checkpoint=CHECKPOINT_COMMITS)
        else:
            summary = _from_checkpoint(root, head, stat.st_size)
        summary.inode = stat.st_ino
        _SUMMARIES[key] = summary
    if stat.st_size > summary.end:
        for scan in scan_blocks(root, summary.end):
            summary.add(scan)
    if summary.commits >= summary.next_checkpoint:
        _checkpoint(root, summary)
    return summary


def _checkpoint(root: Path, summary: _Summary) -> None:
    """Write the summary as a checkpoint: a chunk per date with the frames of the commits
    since the previous one, then the head."""
    first = summary.checkpointed
    new: dict[str, tuple[str, Chunk]] = {}
    name = chunk_name(first, summary.commits)
    chunks = {day: list(refs) for day, refs in summary.chunks.items()}
    for day, located in summary.parts.items():
        recent = located.since(first)
        if len(recent):
            new[day] = (name, chunk_of(summary.head, day, recent))
            chunks.setdefault(day, []).append(ChunkRef(name, len(recent)))
    head = Head(
        CHECKPOINT_VERSION,
        summary.head,
        summary.end,
        summary.last_at,
        summary.last_crc,
        summary.commits,
        summary.predictions,
        summary.feedback,
        summary.totals,
        summary.extents,
        chunks,
        summary.tallied,
        summary.tally,
        summary.undecided,
        summary.marks,
    )
    if write_checkpoint(root, head, new):
        summary.chunks, summary.checkpointed = chunks, summary.commits
    # not written (a directory this process cannot write): tried again after as many more
    summary.next_checkpoint = summary.commits + CHECKPOINT_COMMITS


def _load_dates(root: Path, summary: _Summary, dates: Collection[str]) -> bool:
    """Read the checkpointed frames of those of ``dates`` not read yet into the summary;
    False when a chunk cannot be used."""
    for day in set(dates) & summary.unloaded:
        stored = load_chunks(root, summary.head, day, summary.chunks.get(day, []))
        if stored is None:
            return False
        held = summary.parts.get(day)
        # the frames held (read from the journal since) may be in the newest chunks too
        first_held = held.first_commit() if held is not None else None
        located = stored.before(summary.commits if first_held is None else first_held)
        summary.parts[day] = located.extended(held) if held is not None else located
        summary.unloaded.discard(day)
    return True


def _summary(root: Path) -> _Summary:
    """A copy of the counts and extents of :func:`_current` (without the frames)."""
    with _SUMMARIES_LOCK:
        summary = _current(root)
        return _Summary(
            commits=summary.commits,
            totals={day: list(slot) for day, slot in summary.totals.items()},
            extents={day: dict(ends) for day, ends in summary.extents.items()},
        )


def _frames_of(root: Path, dates: Collection[str]) -> dict[str, FrameColumns]:
    """The summary's frames of those of ``dates`` that have events, their checkpointed
    ones read first (the journal summarized from its start when a chunk cannot be used).
    The caller holds ``_SUMMARIES_LOCK``."""
    summary = _current(root)
    if not _load_dates(root, summary, dates):
        summary = _current(root, from_start=True)
    return {day: summary.parts[day] for day in set(dates) if day in summary.parts}


def dated_parts(root: Path, dates: Collection[str]) -> Iterator[DatedPart]:
    """The committed frames of events on ``dates``, in commit order: what a read of those
    dates takes, found without walking the other dates' commits. Made one at a time from
    the summary's columns as the caller takes them (the frames committed meanwhile are
    not among them)."""
    with _SUMMARIES_LOCK:
        held = _frames_of(root, dates)
        frames = [columns.upto(len(columns)) for columns in held.values()]
    if len(frames) == 1:
        return frames[0]
    # within a commit, frames come in the order written: by their first log offsets
    return heapq.merge(*frames, key=lambda p: (p.commit, p.prediction_base + p.feedback_base))


def count_events(root: Path, dates: Collection[str] | None = None) -> LogCounts:
    """Committed events of each kind (on ``dates`` only, if given), from the journal alone."""
    totals = _summary(root).totals
    chosen = totals.values() if dates is None else [totals[d] for d in set(dates) if d in totals]
    return LogCounts(sum(slot[0] for slot in chosen), sum(slot[1] for slot in chosen))


def counts_by_date(root: Path) -> dict[str, LogCounts]:
    """Committed events of each kind per event date (``YYYY-MM-DD``), in date order."""
    totals = _summary(root).totals
    return {day: LogCounts(*totals[day]) for day in sorted(totals)}


def committed_extents(root: Path) -> dict[str, dict[str, int]]:
    """Per event date, each segment's committed end (byte offset), from the journal alone."""
    return _summary(root).extents


def partition_fingerprints(root: Path) -> dict[str, str]:
    """Per event date, a string that changes whenever events of that date are committed
    (the committed extents of its segments)."""
    extents = _summary(root).extents
    return {
        day: ",".join(f"{key.split('/', 1)[1]}:{end}" for key, end in sorted(ends.items()))
        for day, ends in sorted(extents.items())
    }


def locate_frame(root: Path, part: Part) -> DatedPart | None:
    """Where the committed frame ``part`` stands in the log (its commit and the log
    offsets of its first events), from the summary of its date alone; None when the
    journal holds no such frame."""
    day = key_date(part.segment)
    with _SUMMARIES_LOCK:
        frames = _frames_of(root, [day]).get(day)
        return frames.find(part) if frames is not None else None


@dataclass(frozen=True)
class SinceFingerprint:
    """A date's events of one kind split at an earlier fingerprint of the date: how many
    its frames held then, and the log offset of the first one committed since (None
    when none was)."""

    before: int
    since: int | None


def split_at_fingerprint(
    root: Path, kind: EventKind, day: str, earlier: str
) -> SinceFingerprint | None:
    """The events of ``kind`` on ``day`` committed up to the date's fingerprint ``earlier``
    and since; None when ``earlier`` is not a fingerprint this date had (a segment it
    names is gone or shorter, or it cuts a frame)."""
    try:
        ends = {
            name: int(end) for name, end in (item.rsplit(":", 1) for item in earlier.split(","))
        }
    except ValueError:
        return None
    current = {
        key.split("/", 1)[1]: end for key, end in _summary(root).extents.get(day, {}).items()
    }
    if not ends or any(current.get(name, -1) < end for name, end in ends.items()):
        return None
    before, since = 0, None
    for dated in dated_parts(root, [day]):
        part = dated.part
        n = part.n_prediction if kind == "prediction" else part.n_feedback
        end = ends.get(part.segment.split("/", 1)[1], 0)
        if part.offset + part.length <= end:
            before += n
        elif part.offset < end:
            return None  # a fingerprint ends inside a frame: not this date's
        elif n and since is None:
            since = dated.base(kind)
    return SinceFingerprint(before, since)


def partition_fingerprint(root: Path, day: str) -> str:
    """The fingerprint of one date ("" when it has no events)."""
    return partition_fingerprints(root).get(day, "")

"""How many events the log holds, per kind and per event date, a fingerprint of each
date's committed extents, and where each date's frames are: from the journal alone,
without reading a segment."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ct_assets.eventlog.journal import Commit, Part, committed
from ct_assets.eventlog.layout import key_date
from ct_assets.schema import EventKind


@dataclass(frozen=True)
class LogCounts:
    prediction: int
    feedback: int

    def of(self, kind: EventKind) -> int:
        return self.prediction if kind == "prediction" else self.feedback


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


def located_parts(commits: Sequence[Commit]) -> Iterator[DatedPart]:
    """Every frame of ``commits`` (the journal from its start), in commit order."""
    predictions = feedback = 0
    for index, commit in enumerate(commits):
        for part in commit.parts:
            yield DatedPart(index, part, predictions, feedback, commit.committed_at_us)
            predictions += part.n_prediction
            feedback += part.n_feedback


@dataclass
class _Summary:
    """What the commits of one journal add up to, per event date: events of each kind, the
    committed extent of every segment, and the date's frames in commit order. Commits are
    only ever appended, so the summary of a longer journal adds the new commits to that
    of its prefix."""

    commits: int = 0
    last: Commit | None = None
    totals: dict[str, list[int]] = field(default_factory=dict)
    extents: dict[str, dict[str, int]] = field(default_factory=dict)
    parts: dict[str, list[DatedPart]] = field(default_factory=dict)
    predictions: int = 0
    feedback: int = 0

    def follows(self, commits: Sequence[Commit]) -> bool:
        """Whether ``commits`` extend the ones summed (the same objects: a journal read
        afresh, e.g. recreated, gives new ones)."""
        return self.commits <= len(commits) and (
            self.commits == 0 or commits[self.commits - 1] is self.last
        )

    def add(self, commits: Sequence[Commit]) -> None:
        for index in range(self.commits, len(commits)):
            commit = commits[index]
            for part in commit.parts:
                day = key_date(part.segment)
                slot = self.totals.setdefault(day, [0, 0])
                slot[0] += part.n_prediction
                slot[1] += part.n_feedback
                self.extents.setdefault(day, {})[part.segment] = part.offset + part.length
                located = DatedPart(
                    index, part, self.predictions, self.feedback, commit.committed_at_us
                )
                self.parts.setdefault(day, []).append(located)
                self.predictions += part.n_prediction
                self.feedback += part.n_feedback
        self.commits = len(commits)
        self.last = commits[-1] if commits else None


_SUMMARIES: dict[Path, _Summary] = {}
_SUMMARIES_LOCK = threading.Lock()


def _current(root: Path) -> _Summary:
    """The summary of every commit of the log at ``root`` (kept per process, extended with
    the commits added since; built anew when the journal was replaced). Call with
    ``_SUMMARIES_LOCK`` held, and copy what is kept."""
    commits = committed(root)
    key = root.resolve()
    summary = _SUMMARIES.get(key)
    if summary is None or not summary.follows(commits):
        summary = _SUMMARIES[key] = _Summary()
    summary.add(commits)
    return summary


def _summary(root: Path) -> _Summary:
    """A copy of the counts and extents of :func:`_current` (without the frames)."""
    with _SUMMARIES_LOCK:
        summary = _current(root)
        return _Summary(
            summary.commits,
            summary.last,
            {day: list(slot) for day, slot in summary.totals.items()},
            {day: dict(ends) for day, ends in summary.extents.items()},
        )


def dated_parts(root: Path, dates: Collection[str]) -> list[DatedPart]:
    """The committed frames of events on ``dates``, in commit order: what a read of those
    dates takes, found without walking the other dates' commits."""
    with _SUMMARIES_LOCK:
        summary = _current(root)
        days = [day for day in set(dates) if day in summary.parts]
        chosen = [part for day in days for part in summary.parts[day]]
    if len(days) > 1:
        # within a commit, frames come in the order written: by their first log offsets
        chosen.sort(key=lambda p: (p.commit, p.prediction_base + p.feedback_base))
    return chosen


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

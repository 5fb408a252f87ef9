"""What each commit's feedback could be labeled from, counted when it is committed.

Every journal record written carries a tally of its feedback events: ``explicit`` ->
``[n, n]`` for explicit feedback with a label, and ``implicit:<signal>`` -> ``[n,
with_value]`` for implicit feedback with a signal (``with_value``: those with a
value, which is what a dwell signal needs). Whether feedback is labeled depends on
the label policy, which the log does not know; the tally holds what every policy
decides from, so "labeled feedback at log offsets in [start, end)" is a sum over the
commits of that range, read from the journal alone: no segment is decoded.

The tally is part of the journal record, the commit point, so it is exactly as
durable as the events it counts: there is nothing to catch up after a crash.
Records written before tallies existed have none; :func:`feedback_tally` names their
offset ranges so the caller decodes those (and the partial commits at both ends).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ct_assets.eventlog.journal import Commit, committed

EXPLICIT_KEY = "explicit"
IMPLICIT_PREFIX = "implicit:"

#: A tally: class key -> [events, events with a value].
Tally = dict[str, list[int]]


class _LabelFields(msgspec.Struct):
    """The fields of a feedback line the tally reads (the rest are skipped)."""

    feedback_type: str | None = None
    label: Any = None
    signal: str | None = None
    value: float | None = None


_DECODER = msgspec.json.Decoder(_LabelFields)


def add_to(tally: Tally, key: str, n: int, with_value: int) -> None:
    slot = tally.get(key)
    if slot is None:
        tally[key] = [n, with_value]
    else:
        slot[0] += n
        slot[1] += with_value


def merge(into: Tally, other: Mapping[str, list[int]]) -> Tally:
    """``into`` with ``other`` added to it."""
    for key, (n, with_value) in other.items():
        add_to(into, key, n, with_value)
    return into


def tally_lines(lines: Iterable[bytes]) -> Tally | None:
    """The tally of feedback events given as their JSON lines (as stored in frames); None
    when a line does not read as feedback (its commit is then recorded without a tally
    and counted by decoding: a tally never stops a commit)."""
    out: Tally = {}
    for line in lines:
        try:
            fields = _DECODER.decode(line)
        except msgspec.DecodeError:
            return None
        if fields.feedback_type == "explicit":
            if fields.label is not None:
                add_to(out, EXPLICIT_KEY, 1, 1)
        elif fields.feedback_type == "implicit" and fields.signal is not None:
            value = fields.value
            add_to(
                out, IMPLICIT_PREFIX + fields.signal, 1, int(value is not None and value == value)
            )
    return out


@dataclass
class FeedbackTally:
    """The tally of the commits wholly inside a feedback offset range, and the offset
    ranges (``[start, end)``) it does not cover: partial commits at the range's ends and
    commits recorded without a tally."""

    tally: Tally = field(default_factory=dict)
    undecided: list[tuple[int, int]] = field(default_factory=list)
    commits: int = 0

    def leave(self, start: int, end: int) -> None:
        if end <= start:
            return
        if self.undecided and self.undecided[-1][1] == start:
            self.undecided[-1] = (self.undecided[-1][0], end)
        else:
            self.undecided.append((start, end))


@dataclass
class _Ends:
    """The commits of one journal that hold feedback, and the feedback offset each ends
    at (increasing: bisected). Commits are only ever appended, so those of a longer
    journal extend the lists; a journal read afresh (replaced) starts new ones."""

    commits: list[Commit] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    seen: int = 0
    last: Commit | None = None

    def follows(self, journal: Sequence[Commit]) -> bool:
        return self.seen <= len(journal) and (self.seen == 0 or journal[self.seen - 1] is self.last)

    def add(self, journal: Sequence[Commit]) -> None:
        total = self.ends[-1] if self.ends else 0
        for commit in journal[self.seen :]:
            n = sum(part.n_feedback for part in commit.parts)
            if n:
                total += n
                self.commits.append(commit)
                self.ends.append(total)
        self.seen = len(journal)
        self.last = journal[-1] if journal else None


_ENDS: dict[Path, _Ends] = {}
_ENDS_LOCK = threading.Lock()


def _feedback_commits(root: Path) -> tuple[list[Commit], list[int], int]:
    """The commits holding feedback, their end offsets, and how many there are now (the
    lists only grow, so the first ``n`` entries stay as they are)."""
    journal = committed(root)
    key = root.resolve()
    with _ENDS_LOCK:
        ends = _ENDS.get(key)
        if ends is None or not ends.follows(journal):
            ends = _ENDS[key] = _Ends()
        ends.add(journal)
        return ends.commits, ends.ends, len(ends.ends)


def feedback_tally(root: Path, start: int, end: int) -> FeedbackTally:
    """The tally of the feedback at log offsets in [``start``, ``end``), from the journal:
    the commits of the range are found by bisection, so the cost follows the commits in
    the range, not the log's history."""
    out = FeedbackTally()
    commits, ends, n = _feedback_commits(root)
    i = bisect.bisect_right(ends, start, 0, n)
    while i < n:
        first = ends[i - 1] if i else 0
        if first >= end:
            break
        last = ends[i]
        labels = commits[i].labels
        if first >= start and last <= end and labels is not None:
            merge(out.tally, labels)
            out.commits += 1
        else:
            out.leave(max(first, start), min(last, end))
        i += 1
    return out

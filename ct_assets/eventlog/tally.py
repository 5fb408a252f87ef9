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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ct_assets.eventlog.checkpoint import Mark, stop_at
from ct_assets.eventlog.counts import tally_marks
from ct_assets.eventlog.journal import commits_between

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


def feedback_tally(root: Path, start: int, end: int) -> FeedbackTally:
    """The tally of the feedback at log offsets in [``start``, ``end``), from the journal.
    The journal summary (:func:`ct_assets.eventlog.counts.tally_marks`) holds, every
    ``MARK_EVERY`` commits, the sum of the tallies before it: the commits between the
    first mark in the range and the last are counted by subtracting two sums, and only
    the journal records from the mark before ``start`` to the first mark in the range,
    and from the last mark in the range to ``end``, are read. So the cost follows
    neither the log's history nor the range's length."""
    out = FeedbackTally()
    if end <= start:
        return out
    summary = tally_marks(root)
    marks = summary.marks
    bases = [mark.feedback_base for mark in marks]
    lo = bisect.bisect_left(bases, start)  # the first mark at or after start
    hi = bisect.bisect_right(bases, end) - 1  # the last mark at or before end
    if lo > hi:  # no mark in the range: read it from the mark before it
        _read_range(root, out, marks, bases, bisect.bisect_right(bases, start) - 1, start, end)
        return out
    if lo > 0:
        _read_range(root, out, marks, bases, lo - 1, start, bases[lo])
    first, last = marks[lo], marks[hi]
    for key, (n, with_value) in last.tally.items():
        before = first.tally.get(key, [0, 0])
        if n > before[0]:
            add_to(out.tally, key, n - before[0], with_value - before[1])
    out.commits += last.tallied - first.tallied
    for range_start, range_end in summary.undecided[first.undecided : last.undecided]:
        out.leave(range_start, range_end)
    _read_range(root, out, marks, bases, hi, bases[hi], end)
    return out


def _read_range(
    root: Path,
    out: FeedbackTally,
    marks: Sequence[Mark],
    bases: Sequence[int],
    i: int,
    start: int,
    end: int,
) -> None:
    """Add the feedback at offsets in [``start``, ``end``) to ``out``, reading the journal
    from mark ``i`` (at or before ``start``) to the first later mark at or after ``end``."""
    if end <= start:
        return
    mark = marks[i]
    offset = mark.feedback_base
    for commit in commits_between(root, mark.at, stop_at(marks, bases, i, end)):
        n = sum(part.n_feedback for part in commit.parts)
        if not n:
            continue
        first, last = offset, offset + n
        offset = last
        if last <= start:
            continue
        if first >= end:
            break
        if first >= start and last <= end and commit.labels is not None:
            merge(out.tally, commit.labels)
            out.commits += 1
        else:
            out.leave(max(first, start), min(last, end))

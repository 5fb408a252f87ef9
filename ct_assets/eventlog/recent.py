"""The newest event dates of a log: where the windows of recent events begin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ct_assets.schema import EventKind

if TYPE_CHECKING:
    from ct_assets.eventlog import EventLog


def newest_dates(log: EventLog, rows: int, kind: EventKind | None = None) -> list[str]:
    """The newest event dates holding at least ``rows`` events of ``kind`` (both kinds
    when None), fewer if the log is short; in date order."""
    counts = log.counts_by_date()
    chosen: list[str] = []
    total = 0
    for day in sorted(counts, reverse=True):
        chosen.append(day)
        day_counts = counts[day]
        if kind != "prediction":
            total += day_counts.feedback
        if kind != "feedback":
            total += day_counts.prediction
        if total >= rows:
            break
    return sorted(chosen)

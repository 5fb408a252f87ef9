"""The immutable event log every asset reads: durable appends, lock-free readers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ct_assets.eventlog.counts import (
    LogCounts,
    SinceFingerprint,
    count_events,
    counts_by_date,
    partition_fingerprint,
    partition_fingerprints,
    split_at_fingerprint,
)
from ct_assets.eventlog.frames import CorruptLogError
from ct_assets.eventlog.layout import LayoutError
from ct_assets.eventlog.reader import read_events
from ct_assets.eventlog.writer import AppendResult, EventLogWriter, PreparedBatch, prepare_batch

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    import polars as pl

    from ct_assets.schema import Event, EventKind
    from ct_assets.settings import Settings

__all__ = [
    "AppendResult",
    "CorruptLogError",
    "EventLog",
    "LayoutError",
    "LogCounts",
    "PreparedBatch",
    "prepare_batch",
]


class EventLog:
    """One log directory: append through one writer, read without locks."""

    def __init__(
        self, root: Path, segment_max_bytes: int = 64 * 1024 * 1024, max_event_bytes: int = 32768
    ) -> None:
        self.root = root
        self.max_event_bytes = max_event_bytes
        self.writer = EventLogWriter(root, segment_max_bytes, max_event_bytes)

    @classmethod
    def from_settings(cls, settings: Settings) -> EventLog:
        return cls(settings.eventlog_dir, settings.segment_max_bytes, settings.max_event_bytes)

    def append(self, events: Sequence[Event]) -> AppendResult:
        return self.writer.append(events)

    def counts(self, dates: Collection[str] | None = None) -> LogCounts:
        return count_events(self.root, dates)

    def counts_by_date(self) -> dict[str, LogCounts]:
        return counts_by_date(self.root)

    def partition_fingerprint(self, day: str) -> str:
        return partition_fingerprint(self.root, day)

    def partition_fingerprints(self) -> dict[str, str]:
        return partition_fingerprints(self.root)

    def split_at_fingerprint(
        self, kind: EventKind, day: str, earlier: str
    ) -> SinceFingerprint | None:
        """How many events of ``kind`` on ``day`` the date's frames held at its fingerprint
        ``earlier``, and the log offset of the first committed since (see
        :func:`ct_assets.eventlog.counts.split_at_fingerprint`)."""
        return split_at_fingerprint(self.root, kind, day, earlier)

    def read(
        self,
        kind: EventKind,
        limit: int | None = None,
        dates: Collection[str] | None = None,
        since: int = 0,
    ) -> pl.DataFrame:
        """Events of ``kind``: on ``dates`` if given, at log offsets in [since, limit)."""
        return read_events(self.root, kind, limit, dates, since)

    def export(self, kind: EventKind, out: Path) -> int:
        """Every durable event of ``kind`` to a Parquet file, one row each, in log order
        (read in bounded chunks: :mod:`ct_assets.eventlog.export`); returns the count."""
        from ct_assets.eventlog.export import export_events

        return export_events(self.root, kind, out)

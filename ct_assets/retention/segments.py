"""Segments of old event dates (``CT_RETENTION_DAYS``): each is replaced by its columnar
archive (:mod:`ct_assets.eventlog.archive`), from which every reader rebuilds it exactly,
then deleted. The journal, the event id index and the per-date tables are not touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ct_assets.eventlog.archive import archive_file, archive_old_segment, old_segments
from ct_assets.eventlog.layout import key_date, segment_file
from ct_assets.retention.items import EVENT_SEGMENT, Item
from ct_assets.settings import Settings


def retention_cutoff(settings: Settings, now: datetime | None = None) -> str | None:
    """The first event date whose segments are kept (None: ``CT_RETENTION_DAYS`` is 0)."""
    if settings.retention_days <= 0:
        return None
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return (today - timedelta(days=settings.retention_days)).isoformat()


def segment_items(settings: Settings) -> list[Item]:
    """The segments to archive now, each an item to delete (its archive named in ``detail``)."""
    cutoff = retention_cutoff(settings)
    root = settings.eventlog_dir
    if cutoff is None or not (root / "journal.ctj").exists():
        return []
    why = (
        f"events dated before {cutoff} (CT_RETENTION_DAYS {settings.retention_days}); "
        "kept in the segment archive"
    )
    return [
        Item(
            EVENT_SEGMENT,
            key,
            [why],
            [str(segment_file(root, key))],
            {"date": key_date(key), "committed_end": end, "archive": str(archive_file(root, key))},
        )
        for key, end in old_segments(root, cutoff)
    ]


def archive_item(settings: Settings, item: Item) -> None:
    """Write the archive of the item's segment, check it, then delete the segment."""
    archive_old_segment(settings.eventlog_dir, item.id)

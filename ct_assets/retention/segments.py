"""Segments of old event dates (``CT_RETENTION_DAYS``): each is replaced by its columnar
archive (:mod:`ct_assets.eventlog.archive`), from which every reader rebuilds it exactly,
then deleted; with ``CT_STORAGE_URI`` set the archive then moves to the object store
(:mod:`ct_assets.eventlog.archive_store`). The journal, the event id index and the per-date
tables are not touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ct_assets.eventlog.archive import (
    archive_file,
    archive_old_segment,
    local_archives,
    old_segments,
)
from ct_assets.eventlog.archive_store import stored_key, upload_archive
from ct_assets.eventlog.layout import key_date, segment_file
from ct_assets.retention.items import EVENT_SEGMENT, Item
from ct_assets.retention.stored import object_store
from ct_assets.settings import Settings


def retention_cutoff(settings: Settings, now: datetime | None = None) -> str | None:
    """The first event date whose segments are kept (None: ``CT_RETENTION_DAYS`` is 0)."""
    if settings.retention_days <= 0:
        return None
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return (today - timedelta(days=settings.retention_days)).isoformat()


def segment_items(settings: Settings) -> list[Item]:
    """The segments to archive now (and, with an object store, the archives to move there),
    each an item to delete; where its archive goes is in ``detail``."""
    cutoff = retention_cutoff(settings)
    root = settings.eventlog_dir
    if cutoff is None or not (root / "journal.ctj").exists():
        return []
    store = object_store(settings)
    where = "the segment archive on the object store" if store else "the segment archive"
    why = f"events dated before {cutoff} (CT_RETENTION_DAYS {settings.retention_days}); "
    why += f"kept in {where}"
    found = {key: [str(segment_file(root, key))] for key, _end in old_segments(root, cutoff)}
    if store is not None:
        for key in local_archives(root, cutoff):
            found.setdefault(key, []).append(str(archive_file(root, key)))
    return [
        Item(
            EVENT_SEGMENT,
            key,
            [why],
            paths,
            {
                "date": key_date(key),
                "archive": store.uri_of(stored_key(key)) if store else str(archive_file(root, key)),
            },
        )
        for key, paths in sorted(found.items())
    ]


def archive_item(settings: Settings, item: Item) -> None:
    """Write the archive of the item's segment, check it, delete the segment; with an
    object store, move the archive there."""
    root = settings.eventlog_dir
    if segment_file(root, item.id).exists():
        archive_old_segment(root, item.id)
    store = object_store(settings)
    if store is not None:
        upload_archive(root, item.id, store)

"""Where things live in an event log directory.

    <root>/.lock                                   writers serialise on it (flock)
    <root>/journal.ctj                             commit records, in commit order
    <root>/event_ids.sqlite                        the event id index (a cache of the journal)
    <root>/segments/<YYYY-MM-DD>/seg-00000001.ctlog  event frames, by event date (UTC)
    <root>/archive/<YYYY-MM-DD>/seg-00000001.parquet a segment replaced by its columnar
                                                   archive (retention: .archive)
    <root>/summary/                                a checkpoint of the journal's summary
                                                   (a cache of the journal: .checkpoint)

A segment is named in the journal by its key ``<YYYY-MM-DD>/seg-<sequence>.ctlog``.
Segments of one date are filled in sequence order; one that reached the size
limit is closed and never written again.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ct_assets.eventlog.frames import SEGMENT_SUFFIX

LOCK_NAME = ".lock"
JOURNAL_NAME = "journal.ctj"
INDEX_NAME = "event_ids.sqlite"
SEGMENTS_DIR = "segments"
SUMMARY_DIR = "summary"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SEGMENT_RE = re.compile(r"^seg-(\d{8})\.ctlog$")


class LayoutError(RuntimeError):
    """The directory is not an event log this version can read."""


@contextmanager
def log_lock(root: Path) -> Iterator[None]:
    """The log's writer lock (``flock`` on ``.lock``): no commit runs while it is held."""
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def journal_path(root: Path) -> Path:
    return root / JOURNAL_NAME


def index_path(root: Path) -> Path:
    return root / INDEX_NAME


def summary_dir(root: Path) -> Path:
    return root / SUMMARY_DIR


def segment_name(sequence: int) -> str:
    return f"seg-{sequence:08d}{SEGMENT_SUFFIX}"


def segment_key(date: str, sequence: int) -> str:
    return f"{date}/{segment_name(sequence)}"


ARCHIVE_DIR = "archive"


def archive_name(key: str, suffix: str) -> str:
    """``<date>/seg-<n><suffix>``: the name of what stands for segment ``key`` in the
    archive (its Parquet file, or the pointer to it on the object store)."""
    day, name = key.split("/", 1)
    return f"{day}/{Path(name).stem}{suffix}"


def segment_file(root: Path, key: str) -> Path:
    return root / SEGMENTS_DIR / key


def key_date(key: str) -> str:
    return key.split("/", 1)[0]


def key_sequence(key: str) -> int:
    match = _SEGMENT_RE.match(key.split("/", 1)[1])
    if match is None:
        raise LayoutError(f"not a segment key: {key!r}")
    return int(match.group(1))


def date_segments(root: Path, date: str) -> list[str]:
    """Keys of the segment files present for ``date``, in sequence order."""
    folder = root / SEGMENTS_DIR / date
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if _SEGMENT_RE.match(p.name))
    return [f"{date}/{name}" for name in names]


def all_segments(root: Path) -> list[str]:
    """Keys of every segment file on disk, by date then sequence."""
    base = root / SEGMENTS_DIR
    if not base.is_dir():
        return []
    keys: list[str] = []
    for folder in sorted(base.iterdir()):
        if folder.is_dir() and _DATE_RE.match(folder.name):
            keys.extend(date_segments(root, folder.name))
    return keys


def check_layout(root: Path) -> None:
    """Refuse a directory written by the single-file layout of earlier versions."""
    if root.is_dir() and any(p.suffix == SEGMENT_SUFFIX for p in root.iterdir()):
        raise LayoutError(
            f"{root} holds segments of the earlier, undated layout; export them with the "
            "version that wrote them and ingest the export into an empty CT_HOME"
        )

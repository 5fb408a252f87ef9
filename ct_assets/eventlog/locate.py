"""Where the log holds one event, from the event id index: the commit that wrote it and
its dates, found without walking the log's history.

The index is a cache of the journal's prefix up to the byte it covers. An id it holds
names the journal record that committed it: one lookup and one record read. An id it
does not hold can only be in the records past that byte (the newest commits, which a
writer flushes to the index within seconds): only their dates are searched. When the
index is missing, damaged or does not match the journal (until a writer repairs it), it
cannot tell: the caller searches every date."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ct_assets.eventlog.dedup import journal_head, record_matches
from ct_assets.eventlog.idindex import Covered, EventIdIndex
from ct_assets.eventlog.journal import Commit, commit_at, scan_journal
from ct_assets.eventlog.layout import index_path, journal_path, key_date


@dataclass(frozen=True)
class Located:
    """The event dates to search for an event, newest first (empty: the log does not hold
    it), and the commit that wrote it when the index holds its id."""

    dates: list[str]
    commit: Commit | None = None


def locate(root: Path, event_id: str) -> Located | None:
    """Where to look for ``event_id`` in the log at ``root``: the commit that wrote it and
    its dates, or (the index does not hold it) the dates of the commits the index does not
    cover yet. None when the index cannot tell (search every date)."""
    if not index_path(root).exists():
        return None
    index = EventIdIndex(root)
    try:
        at = index.commit_of(event_id)
        covered = index.covered()
    except sqlite3.Error:
        return None
    finally:
        index.close()
    if not _holds_journal_prefix(root, covered):
        return None
    if at is not None:
        commit = commit_at(root, at)
        return Located(_dates([commit]), commit) if commit is not None else None
    scan = scan_journal(root, covered.journal_end)
    return None if scan.corrupt else Located(_dates(scan.commits))


def _holds_journal_prefix(root: Path, covered: Covered) -> bool:
    """Whether the index covers a prefix of this very journal (not another one's, nor more
    than it holds)."""
    if covered.journal_end == 0:
        return False
    try:
        size = journal_path(root).stat().st_size
    except FileNotFoundError:
        return False
    return (
        size >= covered.journal_end
        and journal_head(root) == covered.head
        and record_matches(root, covered)
    )


def _dates(commits: list[Commit]) -> list[str]:
    return sorted({key_date(part.segment) for c in commits for part in c.parts}, reverse=True)

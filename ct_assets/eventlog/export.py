"""Every durable event of one kind to one Parquet file, in log order, in bounded memory.

The events are read in chunks of consecutive log offsets, in one walk over the commits
(:func:`ct_assets.eventlog.reader.event_chunks`), each decoded in one pass outside the
reader's caches and written to a part file beside the output; the parts
are then streamed into the output (a feature that appears in a later chunk widens the
struct, as one read of the whole log would), and renamed over it when complete. The
export is a cut of the log at its start: events committed meanwhile are left out."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl

from ct_assets.eventlog.reader import event_chunks, read_events
from ct_assets.schema import EventKind

#: Events read, decoded and held at once.
EXPORT_CHUNK_EVENTS = 20_000


def export_events(root: Path, kind: EventKind, out: Path, chunk: int = EXPORT_CHUNK_EVENTS) -> int:
    """Write the committed events of ``kind`` of the log at ``root`` to ``out``, one row
    each, ordered by log offset; returns how many."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 event, not {chunk}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    written = 0
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as folder:
        parts: list[Path] = []
        for frame in event_chunks(root, kind, chunk):
            part = Path(folder) / f"part-{written:015d}.parquet"
            frame.write_parquet(part)
            parts.append(part)
            written += frame.height
        if parts:
            scans = [pl.scan_parquet(part) for part in parts]
            pl.concat(scans, how="diagonal_relaxed").sink_parquet(tmp)
        else:
            read_events(root, kind).write_parquet(tmp)  # no events: the columns only
    tmp.replace(out)
    return written

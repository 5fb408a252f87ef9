"""Events of some dates, read from their per-date columnar tables where those are current.

The raw tables (``raw_feedback``, ``raw_predictions``) hold each date's events as the log
decodes them, with the date's log fingerprint as their source. A read of several dates
(a curation's feedback context and the weeks of predictions its feedback may refer to)
takes each date whose table was written from the log's current fingerprint from that
table -- columnar, no JSON decoding -- and only the other dates from the log. The result
is what :meth:`EventLog.read` gives for those dates: when a table's columns are not the
log's (written by another version) or the dates' columns differ (a feature added on some
date), the whole read comes from the log, which decodes such dates together."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import polars as pl

from ct_assets import keys
from ct_assets.data.tables import TableStore
from ct_assets.eventlog import EventLog
from ct_assets.eventlog.decode import Entries, decode_entries
from ct_assets.schema import EventKind

RAW_TABLES: dict[EventKind, str] = {
    "feedback": keys.RAW_FEEDBACK,
    "prediction": keys.RAW_PREDICTIONS,
}


def read_via_tables(
    log: EventLog,
    store: TableStore,
    kind: EventKind,
    dates: Sequence[str],
    fingerprints: Mapping[str, str],
) -> pl.DataFrame:
    """The events of ``kind`` on ``dates`` in log order: from the raw table of each date
    whose source is its fingerprint in ``fingerprints`` (the log's, read by the caller),
    from the log for the others."""
    with_events = sorted({d for d in dates if d in fingerprints})
    frames: list[pl.DataFrame] = []
    from_log: list[str] = []
    for day in with_events:
        frame = current_events(store, kind, day, fingerprints[day])
        if frame is None:
            from_log.append(day)
        else:
            frames.append(frame)
    if not frames:
        return log.read(kind, dates=dates)
    if from_log:  # one read of the log for all of them
        frames.append(log.read(kind, dates=from_log))
    if any(f.schema != frames[0].schema for f in frames[1:]):
        return log.read(kind, dates=dates)
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="vertical", rechunk=True).sort("log_offset")


def current_events(
    store: TableStore, kind: EventKind, day: str, fingerprint: str
) -> pl.DataFrame | None:
    """The raw table of ``kind`` on ``day`` if it was written from the log at
    ``fingerprint``, with the columns the log decodes to; else None."""
    frame = store.read_current(RAW_TABLES[kind], day, fingerprint)
    return frame if frame is not None and _log_columns(frame, kind) else None


def _log_columns(frame: pl.DataFrame, kind: EventKind) -> bool:
    """Whether ``frame`` has the columns and types the log decodes events of ``kind`` to
    (structs, whose fields follow the events, aside)."""
    decoded = _decoded_schema(kind)
    if list(frame.schema) != list(decoded):
        return False
    return all(decoded[name] == pl.Null or frame.schema[name] == decoded[name] for name in decoded)


@functools.cache
def _decoded_schema(kind: EventKind) -> pl.Schema:
    """The columns the log decodes events of ``kind`` to (structs typed Null: no fields)."""
    return decode_entries(Entries([], [], []), kind).schema

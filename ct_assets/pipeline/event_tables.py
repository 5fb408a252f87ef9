"""Events of some dates, read from their per-date columnar tables where those are current.

The raw tables (``raw_feedback``, ``raw_predictions``) hold each date's events as the log
decodes them, with the date's log fingerprint as their source. A read of several dates
(a curation's feedback context and the weeks of predictions its feedback may refer to)
takes each date whose table was written from the log's current fingerprint from that
table -- columnar, no JSON decoding -- and only the other dates from the log; a read of
the predictions some feedback cites reads further only the tables holding one. The
result is what :meth:`EventLog.read` gives for those dates: when a table's columns are
not the log's (written by another version) or the dates' columns differ (a feature
added on some date), the whole read comes from the log, which decodes such dates
together.

A stale table is written again from itself and the frames committed since it was
written (:func:`refreshed_events`): a busy date that gets one more request costs that
request's decoding, not the whole date's."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from ct_assets import keys
from ct_assets.data.cited import cited, cited_ids
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
    prediction_ids: pl.Series | None = None,
) -> pl.DataFrame:
    """The events of ``kind`` on ``dates`` in log order: from the raw table of each date
    whose source is its fingerprint in ``fingerprints`` (the log's, read by the caller),
    from the log for the others. With ``prediction_ids``, only the events whose
    ``prediction_id`` is one of them, with the columns of the whole read: a table's
    other columns are read only when its ``prediction_id`` column holds one (a curation
    looks through weeks of predictions for the few days' its feedback cites)."""
    with_events = sorted({d for d in dates if d in fingerprints})
    if prediction_ids is None:
        tables = {day: current_events(store, kind, day, fingerprints[day]) for day in with_events}
    else:
        tables = _cited_events(store, kind, with_events, fingerprints, prediction_ids)
    from_log = [day for day, frame in tables.items() if frame is None]
    if len(from_log) == len(tables):
        return cited(log.read(kind, dates=dates), prediction_ids)
    # in date order, the log's read (one for all its dates) where its first date is
    frames = []
    for day, frame in tables.items():
        if frame is not None:
            frames.append(frame)
        elif day == from_log[0]:
            frames.append(cited(log.read(kind, dates=from_log), prediction_ids))
    if any(f.schema != frames[0].schema for f in frames[1:]):
        # dates whose events differ by struct fields (a feature added on one date): each
        # gets the others' fields as null, as one decode of all of them gives them
        union = _union_schema([f.schema for f in frames])
        aligned = [None if union is None else _aligned(f, union) for f in frames]
        if any(f is None for f in aligned):
            return cited(log.read(kind, dates=dates), prediction_ids)
        frames = [f for f in aligned if f is not None]
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="vertical", rechunk=True).sort("log_offset")


def _cited_events(
    store: TableStore,
    kind: EventKind,
    days: Sequence[str],
    fingerprints: Mapping[str, str],
    prediction_ids: pl.Series,
) -> dict[str, pl.DataFrame | None]:
    """Per date, the events of its current raw table whose ``prediction_id`` is among
    ``prediction_ids`` (no rows, the table's columns, when none is), or None when its
    table is not current. The id columns of all dates are matched in one join."""
    table = RAW_TABLES[kind]
    probes: dict[str, pl.DataFrame] = {}
    for day in days:
        ids = store.read_current(table, day, fingerprints[day], columns=["prediction_id"])
        if ids is not None:
            probes[day] = ids.select(pl.col("prediction_id").cast(pl.String), day=pl.lit(day))
    hits: dict[str, pl.DataFrame] = {}
    if probes:
        matched = pl.concat(list(probes.values())).join(
            cited_ids(prediction_ids, pl.String()), on="prediction_id", how="semi"
        )
        hits = {key[0]: rows.drop("day") for key, rows in matched.group_by("day")}  # type: ignore[misc]
    found: dict[str, pl.DataFrame | None] = {day: None for day in days}
    for day in probes:
        fingerprint = fingerprints[day]
        if day not in hits:
            found[day] = current_events(store, kind, day, fingerprint, n_rows=0)
            continue
        frame = current_events(store, kind, day, fingerprint)
        found[day] = None if frame is None else cited(frame, hits[day].get_column("prediction_id"))
    return found


def current_events(
    store: TableStore, kind: EventKind, day: str, fingerprint: str, n_rows: int | None = None
) -> pl.DataFrame | None:
    """The raw table of ``kind`` on ``day`` if it was written from the log at
    ``fingerprint``, with the columns the log decodes to; else None. ``n_rows``: its
    first rows only."""
    frame = store.read_current(RAW_TABLES[kind], day, fingerprint, n_rows=n_rows)
    return frame if frame is not None and _log_columns(frame, kind) else None


def refreshed_events(
    log: EventLog, store: TableStore, kind: EventKind, day: str, fingerprint: str
) -> tuple[pl.DataFrame, bool]:
    """The events of ``kind`` on ``day`` as the log holds them at ``fingerprint`` (what
    ``log.read(kind, dates=[day])`` gives), and whether the raw table must be written
    with them: its table when current; else its table extended by the frames committed
    since it was written (only those are decoded), when its source is an earlier
    fingerprint of the date and the new rows have its columns; else the log's whole
    read of the date."""
    current = current_events(store, kind, day, fingerprint)
    if current is not None:
        return current, False
    extended = _extended(log, store, kind, day)
    return (extended if extended is not None else log.read(kind, dates=[day])), True


def _extended(log: EventLog, store: TableStore, kind: EventKind, day: str) -> pl.DataFrame | None:
    source = store.source(RAW_TABLES[kind], day)
    split = log.split_at_fingerprint(kind, day, source) if source else None
    if source is None or split is None:
        return None
    held = current_events(store, kind, day, source)
    if held is None or held.height != split.before:
        return None
    if split.since is None:
        return held
    new = _aligned(log.read(kind, dates=[day], since=split.since), held.schema)
    if new is None:
        return None  # a feature the table does not have: decoded with the others, at once
    return pl.concat([held, new], how="vertical", rechunk=True)


def _union_schema(schemas: Sequence[pl.Schema]) -> pl.Schema | None:
    """The columns of frames that differ only by struct fields (or by a column that is
    all null in some): each struct with every field any of them has, in the order they
    first appear (frames in log order); None when a column or a field's type differs."""
    names = list(schemas[0])
    if any(list(schema) != names for schema in schemas[1:]):
        return None
    union: dict[str, pl.DataType] = {}
    for name in names:
        types = [schema[name] for schema in schemas if schema[name] != pl.Null]
        if not types:
            union[name] = pl.Null()
        elif all(isinstance(t, pl.Struct) for t in types):
            fields: dict[str, Any] = {}  # polars types: classes or instances
            for struct in types:
                assert isinstance(struct, pl.Struct)
                for field in struct.fields:
                    held = fields.get(field.name)
                    if held is None or held == pl.Null:
                        fields[field.name] = field.dtype
                    elif field.dtype not in (held, pl.Null):
                        return None
            union[name] = pl.Struct(fields)
        elif all(t == types[0] for t in types):
            union[name] = types[0]
        else:
            return None
    return pl.Schema(union)


def _aligned(new: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame | None:
    """``new`` with the columns of ``schema`` when they differ only by struct fields
    (features, scores) that ``new``'s rows lack or hold no value of, which are null then,
    as a decode of all the rows together gives them; None otherwise."""
    if list(new.schema) != list(schema):
        return None
    columns: list[pl.Expr] = []
    for name, dtype in schema.items():
        have = new.schema[name]
        if have == dtype:
            columns.append(pl.col(name))
        elif have == pl.Null:
            columns.append(pl.col(name).cast(dtype))
        elif isinstance(have, pl.Struct) and isinstance(dtype, pl.Struct):
            theirs = {field.name: field.dtype for field in have.fields}
            wanted = {field.name: field.dtype for field in dtype.fields}
            if not set(theirs) <= set(wanted):
                return None
            fields = []
            for field, field_type in wanted.items():
                if theirs.get(field, pl.Null) == pl.Null:
                    fields.append(pl.lit(None, dtype=field_type).alias(field))
                elif theirs[field] == field_type:
                    fields.append(pl.col(name).struct.field(field))
                else:
                    return None
            rebuilt = pl.struct(fields)
            kept = pl.when(pl.col(name).is_not_null()).then(rebuilt)
            columns.append(kept.alias(name))
        else:
            return None
    out = new.select(columns)
    return out if out.schema == schema else None


def refresh_raw_table(
    log: EventLog, store: TableStore, kind: EventKind, day: str, fingerprint: str
) -> tuple[Path, pl.Schema]:
    """The raw table of ``kind`` on ``day`` and its columns, written first when it is not
    current (:func:`refreshed_events`); of a current one only the footer is read."""
    held = current_events(store, kind, day, fingerprint, n_rows=0)
    if held is not None:
        return store.path(RAW_TABLES[kind], day), held.schema
    frame, _ = refreshed_events(log, store, kind, day, fingerprint)
    return store.write(RAW_TABLES[kind], day, frame, source=fingerprint), frame.schema


def refresh_raw_tables(
    log: EventLog, store: TableStore, days: Sequence[str], fingerprints: Mapping[str, str]
) -> None:
    """Write the raw tables of ``days`` that are not current (:func:`refreshed_events`)."""
    for day in days:
        for kind in RAW_TABLES:
            refresh_raw_table(log, store, kind, day, fingerprints.get(day, ""))


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

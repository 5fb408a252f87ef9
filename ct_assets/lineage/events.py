"""One event in the event log and the curated tables: where the log holds it, how
curation judged it, and (for a prediction) the curated feedback attributed to it.

The log is read one date at a time, raw lines first, decoding only the line that names
the event; the per-date curated tables are filtered on the wanted column as they are read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from ct_assets import keys
from ct_assets.data.tables import TableStore
from ct_assets.eventlog.counts import counts_by_date, locate_frame
from ct_assets.eventlog.decode import EVENT_FIELDS, received_time
from ct_assets.eventlog.journal import Commit
from ct_assets.eventlog.layout import key_date
from ct_assets.eventlog.reader import read_entries, read_frame
from ct_assets.schema import EVENT_TYPES, EventKind
from ct_assets.settings import Settings

#: Curation states of a feedback event; ``not_curated`` when no curated table holds it yet.
NOT_CURATED = "not_curated"
#: The columns of ``validated_feedback`` that tell how curation judged an event.
CURATION_COLUMNS = ("event_id", "log_offset", "status", "reason", "reason_detail")

_KINDS: tuple[EventKind, ...] = ("feedback", "prediction")


@dataclass(frozen=True)
class LoggedEvent:
    """One event as the log holds it."""

    kind: EventKind
    date: str
    log_offset: int
    received_at: datetime
    event: Any  # FeedbackEvent | PredictionEvent

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "date": self.date,
            "log_offset": self.log_offset,
            "timestamp": self.event.timestamp.isoformat(),
            "received_at": self.received_at.isoformat(),
            **{name: getattr(self.event, name, None) for name in EVENT_FIELDS[self.kind]},
        }


def _id_needle(event_id: str) -> bytes | None:
    """The bytes every JSON line naming ``event_id`` contains, when that is unambiguous
    (no character a client might escape differently); None otherwise."""
    quoted = msgspec.json.encode(event_id)
    plain = event_id.isascii() and event_id.isprintable() and quoted[1:-1] == event_id.encode()
    return quoted if plain else None


def _find_line(lines: Sequence[bytes], event_id: str, kind: EventKind) -> tuple[int, Any] | None:
    """Index and decoded event of the line whose ``event_id`` is ``event_id``."""
    decoder: Any = msgspec.json.Decoder(EVENT_TYPES[kind])
    needle = _id_needle(event_id)
    for index, line in enumerate(lines):
        if needle is not None and needle not in line:
            continue
        event = decoder.decode(line)
        if event.event_id == event_id:
            return index, event
    return None


def find_in_log(
    settings: Settings, event_id: str, dates: Iterable[str] | None = None
) -> LoggedEvent | None:
    """The event in the log, reading one date at a time (``dates``, else every date,
    newest first) and decoding only lines that contain the id."""
    root = settings.eventlog_dir
    per_date = counts_by_date(root)
    order = list(dates) if dates is not None else sorted(per_date, reverse=True)
    for day in order:
        counts = per_date.get(day)
        if counts is None:
            continue
        for kind in _KINDS:
            if counts.of(kind) == 0:
                continue
            entries = read_entries(root, kind, dates=[day])
            hit = _find_line(entries.lines, event_id, kind)
            if hit is not None:
                index, event = hit
                received = received_time(entries.received_us[index])
                return LoggedEvent(kind, day, entries.offsets[index], received, event)
    return None


def find_in_commit(
    settings: Settings, event_id: str, commit: Commit, offset: int | None = None
) -> LoggedEvent | None:
    """The event in the frames of the commit that wrote it (each read on its own), with its
    log offset: ``offset`` when the caller read it already (its curated row), else from a
    per-date table holding it (offsets never change once committed; no journal read),
    else its frame's first log offset in the journal summary (from its checkpoint) plus
    its line: neither the log's history nor its date is walked. None when it is not
    there."""
    for part in commit.parts:
        kind: EventKind = "prediction" if part.n_prediction else "feedback"
        hit = _find_line(read_frame(settings.eventlog_dir, part).lines(), event_id, kind)
        if hit is None:
            continue
        day = key_date(part.segment)
        if offset is None:
            offset = _table_offset(settings, kind, event_id, day)
        if offset is None:
            located = locate_frame(settings.eventlog_dir, part)
            offset = None if located is None else located.base(kind) + hit[0]
        if offset is None:
            return None
        return LoggedEvent(kind, day, offset, received_time(commit.committed_at_us), hit[1])
    return None


def _table_offset(settings: Settings, kind: EventKind, event_id: str, day: str) -> int | None:
    """The log offset of ``event_id`` recorded by a per-date table of ``day``, if any."""
    tables = (
        (keys.RAW_PREDICTIONS,)
        if kind == "prediction"
        else (keys.VALIDATED_FEEDBACK, keys.RAW_FEEDBACK)
    )
    for table in tables:
        found = search_tables(settings, table, "event_id", event_id, ("event_id",), [day])
        if found.height and "log_offset" in found.columns and found["log_offset"][0] is not None:
            return int(found["log_offset"][0])
    return None


def _table_path(settings: Settings, table: str, day: str) -> Path:
    return TableStore(settings.tables_dir).path(table, day)


def table_files(settings: Settings, table: str, days: Iterable[str] | None = None) -> list[Path]:
    """The per-date files of ``table`` (of ``days``, those that exist; else every date)."""
    store = TableStore(settings.tables_dir)
    paths = (store.path(table, d) for d in (store.days(table) if days is None else days))
    return [p for p in paths if p.exists()]


def _day_of(path: Path) -> str:
    return path.stem.removeprefix("date=")


def search_tables(
    settings: Settings,
    table: str,
    column: str,
    value: str,
    columns: Sequence[str],
    days: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Rows of the per-date ``table`` (of ``days``, else of every date) whose ``column``
    equals ``value``: only ``columns`` (those a file has) and the file's ``date``."""
    scans = []
    for path in table_files(settings, table, days):
        present = pl.read_parquet_schema(path)
        if column not in present:
            continue
        scans.append(
            pl.scan_parquet(path)
            .filter(pl.col(column) == value)
            .select(
                *[pl.col(c).cast(pl.String) for c in columns if c in present and c != "log_offset"],
                *([pl.col("log_offset").cast(pl.Int64)] if "log_offset" in present else []),
                pl.lit(_day_of(path)).alias("date"),
            )
        )
    if not scans:
        return pl.DataFrame(schema={"date": pl.String})
    return pl.concat(pl.collect_all(scans), how="diagonal_relaxed")


def curation_of(settings: Settings, event_id: str, day: str | None) -> dict[str, Any]:
    """How curation judged a feedback event: its row in ``validated_feedback`` (of ``day``
    when known), or ``not_curated`` when no curated table holds it yet."""
    found = search_tables(
        settings,
        keys.VALIDATED_FEEDBACK,
        "event_id",
        event_id,
        CURATION_COLUMNS,
        [day] if day is not None else None,
    )
    if found.height == 0:
        table = _table_path(settings, keys.VALIDATED_FEEDBACK, day) if day else None
        return {
            "state": NOT_CURATED,
            "reason": None,
            "reason_detail": None,
            "date": day,
            "log_offset": None,
            "table": str(table) if table is not None and table.exists() else None,
        }
    row = found.row(0, named=True)
    return {
        "state": row.get("status"),
        "reason": row.get("reason"),
        "reason_detail": row.get("reason_detail"),
        "date": row["date"],
        "log_offset": row.get("log_offset"),
        "table": str(_table_path(settings, keys.VALIDATED_FEEDBACK, row["date"])),
    }


def attributed_feedback(settings: Settings, prediction: LoggedEvent) -> pl.DataFrame:
    """The curated feedback referring to a prediction: ``event_id``, ``log_offset``,
    ``status``, ``reason``, ``date``, from the tables of the dates it can fall on."""
    first = date.fromisoformat(prediction.date)
    span = settings.max_feedback_delay_days + 2
    days = [(first + timedelta(days=i)).isoformat() for i in range(span)]
    found = search_tables(
        settings,
        keys.VALIDATED_FEEDBACK,
        "prediction_id",
        str(prediction.event.prediction_id),
        CURATION_COLUMNS,
        days,
    )
    return found.sort("log_offset") if found.height else found

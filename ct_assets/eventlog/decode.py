"""Committed JSON lines to Polars frames: the columns of each event kind, and decoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec

from ct_assets.schema import EVENT_TYPES, EventKind, FeedbackEvent, PredictionEvent

if TYPE_CHECKING:
    import polars as pl

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Columns every frame of a kind has, in order, besides `features` (a struct).
_COMMON = ["log_offset", "event_id", "kind", "schema_version", "timestamp", "received_at"]
_COLUMNS: dict[EventKind, list[str]] = {
    "prediction": [
        *_COMMON,
        "prediction_id",
        "model_name",
        "model_version",
        "arm",
        "entity_id",
        "prediction",
    ],
    "feedback": [
        *_COMMON,
        "feedback_type",
        "prediction_id",
        "entity_id",
        "user_id",
        "source",
        "signal",
        "value",
        "label",
    ],
}


#: The fields of an event of each kind besides those every event has.
EVENT_FIELDS: dict[EventKind, tuple[str, ...]] = {
    kind: tuple(columns[len(_COMMON) :]) for kind, columns in _COLUMNS.items()
}


def received_time(received_us: int) -> datetime:
    """When the log received an event, from the microseconds it stores."""
    return _EPOCH + timedelta(microseconds=received_us)


@dataclass(frozen=True)
class Entries:
    """Committed lines of one kind with their log offsets and commit times (unix µs)."""

    offsets: list[int]
    lines: list[bytes]
    received_us: list[int]


def decode_entries(entries: Entries, kind: EventKind) -> pl.DataFrame:
    """The events of ``entries`` as a frame (see :func:`events_to_frame`), each with the time
    its commit was received."""
    event_type: Any = EVENT_TYPES[kind]
    events = msgspec.json.Decoder(list[event_type]).decode(b"[" + b",".join(entries.lines) + b"]")
    received = [received_time(us) for us in entries.received_us]
    events = [
        msgspec.structs.replace(event, received_at=at)
        for event, at in zip(events, received, strict=True)
    ]
    return events_to_frame(events, kind, entries.offsets)


def events_to_frame(
    events: Sequence[FeedbackEvent | PredictionEvent],
    kind: EventKind,
    offsets: Sequence[int] | None = None,
) -> pl.DataFrame:
    import polars as pl

    columns = _COLUMNS[kind]
    rows: list[dict[str, Any]] = []
    for offset, event in enumerate(events):
        row = {name: getattr(event, name, None) for name in columns[1:]}
        row["kind"] = kind
        row["log_offset"] = offsets[offset] if offsets is not None else offset
        for name in ("label", "prediction"):
            if row.get(name) is not None:
                row[name] = str(row[name])
        row["features"] = getattr(event, "features", None)
        if kind == "prediction":
            row["scores"] = getattr(event, "scores", None)
        rows.append(row)
    schema: dict[str, Any] = {
        "log_offset": pl.Int64,
        "event_id": pl.String,
        "kind": pl.String,
        "schema_version": pl.Int32,
        "timestamp": pl.Datetime("us", "UTC"),
        "received_at": pl.Datetime("us", "UTC"),
    }
    for name in columns[len(_COMMON) :]:
        schema[name] = pl.Float64 if name == "value" else pl.String
    if not rows:
        structs = ["features", "scores"] if kind == "prediction" else ["features"]
        return pl.DataFrame(schema={**schema, **dict.fromkeys(structs, pl.Null)})
    frame = pl.from_dicts(rows, infer_schema_length=None)
    frame = frame.with_columns(
        [pl.col(name).cast(dtype) for name, dtype in schema.items() if name in frame.columns]
    )
    structs = ["features", "scores"] if kind == "prediction" else ["features"]
    for name in structs:
        dtype = frame.schema.get(name)
        if isinstance(dtype, pl.Struct) and not dtype.fields:
            # only empty objects: a struct without fields cannot be written to Parquet
            frame = frame.with_columns(pl.lit(None, dtype=pl.Null).alias(name))
    return frame.select(*schema, *structs)  # the same columns, in the same order, as empty

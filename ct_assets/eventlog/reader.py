"""Reading the event log: counts, raw lines and Polars frames, in append order.

Readers take no lock: they see every frame that was complete when they looked
and never a partial one (a torn or in-progress tail fails its length or checksum).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from ct_assets.eventlog.frames import iter_frames
from ct_assets.schema import EVENT_TYPES, EventKind, FeedbackEvent, PredictionEvent

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


@dataclass(frozen=True)
class LogCounts:
    prediction: int
    feedback: int

    def of(self, kind: EventKind) -> int:
        return self.prediction if kind == "prediction" else self.feedback


def count_events(root: Path) -> LogCounts:
    """Events of each kind in the log, from frame headers of checksummed frames."""
    n_pred = n_fb = 0
    for frame in iter_frames(root):
        n_pred += frame.n_prediction
        n_fb += frame.n_feedback
    return LogCounts(n_pred, n_fb)


class _Kind(msgspec.Struct):
    kind: str


_KIND_DECODER = msgspec.json.Decoder(_Kind)


def read_lines(root: Path, kind: EventKind, limit: int | None = None) -> list[bytes]:
    """JSON lines of ``kind`` in append order; at most ``limit`` (the first ones)."""
    out: list[bytes] = []
    for frame in iter_frames(root):
        wanted = frame.n_prediction if kind == "prediction" else frame.n_feedback
        if wanted == 0:
            continue
        if wanted == frame.n_prediction + frame.n_feedback:
            out.extend(frame.lines())
        else:
            out.extend(line for line in frame.lines() if _KIND_DECODER.decode(line).kind == kind)
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def read_events(root: Path, kind: EventKind, limit: int | None = None) -> pl.DataFrame:
    """Events of ``kind`` as a frame, one row each, with ``log_offset`` = position among its kind.

    ``features`` (and ``scores``) are structs; labels and predictions are strings,
    so one column can hold any label type without guessing.
    """
    lines = read_lines(root, kind, limit)
    event_type: Any = EVENT_TYPES[kind]
    events = msgspec.json.Decoder(list[event_type]).decode(b"[" + b",".join(lines) + b"]")
    return events_to_frame(events, kind)


def events_to_frame(
    events: list[FeedbackEvent] | list[PredictionEvent], kind: EventKind
) -> pl.DataFrame:
    columns = _COLUMNS[kind]
    rows: list[dict[str, Any]] = []
    for offset, event in enumerate(events):
        row = {name: getattr(event, name, None) for name in columns[1:]}
        row["kind"] = kind
        row["log_offset"] = offset
        for name in ("label", "prediction"):
            if row.get(name) is not None:
                row[name] = str(row[name])
        row["features"] = getattr(event, "features", None)
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
        return pl.DataFrame(schema=schema)
    frame = pl.from_dicts(rows, infer_schema_length=None)
    return frame.with_columns(
        [pl.col(name).cast(dtype) for name, dtype in schema.items() if name in frame.columns]
    )

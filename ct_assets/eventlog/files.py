"""Reading event files (NDJSON, CSV, Parquet) with the same validation as the API.

A file is validated whole before anything is appended: one bad record and
nothing of the file is written. Errors carry the record's line number.
CSV and Parquet rows are flat: ``features.<name>`` and ``scores.<name>`` columns
are gathered into the ``features`` and ``scores`` objects; empty cells are absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from ct_assets.schema import (
    Event,
    EventKind,
    FieldError,
    convert_record,
    decode_json_event,
    validate_events,
)

NESTED_PREFIXES = ("features.", "scores.")


class UnsupportedFileError(ValueError):
    pass


@dataclass(frozen=True)
class FileErrorLocation:
    """Where a record index of a file is, for people: its line number."""

    first_line: int

    def line(self, index: int) -> int:
        return self.first_line + index


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl", ".json"):
        return "ndjson"
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise UnsupportedFileError(f"{path}: unknown format {suffix!r} (use .ndjson, .csv or .parquet)")


def location_of(path: Path) -> FileErrorLocation:
    """NDJSON record i is on line i+1; CSV record i on line i+2 (after the header)."""
    return FileErrorLocation(first_line=2 if file_format(path) == "csv" else 1)


def load_events(
    path: Path, kind: EventKind | None = None, max_skew: timedelta | None = None
) -> list[Event]:
    """Every event of the file, validated; :class:`EventValidationError` if any record is bad.

    ``max_skew``: how far in the future a timestamp may be (the API's setting)."""
    fmt = file_format(path)
    if fmt == "ndjson":
        candidates = list(_ndjson_candidates(path, kind))
    else:
        frame = _read_csv(path) if fmt == "csv" else pl.read_parquet(path)
        candidates = [
            convert_record(_nest(row), index, kind)
            for index, row in enumerate(frame.iter_rows(named=True))
        ]
    return validate_events(candidates, max_skew=max_skew)


# Identifiers stay strings even when they look like numbers ("1001").
STRING_COLUMNS = (
    "event_id",
    "prediction_id",
    "entity_id",
    "user_id",
    "source",
    "signal",
    "model_name",
    "model_version",
    "arm",
)


def _read_csv(path: Path) -> pl.DataFrame:
    header = pl.read_csv(path, n_rows=0).columns
    overrides = {name: pl.String for name in STRING_COLUMNS if name in header}
    return pl.read_csv(path, infer_schema_length=None, schema_overrides=overrides)


def _ndjson_candidates(path: Path, kind: EventKind | None) -> Iterator[Event | FieldError]:
    with open(path, "rb") as handle:
        for index, line in enumerate(handle):
            if not line.strip():
                yield FieldError(index, "$", "empty line", "malformed")
                continue
            yield decode_json_event(line, index, kind)


def _nest(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or value == "":
            continue
        for prefix in NESTED_PREFIXES:
            if key.startswith(prefix):
                out.setdefault(prefix[:-1], {})[key[len(prefix) :]] = value
                break
        else:
            out[key] = value
    return out

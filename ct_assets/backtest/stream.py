"""What a backtest replays: its spec, the labeled stream read from the CSV (features,
``label``, UTC ``timestamp``) and the batches it is scored in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl


class BacktestError(ValueError):
    """The stream cannot be replayed (missing columns, too few rows, one class ...)."""


@dataclass(frozen=True)
class BacktestSpec:
    data: Path
    target: str
    out: Path
    time_col: str | None = None
    batch_rows: int = 48
    warmup_rows: int = 2000
    row_interval_seconds: int = 60
    #: A fixed-period policy instead of the sensors: a full retrain every N scored rows
    #: (the baseline the sensors are compared with); None: the code location's sensors.
    retrain_every: int | None = None


@dataclass
class Stream:
    """The replayed rows: features (columns), ``label`` (string), ``timestamp`` (UTC)."""

    frame: pl.DataFrame
    features: list[str]

    @property
    def rows(self) -> int:
        return self.frame.height


def load_stream(spec: BacktestSpec, now: datetime | None = None) -> Stream:
    """Read the CSV; every column but the target (and the time column) is a feature."""
    if not spec.data.exists():
        raise BacktestError(f"{spec.data} does not exist")
    frame = pl.read_csv(spec.data, infer_schema_length=10_000, try_parse_dates=False)
    if spec.target not in frame.columns:
        raise BacktestError(f"target column {spec.target!r} is not in {frame.columns}")
    if spec.time_col is not None and spec.time_col not in frame.columns:
        raise BacktestError(f"time column {spec.time_col!r} is not in {frame.columns}")
    frame = frame.filter(pl.col(spec.target).is_not_null())
    if frame.height <= spec.warmup_rows + spec.batch_rows:
        raise BacktestError(
            f"{frame.height} labeled rows: need more than warm-up ({spec.warmup_rows}) "
            f"plus one batch ({spec.batch_rows})"
        )
    labels = frame[spec.target].cast(pl.String)
    if labels.n_unique() < 2:
        raise BacktestError(f"target {spec.target!r} has a single value: nothing to learn")
    features = [c for c in frame.columns if c not in (spec.target, spec.time_col)]
    if not features:
        raise BacktestError("no feature columns besides the target")
    unusable = [
        c for c in features if not (frame.schema[c].is_numeric() or frame.schema[c] == pl.String)
    ]
    if unusable:
        raise BacktestError(f"columns {unusable} are neither numeric nor categorical")
    end = (now or datetime.now(UTC)) - timedelta(minutes=1)
    if spec.time_col is not None:
        times = frame[spec.time_col].cast(pl.String).str.to_datetime(time_zone="UTC", strict=False)
        if times.null_count():
            raise BacktestError(f"time column {spec.time_col!r} has unparseable values")
        shift = end - times.max()  # type: ignore[operator]
        timestamps = times + shift
        order = timestamps.arg_sort()
    else:
        offsets = np.arange(frame.height - 1, -1, -1) * spec.row_interval_seconds
        timestamps = pl.Series(
            [end - timedelta(seconds=int(s)) for s in offsets], dtype=pl.Datetime("us", "UTC")
        )
        order = pl.Series(np.arange(frame.height))
    cast = [
        pl.col(c).cast(pl.Float64) if frame.schema[c].is_numeric() else pl.col(c) for c in features
    ]
    table = (
        frame.select(*cast)
        .with_columns(label=labels, timestamp=timestamps)
        .with_row_index("row")
        .select(pl.all().gather(order))
    )
    return Stream(table, features)


def batches(stream: Stream, spec: BacktestSpec) -> Iterator[tuple[int, pl.DataFrame]]:
    for start in range(spec.warmup_rows, stream.rows, spec.batch_rows):
        yield start, stream.frame.slice(start, spec.batch_rows)

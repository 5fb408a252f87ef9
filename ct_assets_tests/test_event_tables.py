"""Curation inputs read from the per-date raw tables where those are current."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.data.tables import TableStore
from ct_assets.defs.ingestion import raw_materialization
from ct_assets.eventlog import CorruptLogError, EventLog
from ct_assets.pipeline.event_tables import read_via_tables
from ct_assets.schema import FeedbackEvent, PredictionEvent

DAY = datetime(2026, 3, 1, 12, tzinfo=UTC)
DATES = [(DAY + timedelta(days=d)).date().isoformat() for d in range(4)]


def _events(start: int, days: range, features: dict[str, object] | None = None) -> list:  # type: ignore[type-arg]
    out: list[FeedbackEvent | PredictionEvent] = []
    for d in days:
        for i in range(3):
            n = start + 10 * d + i
            when = DAY + timedelta(days=d, seconds=n)
            extra = features or {}
            out.append(
                PredictionEvent(
                    event_id=f"pe-{n}",
                    prediction_id=f"p-{n}",
                    timestamp=when,
                    features={"x": float(n), **extra},
                    prediction=n % 2,
                    model_version="1",
                )
            )
            out.append(
                FeedbackEvent(
                    event_id=f"fb-{n}",
                    timestamp=when + timedelta(seconds=1),
                    feedback_type="explicit",
                    prediction_id=f"p-{n}",
                    label=n % 2,
                )
            )
    return out


def _tables(log: EventLog, store: TableStore, dates: list[str]) -> None:
    fingerprints = log.partition_fingerprints()
    for day in dates:
        for table, kind in ((keys.RAW_FEEDBACK, "feedback"), (keys.RAW_PREDICTIONS, "prediction")):
            raw_materialization(dg.AssetKey(table), log, kind, day, fingerprints[day], store)  # type: ignore[arg-type]


def _segments(log: EventLog, day: str) -> Path:
    return log.root / "segments" / day


def test_current_tables_are_read_instead_of_the_log(tmp_path: Path) -> None:
    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(4)))
    _tables(log, store, DATES[:3])  # 03-04 has no table
    log.append(_events(100, range(2, 3)))  # 03-03's table is now stale
    wanted = [*DATES, "2026-03-09"]  # and a date without events
    for kind in ("feedback", "prediction"):
        expected = log.read(kind, dates=wanted)
        got = read_via_tables(log, store, kind, wanted, log.partition_fingerprints())
        assert got.equals(expected), kind
    # the current tables stand in for the log: 03-01's events are read without its segments
    expected = log.read("prediction", dates=wanted)
    shutil.rmtree(_segments(log, DATES[0]))
    got = read_via_tables(log, store, "prediction", wanted, log.partition_fingerprints())
    assert got.equals(expected)
    with pytest.raises(CorruptLogError):
        log.read("prediction", dates=wanted)


def test_tables_with_other_columns_or_dates_that_differ_are_read_from_the_log(
    tmp_path: Path,
) -> None:
    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(2)))
    log.append(_events(100, range(2, 3), features={"late": "v"}))  # a feature added on 03-03
    fingerprints = log.partition_fingerprints()
    _tables(log, store, DATES[:3])
    expected = log.read("prediction", dates=DATES[:3])
    assert read_via_tables(log, store, "prediction", DATES[:3], fingerprints).equals(expected)
    # a table written by another version (an extra column), with the current source
    path = store.path(keys.RAW_PREDICTIONS, DATES[0])
    store.write(
        keys.RAW_PREDICTIONS,
        DATES[0],
        pl.read_parquet(path).with_columns(other=pl.lit(1)),
        source=fingerprints[DATES[0]],
    )
    got = read_via_tables(log, store, "prediction", DATES[:2], fingerprints)
    assert got.equals(log.read("prediction", dates=DATES[:2]))
    assert "other" not in got.columns


def test_a_current_raw_table_is_not_written_again(tmp_path: Path) -> None:
    log, store = EventLog(tmp_path / "log"), TableStore(tmp_path / "tables")
    log.append(_events(0, range(2)))
    _tables(log, store, DATES[:2])
    path = store.path(keys.RAW_PREDICTIONS, DATES[0])
    before = path.stat().st_ino
    _tables(log, store, DATES[:2])
    assert path.stat().st_ino == before, "same events: the table stays"
    log.append(_events(100, range(0, 1)))
    _tables(log, store, DATES[:2])
    assert path.stat().st_ino != before, "new events of the date: written again"
    assert pl.read_parquet(path).height == 6

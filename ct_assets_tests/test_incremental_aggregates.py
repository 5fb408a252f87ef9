"""Feedback aggregates computed per date and combined equal a full recompute, through
random arrivals: new dates, late feedback landing in old dates, feedback whose prediction
arrives later, and a change of segments."""

from __future__ import annotations

import random
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from ct_assets import keys
from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.tables import TableStore
from ct_assets.monitoring.feedback import feedback_aggregates, incremental
from ct_assets.monitoring.feedback.incremental import incremental_feedback_aggregates

START = date(2026, 3, 1)
UTC_DATETIME = pl.Datetime("us", "UTC")
CHANNELS = ("app", "web", "store")


def _day(index: int) -> str:
    return (START + timedelta(days=index)).isoformat()


def _at(day: str, seconds: int) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC) + timedelta(
        seconds=seconds
    )


class _World:
    """Predictions and feedback per date, written as the curation tables are."""

    def __init__(self, store: TableStore, rng: random.Random) -> None:
        self.store, self.rng = store, rng
        self.predictions: dict[str, list[dict[str, Any]]] = {}
        self.feedback: dict[str, list[dict[str, Any]]] = {}
        self.next_id = 0
        self.offset = 0

    def _offset(self) -> int:
        self.offset += 1
        return self.offset

    def predict(self, day: str, n: int, ids: list[str] | None = None) -> None:
        rows = self.predictions.setdefault(day, [])
        for _ in range(n):
            pid = ids.pop() if ids else f"p{self.next_id}"
            self.next_id += 1
            channel = self.rng.choice(CHANNELS)
            rows.append(
                {
                    "log_offset": self._offset(),
                    "event_id": f"pe-{pid}-{len(rows)}",
                    "timestamp": _at(day, self.rng.randrange(86400)),
                    "prediction_id": pid,
                    "prediction": self.rng.choice(["0", "1"]),
                    "features": {"channel": channel, "x0": self.rng.random()},
                }
            )
            if self.rng.random() < 0.1:  # logged twice on the same date
                rows.append(rows[-1] | {"log_offset": self._offset(), "event_id": f"pe2-{pid}"})
        self._write_predictions(day)

    def _write_predictions(self, day: str) -> None:
        rows = self.predictions[day]
        frame = pl.DataFrame(
            {
                "log_offset": [r["log_offset"] for r in rows],
                "event_id": [r["event_id"] for r in rows],
                "timestamp": [r["timestamp"] for r in rows],
                "prediction_id": [r["prediction_id"] for r in rows],
                "prediction": [r["prediction"] for r in rows],
                "features": [r["features"] for r in rows],
            },
            schema_overrides={"timestamp": UTC_DATETIME},
        )
        self.store.write(keys.RAW_PREDICTIONS, day, frame, source=f"p:{len(rows)}")

    def answer(self, day: str, n: int, unknown: list[str]) -> None:
        """``n`` feedback events on ``day`` to predictions logged up to 40 days before,
        some to no prediction, some to ids not logged (yet)."""
        logged = [
            r["prediction_id"]
            for d, rows in self.predictions.items()
            if d <= day and date.fromisoformat(day) - date.fromisoformat(d) <= timedelta(40)
            for r in rows
        ]
        rows = self.feedback.setdefault(day, [])
        for _ in range(n):
            roll = self.rng.random()
            if roll < 0.1 or not logged:
                pid = None
            elif roll < 0.2:
                pid = f"late{self.rng.randrange(1000)}"
                unknown.append(pid)
            else:
                pid = self.rng.choice(logged)
            explicit = self.rng.random() < 0.5
            rows.append(
                {
                    "log_offset": self._offset(),
                    "event_id": f"fe{self.offset}",
                    "timestamp": _at(day, self.rng.randrange(86400)),
                    "feedback_type": "explicit" if explicit else "implicit",
                    "prediction_id": pid,
                    "source": self.rng.choice(["s-a", "s-b", None]),
                    "signal": None if explicit else self.rng.choice(["click", "skip", "dwell"]),
                    "value": None if explicit else self.rng.choice([None, 5.0, 50.0]),
                    "label": self.rng.choice(["0", "1"]) if explicit else None,
                    "status": self.rng.choice(["accepted", "accepted", "quarantined", "pending"]),
                    "features": {"channel": self.rng.choice(CHANNELS), "x0": 0.5}
                    if self.rng.random() < 0.1
                    else None,
                }
            )
        frame = pl.DataFrame(
            rows,
            schema={
                "log_offset": pl.Int64,
                "event_id": pl.String,
                "timestamp": UTC_DATETIME,
                "feedback_type": pl.String,
                "prediction_id": pl.String,
                "source": pl.String,
                "signal": pl.String,
                "value": pl.Float64,
                "label": pl.String,
                "status": pl.String,
                "features": pl.Struct({"channel": pl.String, "x0": pl.Float64}),
            },
        )
        self.store.write(keys.VALIDATED_FEEDBACK, day, frame, source=f"f:{len(rows)}")


def _equal_to_full(store: TableStore, folder: Path, segments: str = "") -> list[str]:
    policy = LabelPolicy()
    full = feedback_aggregates(store, policy, segments)
    incremental = incremental_feedback_aggregates(store, policy, folder, segments)
    assert_frame_equal(incremental.result.table, full.table, check_exact=False)
    assert incremental.result.segments == full.segments
    return incremental.days_computed


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_per_date_figures_combined_equal_a_full_recompute(seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = TableStore(Path(tmp) / "tables")
        folder = Path(tmp) / "monitoring" / "feedback_aggregates"
        world = _World(store, rng)
        unknown: list[str] = []
        days = rng.randrange(3, 8)
        for index in range(days):
            world.predict(_day(index), rng.randrange(0, 15))
            world.answer(_day(index), rng.randrange(1, 15), unknown)
        _equal_to_full(store, folder)
        assert _equal_to_full(store, folder) == [], "nothing changed: nothing computed"
        for _ in range(4):
            event = rng.choice(["late", "new", "arrived", "old predictions"])
            if event == "late":  # late feedback lands in an old date
                world.answer(_day(rng.randrange(days)), rng.randrange(1, 6), unknown)
            elif event == "new":
                world.predict(_day(days), rng.randrange(1, 10))
                world.answer(_day(days), rng.randrange(1, 10), unknown)
                days += 1
            elif event == "arrived" and unknown:  # ids answered before they were logged
                world.predict(_day(days - 1), min(3, len(unknown)), unknown)
            else:
                world.predict(_day(rng.randrange(days)), 2)
            _equal_to_full(store, folder)
        _equal_to_full(store, folder, segments="channel")


def test_only_changed_dates_and_the_days_they_refer_to_are_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(incremental, "DAYS_PER_QUERY", 3)  # several blocks of days
    store = TableStore(tmp_path / "tables")
    folder = tmp_path / "figures"
    world = _World(store, random.Random(7))
    for index in range(10):
        world.predict(_day(index), 20)
        world.answer(_day(index), 0, [])
    # the tenth date's feedback refers to predictions of the fifth only
    fifth = [r["prediction_id"] for r in world.predictions[_day(5)]]
    for index in range(10):
        world.feedback[_day(index)] = []
    world.answer(_day(0), 3, [])
    first = _equal_to_full(store, folder)
    assert first == [_day(i) for i in range(10)]

    world.rng = random.Random(1)
    rows = world.feedback.setdefault(_day(9), [])
    world.answer(_day(9), 1, [])
    rows[-1]["prediction_id"] = fifth[0]
    world.answer(_day(9), 0, [])  # rewrite the date with the edited row
    assert _equal_to_full(store, folder) == [_day(5), _day(9)], (
        "the new date, and the date of the prediction its feedback answers"
    )

    # a lost figures file is computed again; a damaged state recomputes everything
    (folder / "days" / f"date={_day(3)}.parquet").unlink()
    assert _equal_to_full(store, folder) == [_day(3)]
    (folder / "state.json").write_text('{"config": ')
    assert _equal_to_full(store, folder) == [_day(i) for i in range(10)]
    assert _equal_to_full(store, folder) == []

"""``events export``: every durable event of a kind, in log order, read in chunks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ct_assets.eventlog import EventLog
from ct_assets.eventlog.export import export_events
from ct_assets.schema import FeedbackEvent, PredictionEvent

DAY = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _filled(root: Path) -> EventLog:
    log = EventLog(root)
    for commit in range(6):
        events: list[FeedbackEvent | PredictionEvent] = []
        for i in range(4):
            n = commit * 4 + i
            # a feature that only later events carry; dates out of order across commits
            features = {"x": float(n), **({"late": f"v{n}"} if commit >= 4 else {})}
            when = DAY + timedelta(days=(commit * 5) % 7, seconds=n)
            events.append(
                FeedbackEvent(
                    event_id=f"fb-{n}",
                    timestamp=when,
                    feedback_type="explicit",
                    features=features,
                    label=n % 2,
                )
            )
            events.append(
                PredictionEvent(
                    event_id=f"pe-{n}",
                    prediction_id=f"p-{n}",
                    timestamp=when,
                    features=features,
                    prediction=n % 2,
                    model_version="1",
                )
            )
        log.append(events)
    return log


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_the_export_is_the_whole_log_read_at_once(tmp_path: Path, chunk: int) -> None:
    log = _filled(tmp_path / "log")
    for kind in ("feedback", "prediction"):
        out = tmp_path / "out" / f"{kind}.parquet"
        assert export_events(log.root, kind, out, chunk=chunk) == 24
        exported = pl.read_parquet(out)
        whole = log.read(kind)
        assert exported["log_offset"].to_list() == list(range(24))
        assert exported.schema == whole.schema  # the struct widened by the later feature
        assert exported.to_dicts() == whole.to_dicts()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "feedback.parquet",
        "prediction.parquet",
    ], "no part or temporary file is left behind"


def test_an_empty_log_exports_an_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "feedback.parquet"
    assert export_events(tmp_path / "log", "feedback", out) == 0
    assert pl.read_parquet(out).height == 0
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        export_events(tmp_path / "log", "feedback", out, chunk=0)

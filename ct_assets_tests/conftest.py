"""Shared fixtures: a CT_HOME per test, fast training settings, simulated feedback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ct_assets.eventlog import EventLog
from ct_assets.schema import convert_record, validate_events
from ct_assets.settings import Settings
from ct_assets.simulate import SimulationSpec, simulate_events


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads or writes the developer's CT_HOME or DAGSTER_HOME."""
    monkeypatch.setenv("CT_HOME", str(tmp_path / "ct-env-home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "ct-env-home" / "dagster"))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    yield


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        volume_threshold=1000,
        training_window=3000,
        num_boost_round=60,
        sensor_interval_seconds=1,
    ).with_home(tmp_path / "ct")


def simulated_events(rows: int, seed: int = 1, drift_at: float = 0.5) -> list[dict[str, object]]:
    spec = SimulationSpec(rows=rows, seed=seed, drift="concept", drift_at=drift_at)
    return list(simulate_events(spec))


def ingest(settings: Settings, events: list[dict[str, object]]) -> int:
    valid = validate_events([convert_record(e, i) for i, e in enumerate(events)])
    return EventLog.from_settings(settings).append(valid).accepted


def dataset_frame(x: Any, y: Any, holdout: int) -> Any:
    """A dataset frame as compile_dataset makes them, from a feature matrix and labels in
    time order (one row a minute): meta columns, then features ``x0``...; the newest
    ``holdout`` rows held out."""
    from datetime import UTC, datetime, timedelta

    import numpy as np
    import polars as pl

    rows = len(y)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(rows)],
            "log_offset": np.arange(rows),
            "timestamp": [start + timedelta(minutes=i) for i in range(rows)],
            "label": np.asarray(y).astype(str),
            "split": ["train"] * (rows - holdout) + ["holdout"] * holdout,
            **{f"x{j}": x[:, j] for j in range(x.shape[1])},
        }
    )

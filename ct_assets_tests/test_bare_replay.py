"""The bare LightGBM replay of the drift benchmark (benchmarks/bare_replay.py)."""

from __future__ import annotations

import lightgbm
import numpy as np
import pandas as pd
import polars as pl
import pytest

from benchmarks.bare_replay import (
    DEFAULT_PARAMS,
    fixed_period_grid,
    prepare,
    replay_fixed_period,
)

WARMUP, BATCH = 200, 48


@pytest.fixture
def frame() -> pl.DataFrame:
    """600 rows: two numeric features, a categorical one, a label that flips at row 400."""
    rng = np.random.default_rng(3)
    x0, x1 = rng.normal(size=600), rng.normal(size=600)
    colour = rng.choice(["red", "green", "blue"], size=600)
    label = ((x0 + (colour == "red")) > 0.3).astype(int)
    label[400:] = 1 - label[400:]
    return pl.DataFrame({"x0": x0, "colour": colour, "x1": x1, "label": label})


def test_never_retrained_is_a_plain_fit_on_the_warm_up(frame: pl.DataFrame) -> None:
    result = replay_fixed_period(
        frame, "label", warmup_rows=WARMUP, batch_rows=BATCH, period=None, window=None
    )
    features = frame.drop("label").to_pandas()
    features["colour"] = features["colour"].astype(pd.CategoricalDtype(["blue", "green", "red"]))
    labels = frame["label"].to_numpy()
    model = lightgbm.LGBMClassifier(**DEFAULT_PARAMS).fit(features[:WARMUP], labels[:WARMUP])
    expected = model.predict(features[WARMUP:]) == labels[WARMUP:]
    assert result.retrains == 0
    assert result.rows_scored == 400
    assert result.hits == [int(h) for h in expected]
    assert result.accuracy == pytest.approx(expected.mean())


def test_a_period_retrains_each_time_the_scored_rows_cross_a_multiple(
    frame: pl.DataFrame,
) -> None:
    result = replay_fixed_period(
        frame, "label", warmup_rows=WARMUP, batch_rows=BATCH, period=100, window=150
    )
    # 400 scored rows in batches of 48: the batches ending at 144, 240, 336 and 400
    # scored rows cross 100, 200, 300 and 400; the last one is counted, not fitted.
    assert result.retrains == 4
    assert result.retrain_rows == [WARMUP + 144, WARMUP + 240, WARMUP + 336, WARMUP + 400]
    assert len(result.hits) == 400
    static = replay_fixed_period(
        frame, "label", warmup_rows=WARMUP, batch_rows=BATCH, period=None, window=None
    )
    assert result.accuracy > static.accuracy  # it learns the flipped concept


def test_the_grid_matches_single_replays(frame: pl.DataFrame) -> None:
    grid = fixed_period_grid(
        prepare(frame, "label"), (100, 200), (150, None), warmup_rows=WARMUP, batch_rows=BATCH
    )
    for (period, window), cell in grid.items():
        alone = replay_fixed_period(
            frame, "label", warmup_rows=WARMUP, batch_rows=BATCH, period=period, window=window
        )
        assert cell.hits == alone.hits
        assert cell.retrains == alone.retrains

"""A model the pipeline trains is at least as good as plain LightGBM on the same rows.

Small datasets (below ``early_stopping_min_rows``) train every round on every row, so the
model is the one ``lightgbm.LGBMClassifier`` fits with the same parameters. Larger ones
pick the rounds by early stopping on the loss (never fewer than ``min_boost_round``) and
are refitted on every row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import polars as pl
import pytest
from numpy.typing import NDArray

from ct_assets.training.train import TrainParams, train_model

from .conftest import dataset_frame

PARAMS = TrainParams(num_threads=1)


def noisy_stream(rows: int, seed: int, flip: float = 0.1) -> tuple[NDArray[Any], NDArray[Any]]:
    """A stationary concept with ``flip`` label noise (like a judged stream of ours)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    logit = 1.5 * x[:, 0] - x[:, 1] + x[:, 2] * x[:, 3] + 0.5 * np.sin(3 * x[:, 4])
    y = (logit > 0).astype(int)
    flipped = rng.random(rows) < flip
    return x, np.where(flipped, 1 - y, y)


def as_dataset(x: NDArray[Any], y: NDArray[Any], holdout: int) -> pl.DataFrame:
    frame: pl.DataFrame = dataset_frame(x, y, holdout)
    return frame


def plain(params: TrainParams, x: NDArray[Any], y: NDArray[Any]) -> Any:
    import lightgbm

    return lightgbm.LGBMClassifier(
        n_estimators=params.num_boost_round,
        learning_rate=params.learning_rate,
        num_leaves=params.num_leaves,
        n_jobs=1,
        verbose=-1,
    ).fit(x, y)


def accuracy_after(result: Any, x: NDArray[Any], y: NDArray[Any]) -> float:
    frame = as_dataset(x, y, holdout=0)
    predicted = np.array(result.model.predict(frame)).astype(int)
    return float(np.mean(predicted == y))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_small_dataset_gives_plain_lightgbms_model(seed: int) -> None:
    # 2,000 rows as the backtest's warm-up: 1,600 train, 400 holdout
    x, y = noisy_stream(4000, seed)
    result = train_model(as_dataset(x[:2000], y[:2000], holdout=400), PARAMS)
    assert not result.early_stopped
    assert result.train_rows == 1600
    assert result.model.booster.current_iteration() == PARAMS.num_boost_round
    reference = plain(PARAMS, x[:1600], y[:1600])
    later = as_dataset(x[2000:], y[2000:], holdout=0)
    ours = result.model.predict_proba(later)
    theirs = reference.predict_proba(x[2000:])
    assert np.allclose(ours, theirs, atol=1e-9)
    assert accuracy_after(result, x[2000:], y[2000:]) == pytest.approx(
        float(np.mean(reference.predict(x[2000:]) == y[2000:]))
    )
    assert accuracy_after(result, x[2000:], y[2000:]) > 0.8


def test_early_stopping_keeps_at_least_min_boost_round_rounds() -> None:
    """Labels unrelated to the features: the validation loss is best after a round or
    two, which once left a model of a handful of trees. At least min_boost_round stay."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 8))
    y = rng.integers(0, 2, size=3000)
    params = dataclasses.replace(PARAMS, early_stopping_min_rows=0, early_stopping_rounds=10)
    result = train_model(as_dataset(x, y, holdout=600), params)
    assert result.early_stopped
    assert result.model.booster.current_iteration() == params.min_boost_round
    assert result.train_rows == 2400  # refitted on every train row
    assert set(result.validation_metrics) == {"binary_logloss", "auc"}


def test_a_large_dataset_stops_early_on_the_loss_and_refits_on_every_row() -> None:
    x, y = noisy_stream(34_000, seed=9)
    params = dataclasses.replace(PARAMS, num_boost_round=400)
    result = train_model(as_dataset(x[:24_000], y[:24_000], holdout=2000), params)
    assert result.early_stopped
    assert result.train_rows == 22_000
    kept = result.model.booster.current_iteration()
    assert params.min_boost_round <= kept < params.num_boost_round
    ours = accuracy_after(result, x[24_000:], y[24_000:])
    reference = plain(params, x[:22_000], y[:22_000])
    theirs = float(np.mean(reference.predict(x[24_000:]) == y[24_000:]))
    assert ours >= theirs - 0.005, (ours, theirs, kept)


def test_invalid_training_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="min_boost_round must be >= 1"):
        TrainParams(min_boost_round=0)
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        TrainParams(validation_fraction=1.0)

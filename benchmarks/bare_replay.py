"""Prequential replay of a labeled stream with bare LightGBM: no Dagster, no MLflow.

The protocol is the backtest's (``ct_assets.backtest``):

1. the first ``warmup_rows`` rows train the first model and are not scored;
2. the rest arrives in batches of ``batch_rows``; each batch is predicted by the model
   of that moment before its labels are seen (prequential accuracy);
3. after each batch a policy, which sees how many rows have been scored, decides
   whether to retrain; a retrain is a full fit on the newest ``window`` labeled rows
   (warm-up included; ``None``: all of them) and serves from the next batch on.

The model is ``lightgbm.LGBMClassifier(**params)`` (default: LightGBM's defaults,
100 rounds, learning rate 0.1, 31 leaves, silent; one thread, which is faster for
fits of a few thousand rows and does not change the model). String columns are categorical:
pandas categories fixed to the sorted values of the whole column, so every model
encodes them the same way; booleans become 0/1. A fit is determined by the rows it
sees, so a :class:`FitCache` shared between replays of the same stream reuses it: the
cells of a fixed-period grid (:func:`fixed_period_grid`) retrain at shared rows.

``fixed_period(n)`` is the backtest's ``--retrain-every n``: a retrain each time the
scored rows cross a multiple of ``n``. Policies only see row counts, so the replay
predicts each model's whole span of batches in one call; the hits are the same as
batch by batch. A retrain after the last batch is counted (the backtest runs it) but
not fitted: it would score nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

#: ``LGBMClassifier`` parameters of the replay unless given: LightGBM's own defaults.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 100,
    "learning_rate": 0.1,
    "num_leaves": 31,
    "verbose": -1,
    "n_jobs": 1,
}

#: Decides after a batch whether to retrain: (rows scored before it, rows scored after it).
Policy = Callable[[int, int], bool]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay measured; ``hits`` has one 0/1 per scored row, in stream order."""

    accuracy: float
    rows_scored: int
    retrains: int
    hits: list[int]
    retrain_rows: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Prepared:
    """A stream ready for LightGBM: encoded features and the labels, in stream order."""

    features: pd.DataFrame
    labels: NDArray[Any]

    @property
    def rows(self) -> int:
        return len(self.labels)


def fixed_period(every: int) -> Policy:
    """A full retrain each time the scored rows cross a multiple of ``every``."""
    if every < 1:
        raise ValueError(f"period {every} is not a positive row count")
    return lambda before, after: after // every > before // every


def never(before: int, after: int) -> bool:
    """The never-retrained model: the warm-up fit scores everything."""
    return False


def prepare(frame: pl.DataFrame | pd.DataFrame, target: str, drop: Iterable[str] = ()) -> Prepared:
    """Split ``frame`` into encoded features and labels; rows without a label are dropped."""
    table = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    if target not in table.columns:
        raise ValueError(f"target column {target!r} is not in {table.columns}")
    table = table.filter(pl.col(target).is_not_null())
    names = [c for c in table.columns if c != target and c not in set(drop)]
    if not names:
        raise ValueError("no feature columns besides the target")
    features = table.select(names).with_columns(pl.col(pl.Boolean).cast(pl.Int64)).to_pandas()
    for name in names:
        if table.schema[name] == pl.String:
            values = sorted(table[name].drop_nulls().unique().to_list())
            features[name] = features[name].astype(_categories(values))
    return Prepared(features, table[target].to_numpy())


def _categories(values: list[str]) -> Any:
    import pandas as pd

    return pd.CategoricalDtype(categories=values)


class _Constant:
    """The model of a window holding a single class."""

    def __init__(self, label: Any) -> None:
        self.label = label

    def predict(self, features: pd.DataFrame) -> NDArray[Any]:
        return np.full(len(features), self.label)


class FitCache:
    """Models fitted on rows ``[start, end)`` of one prepared stream, with one ``params``."""

    def __init__(self, data: Prepared, params: dict[str, Any] | None = None) -> None:
        self.data = data
        self.params = dict(DEFAULT_PARAMS if params is None else params)
        self.models: dict[tuple[int, int], Any] = {}
        self.fits = 0

    def model(self, start: int, end: int) -> Any:
        key = (start, end)
        if key not in self.models:
            self.models[key] = self._fit(start, end)
            self.fits += 1
        return self.models[key]

    def _fit(self, start: int, end: int) -> Any:
        import lightgbm

        labels = self.data.labels[start:end]
        classes = np.unique(labels)
        if len(classes) < 2:
            return _Constant(classes[0])
        model = lightgbm.LGBMClassifier(**self.params)
        return model.fit(self.data.features.iloc[start:end], labels)


def replay(
    data: Prepared,
    policy: Policy,
    *,
    window: int | None = None,
    warmup_rows: int = 2000,
    batch_rows: int = 48,
    cache: FitCache | None = None,
) -> ReplayResult:
    """Replay a prepared stream under ``policy``, retraining on the newest ``window`` rows."""
    if data.rows <= warmup_rows:
        raise ValueError(f"{data.rows} rows: need more than the warm-up ({warmup_rows})")
    if batch_rows < 1 or (window is not None and window < 1):
        raise ValueError("batch_rows and window must be positive")
    fits = cache if cache is not None else FitCache(data)
    model = fits.model(0, warmup_rows)
    hits: list[NDArray[Any]] = []
    retrain_rows: list[int] = []
    span_start, scored = warmup_rows, 0
    for start in range(warmup_rows, data.rows, batch_rows):
        end = min(start + batch_rows, data.rows)
        before, scored = scored, scored + end - start
        if not policy(before, scored):
            continue
        retrain_rows.append(end)
        hits.append(_hits(model, data, span_start, end))
        span_start = end
        if end < data.rows:
            model = fits.model(0 if window is None else max(0, end - window), end)
    if span_start < data.rows:
        hits.append(_hits(model, data, span_start, data.rows))
    flat = [int(h) for h in np.concatenate(hits)]
    return ReplayResult(sum(flat) / len(flat), len(flat), len(retrain_rows), flat, retrain_rows)


def _hits(model: Any, data: Prepared, start: int, end: int) -> NDArray[Any]:
    predicted = model.predict(data.features.iloc[start:end])
    hits: NDArray[Any] = predicted == data.labels[start:end]
    return hits


def replay_fixed_period(
    frame: pl.DataFrame | pd.DataFrame,
    target: str,
    *,
    warmup_rows: int = 2000,
    batch_rows: int = 48,
    period: int | None,
    window: int | None,
    params: dict[str, Any] | None = None,
    drop: Sequence[str] = (),
) -> ReplayResult:
    """A full retrain every ``period`` scored rows on the newest ``window`` labeled rows
    (``None``: all); ``period=None`` is the never-retrained warm-up model."""
    data = prepare(frame, target, drop)
    policy = never if period is None else fixed_period(period)
    cache = FitCache(data, params)
    return replay(
        data, policy, window=window, warmup_rows=warmup_rows, batch_rows=batch_rows, cache=cache
    )


def fixed_period_grid(
    data: Prepared,
    periods: Sequence[int],
    windows: Sequence[int | None],
    *,
    warmup_rows: int = 2000,
    batch_rows: int = 48,
    params: dict[str, Any] | None = None,
) -> dict[tuple[int, int | None], ReplayResult]:
    """Every (period, window) cell of the fixed-period grid, fits shared between cells."""
    cache = FitCache(data, params)
    return {
        (period, window): replay(
            data,
            fixed_period(period),
            window=window,
            warmup_rows=warmup_rows,
            batch_rows=batch_rows,
            cache=cache,
        )
        for period in periods
        for window in windows
    }

"""How the drift trigger encodes features: numeric as floats (missing as ``-inf``),
categorical as the index in the champion's category list (missing and unseen after it);
and the seeded samples it compares."""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets import keys

Detector = Literal["tabular", "ks"]
Correction = Literal["bonferroni", "fdr"]
ScoreRows = Literal["holdout", "train"]

FORMAT_VERSION = 1
ARRAYS_FILE = "reference.npz"
META_FILE = "reference.json"
#: On an object store, the reference of champion version V is ``drift/<V>/``.
OBJECT_PREFIX = keys.DRIFT_OBJECT_PREFIX
#: Numeric missing values are encoded as this (sorted first by the KS test).
NUMERIC_MISSING = -np.inf
#: Fewer holdout rows than this: the score reference falls back to the reference rows.
MIN_SCORE_ROWS = 200
#: References kept in process by :func:`get_or_build` (the newest ones).
CACHE_SIZE = 4


def missing_code(categories: list[str]) -> int:
    return len(categories)


def unseen_code(categories: list[str]) -> int:
    return len(categories) + 1


def feature_frame(frame: pl.DataFrame, feature_names: list[str]) -> pl.DataFrame:
    """``frame`` with its features as columns: when they are not there already, the fields
    of its ``features`` struct (prediction events, attributed examples), alone."""
    if (
        "features" in frame.columns
        and isinstance(frame.schema["features"], pl.Struct)
        and not set(feature_names) <= set(frame.columns)
    ):
        return frame.select("features").unnest("features")
    return frame


def encode_features(
    frame: pl.DataFrame, feature_names: list[str], categories: dict[str, list[str]]
) -> NDArray[np.float64]:
    """Encoded feature matrix (rows x features); absent columns are all missing."""
    frame = feature_frame(frame, feature_names)
    n = frame.height
    out = np.empty((n, len(feature_names)), dtype=np.float64)
    for j, name in enumerate(feature_names):
        cats = categories.get(name)
        if name not in frame.columns:
            out[:, j] = missing_code(cats) if cats is not None else NUMERIC_MISSING
            continue
        column = frame[name]
        if cats is not None:
            codes = {value: i for i, value in enumerate(cats)}
            text = column.cast(pl.String)
            coded = text.replace_strict(codes, default=unseen_code(cats), return_dtype=pl.Int64)
            out[:, j] = np.where(text.is_null().to_numpy(), missing_code(cats), coded.to_numpy())
        else:
            values = column.cast(pl.Float64, strict=False).to_numpy()
            out[:, j] = np.where(np.isnan(values), NUMERIC_MISSING, values)
    return out


def sample_indices(n: int, limit: int, seed: int) -> NDArray[np.int64]:
    """Sorted indices of a seeded sample of at most ``limit`` of ``n`` rows (all if fewer)."""
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)

"""Scoring a frame with a model and cutting a column into slices, for the gate's evaluation.

Plain functions over models and Polars frames: ``score_frame`` (a model's probabilities and
the label codes of every row) and ``slice_rows`` (slice names and each row's slice: numeric
columns by quartile, anything else by value).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets.data.dataset import LABEL
from ct_assets.training.metrics import classification_metrics
from ct_assets.training.model import TrainedModel

#: Numeric slice columns with more distinct values than this are bucketed into quartiles.
MAX_DISCRETE_VALUES = 10
#: Categorical slice columns keep their most frequent values; the rest is one "(other)" slice.
MAX_SLICE_VALUES = 20


@dataclass(frozen=True)
class ScoredFrame:
    """A model's probabilities on every row of a frame; ``y`` = -1 where the label is unknown."""

    y: NDArray[np.int64]
    proba: NDArray[np.float64]

    @property
    def known(self) -> NDArray[np.bool_]:
        return np.asarray(self.y >= 0)

    def metrics(self, rows: NDArray[np.bool_] | None = None) -> dict[str, float]:
        """Metrics on the known rows (of the selection), as ``train.evaluate``."""
        selected = self.known if rows is None else self.known & rows
        if not selected.any():
            return {"rows": 0.0}
        return classification_metrics(self.y[selected], self.proba[selected])


def score_frame(model: TrainedModel, frame: pl.DataFrame) -> ScoredFrame:
    """``model`` on every row of ``frame``, labels coded by the model's classes."""
    classes = model.spec.classes
    if frame.height == 0:
        return ScoredFrame(np.empty(0, dtype=np.int64), np.empty((0, len(classes))))
    codes = {value: i for i, value in enumerate(classes)}
    y = (
        frame[LABEL]
        .cast(pl.String)
        .replace_strict(codes, default=-1, return_dtype=pl.Int64)
        .fill_null(-1)
        .to_numpy()
        .astype(np.int64)
    )
    proba = np.asarray(model.predict_proba(frame), dtype=np.float64)
    return ScoredFrame(y, proba)


def slice_rows(column: pl.Series) -> tuple[list[str], NDArray[Any]]:
    """Slice names in display order and each row's slice.

    Numeric columns with more than ``MAX_DISCRETE_VALUES`` distinct values are cut at their
    quartiles; anything else is sliced by value (the most frequent ``MAX_SLICE_VALUES - 1``
    values, the rest as "(other)"). Missing values are the slice "null".
    """
    dtype = column.dtype
    if dtype.is_numeric() and column.drop_nulls().n_unique() > MAX_DISCRETE_VALUES:
        values = column.cast(pl.Float64).fill_null(np.nan).to_numpy()
        finite = values[np.isfinite(values)]
        edges = np.unique(np.quantile(finite, [0.25, 0.5, 0.75])) if len(finite) else finite
        names = _bucket_names(edges)
        bucket = np.searchsorted(edges, values, side="left")
        labels = np.array(names, dtype=object)[np.minimum(bucket, len(names) - 1)]
        labels[~np.isfinite(values)] = "null"
        order = [*names, "null"]
    else:
        labels = np.array(
            [("null" if v is None else str(v)) for v in column.cast(pl.String).to_list()],
            dtype=object,
        )
        values_, counts = np.unique(labels.astype(str), return_counts=True)
        if len(values_) > MAX_SLICE_VALUES:
            keep = {
                str(v) for v in values_[np.argsort(-counts, kind="stable")][: MAX_SLICE_VALUES - 1]
            }
            labels = np.array([v if v in keep else "(other)" for v in labels], dtype=object)
        special = ("null", "(other)")
        plain = sorted({str(v) for v in labels if v not in special})
        if dtype.is_numeric():
            plain.sort(key=float)
        order = [*plain, *special]
    present = set(labels.tolist())
    return [name for name in order if name in present], labels


def _bucket_names(edges: NDArray[np.float64]) -> list[str]:
    if len(edges) == 0:
        return ["all"]
    names = [f"q1 <= {edges[0]:.4g}"]
    names += [
        f"q{i + 2} ({lo:.4g}, {hi:.4g}]" for i, (lo, hi) in enumerate(itertools.pairwise(edges))
    ]
    names.append(f"q{len(edges) + 1} > {edges[-1]:.4g}")
    return names

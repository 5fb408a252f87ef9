"""The rows of logged predictions that feedback cites: the one semi-join by
``prediction_id`` that curation's reads, the feedback rules and attribution share (each
then keeps the first logged prediction of an id, which the other rows cannot change)."""

from __future__ import annotations

import polars as pl


def cited_ids(prediction_ids: pl.Series, dtype: pl.DataType) -> pl.DataFrame:
    """A one-column frame ``prediction_id`` of the distinct non-null ids, cast to ``dtype``."""
    return prediction_ids.cast(dtype).drop_nulls().unique().alias("prediction_id").to_frame()


def cited(frame: pl.DataFrame, prediction_ids: pl.Series | None) -> pl.DataFrame:
    """The rows of ``frame`` whose ``prediction_id`` is one of ``prediction_ids``, in their
    order (all rows when that is None; nulls and repeats among the ids count once)."""
    if prediction_ids is None or frame.is_empty() or "prediction_id" not in frame.columns:
        return frame
    ids = cited_ids(prediction_ids, frame.schema["prediction_id"])
    return frame.join(ids, on="prediction_id", how="semi", maintain_order="left")

"""The working frame the rules share: feedback in log order with its prediction joined,
the names of the working columns, and small expressions (windows, hours) the rules use."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from ct_assets.data.cited import cited
from ct_assets.data.feedback_rules.codes import FeedbackReason

# Working columns; the \x00 prefix keeps them apart from any input column.
ROW = "\x00row"
OWN = "\x00own_features"
FOUND = "\x00prediction_found"
PRED_TS = "\x00prediction_timestamp"
PRED_LABEL = "\x00prediction_label"
PRED_CONF = "\x00prediction_confidence"
PRED_FEATURES = "\x00prediction_features"
WAITING = "\x00waiting"
WINDOW = "\x00window"
KEY = "\x00key"
DETAIL = "\x00detail"

_FEEDBACK_COLUMNS: dict[str, pl.DataType] = {
    "log_offset": pl.Int64(),
    "event_id": pl.String(),
    "timestamp": pl.Datetime("us", "UTC"),
    "feedback_type": pl.String(),
    "prediction_id": pl.String(),
    "entity_id": pl.String(),
    "user_id": pl.String(),
    "source": pl.String(),
    "signal": pl.String(),
    "label": pl.String(),
}


def prepare(feedback: pl.DataFrame) -> pl.DataFrame:
    """The columns the rules need, in log order, with the input position kept in ``ROW``."""
    columns: list[pl.Expr] = [pl.int_range(pl.len(), dtype=pl.Int64).alias(ROW)]
    for name, dtype in _FEEDBACK_COLUMNS.items():
        if name in feedback.columns:
            columns.append(pl.col(name).cast(dtype))
        else:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    own = feedback.schema.get("features")
    if isinstance(own, pl.Struct) and own.fields:
        columns.append(pl.col("features").alias(OWN))
    else:
        columns.append(pl.lit(None, dtype=pl.Null).alias(OWN))
    work = feedback.select(columns)
    if "log_offset" not in feedback.columns:
        work = work.with_columns(pl.col(ROW).alias("log_offset"))
    return work.sort(["log_offset", ROW], nulls_last=True)


def attach_predictions(work: pl.DataFrame, predictions: pl.DataFrame | None) -> pl.DataFrame:
    """Join the first logged prediction of each prediction_id: time, label, confidence, features."""
    empty = pl.DataFrame(
        schema={
            "prediction_id": pl.String,
            PRED_TS: pl.Datetime("us", "UTC"),
            PRED_LABEL: pl.String,
            PRED_CONF: pl.Float64,
            PRED_FEATURES: pl.Null,
        }
    )
    logged = empty
    if predictions is not None and predictions.height and "prediction_id" in predictions.columns:
        order = ["log_offset"] if "log_offset" in predictions.columns else []
        scores = predictions.schema.get("scores")
        features = predictions.schema.get("features")
        prediction = (
            pl.col("prediction").cast(pl.String)
            if "prediction" in predictions.columns
            else pl.lit(None, dtype=pl.String)
        )
        confidence = (
            pl.max_horizontal(
                [pl.col("scores").struct.field(f.name).cast(pl.Float64) for f in scores.fields]
            )
            if isinstance(scores, pl.Struct) and scores.fields
            else pl.lit(None, dtype=pl.Float64)
        )
        relevant = cited(predictions, work.get_column("prediction_id"))
        logged = (
            (relevant.sort(order, maintain_order=True) if order else relevant)
            .unique("prediction_id", keep="first", maintain_order=True)
            .select(
                pl.col("prediction_id").cast(pl.String),
                pl.col("timestamp").cast(pl.Datetime("us", "UTC")).alias(PRED_TS),
                prediction.alias(PRED_LABEL),
                confidence.alias(PRED_CONF),
                (
                    pl.col("features")
                    if isinstance(features, pl.Struct) and features.fields
                    else pl.lit(None, dtype=pl.Null)
                ).alias(PRED_FEATURES),
            )
        )
    joined = work.join(logged, on="prediction_id", how="left", maintain_order="left")
    found = pl.col("prediction_id").is_not_null() & pl.col(PRED_TS).is_not_null()
    waiting = pl.col("prediction_id").is_not_null() & ~found & pl.col(OWN).is_null()
    return joined.with_columns(found.alias(FOUND), waiting.alias(WAITING))


def is_label() -> pl.Expr:
    return (pl.col("feedback_type") == "explicit") & pl.col("label").is_not_null()


def join_detail(work: pl.DataFrame, reason: FeedbackReason, details: pl.DataFrame) -> pl.DataFrame:
    """Add a reason column from a frame of (ROW, DETAIL)."""
    return work.join(
        details.rename({DETAIL: reason.value}), on=ROW, how="left", maintain_order="left"
    )


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def window_of(delta: timedelta) -> pl.Expr:
    return pl.col("timestamp").dt.epoch("us") // _micros(delta)


def window_start(delta: timedelta) -> pl.Expr:
    return pl.from_epoch(pl.col(WINDOW) * _micros(delta), time_unit="us").dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def hours(expr: pl.Expr) -> pl.Expr:
    return (expr.dt.total_microseconds() / 3.6e9).round(2)

"""Labeled examples: labeled feedback joined to the features and serving context of the
prediction it refers to; and the feedback left without features."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from ct_assets.data.attribution.labels import (
    CARRIED_COLUMNS,
    LABEL_COLUMN,
    LABEL_SOURCE_COLUMN,
    OWN_FEATURES_COLUMN,
    labeled_feedback,
    subjects,
)
from ct_assets.data.attribution.policy import LabelPolicy
from ct_assets.data.cited import cited

EXAMPLE_COLUMNS = (
    "event_id",
    "log_offset",
    "timestamp",
    "prediction_id",
    "prediction_time",
    "model_version",
    "arm",
    "served_prediction",
    "label",
    "label_source",
    "source",
    "user_id",
    "features",
)

# Internal column names; the double underscores keep them apart from event fields.
_LOGGED = "__logged_features"
_MATCHED = "__matched"


def logged_predictions(predictions: pl.DataFrame) -> pl.DataFrame:
    """One row per ``prediction_id``: the first logged (lowest ``log_offset``).

    A prediction id logged twice (a client retry with a new event id) refers to what
    was served first; later copies are ignored.
    """
    return (
        predictions.filter(pl.col("prediction_id").is_not_null())
        .sort("log_offset", maintain_order=True)
        .unique("prediction_id", keep="first", maintain_order=True)
    )


def _struct_fields(frame: pl.DataFrame | None, column: str) -> dict[str, pl.DataType]:
    dtype = frame.schema.get(column) if frame is not None else None
    if isinstance(dtype, pl.Struct):
        return {f.name: f.dtype for f in dtype.fields}  # type: ignore[misc]
    return {}


def supertype(dtypes: list[pl.DataType]) -> pl.DataType:
    """The type both sides of a feature fit in, as Polars' relaxed concat would choose it."""
    if len(dtypes) == 1:
        return dtypes[0]
    empty = [pl.DataFrame(schema={"v": dtype}) for dtype in dtypes]
    return pl.concat(empty, how="vertical_relaxed").schema["v"]


def _features_expr(
    own: Mapping[str, pl.DataType], logged: Mapping[str, pl.DataType], has_own: pl.Expr
) -> pl.Expr:
    """The feedback's own features where it has them, else the logged ones, as one struct
    whose fields are the union of both sets (in name order, each in the type both fit)."""
    fields = []
    for name in sorted(set(own) | set(logged)):
        dtype = supertype([t for t in (own.get(name), logged.get(name)) if t is not None])
        none = pl.lit(None, dtype=dtype)
        mine = pl.col(OWN_FEATURES_COLUMN).struct.field(name).cast(dtype) if name in own else none
        theirs = pl.col(_LOGGED).struct.field(name).cast(dtype) if name in logged else none
        fields.append(pl.when(has_own).then(mine).otherwise(theirs).alias(name))
    if not fields:
        return pl.lit(None, dtype=pl.Struct({}))
    return pl.struct(fields)


def _join_predictions(feedback: pl.DataFrame, predictions: pl.DataFrame | None) -> pl.DataFrame:
    """Feedback left-joined to the first logged prediction of its ``prediction_id``.

    Adds ``prediction_time``, ``model_version``, ``arm``, ``served_prediction``, the
    prediction's features (``_LOGGED``) and ``_MATCHED`` (true when one was found).
    """
    joined_columns: dict[str, pl.DataType] = {
        "prediction_time": pl.Datetime("us", "UTC"),
        "model_version": pl.String(),
        "arm": pl.String(),
        "served_prediction": pl.String(),
    }
    usable = (
        predictions is not None
        and predictions.height > 0
        and "prediction_id" in predictions.columns
    )
    if not usable:
        return feedback.with_columns(
            *[pl.lit(None, dtype=dtype).alias(name) for name, dtype in joined_columns.items()],
            pl.lit(None, dtype=pl.Null).alias(_LOGGED),
            pl.lit(None, dtype=pl.Boolean).alias(_MATCHED),
        )
    assert predictions is not None
    # only the predictions this feedback cites: the first of each id is the same
    first = logged_predictions(cited(predictions, feedback.get_column("prediction_id")))
    sources = {
        "prediction_time": "timestamp",
        "model_version": "model_version",
        "arm": "arm",
        "served_prediction": "prediction",
    }
    right = first.select(
        pl.col("prediction_id"),
        *[
            (pl.col(src) if src in first.columns else pl.lit(None, dtype=joined_columns[name]))
            .cast(joined_columns[name])
            .alias(name)
            for name, src in sources.items()
        ],
        (pl.col("features") if "features" in first.columns else pl.lit(None)).alias(_LOGGED),
        pl.lit(True).alias(_MATCHED),
    )
    return feedback.join(right, on="prediction_id", how="left")


def attribute_feedback(
    feedback: pl.DataFrame,
    predictions: pl.DataFrame | None,
    policy: LabelPolicy | None = None,
) -> pl.DataFrame:
    """Labeled examples: each labeled feedback event with the features the model saw.

    One row per feedback event that ``policy`` labels and that has features: its own,
    or (when it carries none) those of the first logged prediction with its
    ``prediction_id``. Columns (see ``EXAMPLE_COLUMNS``): the feedback's ``event_id``,
    ``log_offset``, ``timestamp``, ``prediction_id``, ``source`` and ``user_id``; the
    prediction's ``prediction_time``, ``model_version``, ``arm`` and
    ``served_prediction`` (null when it is not in the log); ``label`` (a string),
    ``label_source`` (``explicit`` or ``implicit:<signal>``) and ``features``, a struct
    whose fields are the union of the own and logged feature sets (a row's missing
    fields are null). ``status`` and ``reason`` of validated feedback are carried as
    they are. Sorted by ``(timestamp, log_offset)``.

    Raises :class:`UnknownSignalError` when the policy does not ignore unknown signals
    and some implicit feedback has one.
    """
    carried = [c for c in CARRIED_COLUMNS if c in feedback.columns]
    frame = labeled_feedback(feedback, policy)
    joined = _join_predictions(frame, predictions)
    has_own = pl.col(OWN_FEATURES_COLUMN).is_not_null()
    resolved = has_own | pl.col(_MATCHED).fill_null(False)
    features = _features_expr(
        _struct_fields(joined, OWN_FEATURES_COLUMN), _struct_fields(joined, _LOGGED), has_own
    )
    derived = {
        "log_offset": pl.col("log_offset").cast(pl.Int64),
        "label": pl.col(LABEL_COLUMN).cast(pl.String),
        "label_source": pl.col(LABEL_SOURCE_COLUMN),
        "source": pl.col("source").cast(pl.String),
        "user_id": pl.col("user_id").cast(pl.String),
        "features": features,
    }
    return (
        joined.filter(resolved)
        .select(*[derived.get(c, pl.col(c)).alias(c) for c in EXAMPLE_COLUMNS], *carried)
        .sort(["timestamp", "log_offset"], maintain_order=True)
    )


def unattributed(feedback: pl.DataFrame, predictions: pl.DataFrame | None) -> pl.DataFrame:
    """Feedback rows with no features to learn from: none of their own and no logged
    prediction with their ``prediction_id`` (not yet, or never, logged).

    Returned with all their columns, sorted by ``(timestamp, log_offset)``, whatever
    their label; they become examples once the prediction is in the log.
    """
    frame = subjects(feedback)
    missing = pl.col(OWN_FEATURES_COLUMN).is_null()
    if predictions is not None and predictions.height and "prediction_id" in predictions.columns:
        ids = predictions["prediction_id"].cast(pl.String).drop_nulls().unique()
        missing = missing & ~pl.col("prediction_id").is_in(ids.implode()).fill_null(False)
    return (
        frame.filter(missing)
        .rename({OWN_FEATURES_COLUMN: "features"} if "features" in feedback.columns else {})
        .select(feedback.columns)
        .sort(["timestamp", "log_offset"], maintain_order=True)
    )

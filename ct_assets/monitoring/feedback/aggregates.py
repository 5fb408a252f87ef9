"""Daily feedback aggregates: event counts and rates per day and group of each dimension,
with the coverage of the day's predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from ct_assets import keys
from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.duckdb_work import quote
from ct_assets.data.tables import TableStore
from ct_assets.monitoring.feedback.policy_sql import policy_flags_sql
from ct_assets.monitoring.feedback.predictions import first_logged, prediction_projection
from ct_assets.monitoring.feedback.segments import (
    ALL,
    NO_VALUE,
    SEGMENT_PREFIX,
    Segments,
    choose_segments,
    group_sql,
)
from ct_assets.monitoring.feedback.sql import (
    Schema,
    TableFiles,
    column_or_null,
    create_table,
    duckdb_session,
)

AGGREGATE_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date(),
    "dimension": pl.String(),
    "value": pl.String(),
    "events": pl.Int64(),
    "accepted": pl.Int64(),
    "quarantined": pl.Int64(),
    "pending": pl.Int64(),
    "expired": pl.Int64(),
    "acceptance_rate": pl.Float64(),
    "quarantine_rate": pl.Float64(),
    "explicit_labels": pl.Int64(),
    "positive_labels": pl.Int64(),
    "label_rate": pl.Float64(),
    "implicit_events": pl.Int64(),
    "implicit_labeled": pl.Int64(),
    "implicit_positive": pl.Int64(),
    "reward_rate": pl.Float64(),
    "mean_value": pl.Float64(),
    "predictions": pl.Int64(),
    "predictions_with_feedback": pl.Int64(),
    "coverage": pl.Float64(),
}
AGGREGATE_COUNTS = tuple(n for n, t in AGGREGATE_SCHEMA.items() if t == pl.Int64())
#: What each column of the aggregates table means (for the asset's column schema).
AGGREGATE_COLUMN_DOCS = {
    "day": "UTC date: of the feedback events, and of the predictions for coverage",
    "dimension": "all | feedback_type | signal | source | label | segment:<feature>",
    "value": f"the group within the dimension ({NO_VALUE} for null)",
    "events": "feedback events",
    "acceptance_rate": "accepted / events",
    "quarantine_rate": "quarantined / events",
    "label_rate": "explicit labels equal to the policy's positive label / explicit labels; "
    "in dimension label: this class's share of the day's explicit labels",
    "reward_rate": "implicit signals the policy labels positive / implicit signals it labels",
    "mean_value": "mean value of the implicit signals that carry one",
    "predictions": "predictions logged that day (of the segment, for all and segment rows)",
    "predictions_with_feedback": "of those, with any feedback event (any day) of the group",
    "coverage": "predictions_with_feedback / predictions",
}


@dataclass(frozen=True)
class FeedbackAggregates:
    """The aggregates table (``AGGREGATE_SCHEMA``), the segments it is split by, and why it
    is empty when it is."""

    table: pl.DataFrame
    segments: Segments
    reason: str | None = None


@dataclass(frozen=True)
class _Dimension:
    name: str
    event_group: str  # SQL over fb: the group of a feedback event
    where: str = "true"
    #: SQL over the predictions: the group a prediction counts in for coverage; None: the
    #: group of its feedback, over all the predictions of the day
    prediction_group: str | None = None


_EVENT_AGGREGATES = {
    "events": "count(*)",
    "accepted": "count_if(status = 'accepted')",
    "quarantined": "count_if(status = 'quarantined')",
    "pending": "count_if(status = 'pending')",
    "expired": "count_if(status = 'expired')",
    "explicit_labels": "count_if(explicit_label)",
    "positive_labels": "count_if(explicit_positive)",
    "implicit_events": "count_if(implicit)",
    "implicit_labeled": "count_if(implicit_labeled)",
    "implicit_positive": "count_if(implicit_positive)",
    "mean_value": "avg(implicit_value)",
}
_EVENT_COUNTS = ", ".join(f"{sql} AS {name}" for name, sql in _EVENT_AGGREGATES.items())


def _dimensions(segments: Segments) -> list[_Dimension]:
    dims = [
        _Dimension(ALL, quote(ALL), prediction_group=quote(ALL)),
        _Dimension("feedback_type", "feedback_type"),
        _Dimension("signal", "signal"),
        _Dimension("source", "source"),
        _Dimension("label", "label", where="explicit_label"),
    ]
    for index, name in enumerate(segments.names):
        alias = Segments.alias(index)
        dims.append(_Dimension(f"{SEGMENT_PREFIX}{name}", alias, prediction_group=alias))
    return dims


def _feedback_projection(segments: Segments) -> Callable[[Schema], list[str]]:
    def project(schema: Schema) -> list[str]:
        columns = [
            'CAST("timestamp" AS DATE) AS day',
            column_or_null(schema, "prediction_id", "VARCHAR"),
            column_or_null(schema, "feedback_type", "VARCHAR"),
            column_or_null(schema, "signal", "VARCHAR"),
            column_or_null(schema, "source", "VARCHAR"),
            column_or_null(schema, "status", "VARCHAR"),
            column_or_null(schema, "label", "VARCHAR"),
            column_or_null(schema, "value", "DOUBLE"),
        ]
        return [*columns, *segments.feature_columns(schema)]

    return project


def feedback_aggregates(
    store: TableStore,
    policy: LabelPolicy,
    segments: str = "",
    memory_limit_mb: int = 1000,
) -> FeedbackAggregates:
    """Per day and per group of each dimension (all, feedback_type, signal, source, label,
    segment:<feature>): event counts per status with acceptance and quarantine rates, the
    label rate of explicit feedback, the reward rate and mean value of implicit feedback,
    and coverage, the share of the day's predictions that ever received feedback (any
    event referring to the prediction, on any day, of the group). Columns:
    ``AGGREGATE_SCHEMA``; rates are null when their denominator is 0."""
    feedback = TableFiles.of(store, keys.VALIDATED_FEEDBACK)
    predictions = TableFiles.of(store, keys.RAW_PREDICTIONS)
    features = {**feedback.struct_fields("features"), **predictions.struct_fields("features")}
    chosen = choose_segments(segments, features)
    if not feedback:
        reason = f"no validated_feedback tables yet under {store.root}"
        return FeedbackAggregates(empty_aggregates(), chosen, reason)
    aliases = chosen.aliases()
    with duckdb_session(store.root, memory_limit_mb) as con:
        prediction_sql = (
            first_logged(predictions.select_sql(prediction_projection(chosen)), ["day", *aliases])
            if predictions
            else None
        )
        create_table(
            con,
            "pr",
            prediction_sql,
            {"prediction_id": "VARCHAR", "day": "DATE", **dict.fromkeys(aliases, "VARCHAR")},
        )
        flags = ", ".join(f"{sql} AS {name}" for name, sql in policy_flags_sql(policy).items())
        own_or_logged = "".join(f", coalesce(f.{a}, p.{a}) AS {a}" for a in aliases)
        con.execute(
            "CREATE TEMP TABLE fb AS SELECT f.day, f.prediction_id, f.feedback_type, f.signal, "
            f"f.source, f.status, f.label, p.day AS pday{own_or_logged}, {flags} "
            f"FROM ({feedback.select_sql(_feedback_projection(chosen))}) f "
            "LEFT JOIN pr p ON f.prediction_id = p.prediction_id"
        )
        con.execute(
            "CREATE TEMP TABLE prf AS SELECT *, prediction_id IN "
            "(SELECT prediction_id FROM fb WHERE pday IS NOT NULL) AS has_feedback FROM pr"
        )
        con.execute("DROP TABLE pr")
        counted = con.sql(_aggregate_sql(_dimensions(chosen))).pl()
    return FeedbackAggregates(_with_rates(counted), chosen)


def _aggregate_sql(dimensions: Sequence[_Dimension]) -> str:
    """Event counts per (day, dimension, value) from ``fb``; coverage from ``prf`` for the
    dimensions grouped by prediction (all, segments), else distinct predictions per
    (prediction day, value) over the total predictions of the day."""
    events = " UNION ALL ".join(
        f"SELECT day, {quote(d.name)} AS dimension, {group_sql(d.event_group)} AS value, "
        f"{_EVENT_COUNTS} FROM fb WHERE {d.where} GROUP BY ALL"
        for d in dimensions
    )
    by_prediction = [d for d in dimensions if d.prediction_group is not None]
    by_feedback = [d for d in dimensions if d.prediction_group is None]
    per_group = " UNION ALL ".join(
        f"SELECT day, {quote(d.name)} AS dimension, {group_sql(str(d.prediction_group))} AS value, "
        "count(*) AS predictions, count_if(has_feedback) AS predictions_with_feedback "
        "FROM prf GROUP BY ALL"
        for d in by_prediction
    )
    covered = " UNION ALL ".join(
        f"SELECT pday AS day, {quote(d.name)} AS dimension, {group_sql(d.event_group)} AS value, "
        "t.predictions, count(DISTINCT prediction_id) AS predictions_with_feedback "
        f"FROM fb JOIN per_day t ON t.day = fb.pday WHERE {d.where} GROUP BY ALL"
        for d in by_feedback
    )
    picked = ", ".join(f"e.{c}" for c in _EVENT_AGGREGATES)
    return (
        f"WITH events AS ({events}), "
        "per_day AS (SELECT day, count(*) AS predictions FROM prf GROUP BY day), "
        f"coverage AS ({per_group} UNION ALL {covered}), "
        "groups AS (SELECT day, dimension, value FROM events UNION "
        "SELECT day, dimension, value FROM coverage) "
        f"SELECT g.day, g.dimension, g.value, {picked}, "
        "c.predictions, c.predictions_with_feedback "
        "FROM groups g "
        "LEFT JOIN events e ON e.day = g.day AND e.dimension = g.dimension AND e.value = g.value "
        "LEFT JOIN coverage c "
        "ON c.day = g.day AND c.dimension = g.dimension AND c.value = g.value "
        "WHERE g.day IS NOT NULL"
    )


def empty_aggregates() -> pl.DataFrame:
    return pl.DataFrame(schema=AGGREGATE_SCHEMA)


def _ratio(numerator: str, denominator: str) -> pl.Expr:
    return (
        pl.when(pl.col(denominator) > 0)
        .then(pl.col(numerator) / pl.col(denominator))
        .otherwise(None)
    )


def _with_rates(counted: pl.DataFrame) -> pl.DataFrame:
    filled = counted.with_columns(
        [pl.col(c).fill_null(0).cast(pl.Int64) for c in AGGREGATE_COUNTS if c in counted.columns]
    )
    day_labels = pl.col("explicit_labels").sum().over("day", "dimension")
    class_share = pl.when(day_labels > 0).then(pl.col("explicit_labels") / day_labels)
    return (
        filled.with_columns(
            acceptance_rate=_ratio("accepted", "events"),
            quarantine_rate=_ratio("quarantined", "events"),
            label_rate=pl.when(pl.col("dimension") == "label")
            .then(class_share)
            .otherwise(_ratio("positive_labels", "explicit_labels")),
            reward_rate=_ratio("implicit_positive", "implicit_labeled"),
            coverage=_ratio("predictions_with_feedback", "predictions"),
        )
        .select([pl.col(n).cast(t) for n, t in AGGREGATE_SCHEMA.items()])
        .sort("day", "dimension", "value")
    )


LATEST_FIGURES = (
    "events",
    "acceptance_rate",
    "quarantine_rate",
    "coverage",
    "label_rate",
    "reward_rate",
    "predictions",
)


def latest_day_totals(table: pl.DataFrame) -> tuple[str | None, dict[str, float]]:
    """The newest day with feedback events and its totals (``LATEST_FIGURES``; a rate whose
    denominator was 0 is left out)."""
    totals = table.filter((pl.col("dimension") == ALL) & (pl.col("events") > 0)).sort("day")
    if totals.height == 0:
        return None, {}
    row = totals.row(-1, named=True)
    figures = {name: float(row[name]) for name in LATEST_FIGURES if row[name] is not None}
    return str(row["day"]), figures

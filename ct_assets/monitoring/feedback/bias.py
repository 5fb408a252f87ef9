"""The feedback bias report: selection bias, label shift, concentration of the labels over
users and position effects, over the last days of predictions and examples.

Label shift is measured in :mod:`.shift`, position effects in :mod:`.position`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ct_assets import keys
from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.duckdb_work import quote, struct_fields
from ct_assets.data.tables import TableStore
from ct_assets.monitoring.feedback.position import PositionEffects, position_effects
from ct_assets.monitoring.feedback.predictions import (
    POSITION_FIELD,
    first_logged,
    prediction_projection,
)
from ct_assets.monitoring.feedback.segments import Segments, choose_segments, group_sql
from ct_assets.monitoring.feedback.shift import (
    LabelShift,
    current_label_counts,
    shift_from_reference,
)
from ct_assets.monitoring.feedback.sql import (
    Schema,
    TableFiles,
    column_or_null,
    create_table,
    duckdb_session,
    field_or_null,
)

if TYPE_CHECKING:
    import duckdb


#: Days of feedback the bias report looks at.
BIAS_WINDOW_DAYS = 30
DECILES = 10
#: Fewer scored predictions per decile than this and the score deciles are not judged.
MIN_PREDICTIONS_PER_DECILE = 10
#: The "top users" of the concentration figure: this share of the users (at least one).
TOP_USERS_FRACTION = 0.01


@dataclass(frozen=True)
class RateRow:
    group: str
    predictions: int
    with_feedback: int
    rate: float


@dataclass(frozen=True)
class DecileRow:
    decile: int
    min_score: float
    max_score: float
    predictions: int
    with_feedback: int
    rate: float


@dataclass(frozen=True)
class SelectionBias:
    """Share of the window's predictions that became training examples (accepted, labeled
    feedback), by predicted class and by score decile; ``ratio`` is the highest decile
    rate over the lowest (inf when the lowest is 0)."""

    by_class: list[RateRow] = field(default_factory=list)
    by_decile: list[DecileRow] = field(default_factory=list)
    ratio: float | None = None
    score: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Concentration:
    """Who the labels come from: the share of the top ``TOP_USERS_FRACTION`` of users and the
    Herfindahl-Hirschman index of the users' shares (labels without a user left out)."""

    labels: int = 0
    users: int = 0
    top_users: int = 0
    top_share: float | None = None
    hhi: float | None = None
    labels_without_user: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class BiasReport:
    window_start: str | None
    window_end: str | None
    predictions: int
    examples: int
    segments: Segments
    selection: SelectionBias
    label_shift: LabelShift
    concentration: Concentration
    position: PositionEffects

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recent_days(store: TableStore, window_days: int) -> list[str]:
    """The dates with a prediction or example table among the ``window_days`` days that end
    at the newest such date."""
    days = sorted(set(store.days(keys.RAW_PREDICTIONS)) | set(store.days(keys.ATTRIBUTED_EXAMPLES)))
    if not days:
        return []
    first = (date.fromisoformat(days[-1]) - timedelta(days=window_days - 1)).isoformat()
    return [d for d in days if d >= first]


def empty_bias_report(reason: str, segments: Segments | None = None) -> BiasReport:
    return BiasReport(
        window_start=None,
        window_end=None,
        predictions=0,
        examples=0,
        segments=segments or Segments(),
        selection=SelectionBias(reason=reason),
        label_shift=LabelShift(reason=reason),
        concentration=Concentration(reason=reason),
        position=PositionEffects(reason=reason),
    )


def _score_expression(positive_label: str) -> Callable[[Schema], str]:
    """A prediction's score: its score of the positive label, else its highest score."""

    def score(schema: Schema) -> str:
        fields = struct_fields(schema.get("scores"))
        if positive_label in fields:
            return f"CAST(struct_extract(scores, {quote(positive_label)}) AS DOUBLE)"
        if fields:
            listed = ", ".join(
                f"CAST(struct_extract(scores, {quote(n)}) AS DOUBLE)" for n in sorted(fields)
            )
            return f"greatest({listed})"
        return "NULL::DOUBLE"

    return score


def _example_projection(segments: Segments) -> Callable[[Schema], list[str]]:
    def project(schema: Schema) -> list[str]:
        columns = [
            column_or_null(schema, "prediction_id", "VARCHAR"),
            column_or_null(schema, "label", "VARCHAR"),
            column_or_null(schema, "label_source", "VARCHAR"),
            column_or_null(schema, "user_id", "VARCHAR"),
            field_or_null(schema, "features", POSITION_FIELD, "VARCHAR", "position"),
        ]
        return [*columns, *segments.feature_columns(schema)]

    return project


def feedback_bias(
    store: TableStore,
    policy: LabelPolicy,
    reference_dataset: Path | None,
    segments: str = "",
    window_days: int = BIAS_WINDOW_DAYS,
    memory_limit_mb: int = 1000,
) -> BiasReport:
    """Bias in the feedback of the last ``window_days`` dates (ending at the newest table):

    * selection: the share of the window's predictions that became training examples, by
      predicted class and by score decile (the score of the policy's positive label, else
      the highest score), and the ratio of the highest decile rate to the lowest;
    * label shift: per segment value, the largest change of a class's share of the labels
      between ``reference_dataset`` (a compiled dataset; its train split) and the window's
      examples;
    * concentration: share of the labels from the top 1% of users, and the HHI over users;
    * position: exposure and implicit-feedback rates per ``position`` feature value, when
      the predictions or feedback carry one.
    """
    days = recent_days(store, window_days)
    if not days:
        return empty_bias_report(
            f"no raw_predictions or attributed_examples tables yet under {store.root}"
        )
    predictions = TableFiles.of(store, keys.RAW_PREDICTIONS, days)
    examples = TableFiles.of(store, keys.ATTRIBUTED_EXAMPLES, days)
    features = {**examples.struct_fields("features"), **predictions.struct_fields("features")}
    chosen = choose_segments(segments, features)
    score = _score_description(predictions.struct_fields("scores"), policy.positive_label)
    with duckdb_session(store.root, memory_limit_mb) as con:
        _load_window(con, predictions, examples, chosen, policy.positive_label)
        n_predictions = _scalar(con, "SELECT count(*) FROM sel")
        n_examples = _scalar(con, "SELECT count(*) FROM ex")
        selection = _selection_bias(con, score)
        concentration = _concentration(con)
        current = current_label_counts(con, chosen)
        has_position = POSITION_FIELD in features
        position = position_effects(con, policy.positive_label) if has_position else None
    shift = shift_from_reference(reference_dataset, current, chosen, policy.positive_label)
    return BiasReport(
        window_start=days[0],
        window_end=days[-1],
        predictions=n_predictions,
        examples=n_examples,
        segments=chosen,
        selection=selection,
        label_shift=shift,
        concentration=concentration,
        position=position
        or PositionEffects(
            reason=f"not available: neither the predictions nor the feedback carry a "
            f"{POSITION_FIELD!r} feature (schema v1 has no position field)"
        ),
    )


#: Columns of the (empty) tables of a window without prediction or example files.
_WINDOW_PREDICTION_COLUMNS = {
    "prediction_id": "VARCHAR",
    "prediction": "VARCHAR",
    "score": "DOUBLE",
    "position": "VARCHAR",
}
_EXAMPLE_COLUMNS = {
    "prediction_id": "VARCHAR",
    "label": "VARCHAR",
    "label_source": "VARCHAR",
    "user_id": "VARCHAR",
    "position": "VARCHAR",
}


def _load_window(
    con: duckdb.DuckDBPyConnection,
    predictions: TableFiles,
    examples: TableFiles,
    segments: Segments,
    positive_label: str,
) -> None:
    """Temp tables ``wp`` (the window's predictions, the first logged of each id, with
    class, score and position), ``ex`` (the window's examples) and ``sel`` (``wp`` with
    ``has_feedback``: whether an example refers to it)."""
    projection = prediction_projection(Segments(), _score_expression(positive_label))
    create_table(
        con,
        "wp",
        first_logged(predictions.select_sql(projection), ["prediction", "score", "position"])
        if predictions
        else None,
        _WINDOW_PREDICTION_COLUMNS,
    )
    aliases = segments.aliases()
    create_table(
        con,
        "ex",
        examples.select_sql(_example_projection(segments)) if examples else None,
        {**_EXAMPLE_COLUMNS, **dict.fromkeys(aliases, "VARCHAR")},
    )
    con.execute(
        "CREATE TEMP TABLE sel AS SELECT w.*, f.prediction_id IS NOT NULL AS has_feedback "
        "FROM wp w LEFT JOIN (SELECT DISTINCT prediction_id FROM ex "
        "WHERE prediction_id IS NOT NULL) f ON w.prediction_id = f.prediction_id"
    )


def _scalar(con: duckdb.DuckDBPyConnection, query: str) -> int:
    rows = con.execute(query).fetchall()
    row = rows[0] if rows else None
    return int(row[0]) if row and row[0] is not None else 0


def _score_description(fields: Mapping[str, pl.DataType], positive_label: str) -> str | None:
    if not fields:
        return None
    if positive_label in fields:
        return f"score of class {positive_label!r}"
    return "highest class score"


def _selection_bias(con: duckdb.DuckDBPyConnection, score: str | None) -> SelectionBias:
    by_class = [
        RateRow(str(group), int(n), int(fed), int(fed) / int(n))
        for group, n, fed in con.execute(
            f"SELECT {group_sql('prediction')} AS grp, count(*), count_if(has_feedback) "
            "FROM sel GROUP BY ALL ORDER BY grp"
        ).fetchall()
    ]
    scored = _scalar(con, "SELECT count(*) FROM sel WHERE score IS NOT NULL AND NOT isnan(score)")
    if score is None or scored == 0:
        return SelectionBias(by_class, reason="the window's predictions carry no scores")
    needed = DECILES * MIN_PREDICTIONS_PER_DECILE
    if scored < needed:
        return SelectionBias(
            by_class,
            score=score,
            reason=f"{scored} scored predictions in the window; score deciles need {needed}",
        )
    by_decile = [
        DecileRow(int(d), float(lo), float(hi), int(n), int(fed), int(fed) / int(n))
        for d, lo, hi, n, fed in con.execute(
            "SELECT decile, min(score), max(score), count(*), count_if(has_feedback) FROM ("
            f"SELECT score, has_feedback, ntile({DECILES}) OVER (ORDER BY score, prediction_id) "
            "AS decile FROM sel WHERE score IS NOT NULL AND NOT isnan(score)) "
            "GROUP BY decile ORDER BY decile"
        ).fetchall()
    ]
    rates = [row.rate for row in by_decile]
    if max(rates) == 0:
        return SelectionBias(
            by_class, by_decile, None, score, "no scored prediction of the window got feedback"
        )
    ratio = math.inf if min(rates) == 0 else max(rates) / min(rates)
    return SelectionBias(by_class, by_decile, ratio, score)


def _concentration(con: duckdb.DuckDBPyConnection) -> Concentration:
    without_user = _scalar(con, "SELECT count(*) FROM ex WHERE user_id IS NULL")
    row = con.execute(
        "WITH u AS (SELECT user_id, count(*) AS n FROM ex WHERE user_id IS NOT NULL "
        "GROUP BY user_id), r AS (SELECT n, row_number() OVER (ORDER BY n DESC) AS rank, "
        "count(*) OVER () AS users, sum(n) OVER () AS total FROM u) "
        "SELECT max(users), max(total), "
        f"sum(n) FILTER (WHERE rank <= greatest(1, ceil(users * {TOP_USERS_FRACTION!r}))), "
        f"count(*) FILTER (WHERE rank <= greatest(1, ceil(users * {TOP_USERS_FRACTION!r}))), "
        "sum((n / total) * (n / total)) FROM r"
    ).fetchall()[0]
    if not row[0]:
        return Concentration(
            labels_without_user=without_user,
            reason="no labeled feedback with a user_id in the window",
        )
    users, total, top, top_users, hhi = row
    return Concentration(
        labels=int(total),
        users=int(users),
        top_users=int(top_users),
        top_share=int(top) / int(total),
        hhi=float(hhi),
        labels_without_user=without_user,
    )

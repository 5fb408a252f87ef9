"""What the figures read of the logged predictions: their columns, and the first logged
prediction of each id."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ct_assets.data.duckdb_work import ident, quote
from ct_assets.monitoring.feedback.segments import Segments
from ct_assets.monitoring.feedback.sql import Schema, column_or_null, field_or_null

#: The feature that carries the rank at which an item was shown, when the payload has one.
POSITION_FIELD = "position"


def prediction_projection(
    segments: Segments, score: Callable[[Schema], str] | None = None
) -> Callable[[Schema], list[str]]:
    """The prediction columns a figure needs: id, log offset, day and segments; with
    ``score``, also the predicted class, the score and the position."""

    def project(schema: Schema) -> list[str]:
        columns = [
            'CAST("timestamp" AS DATE) AS day',
            column_or_null(schema, "prediction_id", "VARCHAR"),
            column_or_null(schema, "log_offset", "BIGINT"),
        ]
        columns += segments.feature_columns(schema)
        if score is not None:
            columns.append(column_or_null(schema, "prediction", "VARCHAR"))
            columns.append(f"{score(schema)} AS score")
            columns.append(field_or_null(schema, "features", POSITION_FIELD, "VARCHAR", "position"))
        return columns

    return project


def first_logged(select: str, columns: Sequence[str]) -> str:
    """One row per prediction_id with ``columns`` of its first logged prediction (the
    lowest log offset), as attribution picks it for a prediction_id logged twice."""
    if len(columns) == 1 and columns[0] == "day":  # never null: no struct needed
        picked = "arg_min(day, log_offset) AS day"
    else:
        packed = ", ".join(f"{quote(c)}: {ident(c)}" for c in columns)
        picked = f"unnest(arg_min({{{packed}}}, log_offset))"
    return (
        f"SELECT prediction_id, {picked} FROM ({select}) "
        "WHERE prediction_id IS NOT NULL GROUP BY prediction_id"
    )

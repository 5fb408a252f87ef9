"""Active learning: which served predictions are most worth a human label.

A prediction's uncertainty comes from its logged ``scores`` (a struct of class ->
probability), normalised to sum to 1:

* ``margin``: top-1 minus top-2 probability (a single class: top-1 minus 0). Small
  means the model hesitated between two classes; the *smallest* margins are the most
  uncertain.
* ``entropy``: Shannon entropy ``-sum(p * ln p)`` in nats (0 for a certain
  prediction, ``ln k`` for a uniform one over ``k`` classes); the *largest* are the most
  uncertain.

Predictions without usable scores (none logged, all null, a negative or non-finite
value, or a zero sum) have a null uncertainty and are never queued.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args, overload

import polars as pl

from ct_assets.data.attribution import logged_predictions

UncertaintyMethod = Literal["margin", "entropy"]

QUEUE_COLUMNS = (
    "prediction_id",
    "timestamp",
    "model_version",
    "entity_id",
    "prediction",
    "uncertainty",
    "method",
    "features",
)


def _check(method: str) -> None:
    if method not in get_args(UncertaintyMethod):
        raise ValueError(f"unknown uncertainty method {method!r}: margin or entropy")


def _uncertainty_expr(scores: pl.Expr, method: UncertaintyMethod) -> pl.Expr:
    # Horizontal expressions over the struct's fields (one output per class, expanded by
    # Polars from the schema), not lists: they stay vectorised over millions of rows.
    # Null fields (a class this prediction did not score) are ignored by every reduction.
    v = scores.struct.unnest().cast(pl.Float64)
    total = pl.sum_horizontal(v)
    usable = (
        (pl.sum_horizontal(v.is_not_null()) > 0)
        & (pl.min_horizontal(v) >= 0)
        & pl.all_horizontal(v.is_finite().fill_null(True))
        & (total > 0)
    )
    if method == "margin":
        top1 = pl.max_horizontal(v)
        shared = pl.sum_horizontal((v == top1).fill_null(False)) >= 2  # a tie for the top
        below = pl.max_horizontal(pl.when(v < top1).then(v)).fill_null(0.0)
        top2 = pl.when(shared).then(top1).otherwise(below)
        value = (top1 - top2) / total  # the gap between normalised probabilities
    else:
        p = v / total
        # p = 1 contributes 0 (not -0.0); p = 0 contributes 0 by convention
        terms = pl.when((p > 0) & (p < 1)).then(-p * p.log()).otherwise(0.0)
        value = pl.sum_horizontal(terms)
    return (
        pl.when(usable).then(value).otherwise(pl.lit(None, dtype=pl.Float64)).alias("uncertainty")
    )


@overload
def uncertainty(scores: pl.Expr, method: UncertaintyMethod = ...) -> pl.Expr: ...


@overload
def uncertainty(scores: pl.DataFrame, method: UncertaintyMethod = ...) -> pl.Series: ...


def uncertainty(
    scores: pl.Expr | pl.DataFrame, method: UncertaintyMethod = "margin"
) -> pl.Expr | pl.Series:
    """Uncertainty of each prediction by ``method`` (see the module docstring).

    Given an expression evaluating to the scores struct, an expression (Float64, null
    where the scores are unusable); given a frame, the Series ``uncertainty`` computed
    from its ``scores`` column (all null when it has none or they are all null).
    """
    _check(method)
    if isinstance(scores, pl.Expr):
        return _uncertainty_expr(scores, method)
    dtype = scores.schema.get("scores")
    if not isinstance(dtype, pl.Struct) or not dtype.fields:
        return pl.Series("uncertainty", [None] * scores.height, dtype=pl.Float64)
    return scores.select(_uncertainty_expr(pl.col("scores"), method)).to_series()


def labeling_queue(
    predictions: pl.DataFrame,
    feedback: pl.DataFrame | None,
    method: UncertaintyMethod = "margin",
    budget: int = 100,
    since: datetime | None = None,
) -> pl.DataFrame:
    """The ``budget`` most uncertain predictions nobody has given feedback on yet.

    Predictions are taken once per ``prediction_id`` (the first logged), from
    ``since`` on (inclusive) if given, and only those with usable scores and no
    feedback row referring to their ``prediction_id``. Ordered most uncertain first
    (margin ascending, entropy descending), then newest first, then by ``log_offset``
    descending, so the queue is deterministic. Columns: ``QUEUE_COLUMNS``.
    """
    _check(method)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    candidates = logged_predictions(predictions)
    if since is not None:
        dtype = candidates.schema["timestamp"]
        candidates = candidates.filter(pl.col("timestamp") >= pl.lit(since).cast(dtype))
    if feedback is not None and feedback.height and "prediction_id" in feedback.columns:
        answered = feedback["prediction_id"].cast(pl.String).drop_nulls().unique()
        candidates = candidates.filter(
            ~pl.col("prediction_id").is_in(answered.implode()).fill_null(False)
        )
    defaults: dict[str, pl.DataType] = {
        "model_version": pl.String(),
        "entity_id": pl.String(),
        "prediction": pl.String(),
    }
    candidates = candidates.with_columns(
        uncertainty(candidates, method),
        *[pl.lit(None, dtype=t).alias(n) for n, t in defaults.items() if n not in candidates],
        *([] if "features" in candidates.columns else [pl.lit(None).alias("features")]),
    )
    most_uncertain_first = method == "entropy"
    return (
        candidates.filter(pl.col("uncertainty").is_not_null())
        .sort(
            ["uncertainty", "timestamp", "log_offset"],
            descending=[most_uncertain_first, True, True],
            maintain_order=True,
        )
        .head(budget)
        .with_columns(pl.lit(method).alias("method"))
        .select(QUEUE_COLUMNS)
    )

"""From the rule columns to each row's status, reason and detail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from ct_assets.data.feedback_rules.codes import QUARANTINE_REASONS, FeedbackReason, FeedbackStatus
from ct_assets.data.feedback_rules.thresholds import ValidationRules
from ct_assets.data.feedback_rules.work import WAITING, hours


def decide(as_of: datetime, rules: ValidationRules) -> list[pl.Expr]:
    """Status, reason and detail from the rule columns, the first applicable reason winning."""
    columns = [pl.col(r.value) for r in QUARANTINE_REASONS]
    reason: Any = pl.when(columns[0].is_not_null()).then(pl.lit(QUARANTINE_REASONS[0].value))
    for code, column in zip(QUARANTINE_REASONS[1:], columns[1:], strict=True):
        reason = reason.when(column.is_not_null()).then(pl.lit(code.value))
    quarantined = pl.any_horizontal([c.is_not_null() for c in columns])
    age = pl.lit(as_of.astimezone(UTC)).cast(pl.Datetime("us", "UTC")) - pl.col("timestamp")
    expired = pl.col(WAITING) & (age >= rules.pending_expiry)
    waited = pl.format(
        "no prediction {} after {} h (pending_expiry {} h)",
        pl.col("prediction_id"),
        hours(age),
        pl.lit(round(rules.pending_expiry / timedelta(hours=1), 2)),
    )
    never = pl.format(
        "prediction_id {} was never served: no prediction with it was logged {} h after "
        "the feedback (pending_expiry {} h)",
        pl.col("prediction_id"),
        hours(age),
        pl.lit(round(rules.pending_expiry / timedelta(hours=1), 2)),
    )
    status = (
        pl.when(quarantined | expired)
        .then(pl.lit(FeedbackStatus.QUARANTINED.value))
        .when(pl.col(WAITING))
        .then(pl.lit(FeedbackStatus.PENDING.value))
        .otherwise(pl.lit(FeedbackStatus.ACCEPTED.value))
    )
    reason = (
        reason.when(expired)
        .then(pl.lit(FeedbackReason.UNKNOWN_PREDICTION.value))
        .when(pl.col(WAITING))
        .then(pl.lit(FeedbackReason.AWAITING_PREDICTION.value))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    detail = (
        pl.when(quarantined)
        .then(pl.coalesce(columns))
        .when(expired)
        .then(never)
        .when(pl.col(WAITING))
        .then(waited)
    )
    return [status.alias("status"), reason.alias("reason"), detail.alias("reason_detail")]

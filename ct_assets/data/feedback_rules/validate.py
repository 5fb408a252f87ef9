"""Running the feedback rules in order over a frame, and counting the outcome."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from ct_assets.data.feedback_rules.codes import QUARANTINE_REASONS, FeedbackReason, FeedbackStatus
from ct_assets.data.feedback_rules.decision import decide
from ct_assets.data.feedback_rules.flipping import flipping_users
from ct_assets.data.feedback_rules.plausibility import reference_details, timing_details
from ct_assets.data.feedback_rules.thresholds import ValidationRules
from ct_assets.data.feedback_rules.volume import dominance_details, duplicate_details, rate_details
from ct_assets.data.feedback_rules.work import (
    DETAIL,
    ROW,
    WAITING,
    attach_predictions,
    is_label,
    join_detail,
    prepare,
)
from ct_assets.data.reference import ReferenceSchema

_OUTPUT_COLUMNS = ("status", "reason", "reason_detail")


def validate_feedback(
    feedback: pl.DataFrame,
    predictions: pl.DataFrame | None,
    reference: ReferenceSchema | None,
    rules: ValidationRules,
    as_of: datetime,
) -> pl.DataFrame:
    """Every feedback row, in input order, with ``status``, ``reason`` and ``reason_detail``.

    ``feedback`` and ``predictions`` are frames as :func:`ct_assets.eventlog.reader.read_events`
    gives them (missing optional columns are treated as null). The first prediction (by
    log offset) of a prediction_id is the one feedback refers to. ``reference`` None skips
    the label and feature checks. ``as_of`` is the time the validation is made for (e.g.
    the newest event time in the log): feedback still waiting for its prediction
    ``rules.pending_expiry`` after it was given is quarantined as ``unknown_prediction``.

    Rows judged by population statistics (rates, shares, consensus) are judged within
    the frames given: validate the same span of the log to get the same answer.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    work = prepare(feedback)
    work = attach_predictions(work, predictions)

    work = join_detail(work, FeedbackReason.DUPLICATE, duplicate_details(work))
    duplicate = pl.col(FeedbackReason.DUPLICATE.value).is_not_null()
    work = join_detail(work, FeedbackReason.RATE_ABUSE, rate_details(work, rules))
    labels = work.filter(is_label() & ~duplicate)
    work = join_detail(work, FeedbackReason.DOMINANT_USER, dominance_details(labels, rules))
    work = work.with_columns(
        *timing_details(rules),
        *reference_details(work, reference, rules.range_tolerance),
    )
    earlier = [r.value for r in QUARANTINE_REASONS if r != FeedbackReason.LABEL_FLIPPING]
    clean = pl.all_horizontal([pl.col(c).is_null() for c in earlier])
    candidates = work.filter(clean & is_label() & ~pl.col(WAITING))
    flippers = flipping_users(candidates, rules)
    work = work.join(flippers, on="user_id", how="left").with_columns(
        pl.when(is_label()).then(pl.col(DETAIL)).alias(FeedbackReason.LABEL_FLIPPING.value)
    )
    decided = work.select(ROW, *decide(as_of, rules)).sort(ROW)
    return feedback.with_columns(decided.get_column(c) for c in _OUTPUT_COLUMNS)


def validation_summary(validated: pl.DataFrame) -> dict[str, int]:
    """Row count, counts per status (``status.<s>``) and per reason (``reason.<code>``).

    Every status and reason appears, with 0 when absent, so metadata keys are stable.
    """
    summary: dict[str, int] = {"rows": validated.height}
    statuses = dict(validated.get_column("status").value_counts().iter_rows())
    reasons = dict(validated.get_column("reason").drop_nulls().value_counts().iter_rows())
    for status in FeedbackStatus:
        summary[f"status.{status.value}"] = int(statuses.get(status.value, 0))
    for reason in FeedbackReason:
        summary[f"reason.{reason.value}"] = int(reasons.get(reason.value, 0))
    return summary

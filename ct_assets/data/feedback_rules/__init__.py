"""Feedback validation: which feedback may be learned from, which waits, which is quarantined.

:func:`validate_feedback` returns every feedback row with a ``status``, a stable
``reason`` code and a ``reason_detail`` in words and numbers. Nothing is dropped:
quarantined rows stay visible for review and metrics. The rules, in the order that
decides the reason when several apply:

1. ``duplicate``: the same (prediction_id, user_id, feedback_type, signal) was given
   by an earlier row (by log offset); the first is kept.
2. ``rate_abuse``: a user or source sent far more feedback in a time window than it
   usually does (its median over earlier windows, or the population median while
   it has little history).
3. ``dominant_user``: one user supplied most of the labels of a window.
4. ``timestamp_before_prediction`` / ``feedback_too_late``: the feedback's time does
   not fit its prediction's.
5. ``unknown_label`` / ``out_of_range`` / ``unknown_category``: the label or features
   (the feedback's own, else those its prediction logged) are outside the reference
   schema inferred from training data (skipped without a reference).
6. ``label_flipping``: a user whose labels mostly contradict the consensus of other
   users (or, without one, the served model where it was confident).

Feedback whose prediction has not arrived (and that has no features of its own) is
``pending`` (``awaiting_prediction``) until ``pending_expiry`` has passed since it was
given; then it cites an id that was never served and is quarantined with its own reason,
``unknown_prediction`` (feedback for made-up or mistyped ids is counted and reviewed
like any other quarantined feedback, and never attributed). Everything is relative to the
``as_of`` argument, never the wall clock, and computed in log order with vectorised
Polars expressions, so the same inputs always give the same output.
"""

from ct_assets.data.feedback_rules.codes import QUARANTINE_REASONS, FeedbackReason, FeedbackStatus
from ct_assets.data.feedback_rules.thresholds import ValidationRules
from ct_assets.data.feedback_rules.validate import validate_feedback, validation_summary

__all__ = [
    "QUARANTINE_REASONS",
    "FeedbackReason",
    "FeedbackStatus",
    "ValidationRules",
    "validate_feedback",
    "validation_summary",
]

"""Feedback statuses and reason codes, and the order in which reasons win."""

from __future__ import annotations

from enum import StrEnum


class FeedbackStatus(StrEnum):
    ACCEPTED = "accepted"
    QUARANTINED = "quarantined"
    PENDING = "pending"
    EXPIRED = "expired"  # given by earlier versions; now quarantined as unknown_prediction


class FeedbackReason(StrEnum):
    """Why feedback was not accepted. Stable: metrics, reports and reviews use them."""

    DUPLICATE = "duplicate"
    RATE_ABUSE = "rate_abuse"
    DOMINANT_USER = "dominant_user"
    TIMESTAMP_BEFORE_PREDICTION = "timestamp_before_prediction"
    FEEDBACK_TOO_LATE = "feedback_too_late"
    UNKNOWN_LABEL = "unknown_label"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_CATEGORY = "unknown_category"
    LABEL_FLIPPING = "label_flipping"
    AWAITING_PREDICTION = "awaiting_prediction"
    #: the cited prediction_id was never served: no prediction with it was logged within
    #: ``pending_expiry`` of the feedback (quarantined)
    UNKNOWN_PREDICTION = "unknown_prediction"
    #: the status ``expired`` of earlier versions; no longer given (now unknown_prediction)
    PREDICTION_NEVER_ARRIVED = "prediction_never_arrived"


# Quarantine reasons in precedence order: a row gets the first that applies.
QUARANTINE_REASONS: tuple[FeedbackReason, ...] = (
    FeedbackReason.DUPLICATE,
    FeedbackReason.RATE_ABUSE,
    FeedbackReason.DOMINANT_USER,
    FeedbackReason.TIMESTAMP_BEFORE_PREDICTION,
    FeedbackReason.FEEDBACK_TOO_LATE,
    FeedbackReason.UNKNOWN_LABEL,
    FeedbackReason.OUT_OF_RANGE,
    FeedbackReason.UNKNOWN_CATEGORY,
    FeedbackReason.LABEL_FLIPPING,
)

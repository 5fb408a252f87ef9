"""The thresholds of the feedback rules, checked when they are made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class ValidationRules:
    """Thresholds of the validation rules.

    * ``pending_expiry``: how long feedback may wait for its prediction.
    * ``max_feedback_delay``: feedback later than this after its prediction is suspect.
    * ``range_tolerance``: numeric features may exceed the reference range by this
      fraction of its width on either side.
    * ``rate_window``, ``rate_factor``, ``rate_min_events``: a user or source with at
      least ``rate_min_events`` feedback events in a window and more than
      ``rate_factor`` times its usual count per window. The usual count is the median
      over its last ``rate_history`` earlier active windows once it has at least
      ``rate_min_history`` of them, the median over all actors' windows before that.
    * ``dominance_window``, ``dominance_share``, ``dominance_min_labels``: a user
      supplying more than ``dominance_share`` of the labels of a window that holds at
      least ``dominance_min_labels`` labels.
    * ``flip_*``: a user with at least ``flip_min_labels`` comparable labels disagreeing
      with the reference label on more than ``flip_disagreement`` of them, and on more
      than ``flip_peer_factor`` times the median disagreement rate of the other users
      with comparable labels (so that a model which everyone contradicts, e.g. after a
      concept drift, does not flag everyone; 0 disables this guard). The reference
      label is the strict majority label of other users on the same prediction (or,
      without a prediction_id, entity), else the served prediction when its highest
      score was at least ``flip_confidence``. Users are judged twice: the second time
      without the votes of users flagged the first time.
    """

    pending_expiry: timedelta = timedelta(hours=24)
    max_feedback_delay: timedelta = timedelta(days=30)
    range_tolerance: float = 0.25
    rate_window: timedelta = timedelta(hours=1)
    rate_factor: float = 10.0
    rate_min_events: int = 20
    rate_min_history: int = 24
    rate_history: int = 168
    dominance_window: timedelta = timedelta(days=1)
    dominance_share: float = 0.5
    dominance_min_labels: int = 50
    flip_min_labels: int = 20
    flip_disagreement: float = 0.5
    flip_confidence: float = 0.9
    flip_peer_factor: float = 2.0

    def __post_init__(self) -> None:
        for name in ("pending_expiry", "max_feedback_delay", "rate_window", "dominance_window"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        for name in ("range_tolerance", "rate_factor", "flip_peer_factor"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("dominance_share", "flip_disagreement", "flip_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in (
            "rate_min_events",
            "rate_min_history",
            "rate_history",
            "dominance_min_labels",
            "flip_min_labels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

"""Curating event dates: raw events -> validated feedback -> attributed examples.

Reads the event log and calls the pure functions of :mod:`ct_assets.data`; the
Dagster assets (``validated_feedback``, ``feedback_quarantine``,
``attributed_examples``, ``training_dataset``) all go through here, so a
partition viewed in the UI and the rows a dataset is compiled from are the same.

Everything is a function of the log: ``as_of`` (what "now" means for pending
feedback) is derived from the events, never from the wall clock, so the same
log gives the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from ct_assets.data.attribution import LabelPolicy, attribute_feedback
from ct_assets.data.reference import ReferenceSchema
from ct_assets.data.validation import ValidationRules, validate_feedback
from ct_assets.eventlog import EventLog

REFERENCE_FILE = "latest.json"
# Dates on each side of a curated date whose feedback the abuse rules also look at.
CONTEXT_DAYS = 3
OVERRIDES_FILE = "overrides.json"


@dataclass(frozen=True)
class Curated:
    """One curation of some event dates."""

    dates: list[str]
    as_of: datetime
    validated: pl.DataFrame  # every feedback row of the dates, with status and reason
    examples: pl.DataFrame  # accepted feedback attributed to its features

    def status_counts(self) -> dict[str, int]:
        if not self.validated.height:
            return {}
        counts = self.validated.group_by("status").len().sort("status")
        return {str(r["status"]): int(r["len"]) for r in counts.iter_rows(named=True)}

    def reason_counts(self) -> dict[str, int]:
        flagged = self.validated.filter(pl.col("reason").is_not_null())
        if not flagged.height:
            return {}
        counts = flagged.group_by("reason").len().sort("reason")
        return {str(r["reason"]): int(r["len"]) for r in counts.iter_rows(named=True)}


def day_end(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(), tzinfo=UTC)


def log_as_of(log: EventLog) -> datetime | None:
    """The end of the newest event date in the log: "now", as far as the log knows."""
    days = list(log.counts_by_date())
    return day_end(days[-1]) if days else None


def prediction_dates(day: str, lookback: timedelta) -> list[str]:
    """The dates whose predictions feedback of ``day`` may refer to."""
    first = date.fromisoformat(day) - timedelta(days=max(0, lookback.days) + 1)
    last = date.fromisoformat(day)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def curate(
    log: EventLog,
    dates: Sequence[str],
    rules: ValidationRules,
    policy: LabelPolicy,
    reference: ReferenceSchema | None,
    as_of: datetime | None = None,
    context_days: int = CONTEXT_DAYS,
) -> Curated:
    """Validate the feedback of ``dates`` against the predictions it can refer to, and
    attribute the accepted rows. ``as_of`` defaults to :func:`log_as_of`. The abuse rules
    see the feedback of ``context_days`` dates on each side as well, so a user flipping
    labels over several days is judged on all of them, whichever date is curated."""
    wanted = sorted(set(dates))
    when = as_of or log_as_of(log) or datetime.now(UTC)
    context = sorted({d for day in wanted for d in neighbour_dates(day, context_days)})
    feedback = log.read("feedback", dates=context)
    lookup = sorted({d for day in context for d in prediction_dates(day, rules.max_feedback_delay)})
    predictions = log.read("prediction", dates=lookup)
    judged = validate_feedback(feedback, predictions, reference, rules, when)
    # the abuse rules judged each user and source on the surrounding days too; keep the
    # rows of the dates asked for
    day_of = pl.col("timestamp").dt.date().cast(pl.String)
    validated = judged.filter(day_of.is_in(wanted)) if context != wanted else judged
    accepted = validated.filter(pl.col("status") == "accepted")
    examples = attribute_feedback(accepted, predictions, policy)
    return Curated(wanted, when, validated, examples)


def neighbour_dates(day: str, context_days: int) -> list[str]:
    """``day`` and the ``context_days`` dates on each side of it."""
    center = date.fromisoformat(day)
    return [
        (center + timedelta(days=offset)).isoformat()
        for offset in range(-context_days, context_days + 1)
    ]


def load_reference(folder: Path) -> ReferenceSchema | None:
    """The reference schema validation checks against: the one inferred from the latest
    training dataset, with the user's overrides applied; None before the first dataset."""
    from ct_assets.data.reference import apply_overrides

    path = folder / REFERENCE_FILE
    if not path.exists():
        return None
    reference = ReferenceSchema.load(path)
    overrides = folder / OVERRIDES_FILE
    if overrides.exists():
        import json

        reference = apply_overrides(reference, json.loads(overrides.read_text()))
    return reference

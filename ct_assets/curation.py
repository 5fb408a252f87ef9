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

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from ct_assets.data.attribution import LabelPolicy, attribute_feedback
from ct_assets.data.dataset import value_counts
from ct_assets.data.reference import ReferenceSchema, apply_overrides
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
        return value_counts(self.validated, "status")

    def reason_counts(self) -> dict[str, int]:
        return value_counts(self.validated.filter(pl.col("reason").is_not_null()), "reason")


@dataclass(frozen=True)
class CurationInputs:
    """The events a curation reads from the log: read once, curate many dates from them."""

    feedback: pl.DataFrame
    predictions: pl.DataFrame

    @classmethod
    def read(
        cls,
        log: EventLog,
        dates: Sequence[str],
        rules: ValidationRules,
        context_days: int = CONTEXT_DAYS,
    ) -> CurationInputs:
        feedback_dates, lookup_dates = input_dates(dates, rules, context_days)
        return cls(
            log.read("feedback", dates=feedback_dates),
            log.read("prediction", dates=lookup_dates),
        )


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


def input_dates(
    dates: Sequence[str], rules: ValidationRules, context_days: int
) -> tuple[list[str], list[str]]:
    """The feedback dates (``dates`` and their context) and the prediction dates (those the
    feedback may refer to) that curating ``dates`` reads."""
    context = sorted({d for day in dates for d in neighbour_dates(day, context_days)})
    lookup = sorted({d for day in context for d in prediction_dates(day, rules.max_feedback_delay)})
    return context, lookup


def curate(
    log: EventLog,
    dates: Sequence[str],
    rules: ValidationRules,
    policy: LabelPolicy,
    reference: ReferenceSchema | None,
    as_of: datetime | None = None,
    context_days: int = CONTEXT_DAYS,
    inputs: CurationInputs | None = None,
) -> Curated:
    """Validate the feedback of ``dates`` against the predictions it can refer to, and
    attribute the accepted rows. ``as_of`` defaults to :func:`log_as_of`. The abuse rules
    see the feedback of ``context_days`` dates on each side as well, so a user flipping
    labels over several days is judged on all of them, whichever date is curated.
    ``inputs`` (read for these dates or more) saves reading the log again; the result
    is the same as without."""
    wanted = sorted(set(dates))
    when = as_of or log_as_of(log) or datetime.now(UTC)
    context, lookup = input_dates(wanted, rules, context_days)
    read = inputs or CurationInputs.read(log, wanted, rules, context_days)
    day_of = pl.col("timestamp").dt.date().cast(pl.String)
    feedback = read.feedback.filter(day_of.is_in(context))
    predictions = read.predictions.filter(day_of.is_in(lookup))
    judged = validate_feedback(feedback, predictions, reference, rules, when)
    # the abuse rules judged each user and source on the surrounding days too; keep the
    # rows of the dates asked for
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
    path = folder / REFERENCE_FILE
    if not path.exists():
        return None
    reference = ReferenceSchema.load(path)
    overrides = folder / OVERRIDES_FILE
    if overrides.exists():
        reference = apply_overrides(reference, json.loads(overrides.read_text()))
    return reference

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

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import polars as pl

from ct_assets import keys
from ct_assets.data.attribution import LabelPolicy, attribute_feedback
from ct_assets.data.cited import cited
from ct_assets.data.dataset import value_counts
from ct_assets.data.feedback_rules import ValidationRules, validate_feedback
from ct_assets.data.reference import ReferenceSchema, apply_overrides
from ct_assets.data.tables import TableStore
from ct_assets.eventlog import EventLog
from ct_assets.pipeline.event_tables import read_via_tables, refresh_raw_table

REFERENCE_FILE = "latest.json"
# Dates on each side of a curated date whose feedback the abuse rules also look at.
CONTEXT_DAYS = 3
OVERRIDES_FILE = "overrides.json"
# Bumped when curation changes what it computes from the same inputs.
CURATION_CODE_VERSION = "curation-v1"
# Dates whose events are read together when stale dates are curated again (memory bound).
REFRESH_BLOCK_DAYS = 7


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
    """The events a curation reads from the log: read once, curate many dates from them.
    ``predictions`` holds only those the feedback refers to (by ``prediction_id``): the
    rest of the weeks of predictions a curation looks in play no part in it."""

    feedback: pl.DataFrame
    predictions: pl.DataFrame

    @classmethod
    def read(
        cls,
        log: EventLog,
        dates: Sequence[str],
        rules: ValidationRules,
        context_days: int = CONTEXT_DAYS,
        tables: tuple[TableStore, Mapping[str, str]] | None = None,
    ) -> CurationInputs:
        """The feedback and predictions curating ``dates`` reads. With ``tables`` (the
        store and the log's fingerprints), dates whose raw tables are current are read
        from them (:mod:`ct_assets.pipeline.event_tables`): the same frames, without
        decoding weeks of events from the log, and a date's predictions only when the
        feedback refers to some of them."""
        feedback_dates, lookup_dates = input_dates(dates, rules, context_days)
        if tables is None:
            feedback = log.read("feedback", dates=feedback_dates)
            predictions = log.read("prediction", dates=lookup_dates)
            return cls(feedback, cited(predictions, answered_ids(feedback)))
        store, fingerprints = tables
        feedback = read_via_tables(log, store, "feedback", feedback_dates, fingerprints)
        ids = answered_ids(feedback)
        return cls(
            feedback,
            read_via_tables(log, store, "prediction", lookup_dates, fingerprints, ids),
        )


def answered_ids(feedback: pl.DataFrame) -> pl.Series:
    """The prediction ids ``feedback`` refers to (:func:`cited` drops nulls and repeats)."""
    if "prediction_id" not in feedback.columns:
        return pl.Series("prediction_id", [], dtype=pl.String)
    return feedback.get_column("prediction_id")


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


def _stable(value: object) -> object:
    if isinstance(value, frozenset | set):
        return sorted(value)
    return str(value)


def curation_key(
    day: str,
    fingerprints: Mapping[str, str],
    rules: ValidationRules,
    policy: LabelPolicy,
    context_days: int = CONTEXT_DAYS,
) -> str:
    """What the curation of ``day`` is computed from: the log fingerprints of every date it
    reads (its context and the predictions its feedback may refer to), the rules, the
    label policy and the code. Not the reference schema: a date stays judged against the
    reference in force when it was curated, until one of its inputs changes."""
    context, lookup = input_dates([day], rules, context_days)
    inputs = {
        "code": CURATION_CODE_VERSION,
        "dates": {d: fingerprints.get(d, "") for d in sorted({*context, *lookup})},
        "rules": asdict(rules),
        "policy": asdict(policy),
    }
    text = json.dumps(inputs, sort_keys=True, default=_stable)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def curated_source(key: str, curated: Curated) -> str:
    """The source recorded with a date's curated tables: its key, and ``as_of`` when some
    feedback is still pending (a later ``as_of`` may expire it)."""
    pending = curated.status_counts().get("pending", 0)
    return json.dumps({"key": key, "as_of": curated.as_of.isoformat() if pending else None})


def is_current(source: str | None, key: str, as_of: datetime) -> bool:
    if source is None:
        return False
    try:
        recorded = json.loads(source)
    except ValueError:
        return False
    if not isinstance(recorded, dict) or recorded.get("key") != key:
        return False
    pending_as_of = recorded.get("as_of")
    return pending_as_of is None or pending_as_of == as_of.isoformat()


# The tables one curation of a date writes, together, with the same source.
CURATED_TABLES = (keys.VALIDATED_FEEDBACK, keys.FEEDBACK_QUARANTINE, keys.ATTRIBUTED_EXAMPLES)


def write_curated(store: TableStore, day: str, curated: Curated, source: str) -> dict[str, Path]:
    """The validated feedback, quarantine and attributed examples tables of ``day``, written
    under the locks of all three (no other writer interleaves its tables with these).
    Validated feedback goes last: a writer killed half way leaves it with its old source,
    so the date reads as stale (:func:`curated_is_current`) and is curated again."""
    validated = curated.validated
    with store.locked(CURATED_TABLES, day):
        examples = store.write(keys.ATTRIBUTED_EXAMPLES, day, curated.examples, source)
        quarantine = store.write(
            keys.FEEDBACK_QUARANTINE,
            day,
            validated.filter(pl.col("status") == "quarantined"),
            source,
        )
        validated_path = store.write(keys.VALIDATED_FEEDBACK, day, validated, source)
    return {
        keys.VALIDATED_FEEDBACK: validated_path,
        keys.FEEDBACK_QUARANTINE: quarantine,
        keys.ATTRIBUTED_EXAMPLES: examples,
    }


def curated_is_current(store: TableStore, day: str, key: str, as_of: datetime) -> bool:
    """Whether the curated tables of ``day`` were all written by one curation of inputs
    ``key`` (and ``as_of``, while feedback was pending)."""
    sources = {store.source(table, day) for table in CURATED_TABLES}
    return len(sources) == 1 and is_current(sources.pop(), key, as_of)


def refresh_tables(
    log: EventLog,
    store: TableStore,
    dates: Sequence[str],
    rules: ValidationRules,
    policy: LabelPolicy,
    reference: ReferenceSchema | None,
    as_of: datetime,
    fingerprints: Mapping[str, str],
) -> list[str]:
    """Bring the tables a dataset is compiled from up to date with the log: the curated
    tables of ``dates`` and the raw predictions their feedback may refer to. A table is
    rewritten only when its recorded source differs from the log's (a raw table from
    itself and the frames committed since: :func:`refresh_raw_table`); the check is made
    again under the table's lock, so a date another run refreshed meanwhile is not
    curated twice. Returns the dates this call curated again."""
    _, lookup = input_dates(dates, rules, 0)
    for day in [d for d in lookup if d in fingerprints]:
        if store.source(keys.RAW_PREDICTIONS, day) == fingerprints[day]:
            continue
        with store.locked([keys.RAW_PREDICTIONS], day):
            refresh_raw_table(log, store, "prediction", day, fingerprints[day])
    wanted = {d: curation_key(d, fingerprints, rules, policy) for d in dates}
    stale = [d for d in dates if not curated_is_current(store, d, wanted[d], as_of)]
    curated_again = []
    for first in range(0, len(stale), REFRESH_BLOCK_DAYS):
        block = stale[first : first + REFRESH_BLOCK_DAYS]
        inputs: CurationInputs | None = None  # read once per block, when first needed
        for day in block:
            with store.locked(CURATED_TABLES, day):
                if curated_is_current(store, day, wanted[day], as_of):
                    continue
                inputs = inputs or CurationInputs.read(
                    log, block, rules, tables=(store, fingerprints)
                )
                curated = curate(log, [day], rules, policy, reference, as_of, inputs=inputs)
                write_curated(store, day, curated, curated_source(wanted[day], curated))
                curated_again.append(day)
    return curated_again

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

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import polars as pl

from ct_assets.data.reference import FeatureStats, ReferenceSchema


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


# Working columns; the \x00 prefix keeps them apart from any input column.
_ROW = "\x00row"
_OWN = "\x00own_features"
_FOUND = "\x00prediction_found"
_PRED_TS = "\x00prediction_timestamp"
_PRED_LABEL = "\x00prediction_label"
_PRED_CONF = "\x00prediction_confidence"
_PRED_FEATURES = "\x00prediction_features"
_WAITING = "\x00waiting"
_WINDOW = "\x00window"
_KEY = "\x00key"
_DETAIL = "\x00detail"

_FEEDBACK_COLUMNS: dict[str, pl.DataType] = {
    "log_offset": pl.Int64(),
    "event_id": pl.String(),
    "timestamp": pl.Datetime("us", "UTC"),
    "feedback_type": pl.String(),
    "prediction_id": pl.String(),
    "entity_id": pl.String(),
    "user_id": pl.String(),
    "source": pl.String(),
    "signal": pl.String(),
    "label": pl.String(),
}
_DEDUP_KEY = ["prediction_id", "user_id", "feedback_type", "signal"]
_LABEL_EXAMPLES = 10
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
    work = _prepare(feedback)
    work = _attach_predictions(work, predictions)

    work = _join_detail(work, FeedbackReason.DUPLICATE, _duplicate_details(work))
    duplicate = pl.col(FeedbackReason.DUPLICATE.value).is_not_null()
    work = _join_detail(work, FeedbackReason.RATE_ABUSE, _rate_details(work, rules))
    labels = work.filter(_is_label() & ~duplicate)
    work = _join_detail(work, FeedbackReason.DOMINANT_USER, _dominance_details(labels, rules))
    work = work.with_columns(
        *_timing_details(rules),
        *_reference_details(work, reference, rules.range_tolerance),
    )
    earlier = [r.value for r in QUARANTINE_REASONS if r != FeedbackReason.LABEL_FLIPPING]
    clean = pl.all_horizontal([pl.col(c).is_null() for c in earlier])
    candidates = work.filter(clean & _is_label() & ~pl.col(_WAITING))
    flippers = _flipping_users(candidates, rules)
    work = work.join(flippers, on="user_id", how="left").with_columns(
        pl.when(_is_label()).then(pl.col(_DETAIL)).alias(FeedbackReason.LABEL_FLIPPING.value)
    )
    decided = work.select(_ROW, *_decide(as_of, rules)).sort(_ROW)
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


# --- preparation -------------------------------------------------------------------------


def _prepare(feedback: pl.DataFrame) -> pl.DataFrame:
    """The columns the rules need, in log order, with the input position kept in ``_ROW``."""
    columns: list[pl.Expr] = [pl.int_range(pl.len(), dtype=pl.Int64).alias(_ROW)]
    for name, dtype in _FEEDBACK_COLUMNS.items():
        if name in feedback.columns:
            columns.append(pl.col(name).cast(dtype))
        else:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    own = feedback.schema.get("features")
    if isinstance(own, pl.Struct) and own.fields:
        columns.append(pl.col("features").alias(_OWN))
    else:
        columns.append(pl.lit(None, dtype=pl.Null).alias(_OWN))
    work = feedback.select(columns)
    if "log_offset" not in feedback.columns:
        work = work.with_columns(pl.col(_ROW).alias("log_offset"))
    return work.sort(["log_offset", _ROW], nulls_last=True)


def _attach_predictions(work: pl.DataFrame, predictions: pl.DataFrame | None) -> pl.DataFrame:
    """Join the first logged prediction of each prediction_id: time, label, confidence, features."""
    empty = pl.DataFrame(
        schema={
            "prediction_id": pl.String,
            _PRED_TS: pl.Datetime("us", "UTC"),
            _PRED_LABEL: pl.String,
            _PRED_CONF: pl.Float64,
            _PRED_FEATURES: pl.Null,
        }
    )
    logged = empty
    if predictions is not None and predictions.height and "prediction_id" in predictions.columns:
        order = ["log_offset"] if "log_offset" in predictions.columns else []
        scores = predictions.schema.get("scores")
        features = predictions.schema.get("features")
        prediction = (
            pl.col("prediction").cast(pl.String)
            if "prediction" in predictions.columns
            else pl.lit(None, dtype=pl.String)
        )
        confidence = (
            pl.max_horizontal(
                [pl.col("scores").struct.field(f.name).cast(pl.Float64) for f in scores.fields]
            )
            if isinstance(scores, pl.Struct) and scores.fields
            else pl.lit(None, dtype=pl.Float64)
        )
        wanted = work.select(pl.col("prediction_id").drop_nulls().unique())
        relevant = predictions.filter(pl.col("prediction_id").is_not_null()).join(
            wanted, on="prediction_id", how="semi", maintain_order="left"
        )
        logged = (
            (relevant.sort(order, maintain_order=True) if order else relevant)
            .unique("prediction_id", keep="first", maintain_order=True)
            .select(
                pl.col("prediction_id").cast(pl.String),
                pl.col("timestamp").cast(pl.Datetime("us", "UTC")).alias(_PRED_TS),
                prediction.alias(_PRED_LABEL),
                confidence.alias(_PRED_CONF),
                (
                    pl.col("features")
                    if isinstance(features, pl.Struct) and features.fields
                    else pl.lit(None, dtype=pl.Null)
                ).alias(_PRED_FEATURES),
            )
        )
    joined = work.join(logged, on="prediction_id", how="left", maintain_order="left")
    found = pl.col("prediction_id").is_not_null() & pl.col(_PRED_TS).is_not_null()
    waiting = pl.col("prediction_id").is_not_null() & ~found & pl.col(_OWN).is_null()
    return joined.with_columns(found.alias(_FOUND), waiting.alias(_WAITING))


def _is_label() -> pl.Expr:
    return (pl.col("feedback_type") == "explicit") & pl.col("label").is_not_null()


def _join_detail(work: pl.DataFrame, reason: FeedbackReason, details: pl.DataFrame) -> pl.DataFrame:
    """Add a reason column from a frame of (_ROW, _DETAIL)."""
    return work.join(
        details.rename({_DETAIL: reason.value}), on=_ROW, how="left", maintain_order="left"
    )


def _micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _window_of(delta: timedelta) -> pl.Expr:
    return pl.col("timestamp").dt.epoch("us") // _micros(delta)


def _window_start(delta: timedelta) -> pl.Expr:
    return pl.from_epoch(pl.col(_WINDOW) * _micros(delta), time_unit="us").dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


# --- rules -------------------------------------------------------------------------------


def _duplicate_details(work: pl.DataFrame) -> pl.DataFrame:
    """(_ROW, _DETAIL) of rows repeating the (prediction, user, type, signal) of an earlier
    row (``work`` is in log order); feedback without a prediction_id has nothing to repeat."""
    attributed = work.filter(pl.col("prediction_id").is_not_null())
    repeated = pl.struct(_DEDUP_KEY).is_first_distinct().not_()
    marked = attributed.select(_ROW, *_DEDUP_KEY, "event_id", "log_offset", repeated.alias("r"))
    originals = marked.filter(~pl.col("r")).select(*_DEDUP_KEY, "event_id", "log_offset")
    return (
        marked.filter(pl.col("r"))
        .select(_ROW, *_DEDUP_KEY)
        .join(originals, on=_DEDUP_KEY, how="inner", nulls_equal=True)
        .select(
            _ROW,
            pl.format(
                "same prediction_id, user_id, feedback_type and signal as event {} (log offset {})",
                pl.col("event_id"),
                pl.col("log_offset"),
            ).alias(_DETAIL),
        )
    )


def _rate_details(work: pl.DataFrame, rules: ValidationRules) -> pl.DataFrame:
    """(_ROW, _DETAIL) of rows in a window where their user or source sent too much."""
    windowed = work.select(_ROW, "user_id", "source", _window_of(rules.rate_window).alias(_WINDOW))
    parts = [_rate_by(windowed, actor, rules) for actor in ("user_id", "source")]
    return (
        pl.concat(parts)
        .group_by(_ROW)
        .agg(pl.col(_DETAIL).sort().str.join("; "))
        .select(_ROW, _DETAIL)
    )


def _rate_by(windowed: pl.DataFrame, actor: str, rules: ValidationRules) -> pl.DataFrame:
    rows = windowed.filter(pl.col(actor).is_not_null())
    counts = rows.group_by(actor, _WINDOW).agg(pl.len().alias("n"))
    population = counts.get_column("n").median()
    population_median = float(population) if isinstance(population, int | float) else 0.0
    # Only actors with a window of at least rate_min_events can be flagged: the history
    # (rolling medians) is computed for them alone.
    suspects = counts.filter(pl.col("n") >= rules.rate_min_events).select(actor).unique()
    counts = counts.join(suspects, on=actor, how="semi").sort(actor, _WINDOW)
    history = pl.int_range(pl.len()).over(actor)
    own = (
        pl.col("n")
        .rolling_median(rules.rate_history, min_samples=1)
        .shift(1)
        .over(actor)
        .cast(pl.Float64)
    )
    own_basis = pl.format(
        "its median over {} earlier windows", pl.min_horizontal(history, pl.lit(rules.rate_history))
    )
    trusted = history >= rules.rate_min_history
    usual = pl.when(trusted).then(own).otherwise(pl.lit(population_median))
    basis = pl.when(trusted).then(own_basis).otherwise(pl.lit("the population median"))
    flagged = counts.with_columns(usual.alias("usual"), basis.alias("basis")).filter(
        (pl.col("n") >= rules.rate_min_events) & (pl.col("n") > rules.rate_factor * pl.col("usual"))
    )
    label = actor.removesuffix("_id")
    described = flagged.select(
        actor,
        _WINDOW,
        pl.format(
            "{} {} sent {} feedback events in the {} window from {}, more than {}x its usual {}"
            " ({})",
            pl.lit(label),
            pl.col(actor),
            pl.col("n"),
            pl.lit(str(rules.rate_window)),
            _window_start(rules.rate_window),
            pl.lit(rules.rate_factor),
            pl.col("usual").round(2),
            pl.col("basis"),
        ).alias(_DETAIL),
    )
    return rows.join(described, on=[actor, _WINDOW], how="inner").select(_ROW, _DETAIL)


def _dominance_details(labels: pl.DataFrame, rules: ValidationRules) -> pl.DataFrame:
    """(_ROW, _DETAIL) of the labels of a user who supplied too large a share of a window's."""
    windowed = labels.select(_ROW, "user_id", _window_of(rules.dominance_window).alias(_WINDOW))
    totals = windowed.group_by(_WINDOW).agg(pl.len().alias("total"))
    shares = (
        windowed.filter(pl.col("user_id").is_not_null())
        .group_by("user_id", _WINDOW)
        .agg(pl.len().alias("n"))
        .join(totals, on=_WINDOW)
        .with_columns((pl.col("n") / pl.col("total")).alias("share"))
        .filter(
            (pl.col("total") >= rules.dominance_min_labels)
            & (pl.col("share") > rules.dominance_share)
        )
        .select(
            "user_id",
            _WINDOW,
            pl.format(
                "user {} supplied {} of the {} labels of the {} window from {} ({}% > {}%)",
                pl.col("user_id"),
                pl.col("n"),
                pl.col("total"),
                pl.lit(str(rules.dominance_window)),
                _window_start(rules.dominance_window),
                (pl.col("share") * 100).round(1),
                pl.lit(round(rules.dominance_share * 100, 1)),
            ).alias(_DETAIL),
        )
    )
    return windowed.join(shares, on=["user_id", _WINDOW], how="inner").select(_ROW, _DETAIL)


def _hours(expr: pl.Expr) -> pl.Expr:
    return (expr.dt.total_microseconds() / 3.6e9).round(2)


def _timing_details(rules: ValidationRules) -> list[pl.Expr]:
    delay = pl.col("timestamp") - pl.col(_PRED_TS)
    before = pl.when(pl.col(_FOUND) & (delay < timedelta(0))).then(
        pl.format(
            "feedback at {} is {} h before its prediction at {}",
            pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"),
            _hours(-delay),
            pl.col(_PRED_TS).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"),
        )
    )
    limit = rules.max_feedback_delay
    late = pl.when(pl.col(_FOUND) & (delay > limit)).then(
        pl.format(
            "feedback came {} h after its prediction, more than max_feedback_delay {} h",
            _hours(delay),
            pl.lit(round(limit / timedelta(hours=1), 2)),
        )
    )
    return [
        before.alias(FeedbackReason.TIMESTAMP_BEFORE_PREDICTION.value),
        late.alias(FeedbackReason.FEEDBACK_TOO_LATE.value),
    ]


def _reference_details(
    work: pl.DataFrame, reference: ReferenceSchema | None, tolerance: float
) -> list[pl.Expr]:
    """Label and feature checks against the reference: one detail column per reason."""
    names = [
        FeedbackReason.UNKNOWN_LABEL.value,
        FeedbackReason.OUT_OF_RANGE.value,
        FeedbackReason.UNKNOWN_CATEGORY.value,
    ]
    if reference is None:
        return [pl.lit(None, dtype=pl.String).alias(n) for n in names]
    label = pl.lit(None, dtype=pl.String)
    if reference.labels is not None:
        known = reference.labels
        shown = ", ".join(known[:_LABEL_EXAMPLES]) + (
            ", ..." if len(known) > _LABEL_EXAMPLES else ""
        )
        label = pl.when(_is_label() & ~pl.col("label").is_in(known)).then(
            pl.format(
                "label {} is not among the {} labels of the reference [{}]",
                pl.col("label"),
                pl.lit(len(known)),
                pl.lit(shown),
            )
        )
    own_fields = _fields(work.schema[_OWN])
    logged_fields = _fields(work.schema[_PRED_FEATURES])
    ranges: list[pl.Expr] = []
    domains: list[pl.Expr] = []
    for stats in reference.checked_features():
        raw = _feature(stats.name, own_fields, logged_fields, pl.String)
        if stats.kind == "numeric":
            value = _feature(stats.name, own_fields, logged_fields, pl.Float64)
            ranges.append(_range_violation(stats, raw, value, tolerance))
        elif stats.categories is not None:
            domains.append(
                pl.when(raw.is_not_null() & ~raw.is_in(stats.categories)).then(
                    pl.format(
                        "{}={} is not among its {} reference categories",
                        pl.lit(stats.name),
                        raw,
                        pl.lit(len(stats.categories)),
                    )
                )
            )
    return [
        label.alias(names[0]),
        _joined(ranges).alias(names[1]),
        _joined(domains).alias(names[2]),
    ]


def _fields(dtype: pl.DataType) -> set[str]:
    return {f.name for f in dtype.fields} if isinstance(dtype, pl.Struct) else set()


def _feature(
    name: str, own_fields: set[str], logged_fields: set[str], dtype: type[pl.DataType]
) -> pl.Expr:
    """The feature's value: from the feedback's own features if it has any, else its
    prediction's (as labeled_examples picks them)."""
    none = pl.lit(None, dtype=dtype)
    own = pl.col(_OWN).struct.field(name).cast(dtype, strict=False) if name in own_fields else none
    logged = (
        pl.col(_PRED_FEATURES).struct.field(name).cast(dtype, strict=False)
        if name in logged_fields
        else none
    )
    return pl.when(pl.col(_OWN).is_not_null()).then(own).otherwise(logged)


def _range_violation(
    stats: FeatureStats, raw: pl.Expr, value: pl.Expr, tolerance: float
) -> pl.Expr:
    """A text (numbers included) when the value is not a number or outside the widened range."""
    not_number = raw.is_not_null() & value.is_null()
    message = pl.when(not_number).then(pl.format("{}={} is not a number", pl.lit(stats.name), raw))
    if stats.min is None or stats.max is None:
        return message
    slack = (stats.max - stats.min) * tolerance
    low, high = stats.min - slack, stats.max + slack
    return message.when(value.is_not_nan() & ((value < low) | (value > high))).then(
        pl.format(
            "{}={} is outside [{}, {}] (reference range widened by the tolerance)",
            pl.lit(stats.name),
            value,
            pl.lit(low),
            pl.lit(high),
        )
    )


def _joined(messages: Sequence[pl.Expr]) -> pl.Expr:
    if not messages:
        return pl.lit(None, dtype=pl.String)
    text = pl.concat_str(messages, separator="; ", ignore_nulls=True)
    return pl.when(text != "").then(text)


def _flipping_users(candidates: pl.DataFrame, rules: ValidationRules) -> pl.DataFrame:
    """(user_id, _DETAIL) of label flippers, in two passes: the second ignores the votes of
    users flagged by the first, so one flipper cannot make honest users look like flippers."""
    first = _flip_pass(candidates, candidates, rules)
    voters = candidates.filter(~pl.col("user_id").is_in(first.get_column("user_id").implode()))
    if voters.height == candidates.height:
        return first
    return _flip_pass(candidates, voters, rules)


def _flip_pass(
    candidates: pl.DataFrame, voters: pl.DataFrame, rules: ValidationRules
) -> pl.DataFrame:
    key = pl.coalesce(pl.col("prediction_id"), pl.lit("\x00entity:") + pl.col("entity_id")).alias(
        _KEY
    )
    judged = candidates.filter(pl.col("user_id").is_not_null()).select(
        _ROW, "user_id", "label", _PRED_LABEL, _PRED_CONF, key
    )
    ballots = voters.select("user_id", "label", key).filter(pl.col(_KEY).is_not_null())
    votes = ballots.group_by(_KEY, "label").agg(pl.len().alias("votes"))
    own = (
        ballots.filter(pl.col("user_id").is_not_null())
        .group_by(_KEY, "user_id", "label")
        .agg(pl.len().alias("own"))
    )
    others = (
        judged.select(_ROW, "user_id", _KEY)
        .join(votes, on=_KEY, how="inner")
        .join(own, on=[_KEY, "user_id", "label"], how="left")
        .with_columns((pl.col("votes") - pl.col("own").fill_null(0)).alias("others"))
        .filter(pl.col("others") > 0)
    )
    consensus = (
        others.filter(pl.col("others") == pl.col("others").max().over(_ROW))
        .group_by(_ROW)
        .agg(pl.col("label").first().alias("consensus"), pl.len().alias("tied"))
        .filter(pl.col("tied") == 1)
        .select(_ROW, "consensus")
    )
    confident = pl.col(_PRED_CONF) >= rules.flip_confidence
    expected = pl.coalesce(pl.col("consensus"), pl.when(confident).then(pl.col(_PRED_LABEL)))
    per_user = (
        judged.join(consensus, on=_ROW, how="left")
        .with_columns(expected.alias("expected"))
        .filter(pl.col("expected").is_not_null())
        .group_by("user_id")
        .agg(
            pl.len().alias("n"),
            (pl.col("label") != pl.col("expected")).sum().alias("disagree"),
        )
        .with_columns((pl.col("disagree") / pl.col("n")).alias("rate"))
    )
    peers = _median_of_others(per_user.get_column("rate").sort())
    return (
        per_user.sort("rate", "user_id")
        .with_columns(peers.alias("peers"))
        .filter(
            (pl.col("n") >= rules.flip_min_labels)
            & (pl.col("rate") > rules.flip_disagreement)
            & (pl.col("rate") > rules.flip_peer_factor * pl.col("peers").fill_null(0.0))
        )
        .sort("user_id")
        .select(
            "user_id",
            pl.format(
                "user {} contradicts the other users' consensus or a confident model on {} of"
                " {} comparable labels ({}% > {}%; median of the other users {}%)",
                pl.col("user_id"),
                pl.col("disagree"),
                pl.col("n"),
                (pl.col("rate") * 100).round(1),
                pl.lit(round(rules.flip_disagreement * 100, 1)),
                (pl.col("peers") * 100).round(1),
            ).alias(_DETAIL),
        )
    )


def _median_of_others(ordered: pl.Series) -> pl.Series:
    """For each value of an ascending series, the median of all the others (leave-one-out),
    null when there are no others. Without its own value, the median's neighbours sit at
    fixed positions of the remaining list, i.e. one further right in the full list for
    values left of them."""
    others = ordered.len() - 1
    if others < 1:
        return pl.Series(values=[None] * ordered.len(), dtype=pl.Float64)
    lo, hi = (others - 1) // 2, others // 2
    position = pl.int_range(pl.len())
    frame = pl.DataFrame({"v": ordered.cast(pl.Float64)})
    below = pl.col("v").gather(pl.when(position > lo).then(lo).otherwise(lo + 1))
    above = pl.col("v").gather(pl.when(position > hi).then(hi).otherwise(hi + 1))
    return frame.select(((below + above) / 2).alias("median")).get_column("median")


# --- decision ----------------------------------------------------------------------------


def _decide(as_of: datetime, rules: ValidationRules) -> list[pl.Expr]:
    """Status, reason and detail from the rule columns, the first applicable reason winning."""
    columns = [pl.col(r.value) for r in QUARANTINE_REASONS]
    reason: Any = pl.when(columns[0].is_not_null()).then(pl.lit(QUARANTINE_REASONS[0].value))
    for code, column in zip(QUARANTINE_REASONS[1:], columns[1:], strict=True):
        reason = reason.when(column.is_not_null()).then(pl.lit(code.value))
    quarantined = pl.any_horizontal([c.is_not_null() for c in columns])
    age = pl.lit(as_of.astimezone(UTC)).cast(pl.Datetime("us", "UTC")) - pl.col("timestamp")
    expired = pl.col(_WAITING) & (age >= rules.pending_expiry)
    waited = pl.format(
        "no prediction {} after {} h (pending_expiry {} h)",
        pl.col("prediction_id"),
        _hours(age),
        pl.lit(round(rules.pending_expiry / timedelta(hours=1), 2)),
    )
    never = pl.format(
        "prediction_id {} was never served: no prediction with it was logged {} h after "
        "the feedback (pending_expiry {} h)",
        pl.col("prediction_id"),
        _hours(age),
        pl.lit(round(rules.pending_expiry / timedelta(hours=1), 2)),
    )
    status = (
        pl.when(quarantined | expired)
        .then(pl.lit(FeedbackStatus.QUARANTINED.value))
        .when(pl.col(_WAITING))
        .then(pl.lit(FeedbackStatus.PENDING.value))
        .otherwise(pl.lit(FeedbackStatus.ACCEPTED.value))
    )
    reason = (
        reason.when(expired)
        .then(pl.lit(FeedbackReason.UNKNOWN_PREDICTION.value))
        .when(pl.col(_WAITING))
        .then(pl.lit(FeedbackReason.AWAITING_PREDICTION.value))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    detail = (
        pl.when(quarantined)
        .then(pl.coalesce(columns))
        .when(expired)
        .then(never)
        .when(pl.col(_WAITING))
        .then(waited)
    )
    return [status.alias("status"), reason.alias("reason"), detail.alias("reason_detail")]

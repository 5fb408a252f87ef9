"""Rules on whether feedback fits: its time against its prediction's, its label and
features against the reference schema."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from ct_assets.data.feedback_rules.codes import FeedbackReason
from ct_assets.data.feedback_rules.thresholds import ValidationRules
from ct_assets.data.feedback_rules.work import FOUND, OWN, PRED_FEATURES, PRED_TS, hours, is_label
from ct_assets.data.reference import FeatureStats, ReferenceSchema

_LABEL_EXAMPLES = 10


def timing_details(rules: ValidationRules) -> list[pl.Expr]:
    delay = pl.col("timestamp") - pl.col(PRED_TS)
    before = pl.when(pl.col(FOUND) & (delay < timedelta(0))).then(
        pl.format(
            "feedback at {} is {} h before its prediction at {}",
            pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"),
            hours(-delay),
            pl.col(PRED_TS).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"),
        )
    )
    limit = rules.max_feedback_delay
    late = pl.when(pl.col(FOUND) & (delay > limit)).then(
        pl.format(
            "feedback came {} h after its prediction, more than max_feedback_delay {} h",
            hours(delay),
            pl.lit(round(limit / timedelta(hours=1), 2)),
        )
    )
    return [
        before.alias(FeedbackReason.TIMESTAMP_BEFORE_PREDICTION.value),
        late.alias(FeedbackReason.FEEDBACK_TOO_LATE.value),
    ]


def reference_details(
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
        label = pl.when(is_label() & ~pl.col("label").is_in(known)).then(
            pl.format(
                "label {} is not among the {} labels of the reference [{}]",
                pl.col("label"),
                pl.lit(len(known)),
                pl.lit(shown),
            )
        )
    own_fields = _fields(work.schema[OWN])
    logged_fields = _fields(work.schema[PRED_FEATURES])
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
    own = pl.col(OWN).struct.field(name).cast(dtype, strict=False) if name in own_fields else none
    logged = (
        pl.col(PRED_FEATURES).struct.field(name).cast(dtype, strict=False)
        if name in logged_fields
        else none
    )
    return pl.when(pl.col(OWN).is_not_null()).then(own).otherwise(logged)


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

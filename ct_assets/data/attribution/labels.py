"""Which feedback gets a label under a policy, and why the rest gets none."""

from __future__ import annotations

import polars as pl

from ct_assets.data.attribution.policy import (
    EXPLICIT,
    IMPLICIT,
    IMPLICIT_PREFIX,
    LabelPolicy,
    UnknownSignalError,
)

#: Columns of validated feedback carried into the examples unchanged, when present.
CARRIED_COLUMNS = ("status", "reason")

#: Why :func:`unlabeled` gives a feedback row no label (its ``unlabeled_reason``).
UNKNOWN_SIGNAL = "unknown_signal"
MISSING_LABEL = "missing_label"
MISSING_SIGNAL = "missing_signal"
MISSING_VALUE = "missing_value"
UNKNOWN_FEEDBACK_TYPE = "unknown_feedback_type"

#: Column names of :func:`labeled_feedback`'s label, label source and own features (the
#: double underscores keep them apart from event fields).
LABEL_COLUMN = "__label"
LABEL_SOURCE_COLUMN = "__label_source"
OWN_FEATURES_COLUMN = "__own_features"
_REASON = "__unlabeled_reason"

_FEEDBACK_STRINGS = ("event_id", "feedback_type", "prediction_id", "signal", "label")
_FEEDBACK_OPTIONAL = ("source", "user_id")


def label_exprs(policy: LabelPolicy) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(label, label_source, unlabeled_reason) of a feedback row under ``policy``."""
    kind = pl.col("feedback_type")
    signal = pl.col("signal")
    value = pl.col("value")
    explicit = kind == EXPLICIT
    implicit = kind == IMPLICIT
    positive = signal.is_in(sorted(policy.positive_signals)).fill_null(False)
    negative = signal.is_in(sorted(policy.negative_signals)).fill_null(False)
    if policy.dwell_signal is not None:
        dwell = (signal == policy.dwell_signal).fill_null(False)
    else:
        dwell = pl.lit(False)
    has_value = value.is_not_null() & value.is_not_nan()
    threshold = float(policy.dwell_threshold_seconds)
    pos, neg = pl.lit(policy.positive_label), pl.lit(policy.negative_label)
    label = (
        pl.when(explicit)
        .then(pl.col("label"))
        .when(implicit & positive)
        .then(pos)
        .when(implicit & negative)
        .then(neg)
        .when(implicit & dwell & has_value)
        .then(pl.when(value >= threshold).then(pos).otherwise(neg))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    source = (
        pl.when(explicit)
        .then(pl.lit(EXPLICIT))
        .when(implicit)
        .then(pl.concat_str(pl.lit(IMPLICIT_PREFIX), signal))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    reason = (
        pl.when(explicit & pl.col("label").is_null())
        .then(pl.lit(MISSING_LABEL))
        .when(explicit)
        .then(pl.lit(None, dtype=pl.String))
        .when(~implicit | kind.is_null())
        .then(pl.lit(UNKNOWN_FEEDBACK_TYPE))
        .when(signal.is_null())
        .then(pl.lit(MISSING_SIGNAL))
        .when(dwell & ~has_value)
        .then(pl.lit(MISSING_VALUE))
        .when(~(positive | negative | dwell))
        .then(pl.lit(UNKNOWN_SIGNAL))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    return label, source, reason


def _with_feedback_columns(feedback: pl.DataFrame) -> pl.DataFrame:
    """The feedback frame with every column attribution reads (nulls where absent)."""
    missing = [
        pl.lit(None, dtype=pl.String).alias(name)
        for name in (*_FEEDBACK_STRINGS, *_FEEDBACK_OPTIONAL)
        if name not in feedback.columns
    ]
    if "value" not in feedback.columns:
        missing.append(pl.lit(None, dtype=pl.Float64).alias("value"))
    return feedback.with_columns(missing) if missing else feedback


def unlabeled(feedback: pl.DataFrame, policy: LabelPolicy | None = None) -> pl.DataFrame:
    """Feedback rows ``policy`` gives no label, with an ``unlabeled_reason`` column.

    Reasons: ``unknown_signal`` (ignored by the policy), ``missing_value`` (a dwell
    without a value), ``missing_label`` / ``missing_signal`` (only in unvalidated
    input), ``unknown_feedback_type``. Independent of predictions: a row may also be
    :func:`unattributed`. Sorted by ``(timestamp, log_offset)``.
    """
    policy = policy or LabelPolicy()
    _, _, reason = label_exprs(policy)
    return (
        _with_feedback_columns(feedback)
        .with_columns(reason.alias("unlabeled_reason"))
        .filter(pl.col("unlabeled_reason").is_not_null())
        .select(*[c for c in feedback.columns if c != "unlabeled_reason"], "unlabeled_reason")
        .sort(["timestamp", "log_offset"], maintain_order=True)
    )


def subjects(feedback: pl.DataFrame) -> pl.DataFrame:
    """Feedback with its own features (if any) moved to ``OWN_FEATURES_COLUMN``."""
    frame = _with_feedback_columns(feedback)
    if "features" in frame.columns:
        return frame.rename({"features": OWN_FEATURES_COLUMN})
    return frame.with_columns(pl.lit(None, dtype=pl.Null).alias(OWN_FEATURES_COLUMN))


def labeled_feedback(feedback: pl.DataFrame, policy: LabelPolicy | None = None) -> pl.DataFrame:
    """The feedback rows ``policy`` labels, before any prediction is joined.

    Columns: ``event_id``, ``log_offset``, ``timestamp``, ``prediction_id``, ``source``,
    ``user_id``, the label (``LABEL_COLUMN``), its source (``LABEL_SOURCE_COLUMN``), the
    feedback's own features (``OWN_FEATURES_COLUMN``, null when it carries none) and the
    ``CARRIED_COLUMNS`` present. Raises :class:`UnknownSignalError` as
    :func:`attribute_feedback` does.
    """
    policy = policy or LabelPolicy()
    label, source, reason = label_exprs(policy)
    carried = [c for c in CARRIED_COLUMNS if c in feedback.columns]
    frame = subjects(feedback).with_columns(
        label.alias(LABEL_COLUMN), source.alias(LABEL_SOURCE_COLUMN), reason.alias(_REASON)
    )
    if not policy.ignore_unknown:
        unknown = frame.filter(pl.col(_REASON) == UNKNOWN_SIGNAL)
        if unknown.height:
            counts = unknown.group_by("signal").len()
            raise UnknownSignalError(dict(zip(counts["signal"], counts["len"], strict=True)))
    return frame.filter(pl.col(LABEL_COLUMN).is_not_null()).select(
        "event_id",
        "log_offset",
        "timestamp",
        pl.col("prediction_id").cast(pl.String),
        "source",
        "user_id",
        LABEL_COLUMN,
        LABEL_SOURCE_COLUMN,
        OWN_FEATURES_COLUMN,
        *carried,
    )

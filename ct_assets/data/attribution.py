"""Feedback attribution: turning feedback events into labeled examples.

A labeled example is one feedback event with a label and the features the model saw.
The label comes from the feedback itself (``explicit``) or from a :class:`LabelPolicy`
that maps implicit signals (``click``, ``skip``, ``dwell`` ...) to labels. The features
are the feedback's own when it carries them, else those of the logged prediction it
refers to by ``prediction_id``; the serving context of that prediction (model version,
arm, what was served, when) rides along so datasets and reports can be sliced by it.

Feedback that gets no label from the policy (:func:`unlabeled`) or has no features to
learn from (:func:`unattributed`, typically a prediction not logged yet) is not an
example; both functions return those rows so callers can count and report them. The
functions are pure: attribution is recomputed from the log, so feedback whose
prediction arrives late becomes an example on the next run.

Everything is vectorised Polars; outputs are sorted by ``(timestamp, log_offset)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

EXPLICIT = "explicit"
IMPLICIT = "implicit"
IMPLICIT_PREFIX = "implicit:"
#: Columns of validated feedback carried into the examples unchanged, when present.
CARRIED_COLUMNS = ("status", "reason")
#: Key under which :func:`attribution_summary` counts rows whose value is null.
NO_VALUE = "(none)"

#: Why :func:`unlabeled` gives a feedback row no label (its ``unlabeled_reason``).
UNKNOWN_SIGNAL = "unknown_signal"
MISSING_LABEL = "missing_label"
MISSING_SIGNAL = "missing_signal"
MISSING_VALUE = "missing_value"
UNKNOWN_FEEDBACK_TYPE = "unknown_feedback_type"

EXAMPLE_COLUMNS = (
    "event_id",
    "log_offset",
    "timestamp",
    "prediction_id",
    "prediction_time",
    "model_version",
    "arm",
    "served_prediction",
    "label",
    "label_source",
    "source",
    "user_id",
    "features",
)

# Internal column names; the double underscores keep them apart from event fields.
_OWN = "__own_features"
_LOGGED = "__logged_features"
_MATCHED = "__matched"
_LABEL = "__label"
_SOURCE = "__label_source"
#: Column names of :func:`labeled_feedback`'s label, label source and own features.
LABEL_COLUMN, LABEL_SOURCE_COLUMN, OWN_FEATURES_COLUMN = _LABEL, _SOURCE, _OWN
_REASON = "__unlabeled_reason"

_FEEDBACK_STRINGS = ("event_id", "feedback_type", "prediction_id", "signal", "label")
_FEEDBACK_OPTIONAL = ("source", "user_id")


class UnknownSignalError(ValueError):
    """Implicit feedback carries a signal the policy does not know and must not ignore."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)
        listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(self.counts.items()))
        super().__init__(f"implicit signals unknown to the label policy: {listed}")


def _names(values: Iterable[str]) -> frozenset[str]:
    if isinstance(values, str):  # a lone string is one signal, not its characters
        return frozenset([values])
    return frozenset(values)


@dataclass(frozen=True)
class LabelPolicy:
    """How implicit feedback becomes a label; explicit feedback always keeps its own.

    * a signal in ``positive_signals`` is labeled ``positive_label``;
    * a signal in ``negative_signals`` is labeled ``negative_label``;
    * ``dwell_signal`` is labeled by its ``value`` (seconds): ``positive_label`` when it
      is at least ``dwell_threshold_seconds``, else ``negative_label``; without a value
      it gets no label;
    * any other signal is unknown: with ``ignore_unknown`` it gives no example (and is
      counted by :func:`unlabeled`), otherwise attribution raises
      :class:`UnknownSignalError` so a new signal cannot silently go missing.

    Signals are matched exactly (case-sensitive). The sets must not overlap.
    """

    positive_signals: frozenset[str] = field(
        default_factory=lambda: frozenset({"click", "purchase", "like", "convert"})
    )
    negative_signals: frozenset[str] = field(
        default_factory=lambda: frozenset({"skip", "dismiss", "dislike", "hide"})
    )
    dwell_signal: str | None = "dwell"
    dwell_threshold_seconds: float = 30.0
    positive_label: str = "1"
    negative_label: str = "0"
    ignore_unknown: bool = True

    def __post_init__(self) -> None:
        # accept any iterable of names (a list from JSON, a set literal) but store frozensets
        object.__setattr__(self, "positive_signals", _names(self.positive_signals))
        object.__setattr__(self, "negative_signals", _names(self.negative_signals))
        both = self.positive_signals & self.negative_signals
        if both:
            raise ValueError(f"signals both positive and negative: {sorted(both)}")
        if self.dwell_signal is not None and self.dwell_signal in (
            self.positive_signals | self.negative_signals
        ):
            raise ValueError(f"dwell signal {self.dwell_signal!r} is also a fixed-label signal")
        threshold = float(self.dwell_threshold_seconds)
        if not threshold >= 0 or threshold == float("inf"):
            raise ValueError(f"dwell_threshold_seconds must be finite and >= 0, got {threshold}")
        if self.positive_label == self.negative_label:
            raise ValueError("positive_label and negative_label must differ")

    @property
    def known_signals(self) -> frozenset[str]:
        dwell = {self.dwell_signal} if self.dwell_signal is not None else set()
        return self.positive_signals | self.negative_signals | dwell

    def to_dict(self) -> dict[str, Any]:
        return {
            "positive_signals": sorted(self.positive_signals),
            "negative_signals": sorted(self.negative_signals),
            "dwell_signal": self.dwell_signal,
            "dwell_threshold_seconds": float(self.dwell_threshold_seconds),
            "positive_label": self.positive_label,
            "negative_label": self.negative_label,
            "ignore_unknown": self.ignore_unknown,
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys and signal lists): equal policies give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LabelPolicy:
        """A policy from :meth:`to_json` output; missing keys take their defaults."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a label policy is a JSON object")
        unknown = set(data) - {f.name for f in cls.__dataclass_fields__.values()}
        if unknown:
            raise ValueError(f"unknown label policy fields: {sorted(unknown)}")
        return cls(**data)

    def describe(self) -> str:
        """One line per rule, for asset metadata and reports."""
        lines = [
            "explicit feedback: its own label",
            f"implicit {_listing(self.positive_signals)} -> {self.positive_label!r}",
            f"implicit {_listing(self.negative_signals)} -> {self.negative_label!r}",
        ]
        if self.dwell_signal is not None:
            lines.append(
                f"implicit {self.dwell_signal!r}: value >= {self.dwell_threshold_seconds:g}s "
                f"-> {self.positive_label!r}, else {self.negative_label!r}"
            )
        lines.append(
            "other signals: ignored (counted)" if self.ignore_unknown else "other signals: error"
        )
        return "\n".join(lines)


def _listing(signals: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(signals)) + "}" if signals else "{} (none)"


def _label_exprs(policy: LabelPolicy) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
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
    _, _, reason = _label_exprs(policy)
    return (
        _with_feedback_columns(feedback)
        .with_columns(reason.alias("unlabeled_reason"))
        .filter(pl.col("unlabeled_reason").is_not_null())
        .select(*[c for c in feedback.columns if c != "unlabeled_reason"], "unlabeled_reason")
        .sort(["timestamp", "log_offset"], maintain_order=True)
    )


def logged_predictions(predictions: pl.DataFrame) -> pl.DataFrame:
    """One row per ``prediction_id``: the first logged (lowest ``log_offset``).

    A prediction id logged twice (a client retry with a new event id) refers to what
    was served first; later copies are ignored.
    """
    return (
        predictions.filter(pl.col("prediction_id").is_not_null())
        .sort("log_offset", maintain_order=True)
        .unique("prediction_id", keep="first", maintain_order=True)
    )


def _struct_fields(frame: pl.DataFrame | None, column: str) -> dict[str, pl.DataType]:
    dtype = frame.schema.get(column) if frame is not None else None
    if isinstance(dtype, pl.Struct):
        return {f.name: f.dtype for f in dtype.fields}  # type: ignore[misc]
    return {}


def supertype(dtypes: list[pl.DataType]) -> pl.DataType:
    """The type both sides of a feature fit in, as Polars' relaxed concat would choose it."""
    if len(dtypes) == 1:
        return dtypes[0]
    empty = [pl.DataFrame(schema={"v": dtype}) for dtype in dtypes]
    return pl.concat(empty, how="vertical_relaxed").schema["v"]


def _features_expr(
    own: Mapping[str, pl.DataType], logged: Mapping[str, pl.DataType], has_own: pl.Expr
) -> pl.Expr:
    """The feedback's own features where it has them, else the logged ones, as one struct
    whose fields are the union of both sets (in name order, each in the type both fit)."""
    fields = []
    for name in sorted(set(own) | set(logged)):
        dtype = supertype([t for t in (own.get(name), logged.get(name)) if t is not None])
        none = pl.lit(None, dtype=dtype)
        mine = pl.col(_OWN).struct.field(name).cast(dtype) if name in own else none
        theirs = pl.col(_LOGGED).struct.field(name).cast(dtype) if name in logged else none
        fields.append(pl.when(has_own).then(mine).otherwise(theirs).alias(name))
    if not fields:
        return pl.lit(None, dtype=pl.Struct({}))
    return pl.struct(fields)


def _join_predictions(feedback: pl.DataFrame, predictions: pl.DataFrame | None) -> pl.DataFrame:
    """Feedback left-joined to the first logged prediction of its ``prediction_id``.

    Adds ``prediction_time``, ``model_version``, ``arm``, ``served_prediction``, the
    prediction's features (``_LOGGED``) and ``_MATCHED`` (true when one was found).
    """
    joined_columns: dict[str, pl.DataType] = {
        "prediction_time": pl.Datetime("us", "UTC"),
        "model_version": pl.String(),
        "arm": pl.String(),
        "served_prediction": pl.String(),
    }
    usable = (
        predictions is not None
        and predictions.height > 0
        and "prediction_id" in predictions.columns
    )
    if not usable:
        return feedback.with_columns(
            *[pl.lit(None, dtype=dtype).alias(name) for name, dtype in joined_columns.items()],
            pl.lit(None, dtype=pl.Null).alias(_LOGGED),
            pl.lit(None, dtype=pl.Boolean).alias(_MATCHED),
        )
    assert predictions is not None
    first = logged_predictions(predictions)
    sources = {
        "prediction_time": "timestamp",
        "model_version": "model_version",
        "arm": "arm",
        "served_prediction": "prediction",
    }
    right = first.select(
        pl.col("prediction_id"),
        *[
            (pl.col(src) if src in first.columns else pl.lit(None, dtype=joined_columns[name]))
            .cast(joined_columns[name])
            .alias(name)
            for name, src in sources.items()
        ],
        (pl.col("features") if "features" in first.columns else pl.lit(None)).alias(_LOGGED),
        pl.lit(True).alias(_MATCHED),
    )
    return feedback.join(right, on="prediction_id", how="left")


def _subjects(feedback: pl.DataFrame) -> pl.DataFrame:
    """Feedback with its own features (if any) moved to ``_OWN``."""
    frame = _with_feedback_columns(feedback)
    if "features" in frame.columns:
        return frame.rename({"features": _OWN})
    return frame.with_columns(pl.lit(None, dtype=pl.Null).alias(_OWN))


def labeled_feedback(feedback: pl.DataFrame, policy: LabelPolicy | None = None) -> pl.DataFrame:
    """The feedback rows ``policy`` labels, before any prediction is joined.

    Columns: ``event_id``, ``log_offset``, ``timestamp``, ``prediction_id``, ``source``,
    ``user_id``, the label (``LABEL_COLUMN``), its source (``LABEL_SOURCE_COLUMN``), the
    feedback's own features (``OWN_FEATURES_COLUMN``, null when it carries none) and the
    ``CARRIED_COLUMNS`` present. Raises :class:`UnknownSignalError` as
    :func:`attribute_feedback` does.
    """
    policy = policy or LabelPolicy()
    label, source, reason = _label_exprs(policy)
    carried = [c for c in CARRIED_COLUMNS if c in feedback.columns]
    frame = _subjects(feedback).with_columns(
        label.alias(_LABEL), source.alias(_SOURCE), reason.alias(_REASON)
    )
    if not policy.ignore_unknown:
        unknown = frame.filter(pl.col(_REASON) == UNKNOWN_SIGNAL)
        if unknown.height:
            counts = unknown.group_by("signal").len()
            raise UnknownSignalError(dict(zip(counts["signal"], counts["len"], strict=True)))
    return frame.filter(pl.col(_LABEL).is_not_null()).select(
        "event_id",
        "log_offset",
        "timestamp",
        pl.col("prediction_id").cast(pl.String),
        "source",
        "user_id",
        _LABEL,
        _SOURCE,
        _OWN,
        *carried,
    )


def attribute_feedback(
    feedback: pl.DataFrame,
    predictions: pl.DataFrame | None,
    policy: LabelPolicy | None = None,
) -> pl.DataFrame:
    """Labeled examples: each labeled feedback event with the features the model saw.

    One row per feedback event that ``policy`` labels and that has features: its own,
    or (when it carries none) those of the first logged prediction with its
    ``prediction_id``. Columns (see ``EXAMPLE_COLUMNS``): the feedback's ``event_id``,
    ``log_offset``, ``timestamp``, ``prediction_id``, ``source`` and ``user_id``; the
    prediction's ``prediction_time``, ``model_version``, ``arm`` and
    ``served_prediction`` (null when it is not in the log); ``label`` (a string),
    ``label_source`` (``explicit`` or ``implicit:<signal>``) and ``features``, a struct
    whose fields are the union of the own and logged feature sets (a row's missing
    fields are null). ``status`` and ``reason`` of validated feedback are carried as
    they are. Sorted by ``(timestamp, log_offset)``.

    Raises :class:`UnknownSignalError` when the policy does not ignore unknown signals
    and some implicit feedback has one.
    """
    carried = [c for c in CARRIED_COLUMNS if c in feedback.columns]
    frame = labeled_feedback(feedback, policy)
    joined = _join_predictions(frame, predictions)
    has_own = pl.col(_OWN).is_not_null()
    resolved = has_own | pl.col(_MATCHED).fill_null(False)
    features = _features_expr(
        _struct_fields(joined, _OWN), _struct_fields(joined, _LOGGED), has_own
    )
    return (
        joined.filter(resolved)
        .select(
            "event_id",
            pl.col("log_offset").cast(pl.Int64),
            "timestamp",
            "prediction_id",
            "prediction_time",
            "model_version",
            "arm",
            "served_prediction",
            pl.col(_LABEL).cast(pl.String).alias("label"),
            pl.col(_SOURCE).alias("label_source"),
            pl.col("source").cast(pl.String),
            pl.col("user_id").cast(pl.String),
            features.alias("features"),
            *carried,
        )
        .sort(["timestamp", "log_offset"], maintain_order=True)
    )


def unattributed(feedback: pl.DataFrame, predictions: pl.DataFrame | None) -> pl.DataFrame:
    """Feedback rows with no features to learn from: none of their own and no logged
    prediction with their ``prediction_id`` (not yet, or never, logged).

    Returned with all their columns, sorted by ``(timestamp, log_offset)``, whatever
    their label; they become examples once the prediction is in the log.
    """
    frame = _subjects(feedback)
    missing = pl.col(_OWN).is_null()
    if predictions is not None and predictions.height and "prediction_id" in predictions.columns:
        ids = predictions["prediction_id"].cast(pl.String).drop_nulls().unique()
        missing = missing & ~pl.col("prediction_id").is_in(ids.implode()).fill_null(False)
    return (
        frame.filter(missing)
        .rename({_OWN: "features"} if "features" in feedback.columns else {})
        .select(feedback.columns)
        .sort(["timestamp", "log_offset"], maintain_order=True)
    )


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if column not in frame.columns or frame.height == 0:
        return {}
    counted = frame.group_by(pl.col(column).cast(pl.String).fill_null(NO_VALUE)).len()
    return {str(k): int(n) for k, n in sorted(counted.iter_rows(), key=lambda r: str(r[0]))}


def attribution_summary(
    examples: pl.DataFrame,
    *,
    unlabeled_rows: pl.DataFrame | None = None,
    unattributed_rows: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Counts of examples by ``label_source``, ``model_version``, ``arm`` and ``label``
    (nulls under ``"(none)"``, keys sorted): JSON-ready for asset metadata.

    Given the outputs of :func:`unlabeled` / :func:`unattributed`, also how many
    feedback rows were left out and why.
    """
    summary: dict[str, Any] = {
        "examples": examples.height,
        "by_label_source": _counts(examples, "label_source"),
        "by_model_version": _counts(examples, "model_version"),
        "by_arm": _counts(examples, "arm"),
        "by_label": _counts(examples, "label"),
    }
    if unlabeled_rows is not None:
        summary["unlabeled"] = unlabeled_rows.height
        summary["unlabeled_by_reason"] = _counts(unlabeled_rows, "unlabeled_reason")
        unknown = (
            unlabeled_rows.filter(pl.col("unlabeled_reason") == UNKNOWN_SIGNAL)
            if "unlabeled_reason" in unlabeled_rows.columns
            else unlabeled_rows.clear()
        )
        summary["unknown_signals"] = _counts(unknown, "signal")
    if unattributed_rows is not None:
        summary["unattributed"] = unattributed_rows.height
    return summary

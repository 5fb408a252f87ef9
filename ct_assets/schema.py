"""Payload schema v1 of the events ct_assets accepts, and the rules that reject bad ones.

Two kinds of event share one envelope (``event_id``, ``kind``, ``schema_version``,
``timestamp``, ``received_at``):

* ``prediction``: a model's answer as it was served (features, model version, arm).
* ``feedback``: what happened afterwards, ``explicit`` (a label) or ``implicit``
  (a signal such as ``click``), attributed to a ``prediction_id`` or carrying its
  own ``features``.

Decoding is done by msgspec against these structs (unknown fields are rejected),
then by :func:`check_event` for rules a type cannot express. Every problem is
reported as a :class:`FieldError` naming the record index (or line), the field
and what is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec

SCHEMA_VERSION: Literal[1] = 1

EventKind = Literal["prediction", "feedback"]

MAX_ID_CHARS = 128
MAX_STRING_CHARS = 1024
MAX_FEATURES = 512

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
# Integers are 64-bit: what Parquet, Polars, DuckDB and LightGBM can hold.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
FeatureValue = Int64 | float | bool | Text | None
Label = Int64 | float | bool | Text
Features = Annotated[dict[Name, FeatureValue], msgspec.Meta(max_length=MAX_FEATURES)]


class ReasonCode(StrEnum):
    """Why an event was rejected or quarantined. Stable: metrics and reports use them."""

    MALFORMED = "malformed"
    SCHEMA = "schema"
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    NOT_FINITE = "not_finite"
    FUTURE_TIMESTAMP = "future_timestamp"
    MISSING_SUBJECT = "missing_subject"
    MISSING_LABEL = "missing_label"
    MISSING_SIGNAL = "missing_signal"
    TOO_LARGE = "too_large"
    STRING_TOO_LONG = "string_too_long"
    NESTED_VALUE = "nested_value"
    TOO_DEEP = "too_deep"
    WRONG_KIND = "wrong_kind"
    EMPTY_BATCH = "empty_batch"
    OUT_OF_RANGE = "out_of_range"
    #: POST /v1/predict: a client-given prediction_id another request already used (409)
    DUPLICATE_PREDICTION_ID = "duplicate_prediction_id"


# gc=False: events hold only scalars and dicts of scalars (no reference cycles), so the
# garbage collector need not track them; batches of thousands stay cheap to allocate.
class PredictionEvent(
    msgspec.Struct,
    tag_field="kind",
    tag="prediction",
    forbid_unknown_fields=True,
    kw_only=True,
    gc=False,
):
    event_id: Id
    prediction_id: Id
    timestamp: Timestamp
    features: Features
    prediction: Label
    scores: dict[Name, float] | None = None
    model_name: Name | None = None
    model_version: Name | None = None
    arm: Name | None = None
    entity_id: Id | None = None
    schema_version: Literal[1] = SCHEMA_VERSION
    received_at: Timestamp | None = None


class FeedbackEvent(
    msgspec.Struct,
    tag_field="kind",
    tag="feedback",
    forbid_unknown_fields=True,
    kw_only=True,
    gc=False,
):
    event_id: Id
    timestamp: Timestamp
    feedback_type: Literal["explicit", "implicit"]
    prediction_id: Id | None = None
    features: Features | None = None
    label: Label | None = None
    signal: Name | None = None
    value: float | None = None
    entity_id: Id | None = None
    user_id: Id | None = None
    source: Name | None = None
    schema_version: Literal[1] = SCHEMA_VERSION
    received_at: Timestamp | None = None


Event = PredictionEvent | FeedbackEvent
EVENT_TYPES: dict[EventKind, type[PredictionEvent] | type[FeedbackEvent]] = {
    "prediction": PredictionEvent,
    "feedback": FeedbackEvent,
}


class FieldError(msgspec.Struct, frozen=True):
    """One problem with one record: ``index`` is 0-based within its batch or file."""

    index: int
    field: str
    message: str
    reason: str = ReasonCode.SCHEMA.value


class EventValidationError(ValueError):
    """A batch holds records that are not valid events; nothing of it may be stored."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        first = self.errors[0] if self.errors else None
        summary = f"{len(self.errors)} invalid record(s)"
        if first is not None:
            summary += f"; first: record {first.index}, field {first.field!r}: {first.message}"
        super().__init__(summary)


_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD_IN_MESSAGE_RE = re.compile(r"field `(?P<name>[^`]+)`")
_INT_RANGE_RE = re.compile(r"^Expected `int` [<>]= ")
# an object or array where a scalar (feature value, label, ...) was expected
_NESTED_RE = re.compile(r"^Expected `[^`]*\b(str|int|float|bool)\b[^`]*`, got `(object|array)`")


def decode_field_error(
    index: int, exc: msgspec.ValidationError | msgspec.DecodeError
) -> FieldError:
    """Turn a msgspec message ("Expected `int`, got `str` - at `$.label`") into a FieldError."""
    text = str(exc)
    path = ""
    match = _PATH_RE.search(text)
    if match:
        path = match.group("path").lstrip(".")
        text = text[: match.start()]
    named = _FIELD_IN_MESSAGE_RE.search(text)
    if named and ("unknown field" in text or "missing required field" in text):
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    if isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError):
        reason = ReasonCode.MALFORMED
    elif "unknown field" in text:
        reason = ReasonCode.UNKNOWN_FIELD
    elif text.startswith("Number out of range"):
        reason = ReasonCode.NOT_FINITE
    elif _INT_RANGE_RE.match(text):
        reason = ReasonCode.OUT_OF_RANGE
    elif path == "kind" and text.startswith("Invalid value"):
        reason = ReasonCode.WRONG_KIND
    elif _NESTED_RE.match(text):
        reason = ReasonCode.NESTED_VALUE
    elif " of length <= " in text:
        reason = ReasonCode.STRING_TOO_LONG if "`str` of length" in text else ReasonCode.TOO_LARGE
    elif "missing required field" in text:
        reason = ReasonCode.MISSING_FIELD
    else:
        reason = ReasonCode.SCHEMA
    return FieldError(index=index, field=path or "$", message=text, reason=reason.value)


def _non_finite(values: Iterable[Any]) -> bool:
    return any(isinstance(v, float) and not math.isfinite(v) for v in values)


MIN_YEAR, MAX_YEAR = 1, 9999


def _representable(timestamp: datetime) -> bool:
    """Whether the timestamp has a UTC date (near year 1 or 9999 an offset can overflow)."""
    try:
        timestamp.astimezone(UTC)
    except OverflowError:
        return False
    return True


def check_event(
    event: Event,
    index: int,
    now: datetime | None = None,
    max_skew: timedelta | None = None,
    check_finite: bool = True,
) -> list[FieldError]:
    """Rules beyond types: finite numbers, a subject for feedback, no timestamps from the future.

    ``check_finite=False`` skips the finiteness checks for events decoded from JSON,
    which cannot express NaN or infinity (msgspec rejects them and out-of-range numbers).
    """
    errors: list[FieldError] = []
    now = now or datetime.now(UTC)
    skew = max_skew if max_skew is not None else timedelta(minutes=5)
    if not MIN_YEAR < event.timestamp.year < MAX_YEAR and not _representable(event.timestamp):
        return [
            FieldError(
                index,
                "timestamp",
                f"{event.timestamp.isoformat()} is out of range in UTC",
                ReasonCode.SCHEMA.value,
            )
        ]
    if event.timestamp > now + skew:
        errors.append(
            FieldError(
                index,
                "timestamp",
                f"{event.timestamp.isoformat()} is more than {skew} in the future",
                ReasonCode.FUTURE_TIMESTAMP.value,
            )
        )
    if check_finite and event.features is not None and _non_finite(event.features.values()):
        errors.append(
            FieldError(
                index, "features", "NaN or infinite feature value", ReasonCode.NOT_FINITE.value
            )
        )
    if isinstance(event, PredictionEvent):
        if check_finite and (
            (event.scores and _non_finite(event.scores.values())) or _non_finite([event.prediction])
        ):
            errors.append(
                FieldError(index, "scores", "NaN or infinite score", ReasonCode.NOT_FINITE.value)
            )
        return errors
    if event.prediction_id is None and event.features is None:
        errors.append(
            FieldError(
                index,
                "prediction_id",
                "feedback needs a prediction_id or its own features",
                ReasonCode.MISSING_SUBJECT.value,
            )
        )
    if event.feedback_type == "explicit" and event.label is None:
        errors.append(
            FieldError(
                index, "label", "explicit feedback needs a label", ReasonCode.MISSING_LABEL.value
            )
        )
    if event.feedback_type == "implicit" and event.signal is None:
        errors.append(
            FieldError(
                index,
                "signal",
                "implicit feedback needs a signal",
                ReasonCode.MISSING_SIGNAL.value,
            )
        )
    if check_finite and _non_finite([event.label, event.value]):
        errors.append(
            FieldError(
                index, "label", "NaN or infinite label or value", ReasonCode.NOT_FINITE.value
            )
        )
    return errors


_DECODERS: dict[EventKind | None, msgspec.json.Decoder[Any]] = {
    "prediction": msgspec.json.Decoder(PredictionEvent),
    "feedback": msgspec.json.Decoder(FeedbackEvent),
    None: msgspec.json.Decoder(Event),
}


def decode_json_event(
    raw: bytes | str, index: int, kind: EventKind | None = None
) -> Event | FieldError:
    """Decode one JSON object as an event of ``kind`` (or of the kind its ``kind`` field names)."""
    try:
        event: Event = _DECODERS[kind].decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return decode_field_error(index, exc)
    return event


def convert_record(
    record: Mapping[str, Any], index: int, kind: EventKind | None = None
) -> Event | FieldError:
    """Validate an already-parsed record (a CSV or Parquet row) as an event."""
    target: Any = EVENT_TYPES[kind] if kind else Event
    try:
        event: Event = msgspec.convert(dict(record), type=target, strict=False)
    except msgspec.ValidationError as exc:
        return decode_field_error(index, exc)
    return event


def validate_events(
    candidates: Sequence[Event | FieldError],
    now: datetime | None = None,
    max_skew: timedelta | None = None,
) -> list[Event]:
    """All events, or :class:`EventValidationError` listing every problem of every record."""
    errors: list[FieldError] = []
    events: list[Event] = []
    for index, item in enumerate(candidates):
        if isinstance(item, FieldError):
            errors.append(item)
            continue
        problems = check_event(item, index, now=now, max_skew=max_skew)
        if problems:
            errors.extend(problems)
        else:
            events.append(item)
    if errors:
        raise EventValidationError(errors)
    return events


def encode_event(event: Event) -> bytes:
    return msgspec.json.encode(event)


def kind_of(event: Event) -> EventKind:
    return "prediction" if isinstance(event, PredictionEvent) else "feedback"

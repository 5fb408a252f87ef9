"""Unit tests of ct_assets.schema: decoding, the rules of check_event, error reporting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from ct_assets import schema
from ct_assets.schema import (
    MAX_FEATURES,
    MAX_ID_CHARS,
    EventValidationError,
    FeedbackEvent,
    FieldError,
    PredictionEvent,
    ReasonCode,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
TS = "2024-06-01T11:00:00Z"


def prediction_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "prediction",
        "schema_version": 1,
        "event_id": "pe-1",
        "prediction_id": "pred-1",
        "timestamp": TS,
        "features": {"x0": 1.5, "n": 3, "flag": True, "channel": "web", "missing": None},
        "prediction": 1,
        "scores": {"0": 0.25, "1": 0.75},
        "model_name": "m",
        "model_version": "3",
        "arm": "champion",
        "entity_id": "entity-1",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not _DROP}


def feedback_record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "feedback",
        "schema_version": 1,
        "event_id": "fb-1",
        "timestamp": TS,
        "feedback_type": "explicit",
        "prediction_id": "pred-1",
        "label": 1,
        "user_id": "user-1",
        "source": "test",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP = object()  # an override value that removes the field


def validate_one(record: dict[str, Any], **kwargs: Any) -> list[schema.Event]:
    return schema.validate_events([schema.convert_record(record, 0)], now=NOW, **kwargs)


def errors_of(records: list[dict[str, Any]], **kwargs: Any) -> list[FieldError]:
    candidates = [schema.convert_record(r, i) for i, r in enumerate(records)]
    with pytest.raises(EventValidationError) as info:
        schema.validate_events(candidates, now=NOW, **kwargs)
    return info.value.errors


# --- valid events -----------------------------------------------------------------------------


def test_valid_prediction_event_decodes_from_json_with_every_field() -> None:
    event = schema.decode_json_event(json.dumps(prediction_record()), 0)
    assert isinstance(event, PredictionEvent)
    assert event.event_id == "pe-1"
    assert event.prediction_id == "pred-1"
    assert event.timestamp == datetime(2024, 6, 1, 11, 0, tzinfo=UTC)
    assert event.features == {"x0": 1.5, "n": 3, "flag": True, "channel": "web", "missing": None}
    assert event.scores == {"0": 0.25, "1": 0.75}
    assert (event.model_name, event.model_version, event.arm) == ("m", "3", "champion")
    assert event.schema_version == schema.SCHEMA_VERSION == 1
    assert event.received_at is None
    assert schema.kind_of(event) == "prediction"
    assert schema.validate_events([event], now=NOW) == [event]


def test_valid_explicit_and_implicit_feedback_events() -> None:
    explicit = schema.convert_record(feedback_record(), 0)
    implicit = schema.convert_record(
        feedback_record(
            event_id="fb-2", feedback_type="implicit", label=_DROP, signal="click", value=1.0
        ),
        1,
    )
    own_features = schema.convert_record(
        feedback_record(event_id="fb-3", prediction_id=_DROP, features={"x0": 0.5}, label="cat"),
        2,
    )
    events = schema.validate_events([explicit, implicit, own_features], now=NOW)
    assert [type(e) for e in events] == [FeedbackEvent] * 3
    assert [e.event_id for e in events] == ["fb-1", "fb-2", "fb-3"]
    assert events[0].label == 1 and events[0].feedback_type == "explicit"
    assert events[1].signal == "click" and events[1].value == 1.0 and events[1].label is None
    assert events[2].features == {"x0": 0.5} and events[2].prediction_id is None
    assert all(schema.kind_of(e) == "feedback" for e in events)


def test_kind_tag_selects_the_struct_and_explicit_kind_must_match() -> None:
    raw = json.dumps(feedback_record())
    assert isinstance(schema.decode_json_event(raw, 0), FeedbackEvent)
    assert isinstance(schema.decode_json_event(raw, 0, kind="feedback"), FeedbackEvent)
    mismatch = schema.decode_json_event(raw, 4, kind="prediction")
    assert isinstance(mismatch, FieldError)
    assert (mismatch.index, mismatch.field) == (4, "kind")


def test_encode_then_decode_roundtrips() -> None:
    event = schema.convert_record(prediction_record(), 0)
    assert isinstance(event, PredictionEvent)
    again = schema.decode_json_event(schema.encode_event(event), 0)
    assert again == event
    assert json.loads(schema.encode_event(event))["kind"] == "prediction"


def test_offset_timestamps_are_kept_as_the_same_instant() -> None:
    event = schema.convert_record(prediction_record(timestamp="2024-06-01T13:00:00+02:00"), 0)
    assert isinstance(event, PredictionEvent)
    assert event.timestamp == datetime(2024, 6, 1, 11, 0, tzinfo=UTC)


# --- structural errors ------------------------------------------------------------------------


@pytest.mark.parametrize("decode", ["json", "convert"])
def test_unknown_field_is_rejected_and_named(decode: str) -> None:
    record = feedback_record(colour="red")
    error = (
        schema.decode_json_event(json.dumps(record), 7)
        if decode == "json"
        else schema.convert_record(record, 7)
    )
    assert isinstance(error, FieldError)
    assert error.index == 7
    assert error.field == "colour"
    assert error.reason == ReasonCode.UNKNOWN_FIELD == "unknown_field"
    assert "colour" in error.message


@pytest.mark.parametrize(
    ("record", "missing"),
    [
        (prediction_record(event_id=_DROP), "event_id"),
        (prediction_record(prediction_id=_DROP), "prediction_id"),
        (prediction_record(features=_DROP), "features"),
        (prediction_record(prediction=_DROP), "prediction"),
        (feedback_record(timestamp=_DROP), "timestamp"),
        (feedback_record(feedback_type=_DROP), "feedback_type"),
        (feedback_record(kind=_DROP), "kind"),
    ],
)
def test_missing_required_field_is_named(record: dict[str, Any], missing: str) -> None:
    for error in (
        schema.decode_json_event(json.dumps(record), 2),
        schema.convert_record(record, 2),
    ):
        assert isinstance(error, FieldError)
        assert error.index == 2
        assert error.field == missing
        assert error.reason == ReasonCode.MISSING_FIELD


@pytest.mark.parametrize(
    ("record", "field", "reason"),
    [
        (feedback_record(feedback_type=5), "feedback_type", ReasonCode.SCHEMA),
        (feedback_record(feedback_type="sometimes"), "feedback_type", ReasonCode.SCHEMA),
        (feedback_record(event_id=12), "event_id", ReasonCode.SCHEMA),
        (feedback_record(event_id=""), "event_id", ReasonCode.SCHEMA),
        (
            feedback_record(event_id="x" * (MAX_ID_CHARS + 1)),
            "event_id",
            ReasonCode.STRING_TOO_LONG,
        ),
        (feedback_record(value="high"), "value", ReasonCode.SCHEMA),
        (feedback_record(label=[1, 2]), "label", ReasonCode.NESTED_VALUE),
        (feedback_record(label={"a": 1}), "label", ReasonCode.NESTED_VALUE),
        (feedback_record(schema_version=2), "schema_version", ReasonCode.SCHEMA),
        (feedback_record(kind="review"), "kind", ReasonCode.WRONG_KIND),
        (prediction_record(features=[1, 2]), "features", ReasonCode.SCHEMA),
        (prediction_record(scores={"1": "high"}), "scores", ReasonCode.SCHEMA),
        (prediction_record(timestamp="yesterday"), "timestamp", ReasonCode.SCHEMA),
    ],
)
def test_wrong_type_is_rejected_with_a_reason_and_field(
    record: dict[str, Any], field: str, reason: ReasonCode
) -> None:
    error = schema.decode_json_event(json.dumps(record), 0)
    assert isinstance(error, FieldError)
    assert error.field.startswith(field)
    assert error.reason == reason
    assert error.message


@pytest.mark.parametrize("value", [[1], {"b": 1}])
def test_nested_feature_value_is_rejected_as_nested(value: object) -> None:
    error = schema.decode_json_event(json.dumps(prediction_record(features={"a": value})), 0)
    assert isinstance(error, FieldError)
    assert error.field.startswith("features")
    assert error.reason == ReasonCode.NESTED_VALUE


def test_timestamp_without_a_utc_date_is_rejected() -> None:
    event = schema.decode_json_event(
        json.dumps(feedback_record(timestamp="0001-01-01T00:00:00+01:00")), 0
    )
    assert isinstance(event, FeedbackEvent)
    (error,) = schema.check_event(event, 0)
    assert (error.field, error.reason) == ("timestamp", ReasonCode.SCHEMA)
    assert "out of range" in error.message


def test_too_many_features_are_rejected() -> None:
    features = {f"f{i}": i for i in range(MAX_FEATURES + 1)}
    error = schema.convert_record(prediction_record(features=features), 0)
    assert isinstance(error, FieldError)
    assert error.field == "features"
    ok = schema.convert_record(prediction_record(features=dict(list(features.items())[:-1])), 0)
    assert isinstance(ok, PredictionEvent)


@pytest.mark.parametrize("naive", ["2024-06-01T11:00:00", datetime(2024, 6, 1, 11, 0)])
def test_naive_timestamp_is_rejected(naive: Any) -> None:
    error = schema.convert_record(feedback_record(timestamp=naive), 3)
    assert isinstance(error, FieldError)
    assert (error.index, error.field, error.reason) == (3, "timestamp", "schema")
    assert "timezone" in error.message


def test_malformed_json_is_reported_as_malformed() -> None:
    for raw in (b'{"kind": "feedback", ', b"not json", b'{"features": {"x": NaN}}'):
        error = schema.decode_json_event(raw, 5)
        assert isinstance(error, FieldError)
        assert (error.index, error.field, error.reason) == (5, "$", ReasonCode.MALFORMED)


# --- rules beyond types -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_feature_is_rejected(bad: float) -> None:
    record = prediction_record(features={"x0": 1.0, "x1": bad})
    event = schema.convert_record(record, 0)
    assert isinstance(event, PredictionEvent)  # the type allows it, the rule does not
    errors = errors_of([record])
    assert [(e.index, e.field, e.reason) for e in errors] == [(0, "features", "not_finite")]


def test_non_finite_feature_in_feedback_is_rejected() -> None:
    record = feedback_record(prediction_id=_DROP, features={"x": float("nan")})
    errors = errors_of([record])
    assert [(e.field, e.reason) for e in errors] == [("features", "not_finite")]


def test_non_finite_score_prediction_label_and_value_are_rejected() -> None:
    errors = errors_of(
        [
            prediction_record(scores={"1": float("nan")}),
            prediction_record(prediction=float("inf")),
            feedback_record(label=float("nan")),
            feedback_record(feedback_type="implicit", signal="dwell", value=float("-inf")),
        ]
    )
    assert [(e.index, e.field, e.reason) for e in errors] == [
        (0, "scores", "not_finite"),
        (1, "scores", "not_finite"),
        (2, "label", "not_finite"),
        (3, "label", "not_finite"),
    ]


def test_future_timestamp_beyond_skew_is_rejected() -> None:
    skew = timedelta(minutes=5)
    at_limit = (NOW + skew).isoformat()
    beyond = (NOW + skew + timedelta(seconds=1)).isoformat()
    assert validate_one(feedback_record(timestamp=at_limit))  # exactly the skew: accepted
    errors = errors_of([feedback_record(timestamp=beyond)])
    assert [(e.index, e.field, e.reason) for e in errors] == [(0, "timestamp", "future_timestamp")]


def test_custom_max_skew_is_honoured() -> None:
    ts = (NOW + timedelta(minutes=30)).isoformat()
    errors_of([feedback_record(timestamp=ts)])  # the default 5 minutes rejects it
    assert validate_one(feedback_record(timestamp=ts), max_skew=timedelta(hours=1))
    assert validate_one(feedback_record(timestamp=NOW.isoformat()), max_skew=timedelta(0))
    one_second = (NOW + timedelta(seconds=1)).isoformat()
    errors = errors_of([feedback_record(timestamp=one_second)], max_skew=timedelta(0))
    assert [e.reason for e in errors] == ["future_timestamp"]


def test_default_now_is_the_wall_clock() -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with pytest.raises(EventValidationError) as info:
        schema.validate_events([schema.convert_record(feedback_record(timestamp=future), 0)])
    assert info.value.errors[0].reason == "future_timestamp"
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert schema.validate_events([schema.convert_record(feedback_record(timestamp=past), 0)])


def test_explicit_feedback_without_label_is_rejected() -> None:
    errors = errors_of([feedback_record(label=_DROP)])
    assert [(e.index, e.field, e.reason) for e in errors] == [(0, "label", "missing_label")]


def test_implicit_feedback_without_signal_is_rejected() -> None:
    errors = errors_of([feedback_record(feedback_type="implicit", label=_DROP)])
    assert [(e.index, e.field, e.reason) for e in errors] == [(0, "signal", "missing_signal")]


def test_implicit_feedback_may_carry_a_label_but_explicit_needs_no_signal() -> None:
    events = validate_one(feedback_record(feedback_type="implicit", signal="click"))
    assert events[0].label == 1


def test_feedback_without_prediction_id_and_features_is_rejected() -> None:
    errors = errors_of([feedback_record(prediction_id=_DROP)])
    assert [(e.index, e.field, e.reason) for e in errors] == [
        (0, "prediction_id", "missing_subject")
    ]
    # either one is enough
    assert validate_one(feedback_record())
    assert validate_one(feedback_record(prediction_id=_DROP, features={"x": 1}))


def test_one_record_can_break_several_rules_at_once() -> None:
    future = (NOW + timedelta(days=1)).isoformat()
    errors = errors_of([feedback_record(timestamp=future, prediction_id=_DROP, label=_DROP)])
    assert {e.reason for e in errors} == {"future_timestamp", "missing_subject", "missing_label"}
    assert {e.index for e in errors} == {0}


def test_validation_error_lists_every_error_with_its_index() -> None:
    records = [
        feedback_record(event_id="ok-0"),
        feedback_record(event_id="bad-1", colour="red"),
        feedback_record(event_id="ok-2"),
        feedback_record(event_id="bad-3", label=_DROP),
        prediction_record(event_id="bad-4", features={"x": float("nan")}),
        feedback_record(event_id=_DROP),
    ]
    errors = errors_of(records)
    assert [(e.index, e.field, e.reason) for e in errors] == [
        (1, "colour", "unknown_field"),
        (3, "label", "missing_label"),
        (4, "features", "not_finite"),
        (5, "event_id", "missing_field"),
    ]
    with pytest.raises(EventValidationError) as info:
        schema.validate_events([schema.convert_record(r, i) for i, r in enumerate(records)])
    assert "4 invalid record(s)" in str(info.value)
    assert "record 1" in str(info.value) and "colour" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_validate_events_returns_events_in_input_order() -> None:
    records = [feedback_record(event_id=f"fb-{i}") for i in range(5)]
    events = schema.validate_events([schema.convert_record(r, i) for i, r in enumerate(records)])
    assert [e.event_id for e in events] == [f"fb-{i}" for i in range(5)]


def test_empty_validation_error_has_a_summary() -> None:
    error = EventValidationError([])
    assert error.errors == []
    assert "0 invalid record(s)" in str(error)


def test_field_errors_are_immutable_values() -> None:
    error = FieldError(1, "label", "bad")
    assert error.reason == "schema"
    assert error == FieldError(1, "label", "bad", "schema")
    with pytest.raises(AttributeError):
        error.index = 2  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(error), type=FieldError) == error

"""Unit tests of event files (ct_assets.eventlog.files): NDJSON, CSV, Parquet, whole-file checks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ct_assets.eventlog import EventLog
from ct_assets.eventlog.files import (
    UnsupportedFileError,
    file_format,
    load_events,
    location_of,
)
from ct_assets.schema import EventValidationError, FeedbackEvent, PredictionEvent
from ct_assets.simulate import SimulationSpec, simulate_events, write_ndjson

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def pred(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "prediction",
        "event_id": f"pe-{i}",
        "prediction_id": f"pred-{i}",
        "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
        "features": {"x": i * 0.5, "channel": "web"},
        "prediction": 1,
        **extra,
    }


def fb(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "feedback",
        "event_id": f"fb-{i}",
        "timestamp": (T0 + timedelta(minutes=i, seconds=30)).isoformat(),
        "feedback_type": "explicit",
        "prediction_id": f"pred-{i}",
        "label": i % 2,
        **extra,
    }


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def errors_of(path: Path, kind: Any = None) -> list[tuple[int, str, str]]:
    with pytest.raises(EventValidationError) as info:
        load_events(path, kind)
    return [(e.index, e.field, e.reason) for e in info.value.errors]


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.ndjson", "ndjson"),
        ("a.jsonl", "ndjson"),
        ("a.json", "ndjson"),
        ("A.NDJSON", "ndjson"),
        ("a.csv", "csv"),
        ("a.CSV", "csv"),
        ("a.parquet", "parquet"),
        ("a.pq", "parquet"),
    ],
)
def test_file_format_by_suffix(name: str, fmt: str) -> None:
    assert file_format(Path(name)) == fmt


@pytest.mark.parametrize("name", ["events.txt", "events.xlsx", "events", "events.csv.gz"])
def test_unsupported_suffix_raises(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(pred(0)) + "\n")
    with pytest.raises(UnsupportedFileError, match="unknown format"):
        load_events(path)
    with pytest.raises(UnsupportedFileError):
        location_of(path)
    assert issubclass(UnsupportedFileError, ValueError)


def test_location_of_maps_record_index_to_line() -> None:
    assert location_of(Path("x.ndjson")).line(0) == 1
    assert location_of(Path("x.ndjson")).line(4) == 5
    assert location_of(Path("x.csv")).line(0) == 2  # after the header
    assert location_of(Path("x.csv")).line(4) == 6
    assert location_of(Path("x.parquet")).line(3) == 4


# --- NDJSON -----------------------------------------------------------------------------------


def test_ndjson_valid_file_loads_every_event_in_order(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "events.ndjson", [json.dumps(r) for r in (pred(0), fb(0), pred(1), fb(1))]
    )
    events = load_events(path)
    assert [e.event_id for e in events] == ["pe-0", "fb-0", "pe-1", "fb-1"]
    assert [type(e) for e in events] == [PredictionEvent, FeedbackEvent] * 2
    assert events[2].features == {"x": 0.5, "channel": "web"}
    assert events[3].label == 1


def test_ndjson_bad_json_line_is_located(tmp_path: Path) -> None:
    lines = [json.dumps(pred(0)), json.dumps(fb(0)), '{"kind": "prediction", "event_id": ']
    path = write_lines(tmp_path / "events.ndjson", [*lines, json.dumps(pred(1))])
    errors = errors_of(path)
    assert errors == [(2, "$", "malformed")]
    assert location_of(path).line(errors[0][0]) == 3


def test_ndjson_wrong_type_is_located(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "events.jsonl",
        [json.dumps(pred(0)), json.dumps(fb(0, feedback_type=7)), json.dumps(pred(1))],
    )
    errors = errors_of(path)
    assert errors == [(1, "feedback_type", "schema")]
    assert location_of(path).line(1) == 2


def test_ndjson_missing_field_is_located(tmp_path: Path) -> None:
    missing = fb(3)
    del missing["timestamp"]
    path = write_lines(
        tmp_path / "events.ndjson",
        [json.dumps(pred(0)), json.dumps(fb(0)), json.dumps(pred(3)), json.dumps(missing)],
    )
    errors = errors_of(path)
    assert errors == [(3, "timestamp", "missing_field")]
    assert location_of(path).line(3) == 4


def test_ndjson_every_bad_line_is_reported_and_rules_apply(tmp_path: Path) -> None:
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    no_label = fb(4)
    del no_label["label"]
    path = write_lines(
        tmp_path / "events.ndjson",
        [
            json.dumps(pred(0)),
            "not json",
            "",
            json.dumps(pred(3, extra_field=1)),
            json.dumps(no_label),
            json.dumps(pred(5, timestamp=future)),
            json.dumps(fb(6)),
        ],
    )
    errors = errors_of(path)
    assert errors == [
        (1, "$", "malformed"),
        (2, "$", "malformed"),
        (3, "extra_field", "unknown_field"),
        (4, "label", "missing_label"),
        (5, "timestamp", "future_timestamp"),
    ]
    loc = location_of(path)
    assert [loc.line(i) for i, _, _ in errors] == [2, 3, 4, 5, 6]


def test_ndjson_kind_restricts_the_accepted_events(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "fb.ndjson", [json.dumps(fb(0)), json.dumps(pred(1))])
    assert errors_of(path, "feedback") == [(1, "kind", "wrong_kind")]
    only_fb = write_lines(tmp_path / "only.ndjson", [json.dumps(fb(0)), json.dumps(fb(1))])
    assert [e.event_id for e in load_events(only_fb, "feedback")] == ["fb-0", "fb-1"]


def test_ndjson_written_by_the_simulator_loads(tmp_path: Path) -> None:
    spec = SimulationSpec(rows=25, seed=3, kind="both", drift="none", end=T0)
    out = tmp_path / "sim" / "events.ndjson"
    assert write_ndjson(simulate_events(spec), out) == 50
    assert not out.with_name(out.name + ".tmp").exists()
    events = load_events(out)
    assert len(events) == 50
    assert sum(isinstance(e, PredictionEvent) for e in events) == 25
    log = EventLog(tmp_path / "log")
    assert log.append(events).accepted == 50
    assert log.append(load_events(out)).duplicates == 50


# --- CSV --------------------------------------------------------------------------------------


def test_csv_flat_feature_columns_become_nested_features(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "kind,event_id,prediction_id,timestamp,prediction,features.x,features.channel,"
        "scores.0,scores.1\n"
        "prediction,pe-0,pred-0,2024-03-01T00:00:00Z,1,1.5,web,0.25,0.75\n"
        "prediction,pe-1,pred-1,2024-03-01T00:01:00+00:00,0,2.5,,0.6,0.4\n"
    )
    events = load_events(path)
    assert [type(e) for e in events] == [PredictionEvent, PredictionEvent]
    first, second = events
    assert isinstance(first, PredictionEvent) and isinstance(second, PredictionEvent)
    assert first.features == {"x": 1.5, "channel": "web"}
    assert second.features == {"x": 2.5}  # empty cell: absent
    assert first.scores == {"0": 0.25, "1": 0.75}
    assert first.timestamp == T0
    assert first.prediction == 1


def test_csv_mixed_kinds_leave_out_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "kind,event_id,prediction_id,timestamp,prediction,feedback_type,label,features.x\n"
        "prediction,pe-0,pred-0,2024-03-01T00:00:00Z,1,,,0.5\n"
        "feedback,fb-0,pred-0,2024-03-01T00:00:30Z,,explicit,yes,\n"
        "feedback,fb-1,,2024-03-01T00:00:40Z,,explicit,no,3.0\n"
    )
    events = load_events(path)
    assert [e.event_id for e in events] == ["pe-0", "fb-0", "fb-1"]
    assert isinstance(events[1], FeedbackEvent) and isinstance(events[2], FeedbackEvent)
    assert events[1].features is None and events[1].label == "yes"
    assert events[2].prediction_id is None and events[2].features == {"x": 3.0}


def test_csv_errors_are_located_after_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "kind,event_id,timestamp,feedback_type,label,prediction_id\n"
        "feedback,fb-0,2024-03-01T00:00:00Z,explicit,1,p0\n"
        "feedback,fb-1,2024-03-01T00:00:00Z,sometimes,1,p1\n"
        "feedback,fb-2,2024-03-01T00:00:00,explicit,1,p2\n"
        "feedback,fb-3,2024-03-01T00:00:00Z,explicit,,p3\n"
    )
    errors = errors_of(path)
    assert errors == [
        (1, "feedback_type", "schema"),
        (2, "timestamp", "schema"),
        (3, "label", "missing_label"),
    ]
    assert [location_of(path).line(i) for i, _, _ in errors] == [3, 4, 5]


def test_csv_unknown_column_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "kind,event_id,timestamp,feedback_type,label,prediction_id,colour\n"
        "feedback,fb-0,2024-03-01T00:00:00Z,explicit,1,p0,red\n"
    )
    assert errors_of(path) == [(0, "colour", "unknown_field")]


def test_csv_numeric_looking_ids_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text(
        "kind,event_id,timestamp,feedback_type,label,prediction_id\n"
        "feedback,1001,2024-03-01T00:00:00Z,explicit,1,42\n"
    )
    (event,) = load_events(path)
    assert isinstance(event, FeedbackEvent)
    assert (event.event_id, event.prediction_id) == ("1001", "42")


# --- Parquet ----------------------------------------------------------------------------------


def test_parquet_flat_feature_columns_become_nested_features(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pl.DataFrame(
        {
            "kind": ["feedback", "feedback"],
            "event_id": ["fb-0", "fb-1"],
            "timestamp": [T0, T0 + timedelta(hours=1)],
            "feedback_type": ["explicit", "explicit"],
            "label": [1, 0],
            "features.x": [0.5, None],
            "features.channel": ["app", "web"],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    ).write_parquet(path)
    events = load_events(path)
    assert [e.event_id for e in events] == ["fb-0", "fb-1"]
    assert events[0].features == {"x": 0.5, "channel": "app"}
    assert events[1].features == {"channel": "web"}
    assert events[1].timestamp == T0 + timedelta(hours=1)
    assert [e.label for e in events if isinstance(e, FeedbackEvent)] == [1, 0]


def test_parquet_struct_features_and_string_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "events.pq"
    pl.DataFrame(
        {
            "kind": ["prediction"],
            "event_id": ["pe-0"],
            "prediction_id": ["pred-0"],
            "timestamp": ["2024-03-01T00:00:00Z"],
            "features": [{"x": 1.0, "channel": "store"}],
            "prediction": ["yes"],
        }
    ).write_parquet(path)
    (event,) = load_events(path)
    assert isinstance(event, PredictionEvent)
    assert event.features == {"x": 1.0, "channel": "store"}
    assert event.timestamp == T0 and event.prediction == "yes"


def test_parquet_errors_are_reported_by_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    pl.DataFrame(
        {
            "kind": ["feedback"] * 3,
            "event_id": ["fb-0", "fb-1", "fb-2"],
            "timestamp": [datetime(2024, 3, 1)] * 3,  # naive: no time zone
            "feedback_type": ["explicit"] * 3,
            "label": [1, 0, 1],
            "prediction_id": ["p0", "p1", "p2"],
        }
    ).write_parquet(path)
    assert errors_of(path) == [(i, "timestamp", "schema") for i in range(3)]

    nan_path = tmp_path / "nan.parquet"
    pl.DataFrame(
        {
            "kind": ["feedback", "feedback"],
            "event_id": ["fb-0", "fb-1"],
            "timestamp": ["2024-03-01T00:00:00Z"] * 2,
            "feedback_type": ["explicit"] * 2,
            "label": [1, 0],
            "features.x": [1.0, float("nan")],
        }
    ).write_parquet(nan_path)
    assert errors_of(nan_path) == [(1, "features", "not_finite")]


def test_parquet_empty_strings_are_absent_like_empty_csv_cells(tmp_path: Path) -> None:
    path = tmp_path / "blank.parquet"
    pl.DataFrame(
        {
            "kind": ["feedback", "feedback"],
            "event_id": ["fb-0", "fb-1"],
            "timestamp": ["2024-03-01T00:00:00Z"] * 2,
            "feedback_type": ["explicit"] * 2,
            "label": [1, 0],
            "prediction_id": ["", "pred-1"],
            "features.channel": ["", "web"],
            "features.x": [1.0, 2.0],
        }
    ).write_parquet(path)
    first, second = load_events(path)
    assert isinstance(first, FeedbackEvent) and isinstance(second, FeedbackEvent)
    assert first.prediction_id is None and first.features == {"x": 1.0}
    assert second.prediction_id == "pred-1" and second.features == {"channel": "web", "x": 2.0}

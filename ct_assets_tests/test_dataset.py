"""Unit tests of dataset compilation (ct_assets.data.dataset)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ct_assets import schema
from ct_assets.data.dataset import (
    DatasetInfo,
    EmptyDatasetError,
    compile_dataset,
    dataset_version,
    labeled_examples,
    preview_markdown,
    read_dataset,
    write_dataset,
)
from ct_assets.eventlog import EventLog

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def pred(i: int, **features: Any) -> dict[str, Any]:
    return {
        "kind": "prediction",
        "event_id": f"pe-{i}",
        "prediction_id": f"pred-{i}",
        "timestamp": (T0 + timedelta(minutes=i)).isoformat(),
        "features": features or {"x": float(i), "channel": "web" if i % 2 else "app"},
        "prediction": 1,
    }


def fb(
    i: int,
    label: Any = None,
    minute: float | None = None,
    prediction_id: str | None = None,
    features: dict[str, Any] | None = None,
    feedback_type: str = "explicit",
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "feedback",
        "event_id": f"fb-{i}",
        "timestamp": (
            T0 + timedelta(minutes=i if minute is None else minute, seconds=30)
        ).isoformat(),
        "feedback_type": feedback_type,
    }
    if feedback_type == "explicit":
        record["label"] = i % 2 if label is None else label
    else:
        record["signal"] = "click"
    if prediction_id is not None:
        record["prediction_id"] = prediction_id
    if features is not None:
        record["features"] = features
    return record


def own(i: int, **kwargs: Any) -> dict[str, Any]:
    """Feedback carrying its own features."""
    return fb(i, features={"x": float(i), "channel": "web" if i % 2 else "app"}, **kwargs)


def log_of(root: Path, *batches: list[dict[str, Any]]) -> EventLog:
    log = EventLog(root)
    for records in batches:
        candidates = [schema.convert_record(r, i) for i, r in enumerate(records)]
        log.append(schema.validate_events(candidates, now=T0 + timedelta(days=365)))
    return log


def examples(root: Path, *batches: list[dict[str, Any]]) -> pl.DataFrame:
    log = log_of(root, *batches)
    return labeled_examples(log.read("feedback"), log.read("prediction"))


# --- labeled examples -------------------------------------------------------------------------


def test_labeled_examples_join_features_of_the_prediction(tmp_path: Path) -> None:
    ex = examples(
        tmp_path,
        [pred(0), pred(1), pred(2, x=7.0, channel="store")],
        [
            fb(0, prediction_id="pred-0"),
            fb(2, prediction_id="pred-2", label="spam"),
            fb(3, prediction_id="pred-unknown"),  # nothing to join: dropped
            fb(4, prediction_id="pred-1", feedback_type="implicit"),  # implicit: dropped
        ],
    )
    by_id = {row["event_id"]: row for row in ex.iter_rows(named=True)}
    assert set(by_id) == {"fb-0", "fb-2"}
    assert by_id["fb-0"]["features"] == {"x": 0.0, "channel": "app"}
    assert by_id["fb-2"]["features"] == {"x": 7.0, "channel": "store"}
    assert by_id["fb-2"]["label"] == "spam"


def test_own_features_win_over_the_predictions(tmp_path: Path) -> None:
    ex = examples(
        tmp_path,
        [pred(0), pred(1)],
        [
            fb(0, prediction_id="pred-0", features={"x": 100.0, "channel": "own"}),
            own(5),
            fb(1, prediction_id="pred-1"),
        ],
    )
    by_id = {row["event_id"]: row["features"] for row in ex.iter_rows(named=True)}
    assert by_id == {
        "fb-0": {"x": 100.0, "channel": "own"},
        "fb-5": {"x": 5.0, "channel": "web"},
        "fb-1": {"x": 1.0, "channel": "web"},
    }


def test_first_prediction_of_a_prediction_id_is_used(tmp_path: Path) -> None:
    first = pred(0, x=1.0, channel="a")
    second = {**pred(1, x=2.0, channel="b"), "prediction_id": "pred-0"}
    ex = examples(tmp_path, [first], [second], [fb(0, prediction_id="pred-0")])
    assert ex["features"].to_list() == [{"x": 1.0, "channel": "a"}]


def test_without_predictions_only_own_features_count(tmp_path: Path) -> None:
    log = log_of(tmp_path, [pred(0)], [fb(0, prediction_id="pred-0"), own(1)])
    fb_frame = log.read("feedback")
    assert labeled_examples(fb_frame, None)["event_id"].to_list() == ["fb-1"]
    empty_predictions = log.read("prediction").clear()
    assert labeled_examples(fb_frame, empty_predictions)["event_id"].to_list() == ["fb-1"]


def test_no_labeled_rows_raise_empty_dataset(tmp_path: Path) -> None:
    ex = examples(
        tmp_path,
        [pred(0)],
        [fb(0, prediction_id="pred-0", feedback_type="implicit"), fb(1, prediction_id="nope")],
    )
    assert ex.height == 0
    with pytest.raises(EmptyDatasetError):
        compile_dataset(ex, window=100, holdout_fraction=0.2)
    # feedback without any features column at all
    only_ids = examples(tmp_path / "b", [fb(0, prediction_id="pred-0")])
    assert only_ids.height == 0
    with pytest.raises(EmptyDatasetError):
        compile_dataset(only_ids, window=100, holdout_fraction=0.2)


def test_feedback_features_may_differ_from_prediction_features(tmp_path: Path) -> None:
    ex = examples(
        tmp_path,
        [pred(0, x=1.0, channel="web")],
        [fb(0, prediction_id="pred-0"), fb(1, features={"x": 5.0})],
    )
    assert sorted(ex["event_id"].to_list()) == ["fb-0", "fb-1"]


# --- compile ----------------------------------------------------------------------------------


def test_compiled_layout_and_feature_columns(tmp_path: Path) -> None:
    ex = examples(tmp_path, [own(i) for i in range(10)])
    ds = compile_dataset(ex, window=100, holdout_fraction=0.2)
    assert ds.columns == ["event_id", "log_offset", "timestamp", "label", "split", "channel", "x"]
    assert ds.height == 10
    assert ds["x"].to_list() == [float(i) for i in range(10)]
    assert ds["label"].to_list() == [str(i % 2) for i in range(10)]
    assert ds["split"].to_list() == ["train"] * 8 + ["holdout"] * 2


def test_holdout_is_the_latest_rows_by_time_not_by_log_order(tmp_path: Path) -> None:
    minutes = [50, 10, 40, 0, 30, 20, 90, 60, 80, 70]  # appended out of time order
    ex = examples(tmp_path, [own(i, minute=m) for i, m in enumerate(minutes)])
    ds = compile_dataset(ex, window=100, holdout_fraction=0.3)
    ts = ds["timestamp"].to_list()
    assert ts == sorted(ts)
    holdout = ds.filter(pl.col("split") == "holdout")
    train = ds.filter(pl.col("split") == "train")
    assert holdout.height == 3 and train.height == 7
    assert sorted(holdout["event_id"].to_list()) == ["fb-6", "fb-8", "fb-9"]  # 90, 80, 70
    assert train["timestamp"].max() < holdout["timestamp"].min()  # type: ignore[operator]


def test_equal_timestamps_are_ordered_by_log_offset(tmp_path: Path) -> None:
    ex = examples(tmp_path, [own(i, minute=0) for i in range(6)])
    ds = compile_dataset(ex, window=100, holdout_fraction=0.5)
    assert ds["event_id"].to_list() == [f"fb-{i}" for i in range(6)]
    assert ds["log_offset"].to_list() == list(range(6))
    assert ds.filter(pl.col("split") == "holdout")["event_id"].to_list() == ["fb-3", "fb-4", "fb-5"]


def test_window_keeps_the_most_recent_examples(tmp_path: Path) -> None:
    minutes = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    ex = examples(tmp_path, [own(i, minute=m) for i, m in enumerate(minutes)])
    ds = compile_dataset(ex, window=4, holdout_fraction=0.25)
    assert ds["event_id"].to_list() == ["fb-3", "fb-2", "fb-1", "fb-0"]
    assert ds["split"].to_list() == ["train", "train", "train", "holdout"]


@pytest.mark.parametrize(
    ("rows", "fraction", "holdout"),
    [(1, 0.2, 0), (2, 0.2, 1), (10, 0.2, 2), (11, 0.2, 3), (10, 0.01, 1), (7, 0.5, 4)],
)
def test_holdout_size(tmp_path: Path, rows: int, fraction: float, holdout: int) -> None:
    ex = examples(tmp_path, [own(i) for i in range(rows)])
    ds = compile_dataset(ex, window=1000, holdout_fraction=fraction)
    assert ds.filter(pl.col("split") == "holdout").height == holdout
    if rows > 1:
        assert holdout == max(1, math.ceil(rows * fraction))


# --- versions ---------------------------------------------------------------------------------


def test_same_input_same_version_even_from_another_log(tmp_path: Path) -> None:
    records = [pred(i) for i in range(8)], [fb(i, prediction_id=f"pred-{i}") for i in range(8)]
    first = compile_dataset(examples(tmp_path / "a", *records), 100, 0.25)
    again = compile_dataset(examples(tmp_path / "a", *records), 100, 0.25)  # reopened, dups
    other = compile_dataset(examples(tmp_path / "b", *records), 100, 0.25)  # other received_at
    assert dataset_version(first) == dataset_version(first)
    assert dataset_version(first) == dataset_version(again) == dataset_version(other)
    assert len(dataset_version(first)) == 16
    int(dataset_version(first), 16)


def test_any_change_changes_the_version(tmp_path: Path) -> None:
    base_records = [own(i) for i in range(8)]
    base = dataset_version(compile_dataset(examples(tmp_path / "a", base_records), 100, 0.25))
    one_more = compile_dataset(examples(tmp_path / "b", [*base_records, own(8)]), 100, 0.25)
    relabeled = [*base_records[:-1], own(7, label="other")]
    moved = [*base_records[:-1], fb(7, features={"x": 7.5, "channel": "web"})]
    versions = {
        base,
        dataset_version(one_more),
        dataset_version(compile_dataset(examples(tmp_path / "c", relabeled), 100, 0.25)),
        dataset_version(compile_dataset(examples(tmp_path / "d", moved), 100, 0.25)),
        dataset_version(compile_dataset(examples(tmp_path / "a", []), 100, 0.5)),  # new split
    }
    assert len(versions) == 5


# --- writing ----------------------------------------------------------------------------------


def test_write_dataset_writes_once_and_describes(tmp_path: Path) -> None:
    minutes = [5, 3, 1, 0, 2, 4, 9, 8, 7, 6]
    ex = examples(tmp_path / "log", [own(i, minute=m) for i, m in enumerate(minutes)])
    ds = compile_dataset(ex, 100, 0.2)
    out = tmp_path / "datasets"
    info = write_dataset(ds, out, log_position=42)

    version = dataset_version(ds)
    parquet, manifest = out / f"{version}.parquet", out / f"{version}.json"
    assert info.version == version and info.path == str(parquet)
    assert sorted(p.name for p in out.iterdir()) == sorted([parquet.name, manifest.name])
    assert (info.rows, info.train_rows, info.holdout_rows) == (10, 8, 2)
    assert info.feature_names == ["channel", "x"]
    assert info.categorical_features == ["channel"]
    assert info.classes == ["0", "1"]
    assert info.log_position == 42
    assert (info.first_log_offset, info.last_log_offset) == (0, 9)
    assert (info.first_event_id, info.last_event_id) == ("fb-3", "fb-6")  # minutes 0 and 9
    assert info.start_time.startswith("2024-05-01 00:00:30")
    assert info.end_time.startswith("2024-05-01 00:09:30")
    assert DatasetInfo.from_json(manifest.read_text()) == info
    assert read_dataset(info).equals(ds)

    stamps = {p: p.stat().st_mtime_ns for p in (parquet, manifest)}
    contents = {p: p.read_bytes() for p in (parquet, manifest)}
    again = write_dataset(ds, out, log_position=42)
    assert again == info
    assert {p: p.stat().st_mtime_ns for p in (parquet, manifest)} == stamps
    assert {p: p.read_bytes() for p in (parquet, manifest)} == contents
    assert sorted(p.name for p in out.iterdir()) == sorted([parquet.name, manifest.name])


def test_write_dataset_completes_a_missing_manifest_without_rewriting(tmp_path: Path) -> None:
    ex = examples(tmp_path / "log", [own(i) for i in range(6)])
    ds = compile_dataset(ex, 100, 0.5)
    info = write_dataset(ds, tmp_path / "ds", log_position=6)
    manifest = Path(info.path).with_suffix(".json")
    manifest.unlink()  # a crash between the two writes
    stamp = Path(info.path).stat().st_mtime_ns
    again = write_dataset(ds, tmp_path / "ds", log_position=6)
    assert again == info
    assert manifest.exists()
    assert Path(info.path).stat().st_mtime_ns == stamp


def test_different_datasets_get_different_files(tmp_path: Path) -> None:
    ex = examples(tmp_path / "log", [own(i) for i in range(6)])
    a = write_dataset(compile_dataset(ex, 100, 0.5), tmp_path / "ds", 6)
    b = write_dataset(compile_dataset(ex, 4, 0.5), tmp_path / "ds", 6)
    assert a.version != b.version and a.path != b.path
    assert (a.rows, b.rows) == (6, 4)
    assert len(list((tmp_path / "ds").glob("*.parquet"))) == 2


def test_dataset_info_json_roundtrip(tmp_path: Path) -> None:
    ex = examples(tmp_path / "log", [own(i) for i in range(4)])
    info = write_dataset(compile_dataset(ex, 100, 0.25), tmp_path / "ds", 4)
    assert DatasetInfo.from_json(info.to_json()) == info


def test_preview_markdown(tmp_path: Path) -> None:
    ex = examples(tmp_path / "log", [own(i) for i in range(8)])
    ds = compile_dataset(ex, 100, 0.25)
    text = preview_markdown(ds, rows=3).splitlines()
    assert text[0] == "| " + " | ".join(ds.columns) + " |"
    assert text[1] == "|" + "---|" * len(ds.columns)
    assert len(text) == 2 + 3
    assert text[2].startswith("| fb-0 | 0 |")

"""Unit tests of the streaming dataset compile from per-date tables (ct_assets.data.compile).

The tables are either built directly with Polars (small, hand-made cases) or curated
from a real event log (the equivalence test). The in-memory path
(:func:`ct_assets.data.attribution.attribute_feedback` ->
:func:`ct_assets.data.windows.select_window` -> :func:`ct_assets.data.dataset.compile_dataset`)
is the reference the DuckDB compile must agree with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ct_assets.data.attribution import LabelPolicy, attribute_feedback
from ct_assets.data.compile import (
    CompileSpec,
    FeatureNameError,
    compile_from_tables,
    window_feedback,
)
from ct_assets.data.dataset import (
    META_COLUMNS,
    DatasetInfo,
    EmptyDatasetError,
    ReservedFeatureError,
    compile_dataset,
)
from ct_assets.data.feedback_rules import ValidationRules
from ct_assets.data.windows import WindowSpec, reservoir_keys, select_window
from ct_assets.eventlog import EventLog
from ct_assets.pipeline.curation import Curated, curate
from ct_assets.schema import convert_record, validate_events
from ct_assets.simulate import SimulationSpec, simulate_events

T0 = datetime(2024, 5, 1, tzinfo=UTC)
FAR = datetime(2100, 1, 1, tzinfo=UTC)
EVERYTHING = 2**62
POLICY = LabelPolicy()
ALL = WindowSpec(mode="all")

FEEDBACK_TYPES: dict[str, pl.DataType] = {
    "log_offset": pl.Int64(),
    "event_id": pl.String(),
    "kind": pl.String(),
    "timestamp": pl.Datetime("us", "UTC"),
    "feedback_type": pl.String(),
    "prediction_id": pl.String(),
    "user_id": pl.String(),
    "source": pl.String(),
    "signal": pl.String(),
    "value": pl.Float64(),
    "label": pl.String(),
    "status": pl.String(),
    "reason": pl.String(),
    "reason_detail": pl.String(),
}
PREDICTION_TYPES: dict[str, pl.DataType] = {
    "log_offset": pl.Int64(),
    "event_id": pl.String(),
    "kind": pl.String(),
    "timestamp": pl.Datetime("us", "UTC"),
    "prediction_id": pl.String(),
    "model_name": pl.String(),
    "model_version": pl.String(),
    "arm": pl.String(),
    "prediction": pl.String(),
}


def fb(
    offset: int,
    *,
    minute: float | None = None,
    prediction_id: str | None = None,
    label: str = "1",
    status: str = "accepted",
    features: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A validated-feedback row (explicit), at ``minute`` (default: its offset) + 30 s."""
    return {
        "log_offset": offset,
        "event_id": f"fb-{offset}",
        "kind": "feedback",
        "timestamp": T0 + timedelta(minutes=offset if minute is None else minute, seconds=30),
        "feedback_type": "explicit",
        "prediction_id": prediction_id,
        "user_id": f"user-{offset}",
        "source": "test",
        "signal": None,
        "value": None,
        "label": label,
        "status": status,
        "reason": None if status == "accepted" else "some_reason",
        "reason_detail": None,
        "features": features,
    }


def pred(
    offset: int,
    prediction_id: str | None = None,
    *,
    minute: float | None = None,
    model_version: str = "m1",
    features: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A raw-prediction row (``pred-<offset>`` unless given another prediction id)."""
    return {
        "log_offset": offset,
        "event_id": f"pe-{offset}",
        "kind": "prediction",
        "timestamp": T0 + timedelta(minutes=offset if minute is None else minute),
        "prediction_id": prediction_id or f"pred-{offset}",
        "model_name": "test",
        "model_version": model_version,
        "arm": "champion",
        "prediction": "1",
        "features": (
            features
            if features is not None
            else {"x": float(offset), "channel": "web" if offset % 2 else "app"}
        ),
    }


def spec_of(
    *,
    window: WindowSpec = ALL,
    end: datetime = FAR,
    position: int = EVERYTHING,
    holdout_fraction: float = 0.25,
) -> CompileSpec:
    return CompileSpec(window, end, position, holdout_fraction)


@dataclass
class Tables:
    """Per-date validated-feedback and raw-prediction tables under ``root``."""

    root: Path

    @property
    def feedback_dir(self) -> Path:
        return self.root / "validated_feedback"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "raw_predictions"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    def feedback(self, day: str, rows: list[dict[str, Any]]) -> Path:
        frame = pl.DataFrame(rows, schema_overrides=FEEDBACK_TYPES, infer_schema_length=None)
        return _write(frame, self.feedback_dir / f"date={day}.parquet")

    def predictions(self, day: str, rows: list[dict[str, Any]]) -> Path:
        frame = pl.DataFrame(rows, schema_overrides=PREDICTION_TYPES, infer_schema_length=None)
        return _write(frame, self.predictions_dir / f"date={day}.parquet")

    def feedback_files(self) -> list[Path]:
        return sorted(self.feedback_dir.glob("*.parquet"))

    def prediction_files(self) -> list[Path]:
        return sorted(self.predictions_dir.glob("*.parquet"))

    def compile(
        self,
        spec: CompileSpec | None = None,
        datasets: Path | None = None,
        policy: LabelPolicy = POLICY,
    ) -> tuple[DatasetInfo, pl.DataFrame]:
        info = compile_from_tables(
            self.feedback_files(),
            self.prediction_files(),
            policy,
            spec or spec_of(),
            datasets or self.datasets,
        )
        return info, pl.read_parquet(info.path)

    def reference(self, spec: CompileSpec | None = None) -> pl.DataFrame:
        """The in-memory path over the same tables."""
        spec = spec or spec_of()
        feedback = pl.concat(
            [pl.read_parquet(p) for p in self.feedback_files()], how="diagonal_relaxed"
        ).filter((pl.col("status") == "accepted") & (pl.col("log_offset") < spec.position))
        feedback = feedback.sort("log_offset").unique("event_id", keep="first", maintain_order=True)
        files = self.prediction_files()
        predictions = (
            pl.concat([pl.read_parquet(p) for p in files], how="diagonal_relaxed")
            if files
            else None
        )
        examples = attribute_feedback(feedback, predictions, POLICY)
        selected = select_window(examples, spec.window, spec.end)
        return compile_dataset(selected, selected.height, spec.holdout_fraction)


def _write(frame: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


@pytest.fixture
def tables(tmp_path: Path) -> Tables:
    return Tables(tmp_path / "tables")


def column(frame: pl.DataFrame, name: str) -> list[Any]:
    return frame[name].to_list()


def by_event(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(row["event_id"]): row for row in frame.iter_rows(named=True)}


def features_of(frame: pl.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in META_COLUMNS]


def dataset_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_info_describes_file(info: DatasetInfo, position: int) -> pl.DataFrame:
    """The manifest (returned and on disk) says what the file holds."""
    path = Path(info.path)
    frame = pl.read_parquet(path)
    assert path.name == f"{info.version}.parquet"
    assert len(info.version) == 16
    int(info.version, 16)
    assert DatasetInfo.from_json(path.with_suffix(".json").read_text()) == info
    assert info.rows == frame.height
    assert info.train_rows == frame.filter(pl.col("split") == "train").height
    assert info.holdout_rows == frame.filter(pl.col("split") == "holdout").height
    assert info.train_rows + info.holdout_rows == info.rows
    assert info.feature_names == features_of(frame)
    assert info.categorical_features == [
        c for c in info.feature_names if frame.schema[c] == pl.String
    ]
    assert info.classes == sorted(frame["label"].unique().to_list())
    assert info.log_position == position
    assert info.first_event_id == frame["event_id"][0]
    assert info.last_event_id == frame["event_id"][-1]
    assert info.first_log_offset == frame["log_offset"].min()
    assert info.last_log_offset == frame["log_offset"].max()
    assert info.start_time == str(frame["timestamp"][0])
    assert info.end_time == str(frame["timestamp"][-1])
    return frame


# --- equivalence with the in-memory path ------------------------------------------------------


SIM_END = datetime(2024, 5, 5, tzinfo=UTC)


def _extras(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events that exercise every branch: implicit signals (labeled and unknown), feedback
    carrying its own (partial, extended) features, feedback whose prediction never
    arrives (pending/expired), duplicate and too-early feedback (quarantined) and retried
    predictions (same prediction id, other features, logged later)."""
    predictions = [e for e in events if e["kind"] == "prediction"]
    feedback = {e["prediction_id"]: e for e in events if e["kind"] == "feedback"}
    extra: list[dict[str, Any]] = []

    def at(p: dict[str, Any], seconds: float) -> str:
        return (datetime.fromisoformat(p["timestamp"]) + timedelta(seconds=seconds)).isoformat()

    for i, p in enumerate(predictions[::15]):
        signal = ["click", "skip", "dwell", "hover"][i % 4]
        event: dict[str, Any] = {
            "kind": "feedback",
            "event_id": f"implicit-{i}",
            "timestamp": at(p, 40),
            "feedback_type": "implicit",
            "signal": signal,
            "prediction_id": p["prediction_id"],
            "user_id": f"clicker-{i}",
            "source": "web",
        }
        if signal == "dwell":
            event["value"] = float(10 * i)
        extra.append(event)
    for i, p in enumerate(predictions[5::40]):
        explicit = {"kind": "feedback", "feedback_type": "explicit", "source": "web"}
        extra += [
            {
                **explicit,
                "event_id": f"lost-{i}",
                "timestamp": at(p, 50),
                "label": 1,
                "prediction_id": f"never-logged-{i}",
                "user_id": f"lost-{i}",
            },
            {
                **explicit,
                "event_id": f"own-{i}",
                "timestamp": at(p, 55),
                "label": i % 2,
                "features": {"x0": 0.5 + i, "channel": "web", "extra": i},
                "user_id": f"own-{i}",
            },
            {  # the same user answering the same prediction again: a duplicate
                **feedback[p["prediction_id"]],
                "event_id": f"dup-{i}",
                "timestamp": at(p, 70),
                "label": 1 - int(feedback[p["prediction_id"]]["label"]),
            },
            {  # an answer given before the prediction was served
                **explicit,
                "event_id": f"early-{i}",
                "timestamp": at(p, -3600),
                "label": 1,
                "prediction_id": p["prediction_id"],
                "user_id": f"early-{i}",
            },
            {  # a client retry: a new event id, the same prediction id, other features
                **p,
                "event_id": f"retry-{i}",
                "model_version": "retry",
                "features": {**p["features"], "x0": 99.0},
            },
        ]
    return extra


def _simulated_log(root: Path) -> EventLog:
    spec = SimulationSpec(
        rows=300, seed=3, drift="none", kind="both", days=4, n_users=60, end=SIM_END
    )
    events = list(simulate_events(spec))
    log = EventLog(root)
    for batch in (events, _extras(events)):
        log.append(
            validate_events([convert_record(e, i) for i, e in enumerate(batch)], now=SIM_END)
        )
    return log


def _write_curated(log: EventLog, curated: Curated, tables: Tables) -> None:
    day_of = pl.col("timestamp").dt.date().cast(pl.String)
    for day in curated.dates:
        _write(
            curated.validated.filter(day_of == day),
            tables.feedback_dir / f"date={day}.parquet",
        )
        _write(log.read("prediction", dates=[day]), tables.predictions_dir / f"date={day}.parquet")


def test_compile_equals_the_in_memory_path_on_a_curated_log(tmp_path: Path, tables: Tables) -> None:
    log = _simulated_log(tmp_path / "log")
    days = list(log.counts_by_date())
    assert len(days) >= 4
    # not the default policy: "hover" is positive here (unknown, so ignored, by default)
    policy = LabelPolicy(positive_signals=frozenset({"click", "hover"}))
    curated = curate(log, days, ValidationRules(), policy, None)
    statuses = curated.status_counts()
    assert statuses.get("quarantined", 0) >= 10, statuses  # duplicates and early answers
    never = curated.reason_counts().get("unknown_prediction", 0)
    assert statuses.get("pending", 0) + never >= 5, statuses  # their prediction never came
    _write_curated(log, curated, tables)
    assert len(tables.feedback_files()) == len(days) == len(tables.prediction_files())
    logged = pl.concat([pl.read_parquet(f) for f in tables.prediction_files()])
    assert logged.filter(pl.col("model_version") == "retry").height >= 5  # retries are there

    # cut in the middle of the extras, so the position matters
    position = int(curated.validated.select(pl.col("log_offset").max()).item()) - 12
    spec = spec_of(end=SIM_END, position=position, holdout_fraction=0.2)
    info, got = tables.compile(spec, policy=policy)

    examples = curated.examples.filter(pl.col("log_offset") < position)
    assert 0 < examples.height < curated.examples.height
    assert examples.filter(pl.col("label_source") == "implicit:hover").height > 0
    assert examples.filter(pl.col("label_source") == "implicit:dwell").height > 0
    assert examples.filter(pl.col("model_version").is_null()).height > 0  # own features
    expected = compile_dataset(
        select_window(examples, spec.window, spec.end), examples.height, spec.holdout_fraction
    )
    assert got.height == expected.height == examples.height
    for name in ("event_id", "log_offset", "timestamp", "label", "split"):
        assert column(got, name) == column(expected, name), name
    assert got.schema["timestamp"] == expected.schema["timestamp"]
    assert set(column(got, "split")) == {"train", "holdout"}
    assert set(column(got, "window_part")) == {"recent"}

    assert features_of(got) == features_of(expected)
    assert {"extra", "channel", "x0", "x7"} <= set(features_of(got))
    for name in features_of(expected):
        want = expected[name]
        if got.schema[name] != want.dtype:  # only a widening DuckDB may do
            assert want.dtype.is_integer() and got.schema[name].is_numeric(), name
            want = want.cast(got.schema[name])
        assert column(got, name) == want.to_list(), name
    retried = got.filter(pl.col("x0") == 99.0)
    assert retried.height == 0, "a retried prediction must not replace the first one"

    context = examples.select("event_id", "model_version", "arm", "label_source")
    joined = got.select("event_id", "model_version", "arm", "label_source").join(
        context, on="event_id", how="left", suffix="_ref"
    )
    for name in ("model_version", "arm", "label_source"):
        assert column(joined, name) == column(joined, f"{name}_ref"), name
    assert "retry" not in column(got, "model_version")

    frame = assert_info_describes_file(info, position)
    assert frame.equals(got)
    assert info.rows == expected.height
    assert (info.first_event_id, info.last_event_id) == (
        expected["event_id"][0],
        expected["event_id"][-1],
    )
    assert info.holdout_rows == expected.filter(pl.col("split") == "holdout").height
    assert info.classes == ["0", "1"]
    assert info.feature_names == features_of(expected)
    assert dataset_files(tables.datasets) == [f"{info.version}.json", f"{info.version}.parquet"]


# --- which feedback counts --------------------------------------------------------------------


def test_only_accepted_feedback_below_the_position_counts(tables: Tables) -> None:
    tables.predictions("2024-05-01", [pred(i) for i in range(9)])
    tables.feedback(
        "2024-05-01",
        [
            fb(4, prediction_id="pred-4"),
            fb(0, prediction_id="pred-0"),
            fb(1, prediction_id="pred-1", status="quarantined"),
            fb(2, prediction_id="pred-2", status="pending"),
            fb(3, prediction_id="pred-3", status="expired"),
        ],
    )
    tables.feedback(
        "2024-05-02",
        [
            fb(5, prediction_id="pred-5", minute=2000),  # position - 1: in
            fb(6, prediction_id="pred-6", minute=0.5),  # == position, though early: out
            fb(7, prediction_id="pred-7", minute=2001),  # beyond the position: out
            fb(8, prediction_id="pred-8", status="quarantined", minute=1),
            fb(4, prediction_id="pred-4"),  # the same event in a second table: counted once
        ],
    )
    spec = spec_of(position=6)
    window = window_feedback(tables.feedback_files(), POLICY, spec)
    assert column(window, "event_id") == ["fb-0", "fb-4", "fb-5"]
    info, got = tables.compile(spec)
    assert column(got, "event_id") == ["fb-0", "fb-4", "fb-5"]
    assert column(got, "x") == [0.0, 4.0, 5.0]
    assert column(got, "split") == ["train", "train", "holdout"]
    assert (info.rows, info.log_position, info.last_log_offset) == (3, 6, 5)
    reference = tables.reference(spec)
    for name in ("event_id", "label", "split", "channel", "x"):
        assert column(got, name) == column(reference, name), name


def test_a_prediction_logged_twice_gives_the_features_of_its_first_logging(
    tables: Tables,
) -> None:
    # the later copies come first in the file list and in their file: the first by log
    # offset must win, not the first read; pred-B's retry also has another feature set
    tables.predictions(
        "2024-05-01",
        [
            pred(7, "pred-A", model_version="retry", features={"x": 7.0, "channel": "retry"}),
            pred(9, "pred-B", model_version="retry", features={"x": 9.0, "y": 9}),
            pred(2, "pred-B", model_version="first-b", features={"x": 2.0, "channel": "b"}),
        ],
    )
    tables.predictions(
        "2024-05-02",
        [pred(3, "pred-A", model_version="first-a", features={"x": 3.0, "channel": "a"})],
    )
    tables.feedback(
        "2024-05-02",
        [fb(0, prediction_id="pred-A", minute=10), fb(1, prediction_id="pred-B", minute=11)],
    )
    info, got = tables.compile()
    assert column(got, "event_id") == ["fb-0", "fb-1"], "one row per feedback, no duplicates"
    rows = by_event(got)
    assert (rows["fb-0"]["x"], rows["fb-0"]["channel"], rows["fb-0"]["model_version"]) == (
        3.0,
        "a",
        "first-a",
    )
    assert (rows["fb-1"]["x"], rows["fb-1"]["channel"], rows["fb-1"]["model_version"]) == (
        2.0,
        "b",
        "first-b",
    )
    assert rows["fb-1"]["y"] is None
    assert info.feature_names == ["channel", "x", "y"]
    reference = tables.reference()
    for name in ("event_id", "label", "split", "channel", "x", "y"):
        assert column(got, name) == column(reference, name), name


def test_own_features_stand_in_for_a_missing_prediction(tables: Tables) -> None:
    tables.predictions("2024-05-01", [pred(2), pred(3)])
    tables.feedback(
        "2024-05-01",
        [
            fb(0, features={"x": 10.0, "channel": "own"}),  # no prediction: its own
            fb(1, prediction_id="pred-missing"),  # nothing to learn from: dropped
            fb(2, prediction_id="pred-2"),  # the logged features
            fb(3, prediction_id="pred-3", features={"x": 30.0}),  # its own win, all of them
            fb(4, prediction_id="pred-missing", label="0", features={"x": 40.0, "z": True}),
        ],
    )
    info, got = tables.compile()
    assert column(got, "event_id") == ["fb-0", "fb-2", "fb-3", "fb-4"]
    assert info.feature_names == ["channel", "x", "z"]
    assert column(got, "x") == [10.0, 2.0, 30.0, 40.0]
    assert column(got, "channel") == ["own", "app", None, None]
    assert column(got, "z") == [None, None, None, True]
    assert column(got, "model_version") == [None, "m1", "m1", None]
    reference = tables.reference()
    for name in ("event_id", "label", "split", "channel", "x", "z"):
        assert column(got, name) == column(reference, name), name

    # without any prediction table, only the rows with their own features remain
    info = compile_from_tables(
        tables.feedback_files(), [], POLICY, spec_of(), tables.root / "alone"
    )
    alone = pl.read_parquet(info.path)
    assert column(alone, "event_id") == ["fb-0", "fb-3", "fb-4"]
    assert column(alone, "x") == [10.0, 30.0, 40.0]
    assert column(alone, "model_version") == [None, None, None]
    assert info.feature_names == ["channel", "x", "z"]


def test_feature_sets_of_different_dates_are_united(tables: Tables) -> None:
    tables.predictions("2024-05-01", [pred(0, features={"x": 1.5, "channel": "web"})])
    tables.predictions("2024-05-02", [pred(1, features={"x": 2.5, "y": 7}, model_version="m2")])
    tables.predictions(
        "2024-05-03", [pred(2, features={"x": 3, "channel": "app"}, model_version="m3")]
    )
    tables.feedback("2024-05-03", [fb(i, prediction_id=f"pred-{i}") for i in range(3)])
    info, got = tables.compile()
    assert info.feature_names == features_of(got) == ["channel", "x", "y"]
    assert info.categorical_features == ["channel"]
    assert column(got, "channel") == ["web", None, "app"]
    assert column(got, "x") == [1.5, 2.5, 3.0]
    assert got.schema["x"] == pl.Float64
    assert column(got, "y") == [None, 7, None]
    assert got.schema["y"].is_integer()
    assert column(got, "model_version") == ["m1", "m2", "m3"]
    reference = tables.reference()
    for name in ("event_id", "split", "channel", "x", "y"):
        assert column(got, name) == column(reference, name), name


# --- versions and files -----------------------------------------------------------------------


def _mixed_tables(tables: Tables) -> None:
    tables.predictions("2024-05-01", [pred(i) for i in range(0, 12, 2)])
    tables.feedback(
        "2024-05-01",
        [
            fb(i, prediction_id=f"pred-{i}", label=str(i % 3 % 2))
            if i % 2 == 0
            else fb(i, features={"x": float(i), "channel": "own"}, label=str(i % 2))
            for i in range(12)
        ],
    )


def test_same_tables_same_version_and_one_more_row_a_new_one(tables: Tables) -> None:
    _mixed_tables(tables)
    first, frame = tables.compile()
    parquet, manifest = Path(first.path), Path(first.path).with_suffix(".json")
    contents = {p: p.read_bytes() for p in (parquet, manifest)}
    stamps = {p: p.stat().st_mtime_ns for p in (parquet, manifest)}
    again, _ = tables.compile()
    assert again == first
    assert dataset_files(tables.datasets) == [f"{first.version}.json", f"{first.version}.parquet"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "an existing version is reused"
    elsewhere, _ = tables.compile(datasets=tables.root / "elsewhere")
    assert elsewhere.version == first.version
    assert Path(elsewhere.path).read_bytes() == parquet.read_bytes(), "same tables, same bytes"

    tables.feedback("2024-05-02", [fb(12, minute=2000, features={"x": 12.0}, label="0")])
    moved, grown = tables.compile()
    assert moved.version != first.version
    assert moved.rows == first.rows + 1
    assert column(grown, "event_id")[-1] == "fb-12"
    assert dataset_files(tables.datasets) == sorted(
        f"{v}.{ext}" for v in (first.version, moved.version) for ext in ("json", "parquet")
    )
    assert {p: p.read_bytes() for p in contents} == contents, "the older version is untouched"
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert pl.read_parquet(parquet).equals(frame)

    # a row that does not count (quarantined) leaves the version where it was
    tables.feedback(
        "2024-05-03",
        [fb(13, minute=3000, features={"x": 13.0}, status="quarantined")],
    )
    assert tables.compile()[0].version == moved.version


def _junk_work_folder(folder: Path) -> Path:
    """What a compile killed mid-write leaves: a half file and spill files."""
    (folder / "spill").mkdir(parents=True)
    (folder / "dataset.parquet").write_bytes(b"half a parquet file")
    (folder / "spill" / "duckdb_temp_block-1.block").write_bytes(b"\0" * 1024)
    (folder / "junk.txt").write_text("junk")
    return folder


def test_a_crashed_compile_leaves_no_trace_that_matters(tables: Tables) -> None:
    _mixed_tables(tables)
    expected, _ = tables.compile(datasets=tables.root / "clean")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(gone.stdout)  # a process that has exited
    abandoned = [
        _junk_work_folder(tables.datasets / ".compile-tmp"),
        _junk_work_folder(tables.datasets / f".compile-{dead_pid}-abc123"),
    ]
    # the work folder of a compile still running (its process is alive) is left alone
    running = _junk_work_folder(tables.datasets / f".compile-{os.getppid()}-running")
    info, _ = tables.compile()
    assert info.version == expected.version
    assert [f for f in abandoned if f.exists()] == []
    assert running.exists() and (running / "junk.txt").read_text() == "junk"
    shutil.rmtree(running)
    assert dataset_files(tables.datasets) == [f"{info.version}.json", f"{info.version}.parquet"]
    assert Path(info.path).read_bytes() == Path(expected.path).read_bytes()


# --- windows ----------------------------------------------------------------------------------


def test_sliding_reservoir_keeps_a_sample_of_older_rows_and_holds_out_recent_ones(
    tables: Tables,
) -> None:
    half_day = 12 * 60
    rows = 20  # one every 12 hours over 10 days
    tables.predictions("2024-05-01", [pred(i, minute=i * half_day) for i in range(0, rows, 2)])
    tables.feedback(
        "2024-05-01",
        [
            fb(i, minute=i * half_day, prediction_id=f"pred-{i}", label=str(i % 3 % 2))
            if i % 2 == 0
            else fb(i, minute=i * half_day, features={"x": float(i)}, label=str(i % 2))
            for i in range(rows)
        ],
    )
    window = WindowSpec(mode="sliding_reservoir", window_days=3, reservoir_size=4, seed=7)
    end = T0 + timedelta(days=10)
    spec = spec_of(window=window, end=end, holdout_fraction=0.3)
    info, got = tables.compile(spec)

    start = end - timedelta(days=3)
    recent_ids = [f"fb-{i}" for i in range(rows) if T0 + timedelta(minutes=i * half_day) >= start]
    older_ids = [f"fb-{i}" for i in range(rows) if f"fb-{i}" not in recent_ids]
    assert len(recent_ids) == 6 and len(older_ids) == 14
    keys = reservoir_keys(pl.Series(older_ids), window.seed).to_list()
    sample = {e for _, e in sorted(zip(keys, older_ids, strict=True))[:4]}

    parts = dict(zip(column(got, "event_id"), column(got, "window_part"), strict=True))
    assert {e for e, part in parts.items() if part == "reservoir"} == sample
    assert [e for e, part in parts.items() if part == "recent"] == recent_ids
    assert got.height == info.rows == 10
    assert column(got, "window_part") == ["reservoir"] * 4 + ["recent"] * 6
    reservoir = got.filter(pl.col("window_part") == "reservoir")
    assert all(t < start for t in column(reservoir, "timestamp"))
    holdout = got.filter(pl.col("split") == "holdout")
    assert holdout.height == info.holdout_rows == 3
    assert set(column(holdout, "window_part")) == {"recent"}
    assert column(holdout, "event_id") == recent_ids[-3:]
    reference = tables.reference(spec)
    for name in ("event_id", "split", "x"):
        assert column(got, name) == column(reference, name), name


# --- errors -----------------------------------------------------------------------------------


def test_nothing_accepted_is_an_empty_dataset(tables: Tables) -> None:
    tables.predictions("2024-05-01", [pred(i) for i in range(4)])
    tables.feedback(
        "2024-05-01",
        [
            fb(0, prediction_id="pred-0", status="quarantined"),
            fb(1, prediction_id="pred-1", status="pending"),
            fb(2, prediction_id="pred-2", status="expired"),
        ],
    )
    with pytest.raises(EmptyDatasetError):
        tables.compile()
    with pytest.raises(EmptyDatasetError):
        compile_from_tables([], tables.prediction_files(), POLICY, spec_of(), tables.datasets)
    # accepted, but at or beyond the position
    tables.feedback("2024-05-02", [fb(3, prediction_id="pred-3")])
    with pytest.raises(EmptyDatasetError):
        tables.compile(spec_of(position=3))
    # accepted, but with nothing to learn from
    tables.feedback("2024-05-02", [fb(3, prediction_id="pred-never-logged")])
    with pytest.raises(EmptyDatasetError):
        tables.compile()
    assert not tables.datasets.exists() or not list(tables.datasets.glob("*.parquet"))
    # the same tables compile once one row counts
    tables.feedback("2024-05-02", [fb(3, prediction_id="pred-3")])
    assert tables.compile()[0].rows == 1


@pytest.mark.parametrize(
    ("where", "name"), [("logged", "split"), ("own", "label"), ("logged", "event_id")]
)
def test_a_feature_named_like_a_dataset_column_is_refused(
    tables: Tables, where: str, name: str
) -> None:
    features = {"x": 1.0, name: "oops"}
    if where == "logged":
        tables.predictions("2024-05-01", [pred(0, features=features)])
        tables.feedback("2024-05-01", [fb(0, prediction_id="pred-0")])
    else:
        tables.predictions("2024-05-01", [pred(1)])
        tables.feedback("2024-05-01", [fb(0, features=features), fb(1, prediction_id="pred-1")])
    with pytest.raises(ReservedFeatureError, match=name):
        tables.compile()
    assert not tables.datasets.exists() or not list(tables.datasets.glob("*.parquet"))


# --- names and types DuckDB would otherwise mix up -------------------------------------------


@pytest.mark.parametrize(
    ("features", "error", "match"),
    [
        ({"x": 1.0, "X": 2.0}, FeatureNameError, "differ only in case"),
        ({"Label": 1.0}, ReservedFeatureError, "Label"),
    ],
)
def test_features_differing_only_in_case_are_refused_by_name(
    tables: Tables, features: dict[str, float], error: type[Exception], match: str
) -> None:
    """DuckDB (and many consumers of the dataset) ignore case in column names: such features
    would silently share a column, so the compile names them and stops."""
    tables.predictions("2024-05-01", [pred(0, features=features)])
    tables.feedback("2024-05-01", [fb(0, prediction_id="pred-0")])
    with pytest.raises(error, match=match):
        tables.compile()
    assert not tables.datasets.exists() or not list(tables.datasets.glob("*.parquet"))


def test_own_and_logged_features_of_different_types_compile(tables: Tables) -> None:
    tables.predictions("2024-05-01", [pred(0, features={"x": 1.5})])
    tables.feedback("2024-05-01", [fb(0, prediction_id="pred-0"), fb(1, features={"x": "high"})])
    reference = tables.reference()
    assert column(reference, "x") == ["1.5", "high"]
    _, got = tables.compile()
    assert column(got, "x") == column(reference, "x")

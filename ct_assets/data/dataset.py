"""Compiling labeled feedback into an immutable, content-addressed training dataset.

Pure functions over Polars frames and paths. A dataset is the most recent
``window`` labeled examples up to a log position, sorted by event time, the
last ``holdout_fraction`` of them held out. Its version is a hash of its content,
so the same log gives the same version and the file is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

LABEL = "label"
SPLIT = "split"
#: Dataset columns that are not features: the example's identity and time, its label and
#: split, which part of the window it comes from (recent or reservoir), how it was
#: labeled and the model version and arm that served the prediction it refers to.
META_COLUMNS = (
    "event_id",
    "log_offset",
    "timestamp",
    LABEL,
    SPLIT,
    "window_part",
    "label_source",
    "model_version",
    "arm",
)


@dataclass(frozen=True)
class DatasetInfo:
    version: str
    path: str
    rows: int
    train_rows: int
    holdout_rows: int
    feature_names: list[str]
    categorical_features: list[str]
    classes: list[str]
    log_position: int
    first_log_offset: int
    last_log_offset: int
    first_event_id: str
    last_event_id: str
    start_time: str
    end_time: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetInfo:
        return cls(**json.loads(text))


class EmptyDatasetError(ValueError):
    """No labeled example with features in the requested window."""


def labeled_examples(feedback: pl.DataFrame, predictions: pl.DataFrame | None) -> pl.DataFrame:
    """Explicit feedback with its features: its own, or those of the prediction it refers to."""
    explicit = feedback.filter(
        (pl.col("feedback_type") == "explicit") & pl.col(LABEL).is_not_null()
    )
    if "features" not in explicit.columns:
        explicit = explicit.with_columns(features=pl.lit(None, dtype=pl.Struct({})))
    base = [c for c in explicit.columns if c != "features"]
    parts = [explicit.filter(pl.col("features").is_not_null())]
    if predictions is not None and predictions.height and "prediction_id" in explicit.columns:
        logged = predictions.select("prediction_id", "features").unique(
            "prediction_id", keep="first"
        )
        attributed = (
            explicit.filter(pl.col("features").is_null())
            .drop("features")
            .join(logged, on="prediction_id", how="inner")
        )
        parts.append(attributed)
    # Own and logged features may have different fields: flatten (prefixed, so a
    # feature cannot clash with an envelope column), union, and pack them again.
    flat = [
        part.with_columns(pl.col("features").name.prefix_fields(_FEATURE_PREFIX)).unnest("features")
        for part in parts
        if part.height
    ]
    if not flat:
        return explicit.clear()
    merged = pl.concat(flat, how="diagonal_relaxed")
    fields = [c for c in merged.columns if c.startswith(_FEATURE_PREFIX)]
    packed = pl.struct([pl.col(c).alias(c.removeprefix(_FEATURE_PREFIX)) for c in fields])
    return merged.select(*base, packed.alias("features")).sort("log_offset")


_FEATURE_PREFIX = "__feature__"


class ReservedFeatureError(ValueError):
    """A feature is named like a dataset column (event_id, label, split, ...)."""


def compile_dataset(examples: pl.DataFrame, window: int, holdout_fraction: float) -> pl.DataFrame:
    """The last ``window`` examples by time, features as columns, the latest held out."""
    if examples.height == 0:
        raise EmptyDatasetError("no labeled feedback with features to train on")
    ordered = examples.sort(["timestamp", "log_offset"]).tail(window)
    clashes = sorted(set(ordered.schema["features"].to_schema()) & set(META_COLUMNS))  # type: ignore[attr-defined]
    if clashes:
        raise ReservedFeatureError(f"features named {clashes} clash with dataset columns")
    flat = ordered.select("event_id", "log_offset", "timestamp", LABEL, "features").unnest(
        "features"
    )
    feature_names = sorted(c for c in flat.columns if c not in META_COLUMNS)
    n = flat.height
    n_holdout = max(1, math.ceil(n * holdout_fraction)) if n > 1 else 0
    split = pl.Series(SPLIT, ["train"] * (n - n_holdout) + ["holdout"] * n_holdout)
    return flat.with_columns(split).select(
        "event_id", "log_offset", "timestamp", LABEL, SPLIT, *feature_names
    )


def dataset_version(frame: pl.DataFrame) -> str:
    """Content hash of the dataset: same rows, same columns, same order -> same version."""
    digest = hashlib.sha256()
    digest.update(json.dumps(frame.schema.to_python(), default=str).encode())
    digest.update(frame.write_csv().encode())
    return digest.hexdigest()[:16]


def describe(frame: pl.DataFrame, version: str, path: Path, log_position: int) -> DatasetInfo:
    feature_names = [c for c in frame.columns if c not in META_COLUMNS]
    categorical = [c for c in feature_names if frame.schema[c] == pl.String]
    first, last = frame.row(0, named=True), frame.row(-1, named=True)
    return DatasetInfo(
        version=version,
        path=str(path),
        rows=frame.height,
        train_rows=frame.filter(pl.col(SPLIT) == "train").height,
        holdout_rows=frame.filter(pl.col(SPLIT) == "holdout").height,
        feature_names=feature_names,
        categorical_features=categorical,
        classes=sorted(frame[LABEL].unique().to_list()),
        log_position=log_position,
        first_log_offset=int(frame["log_offset"].min()),  # type: ignore[arg-type]
        last_log_offset=int(frame["log_offset"].max()),  # type: ignore[arg-type]
        first_event_id=str(first["event_id"]),
        last_event_id=str(last["event_id"]),
        start_time=str(first["timestamp"]),
        end_time=str(last["timestamp"]),
    )


def write_dataset(frame: pl.DataFrame, datasets_dir: Path, log_position: int) -> DatasetInfo:
    """Write ``<version>.parquet`` (+ ``.json`` manifest) once; an existing version is reused."""
    version = dataset_version(frame)
    datasets_dir.mkdir(parents=True, exist_ok=True)
    path = datasets_dir / f"{version}.parquet"
    manifest = datasets_dir / f"{version}.json"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        frame.write_parquet(tmp)
        tmp.replace(path)
    if manifest.exists():
        return DatasetInfo.from_json(manifest.read_text())
    info = describe(frame, version, path, log_position)
    tmp_manifest = manifest.with_name(manifest.name + ".tmp")
    tmp_manifest.write_text(info.to_json())
    tmp_manifest.replace(manifest)
    return info


def read_dataset(info: DatasetInfo) -> pl.DataFrame:
    return pl.read_parquet(info.path)


def value_counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """Rows per value of ``column`` (nulls last, as "None"), for metadata and status."""
    if column not in frame.columns or not frame.height:
        return {}
    grouped = frame.group_by(column).len().sort(column, nulls_last=True)
    return {str(r[column]): int(r["len"]) for r in grouped.iter_rows(named=True)}


def preview_markdown(frame: pl.DataFrame, rows: int = 5) -> str:
    head = frame.head(rows)
    cells: list[list[Any]] = [list(r) for r in head.iter_rows()]
    header = "| " + " | ".join(head.columns) + " |"
    rule = "|" + "---|" * len(head.columns)
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in cells]
    return "\n".join([header, rule, *body])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

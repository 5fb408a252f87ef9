"""Compiled datasets as lineage reads them: the files and their manifests, the event
dates (daily partitions) their rows cover, what the rows are made of, and which datasets
hold given feedback events.

Nothing loads a dataset whole: datasets are scanned lazily for their metadata columns
(never the features), and a dataset whose manifest's log-offset range cannot hold an
event is not opened at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from ct_assets import keys
from ct_assets.data.dataset import META_COLUMNS, SPLIT, value_counts
from ct_assets.data.dataset_objects import (
    MANIFEST,
    PARQUET,
    REFERENCE,
    dataset_file,
    dataset_key,
)
from ct_assets.data.dataset_objects import PREFIX as DATASETS
from ct_assets.eventlog.counts import counts_by_date
from ct_assets.eventlog.reader import read_events
from ct_assets.lineage.events import table_files
from ct_assets.settings import Settings
from ct_assets.storage import store_from_settings

#: Source counted for dataset rows whose feedback event is in neither the tables nor the log.
SOURCE_NOT_FOUND = "(not found)"

_COUNTED_COLUMNS = (SPLIT, "window_part", "label_source", "model_version", "arm")


def dataset_path(settings: Settings, version: str) -> Path:
    """The dataset's local file, with its manifest beside it (downloaded from the object
    store when it is not a local disk)."""
    store = store_from_settings(settings)
    dataset_file(store, settings.datasets_dir, version, MANIFEST)
    return dataset_file(store, settings.datasets_dir, version)


def dataset_files(settings: Settings) -> list[Path]:
    """Every compiled dataset (``<version>.parquet``), by name. On a remote object store,
    the manifests are fetched; a dataset's file is fetched by :func:`local_dataset`."""
    store = store_from_settings(settings)
    folder = settings.datasets_dir
    if store.local_path(dataset_key("v")) != folder / "v.parquet":
        versions = [
            key.removeprefix(f"{DATASETS}/").removesuffix(MANIFEST)
            for key in store.list(DATASETS)
            if key.endswith(MANIFEST) and not key.endswith(REFERENCE)
        ]
        for version in versions:
            dataset_file(store, folder, version, MANIFEST)
        return sorted(folder / f"{version}{PARQUET}" for version in versions)
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def local_dataset(settings: Settings, path: Path) -> Path:
    """``path`` of :func:`dataset_files`, fetched when it is not on the local disk yet."""
    return path if path.exists() else dataset_path(settings, path.stem)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The ``<version>.json`` written beside a dataset, as a dict; None when unreadable."""
    try:
        manifest = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _scan_meta(path: Path) -> pl.LazyFrame:
    """A dataset's metadata columns (those it has; null for the others), never its features."""
    present = set(pl.read_parquet_schema(path))
    return pl.scan_parquet(path).select(
        pl.col(c) if c in present else pl.lit(None, dtype=pl.String).alias(c) for c in META_COLUMNS
    )


def read_dataset_meta(path: Path) -> pl.DataFrame:
    """The metadata columns of every row, with the event date (the daily partition)."""
    return (
        _scan_meta(path)
        .with_columns(pl.col("timestamp").dt.date().cast(pl.String).alias("date"))
        .collect()
    )


def partition_summaries(meta: pl.DataFrame, log_counts: dict[str, int]) -> list[dict[str, Any]]:
    """Per event date: rows, train/holdout, log-offset and event-id range (by log offset),
    time range, and how many feedback events of that date the log holds."""
    by_offset = pl.col("event_id").sort_by("log_offset")
    grouped = (
        meta.group_by("date")
        .agg(
            pl.len().alias("rows"),
            (pl.col(SPLIT) == "train").sum().alias("train"),
            (pl.col(SPLIT) == "holdout").sum().alias("holdout"),
            pl.col("log_offset").min().alias("first_log_offset"),
            pl.col("log_offset").max().alias("last_log_offset"),
            by_offset.first().alias("first_event_id"),
            by_offset.last().alias("last_event_id"),
            pl.col("timestamp").min().alias("start_time"),
            pl.col("timestamp").max().alias("end_time"),
        )
        .sort("date")
    )
    return [
        {
            **row,
            "start_time": _iso(row["start_time"]),
            "end_time": _iso(row["end_time"]),
            "log_feedback_events": log_counts.get(row["date"]),
        }
        for row in grouped.iter_rows(named=True)
    ]


def event_sources(settings: Settings, meta: pl.DataFrame) -> pl.Series:
    """The ``source`` of each row's feedback event, in row order: from the curated
    ``validated_feedback`` tables of the rows' dates, else from the log of those dates;
    :data:`SOURCE_NOT_FOUND` when neither has the event."""
    wanted = meta.select("event_id", "date")
    dates = sorted(d for d in wanted["date"].unique().to_list() if d is not None)
    scans = [
        pl.scan_parquet(path).select(pl.col("event_id", "source").cast(pl.String))
        for path in table_files(settings, keys.VALIDATED_FEEDBACK, dates)
    ]
    found = _known_sources(pl.concat(pl.collect_all(scans)) if scans else _empty_sources())
    unmatched = wanted.join(found, on="event_id", how="anti")
    if unmatched.height:
        missing_dates = sorted(d for d in unmatched["date"].unique().to_list() if d is not None)
        logged = read_events(settings.eventlog_dir, "feedback", dates=missing_dates)
        from_log = _known_sources(logged.select(pl.col("event_id", "source").cast(pl.String)))
        found = pl.concat([found, from_log.join(found, on="event_id", how="anti")])
    return (
        wanted.join(found, on="event_id", how="left", maintain_order="left")
        .select(
            pl.when(pl.col("found").is_null())
            .then(pl.lit(SOURCE_NOT_FOUND))
            .otherwise(pl.col("source"))
            .alias("source")
        )
        .to_series()
    )


def _empty_sources() -> pl.DataFrame:
    return pl.DataFrame(schema={"event_id": pl.String, "source": pl.String})


def _known_sources(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.unique("event_id", keep="first").with_columns(pl.lit(True).alias("found"))


def dataset_counts(meta: pl.DataFrame, sources: pl.Series) -> dict[str, Any]:
    """Rows in total and per source, split, window part, label source, serving version, arm."""
    counted = meta.with_columns(sources.alias("source"))
    return {
        "rows": meta.height,
        "by_source": value_counts(counted, "source"),
        **{f"by_{column}": value_counts(meta, column) for column in _COUNTED_COLUMNS},
    }


def describe_dataset(settings: Settings, version: str) -> dict[str, Any]:
    """The dataset's manifest facts, its partitions and its counts (empty when the file is
    gone)."""
    path = dataset_path(settings, version)
    manifest = read_manifest(path) or {}
    dataset: dict[str, Any] = {
        "version": version,
        "path": str(path),
        "exists": path.exists(),
        **{
            name: manifest.get(name)
            for name in (
                "rows",
                "train_rows",
                "holdout_rows",
                "log_position",
                "first_log_offset",
                "last_log_offset",
                "start_time",
                "end_time",
                "feature_names",
                "classes",
            )
        },
    }
    if not path.exists():
        return {"dataset": dataset, "partitions": [], "counts": {}}
    meta = read_dataset_meta(path)
    log_counts = {d: c.feedback for d, c in counts_by_date(settings.eventlog_dir).items()}
    return {
        "dataset": dataset,
        "partitions": partition_summaries(meta, log_counts),
        "counts": dataset_counts(meta, event_sources(settings, meta)),
    }


def datasets_containing(settings: Settings, offsets: dict[str, int | None]) -> pl.DataFrame:
    """Rows of every dataset holding one of the feedback events ``offsets`` names (event id
    -> its log offset, None when unknown): ``dataset_version``, ``event_id``, the row's
    split, window part, label source and label. A dataset whose manifest's log-offset range
    holds none of the known offsets is skipped unread; the others are scanned lazily with
    the filter pushed down, reading only their metadata columns."""
    if not offsets:
        return _empty_memberships()
    ids = list(offsets)
    known = [o for o in offsets.values() if o is not None]
    all_known = len(known) == len(offsets)
    wanted = pl.col("event_id").is_in(ids)
    if all_known:
        wanted = pl.col("log_offset").is_in(known) & wanted
    scans = []
    for path in dataset_files(settings):
        if all_known and not _range_may_hold(read_manifest(path), known):
            continue
        scans.append(
            _scan_meta(local_dataset(settings, path))
            .filter(wanted)
            .select(
                pl.lit(path.stem).alias("dataset_version"),
                pl.col("event_id").cast(pl.String),
                pl.col(SPLIT).cast(pl.String),
                pl.col("window_part").cast(pl.String),
                pl.col("label_source").cast(pl.String),
                pl.col("label").cast(pl.String),
            )
        )
    if not scans:
        return _empty_memberships()
    return pl.concat(pl.collect_all(scans)).sort("dataset_version", "event_id")


def _range_may_hold(manifest: dict[str, Any] | None, offsets: Sequence[int]) -> bool:
    if manifest is None:
        return True
    first, last = manifest.get("first_log_offset"), manifest.get("last_log_offset")
    if not isinstance(first, int) or not isinstance(last, int):
        return True
    return any(first <= o <= last for o in offsets)


def _empty_memberships() -> pl.DataFrame:
    names = ("dataset_version", "event_id", SPLIT, "window_part", "label_source", "label")
    return pl.DataFrame(schema=dict.fromkeys(names, pl.String))


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None

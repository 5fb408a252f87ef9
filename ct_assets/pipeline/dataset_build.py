"""Building a training dataset from the event log: the window of event dates, their tables
curated again where stale, the compiled and versioned dataset, its reference schema, and
the figures its checks and metadata show.

Plain code over the event log, the per-date tables and paths (no Dagster): the
``training_dataset`` asset reads its resources, calls :func:`build_dataset` once and
renders the :class:`DatasetBuild` it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from ct_assets import keys
from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.compile import CompileSpec, compile_from_tables
from ct_assets.data.dataset import DatasetInfo
from ct_assets.data.dataset_objects import publish_dataset
from ct_assets.data.feedback_rules import ValidationRules
from ct_assets.data.reference import ReferenceSchema, infer_reference_from_columns
from ct_assets.data.tables import TableStore
from ct_assets.data.windows import WindowSpec, partitions_for
from ct_assets.eventlog import EventLog
from ct_assets.pipeline.curation import day_end, input_dates, load_reference, refresh_tables
from ct_assets.storage import ObjectStore

#: Largest share of missing values per feature before a null-rate check warns.
MAX_NULL_RATE = 0.5


class DatasetBuildError(ValueError):
    """The dataset cannot be built: an empty event log, or a recorded window start that is
    not a timestamp."""


@dataclass(frozen=True)
class DatasetBuild:
    """A compiled dataset with what its metadata and checks show.

    ``info``: the written dataset (version, path, rows, splits, ranges). ``position``: the
    log position it was cut at. ``window`` / ``since``: the window it was chosen with and
    the change point it starts at, if any. ``dates``: the event dates it was compiled
    from; ``refreshed``: those curated again first. ``head``: its first rows.
    ``statuses``: feedback per validation status over the window's tables.
    ``label_counts``: rows per label (sorted by label); ``train_classes``: labels in the
    train split. ``null_rates``: share of missing values of each feature that has any.
    ``schema_changes``: features added or removed against the reference schema from
    before this build. ``reference``: the reference schema inferred from the train split,
    written beside the dataset (``reference_copy``) and as the latest one that curation
    reads (``reference_path``).
    """

    info: DatasetInfo
    position: int
    window: WindowSpec
    since: datetime | None
    dates: tuple[str, ...]
    refreshed: tuple[str, ...]
    head: pl.DataFrame
    by_window_part: dict[str, int]
    statuses: dict[str, int]
    reference: ReferenceSchema
    reference_path: Path
    reference_copy: Path
    label_counts: tuple[tuple[Any, int], ...]
    train_classes: int
    null_rates: dict[str, float]
    schema_changes: dict[str, list[str]]

    @property
    def reference_version(self) -> str:
        return self.reference.version

    @property
    def quarantine_rate(self) -> float:
        total = sum(self.statuses.values())
        return self.statuses.get("quarantined", 0) / total if total else 0.0

    @property
    def classes(self) -> int:
        return len(self.label_counts)

    @property
    def minority_share(self) -> float:
        return min((count for _, count in self.label_counts), default=0) / self.info.rows

    @property
    def has_two_classes(self) -> bool:
        """Training needs at least two classes, in the train split too."""
        return self.classes >= 2 and self.train_classes >= 2

    @property
    def nulls_within_limit(self) -> bool:
        return all(rate <= MAX_NULL_RATE for rate in self.null_rates.values())


def window_start(run_tags: Mapping[str, str], champion: Mapping[str, Any]) -> datetime | None:
    """Where the dataset window starts after a detected change: the run's
    ``ct/window_start`` tag (set by the performance trigger), else the champion's own
    window start (the change it was trained after), else None (the configured window)."""
    recorded = str(champion.get(keys.META_WINDOW_START) or "")
    for where, raw in (
        (f"run tag {keys.RUN_TAG_WINDOW_START}", run_tags.get(keys.RUN_TAG_WINDOW_START, "")),
        (f"champion metadata {keys.META_WINDOW_START}", recorded),
    ):
        if not raw:
            continue
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError as error:
            raise DatasetBuildError(f"{where} is not an ISO timestamp: {raw!r}") from error
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return None


def build_dataset(
    log: EventLog,
    *,
    store: TableStore,
    rules: ValidationRules,
    policy: LabelPolicy,
    reference_folder: Path,
    window: Callable[[datetime | None], WindowSpec],
    datasets_dir: Path,
    holdout_fraction: float,
    memory_mb: int,
    run_tags: Mapping[str, str],
    champion: Mapping[str, Any],
    note: Callable[[str], None] = lambda _: None,
    objects: ObjectStore | None = None,
) -> DatasetBuild:
    """The dataset of the window ``window(since)`` up to the log's current position.

    ``since`` comes from ``run_tags`` or the ``champion``'s metadata (:func:`window_start`).
    Stale or missing per-date tables are curated again first (reported through ``note``);
    the dataset and its reference schema are written under ``datasets_dir``, the schema
    also as the latest one in ``reference_folder``, and published to ``objects`` (see
    :mod:`ct_assets.data.dataset_objects`; None: they stay where they are). Raises
    :class:`DatasetBuildError` for an empty log and ``EmptyDatasetError`` when the window
    holds no example.
    """
    position = log.counts().feedback  # the cut: every feedback event committed by now
    days = list(log.counts_by_date())
    if not days:
        raise DatasetBuildError("the event log is empty: nothing to train on")
    as_of = day_end(days[-1])
    since = window_start(run_tags, champion)
    spec = window(since)
    dates = partitions_for(spec, as_of, datetime.fromisoformat(days[0]).date(), lookback_days=0)
    with_events = set(days)
    dates = [d for d in dates if d in with_events]
    reference_before = load_reference(reference_folder)
    refreshed = refresh_tables(
        log, store, dates, rules, policy, reference_before, as_of, log.partition_fingerprints()
    )
    if refreshed:
        note(f"curated again from the log (tables stale or missing): {refreshed}")
    lookup = [d for d in input_dates(dates, rules, 0)[1] if d in with_events]
    validated = [store.path(keys.VALIDATED_FEEDBACK, d) for d in dates]
    info = compile_from_tables(
        validated,
        [store.path(keys.RAW_PREDICTIONS, d) for d in lookup],
        policy,
        CompileSpec(spec, as_of, position, holdout_fraction, memory_mb),
        datasets_dir,
    )
    dataset = pl.scan_parquet(datasets_dir / f"{info.version}.parquet")
    train = dataset.filter(pl.col("split") == "train")
    reference = infer_reference_from_columns(train, info.feature_names)
    reference_copy = reference.save(datasets_dir / f"{info.version}.reference.json")
    reference_path = reference.save(reference_folder / "latest.json")
    info = publish_dataset(objects, datasets_dir, info)
    labels = dataset.group_by("label").len().sort("label").collect()
    return DatasetBuild(
        info=info,
        position=position,
        window=spec,
        since=since,
        dates=tuple(dates),
        refreshed=tuple(refreshed),
        head=dataset.head(5).collect(),
        by_window_part=_counts(dataset, "window_part"),
        statuses=status_counts(validated),
        reference=reference,
        reference_path=reference_path,
        reference_copy=reference_copy,
        label_counts=tuple((row["label"], int(row["len"])) for row in labels.iter_rows(named=True)),
        train_classes=int(train.select(pl.col("label").n_unique()).collect().item()),
        null_rates=_null_rates(dataset, info),
        schema_changes=schema_drift(reference_before, info.feature_names),
    )


def status_counts(paths: Sequence[Path]) -> dict[str, int]:
    """Feedback per validation status over the validated tables of the window."""
    scans = [pl.scan_parquet(p).select("status") for p in paths if p.exists()]
    if not scans:
        return {}
    counts = pl.concat(scans).group_by("status").len().sort("status").collect()
    return {str(r["status"]): int(r["len"]) for r in counts.iter_rows(named=True)}


def schema_drift(
    reference: ReferenceSchema | None, features: Sequence[str]
) -> dict[str, list[str]]:
    """Features added or removed against ``reference`` (none without one)."""
    if reference is None:
        return {}
    known = set(reference.features)
    now = set(features)
    changes = {"added": sorted(now - known), "removed": sorted(known - now)}
    return {k: v for k, v in changes.items() if v}


def _counts(frame: pl.LazyFrame, column: str) -> dict[str, int]:
    counts = frame.group_by(column).len().sort(column).collect()
    return {str(r[column]): int(r["len"]) for r in counts.iter_rows(named=True)}


def _null_rates(dataset: pl.LazyFrame, info: DatasetInfo) -> dict[str, float]:
    if not info.feature_names:
        return {}
    counts = dataset.select([pl.col(c).null_count() for c in info.feature_names]).collect().row(0)
    return {
        c: count / info.rows for c, count in zip(info.feature_names, counts, strict=True) if count
    }

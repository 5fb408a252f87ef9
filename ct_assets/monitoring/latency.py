"""Feedback-loop latency: how long feedback waits until a model that learned from it serves.

For each promoted model version, two figures:

* event to promotion: for every feedback event the version learned from, the seconds from
  the event (its ``timestamp``) to the version's promotion, summarised as median, 95th
  percentile (linear interpolation between order statistics) and maximum. The events a
  version learned from are the rows of its dataset's train split (the holdout only judged
  it). For an incremental version only the rows after ``ct.new_after_offset``: the rows
  before were learned by the model it continued, whose own figures hold them;
* trigger to promotion: the seconds from the creation of the Dagster run that trained the
  version (``ct.dagster_run_id``) to its promotion. A sensor, schedule or user creates the
  run when its trigger fires. The newest event behind a trigger is not recorded (a volume
  trigger's reason names log positions, a schedule has none), so the run's creation time
  stands for the trigger.

The promotion time is the version's first ``promote`` record in the registry's audit
trail, else its ``ct.promoted_at`` tag.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ct_assets.data.tables import write_bytes_atomically
from ct_assets.registry import (
    CHAMPION,
    TAG_DAGSTER_RUN_ID,
    TAG_DATASET_VERSION,
    TAG_NEW_AFTER_OFFSET,
    TAG_PROMOTED_AT,
    TAG_TRIGGER,
    AuditRecord,
)

if TYPE_CHECKING:
    from ct_assets.registry import Registry

#: Promoted versions whose figures are computed, newest first.
LATENCY_HISTORY = 50
LATENCY_METRIC = "ct_feedback_loop_latency_seconds"
TRIGGER_METRIC = "ct_trigger_to_promotion_seconds"
#: Prometheus ``quantile`` label -> field of a version's figures.
QUANTILE_FIELDS = (("0.5", "p50_seconds"), ("0.95", "p95_seconds"), ("1", "max_seconds"))


@dataclass(frozen=True)
class PromotedVersion:
    """What the figures of one promoted version are computed from."""

    version: str
    promoted_at: datetime
    trigger: str
    dataset: Path | None
    new_after_offset: int | None = None
    trigger_fired_at: datetime | None = None


@dataclass(frozen=True)
class LatencyFigures:
    events: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None
    min_seconds: float | None


@dataclass(frozen=True)
class VersionLatency:
    """One entry of the export: the field names are the JSON document's."""

    version: str
    promoted_at: str
    trigger: str
    events: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None
    trigger_to_promotion_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_promotions(records: Iterable[AuditRecord]) -> dict[str, datetime]:
    """Each version's first ``promote`` record's time, by version."""
    promoted: dict[str, datetime] = {}
    for record in records:
        if record.action == "promote" and record.version not in promoted:
            promoted[record.version] = datetime.fromisoformat(record.at)
    return promoted


def learned_rows(dataset: Path, new_after_offset: int | None = None) -> pl.LazyFrame:
    """The rows of a dataset a model learned from: its train split, and with
    ``new_after_offset`` only the rows after that log offset."""
    rows = pl.scan_parquet(dataset).filter(pl.col("split") == "train")
    if new_after_offset is not None:
        rows = rows.filter(pl.col("log_offset") > new_after_offset)
    return rows


def event_latency(
    dataset: Path, promoted_at: datetime, new_after_offset: int | None = None
) -> LatencyFigures:
    """Seconds from each learned row's event time to ``promoted_at``: count, median, 95th
    percentile (linear), max and min; None figures without rows."""
    waited = (pl.lit(promoted_at) - pl.col("timestamp")).dt.total_microseconds() / 1e6
    stats = (
        learned_rows(dataset, new_after_offset)
        .select(waited.alias("s"))
        .select(
            pl.len().alias("events"),
            pl.col("s").quantile(0.5, "linear").alias("p50"),
            pl.col("s").quantile(0.95, "linear").alias("p95"),
            pl.col("s").max().alias("max"),
            pl.col("s").min().alias("min"),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )

    def seconds(name: str) -> float | None:
        value = stats[name]
        return None if value is None else float(value)

    return LatencyFigures(
        int(stats["events"]), seconds("p50"), seconds("p95"), seconds("max"), seconds("min")
    )


@functools.lru_cache(maxsize=1024)
def _known_event_latency(
    dataset: Path, promoted_at: datetime, new_after_offset: int | None
) -> LatencyFigures:
    """:func:`event_latency`, computed once per process: a dataset file is written once
    under its content's version and a promotion time never changes, so a version's
    figures stay true (each monitoring run then reads only the newly promoted ones)."""
    return event_latency(dataset, promoted_at, new_after_offset)


def version_latency(version: PromotedVersion) -> VersionLatency:
    if version.dataset is not None and version.dataset.exists():
        figures = _known_event_latency(
            version.dataset, version.promoted_at, version.new_after_offset
        )
    else:
        figures = LatencyFigures(0, None, None, None, None)
    fired = version.trigger_fired_at
    return VersionLatency(
        version=version.version,
        promoted_at=version.promoted_at.isoformat(),
        trigger=version.trigger,
        events=figures.events,
        p50_seconds=figures.p50_seconds,
        p95_seconds=figures.p95_seconds,
        max_seconds=figures.max_seconds,
        trigger_to_promotion_seconds=(version.promoted_at - fired).total_seconds()
        if fired is not None
        else None,
    )


def promoted_versions(
    registry: Registry,
    datasets_dir: Path,
    run_created_at: Callable[[str], datetime | None],
    limit: int = LATENCY_HISTORY,
) -> tuple[list[PromotedVersion], str | None]:
    """The ``limit`` most recently promoted versions (oldest first) with what their figures
    need, and the current champion's version (None without one). ``run_created_at`` gives
    the creation time of a Dagster run by id (None when unknown)."""
    promoted = first_promotions(registry.audit_trail())
    champion = registry.alias(CHAMPION)
    if champion is not None and champion.version not in promoted:
        stamp = champion.tags.get(TAG_PROMOTED_AT)
        if stamp:
            promoted[champion.version] = datetime.fromisoformat(stamp)
    newest = sorted(promoted.items(), key=lambda item: item[1])[-limit:] if limit > 0 else []
    registered = registry.versions() if newest else {}
    versions = []
    for version, promoted_at in newest:
        if champion is not None and champion.version == version:
            tags = champion.tags
        elif version in registered:
            tags = registered[version].tags
        else:  # deleted from the registry since its promotion
            continue
        dataset = tags.get(TAG_DATASET_VERSION)
        offset = tags.get(TAG_NEW_AFTER_OFFSET)
        run_id = tags.get(TAG_DAGSTER_RUN_ID)
        versions.append(
            PromotedVersion(
                version=version,
                promoted_at=promoted_at,
                trigger=tags.get(TAG_TRIGGER, "unknown"),
                dataset=datasets_dir / f"{dataset}.parquet" if dataset else None,
                new_after_offset=int(offset) if offset not in (None, "", "None") else None,
                trigger_fired_at=run_created_at(run_id) if run_id else None,
            )
        )
    return versions, champion.version if champion else None


def latency_document(latencies: Sequence[VersionLatency], champion: str | None) -> dict[str, Any]:
    """``{"versions": [...], "champion": <the champion's entry or null>}``."""
    entries = [entry.as_dict() for entry in latencies]
    current = next((e for e in entries if e["version"] == champion), None)
    return {"versions": entries, "champion": current}


def _sample(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ("+Inf" if value > 0 else "-Inf")


def prometheus_text(document: dict[str, Any]) -> str:
    """Prometheus text exposition of the current champion's figures (no samples without a
    champion, or for a figure it lacks)."""
    lines = [
        f"# HELP {LATENCY_METRIC} Seconds from a feedback event to the promotion of the "
        "champion that learned from it: quantiles over the events it learned from.",
        f"# TYPE {LATENCY_METRIC} gauge",
    ]
    champion = document.get("champion")
    if champion:
        version = _label_value(str(champion["version"]))
        for quantile, name in QUANTILE_FIELDS:
            if champion.get(name) is not None:
                lines.append(
                    f'{LATENCY_METRIC}{{version="{version}",quantile="{quantile}"}} '
                    f"{_sample(champion[name])}"
                )
    lines += [
        f"# HELP {TRIGGER_METRIC} Seconds from the trigger that launched the champion's "
        "training run (the run's creation) to its promotion.",
        f"# TYPE {TRIGGER_METRIC} gauge",
    ]
    if champion and champion.get("trigger_to_promotion_seconds") is not None:
        lines.append(
            f'{TRIGGER_METRIC}{{version="{_label_value(str(champion["version"]))}"}} '
            f"{_sample(champion['trigger_to_promotion_seconds'])}"
        )
    return "\n".join(lines) + "\n"


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_latency_exports(document: dict[str, Any], json_path: Path, prom_path: Path) -> None:
    """The JSON document and the Prometheus textfile, each replaced atomically."""
    write_bytes_atomically(json_path, json.dumps(document, indent=2).encode())
    write_bytes_atomically(prom_path, prometheus_text(document).encode())

"""Lineage: model version <-> dataset version <-> daily partitions and events, both ways.

``ct-assets lineage --version N`` follows a registered version to the dataset it was
trained on (its ``ct.dataset_version`` tag), the event dates that dataset covers and
what its rows are made of. ``ct-assets lineage --event ID`` follows an event the other
way: where it is in the log, how curation judged it, which datasets hold it and which
model versions were trained on them.

Everything is read-only (no store or folder is created under ``CT_HOME``), and nothing
loads a dataset or the log whole: datasets are scanned lazily for their
metadata columns (never the features), the per-date curated tables are filtered on
``event_id`` as they are read, a dataset whose manifest's log-offset range cannot hold
an event is not opened at all, and the log is read one date at a time, raw lines
first, decoding only the line that names the event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import polars as pl

from ct_assets import keys
from ct_assets.data.dataset import META_COLUMNS, SPLIT, value_counts
from ct_assets.eventlog.reader import counts_by_date, read_entries, read_events
from ct_assets.registry import (
    CHALLENGER,
    CHAMPION,
    SQLITE_PREFIX,
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN_ID,
    TAG_DATASET_VERSION,
    TAG_DECISION,
    TAG_DEPLOYMENT_STATUS,
    TAG_INIT_VERSION,
    TAG_LOG_POSITION,
    TAG_MODE,
    TAG_NEW_AFTER_OFFSET,
    TAG_TRIGGER,
    Registry,
)
from ct_assets.schema import EVENT_TYPES, EventKind
from ct_assets.settings import Settings

#: Curation states of a feedback event; ``not_curated`` when no curated table holds it yet.
NOT_CURATED = "not_curated"
#: Source counted for dataset rows whose feedback event is in neither the tables nor the log.
SOURCE_NOT_FOUND = "(not found)"
#: How many versions an incremental model's chain of init models is followed back.
MAX_CHAIN = 50

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS: tuple[EventKind, ...] = ("feedback", "prediction")
_CURATION_COLUMNS = ("event_id", "log_offset", "status", "reason", "reason_detail")
_COUNTED_COLUMNS = (SPLIT, "window_part", "label_source", "model_version", "arm")
_EVENT_FIELDS: dict[EventKind, tuple[str, ...]] = {
    "feedback": (
        "feedback_type",
        "prediction_id",
        "entity_id",
        "user_id",
        "source",
        "label",
        "signal",
        "value",
    ),
    "prediction": (
        "prediction_id",
        "model_name",
        "model_version",
        "arm",
        "entity_id",
        "prediction",
    ),
}


class LineageNotFoundError(LookupError):
    """The model version or event asked about does not exist."""


# --- the registry ------------------------------------------------------------------------


def open_registry(settings: Settings) -> Registry | None:
    """The registry, or None when its SQLite store was never created (nothing registered):
    a lookup must not create an empty store as a side effect."""
    uri = settings.tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not Path(uri.removeprefix(SQLITE_PREFIX)).exists():
        return None
    return Registry.from_settings(settings)


def parse_version(raw: str) -> str:
    """``7`` or ``v7`` as the registry's version string; ValueError otherwise."""
    digits = raw.strip().removeprefix("v")
    if not digits.isdigit() or int(digits) < 1:
        raise ValueError(f"a model version is a positive number such as 3 or v3, got {raw!r}")
    return str(int(digits))


def _model_version(registry: Registry, version: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return registry.client.get_model_version(registry.model_name, version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _aliases_by_version(registry: Registry) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias in (CHAMPION, CHALLENGER):
        info = registry.alias(alias)
        if info is not None:
            out.setdefault(info.version, []).append(alias)
    return out


def _all_versions(registry: Registry) -> list[Any]:
    """Every registered version of the model, page by page."""
    name = registry.model_name.replace("'", "\\'")
    versions: list[Any] = []
    token: str | None = None
    while True:
        page = registry.client.search_model_versions(f"name='{name}'", page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def _optional_int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def version_summary(mv: Any, aliases: dict[str, list[str]]) -> dict[str, Any]:
    """What a registered version records about where it came from and where it stands."""
    tags: dict[str, str] = dict(mv.tags or {})
    version = str(mv.version)
    return {
        "version": version,
        "run_id": str(mv.run_id),
        "created_at": datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC).isoformat(),
        "aliases": sorted(aliases.get(version, [])),
        "deployment_status": tags.get(TAG_DEPLOYMENT_STATUS),
        "dataset_version": tags.get(TAG_DATASET_VERSION),
        "dagster_run_id": tags.get(TAG_DAGSTER_RUN_ID),
        "trigger": tags.get(TAG_TRIGGER),
        "mode": tags.get(TAG_MODE),
        "code_version": tags.get(TAG_CODE_VERSION),
        "gate_decision": tags.get(TAG_DECISION),
        "log_position": _optional_int(tags.get(TAG_LOG_POSITION)),
        "init_model_version": tags.get(TAG_INIT_VERSION) or None,
        "new_after_offset": _optional_int(tags.get(TAG_NEW_AFTER_OFFSET)),
    }


def init_chain(
    registry: Registry, first: dict[str, Any], aliases: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """The versions an incremental version continued from, nearest first, until a version
    trained from scratch (or one the registry no longer has)."""
    chain: list[dict[str, Any]] = []
    seen = {first["version"]}
    parent = first["init_model_version"]
    while parent and parent not in seen and len(chain) < MAX_CHAIN:
        seen.add(parent)
        mv = _model_version(registry, parent)
        if mv is None:
            chain.append({"version": parent, "missing": True})
            break
        summary = version_summary(mv, aliases)
        chain.append(summary)
        parent = summary["init_model_version"]
    return chain


def models_by_dataset(registry: Registry | None) -> dict[str, list[dict[str, Any]]]:
    """Registered versions per dataset version they were trained on, oldest first."""
    if registry is None:
        return {}
    aliases = _aliases_by_version(registry)
    out: dict[str, list[dict[str, Any]]] = {}
    for mv in _all_versions(registry):
        summary = version_summary(mv, aliases)
        if summary["dataset_version"]:
            out.setdefault(summary["dataset_version"], []).append(summary)
    for versions in out.values():
        versions.sort(key=lambda s: int(s["version"]))
    return out


# --- datasets ----------------------------------------------------------------------------


def dataset_path(settings: Settings, version: str) -> Path:
    return settings.datasets_dir / f"{version}.parquet"


def dataset_files(settings: Settings) -> list[Path]:
    """Every compiled dataset (``<version>.parquet``), by name."""
    folder = settings.datasets_dir
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


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
        for path in _table_files(settings, keys.VALIDATED_FEEDBACK, dates)
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
            _scan_meta(path)
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


# --- the event log and the curated tables ------------------------------------------------


@dataclass(frozen=True)
class LoggedEvent:
    """One event as the log holds it."""

    kind: EventKind
    date: str
    log_offset: int
    received_at: datetime
    event: Any  # FeedbackEvent | PredictionEvent

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "date": self.date,
            "log_offset": self.log_offset,
            "timestamp": self.event.timestamp.isoformat(),
            "received_at": self.received_at.isoformat(),
            **{name: getattr(self.event, name, None) for name in _EVENT_FIELDS[self.kind]},
        }


def _id_needle(event_id: str) -> bytes | None:
    """The bytes every JSON line naming ``event_id`` contains, when that is unambiguous
    (no character a client might escape differently); None otherwise."""
    quoted = msgspec.json.encode(event_id)
    plain = event_id.isascii() and event_id.isprintable() and quoted[1:-1] == event_id.encode()
    return quoted if plain else None


def _find_line(lines: Sequence[bytes], event_id: str, kind: EventKind) -> tuple[int, Any] | None:
    """Index and decoded event of the line whose ``event_id`` is ``event_id``."""
    decoder: Any = msgspec.json.Decoder(EVENT_TYPES[kind])
    needle = _id_needle(event_id)
    for index, line in enumerate(lines):
        if needle is not None and needle not in line:
            continue
        event = decoder.decode(line)
        if event.event_id == event_id:
            return index, event
    return None


def find_in_log(
    settings: Settings, event_id: str, dates: Iterable[str] | None = None
) -> LoggedEvent | None:
    """The event in the log, reading one date at a time (``dates``, else every date,
    newest first) and decoding only lines that contain the id."""
    root = settings.eventlog_dir
    per_date = counts_by_date(root)
    order = list(dates) if dates is not None else sorted(per_date, reverse=True)
    for day in order:
        counts = per_date.get(day)
        if counts is None:
            continue
        for kind in _KINDS:
            if counts.of(kind) == 0:
                continue
            entries = read_entries(root, kind, dates=[day])
            hit = _find_line(entries.lines, event_id, kind)
            if hit is not None:
                index, event = hit
                received = _EPOCH + timedelta(microseconds=entries.received_us[index])
                return LoggedEvent(kind, day, entries.offsets[index], received, event)
    return None


def _table_path(settings: Settings, table: str, day: str) -> Path:
    return settings.tables_dir / table / f"date={day}.parquet"


def _table_files(settings: Settings, table: str, days: Iterable[str] | None = None) -> list[Path]:
    if days is not None:
        return [p for p in (_table_path(settings, table, d) for d in days) if p.exists()]
    folder = settings.tables_dir / table
    return sorted(folder.glob("date=*.parquet")) if folder.is_dir() else []


def _day_of(path: Path) -> str:
    return path.stem.removeprefix("date=")


def search_tables(
    settings: Settings,
    table: str,
    column: str,
    value: str,
    columns: Sequence[str],
    days: Iterable[str] | None = None,
) -> pl.DataFrame:
    """Rows of the per-date ``table`` (of ``days``, else of every date) whose ``column``
    equals ``value``: only ``columns`` (those a file has) and the file's ``date``."""
    scans = []
    for path in _table_files(settings, table, days):
        present = pl.read_parquet_schema(path)
        if column not in present:
            continue
        scans.append(
            pl.scan_parquet(path)
            .filter(pl.col(column) == value)
            .select(
                *[pl.col(c).cast(pl.String) for c in columns if c in present and c != "log_offset"],
                *([pl.col("log_offset").cast(pl.Int64)] if "log_offset" in present else []),
                pl.lit(_day_of(path)).alias("date"),
            )
        )
    if not scans:
        return pl.DataFrame(schema={"date": pl.String})
    return pl.concat(pl.collect_all(scans), how="diagonal_relaxed")


def curation_of(settings: Settings, event_id: str, day: str | None) -> dict[str, Any]:
    """How curation judged a feedback event: its row in ``validated_feedback`` (of ``day``
    when known), or ``not_curated`` when no curated table holds it yet."""
    found = search_tables(
        settings,
        keys.VALIDATED_FEEDBACK,
        "event_id",
        event_id,
        _CURATION_COLUMNS,
        [day] if day is not None else None,
    )
    if found.height == 0:
        table = _table_path(settings, keys.VALIDATED_FEEDBACK, day) if day else None
        return {
            "state": NOT_CURATED,
            "reason": None,
            "reason_detail": None,
            "date": day,
            "log_offset": None,
            "table": str(table) if table is not None and table.exists() else None,
        }
    row = found.row(0, named=True)
    return {
        "state": row.get("status"),
        "reason": row.get("reason"),
        "reason_detail": row.get("reason_detail"),
        "date": row["date"],
        "log_offset": row.get("log_offset"),
        "table": str(_table_path(settings, keys.VALIDATED_FEEDBACK, row["date"])),
    }


def attributed_feedback(settings: Settings, prediction: LoggedEvent) -> pl.DataFrame:
    """The curated feedback referring to a prediction: ``event_id``, ``log_offset``,
    ``status``, ``reason``, ``date``, from the tables of the dates it can fall on."""
    first = date.fromisoformat(prediction.date)
    span = settings.max_feedback_delay_days + 2
    days = [(first + timedelta(days=i)).isoformat() for i in range(span)]
    found = search_tables(
        settings,
        keys.VALIDATED_FEEDBACK,
        "prediction_id",
        str(prediction.event.prediction_id),
        _CURATION_COLUMNS,
        days,
    )
    return found.sort("log_offset") if found.height else found


# --- the two directions ------------------------------------------------------------------


def version_lineage(settings: Settings, registry: Registry | None, version: str) -> dict[str, Any]:
    """A model version, where it stands, what it continued from, its dataset, the dataset's
    partitions and counts. :class:`LineageNotFoundError` when the registry has no such
    version."""
    mv = _model_version(registry, version) if registry is not None else None
    if registry is None or mv is None:
        raise LineageNotFoundError(
            f"model version {version} not found in registry {settings.model_name!r}"
        )
    aliases = _aliases_by_version(registry)
    summary = version_summary(mv, aliases)
    lineage: dict[str, Any] = {
        "model_name": registry.model_name,
        **summary,
        "init_chain": init_chain(registry, summary, aliases),
        "dataset": None,
        "partitions": [],
        "counts": {},
    }
    if summary["dataset_version"]:
        lineage.update(describe_dataset(settings, summary["dataset_version"]))
    return lineage


def event_lineage(settings: Settings, registry: Registry | None, event_id: str) -> dict[str, Any]:
    """An event (feedback or prediction): its place in the log, its curation, the datasets
    holding it (for a prediction: holding the feedback attributed to it) and the model
    versions trained on those. :class:`LineageNotFoundError` when neither the log nor the
    curated tables know it."""
    curated = search_tables(
        settings, keys.VALIDATED_FEEDBACK, "event_id", event_id, _CURATION_COLUMNS
    )
    logged = find_in_log(settings, event_id, _dates_to_search(settings, event_id, curated))
    if logged is None and curated.height == 0:
        raise LineageNotFoundError(
            f"event {event_id!r} not found in the event log ({settings.eventlog_dir})"
        )
    if logged is not None and logged.kind == "prediction":
        feedback = [
            {k: row.get(k) for k in ("event_id", "log_offset", "date", "status", "reason")}
            for row in attributed_feedback(settings, logged).iter_rows(named=True)
        ]
        offsets: dict[str, int | None] = {str(f["event_id"]): f["log_offset"] for f in feedback}
        return {
            "event_id": event_id,
            "kind": logged.kind,
            "log": logged.as_dict(),
            "curation": None,
            "attributed_feedback": feedback,
            **_memberships(settings, registry, offsets),
        }
    curation = curation_of(settings, event_id, logged.date if logged is not None else None)
    offset = logged.log_offset if logged is not None else curation["log_offset"]
    return {
        "event_id": event_id,
        "kind": "feedback",
        "log": logged.as_dict() if logged is not None else None,
        "curation": curation,
        "attributed_feedback": [],
        **_memberships(settings, registry, {event_id: offset}),
    }


def _dates_to_search(settings: Settings, event_id: str, curated: pl.DataFrame) -> list[str] | None:
    """The dates of the log to read for ``event_id``: the date of the curated table or the
    raw-predictions table holding it, else None (every date)."""
    if curated.height:
        return list(curated["date"])
    predicted = search_tables(settings, keys.RAW_PREDICTIONS, "event_id", event_id, ("event_id",))
    return list(predicted["date"]) if predicted.height else None


def _memberships(
    settings: Settings, registry: Registry | None, offsets: dict[str, int | None]
) -> dict[str, Any]:
    """``datasets`` (one entry per dataset and event, with the versions trained on it) and
    ``models`` (those versions, once each)."""
    rows = datasets_containing(settings, offsets)
    trained = models_by_dataset(registry) if rows.height else {}
    datasets = []
    models: dict[str, dict[str, Any]] = {}
    for row in rows.iter_rows(named=True):
        versions = trained.get(row["dataset_version"], [])
        datasets.append({**row, "model_versions": [v["version"] for v in versions]})
        models.update((v["version"], v) for v in versions)
    return {
        "datasets": datasets,
        "models": [models[v] for v in sorted(models, key=int)],
    }


# --- rendering -----------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def _status_of(entry: dict[str, Any]) -> str:
    aliases = entry.get("aliases") or []
    marks = [f"@{a}" for a in aliases]
    if entry.get("deployment_status") and entry["deployment_status"] not in aliases:
        marks.append(str(entry["deployment_status"]))
    return f"v{entry['version']}" + (f" [{', '.join(marks)}]" if marks else "")


def _counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {n}" for value, n in counts.items()) or "-"


def _chain_line(lineage: dict[str, Any]) -> str:
    steps = [f"v{lineage['version']} ({lineage.get('mode') or '?'})"]
    for entry in lineage["init_chain"]:
        if entry.get("missing"):
            steps.append(f"v{entry['version']} (not in the registry)")
        else:
            steps.append(f"v{entry['version']} ({entry.get('mode') or '?'})")
    return " <- ".join(steps)


def render_version_lineage(lineage: dict[str, Any]) -> str:
    lines = [
        f"model {lineage['model_name']} {_status_of(lineage)}",
        f"  run          {lineage['run_id']}  created {lineage['created_at']}",
        f"  trained by   trigger {lineage['trigger'] or '-'}, mode {lineage['mode'] or '-'}, "
        f"dagster run {lineage['dagster_run_id'] or '-'}, code {lineage['code_version'] or '-'}",
    ]
    if lineage["init_model_version"]:
        lines.append(
            f"  continues    v{lineage['init_model_version']} on rows after log offset "
            f"{lineage['new_after_offset']}; chain {_chain_line(lineage)}"
        )
    dataset = lineage["dataset"]
    if dataset is None:
        lines.append("  dataset      none recorded (no ct.dataset_version tag)")
        return "\n".join(lines)
    if not dataset["exists"]:
        lines.append(f"  dataset      {dataset['version']}: file missing ({dataset['path']})")
        return "\n".join(lines)
    counts = lineage["counts"]
    lines += [
        f"  dataset      {dataset['version']}  {counts['rows']} rows "
        f"({dataset['train_rows']} train, {dataset['holdout_rows']} holdout), "
        f"log position {dataset['log_position']}",
        f"               {dataset['path']}",
        _partitions_header(lineage["partitions"]),
        *_partition_rows(lineage["partitions"]),
    ]
    labels = (
        ("source", "by_source"),
        ("split", "by_split"),
        ("window part", "by_window_part"),
        ("label source", "by_label_source"),
        ("served by", "by_model_version"),
        ("arm", "by_arm"),
    )
    lines += [f"  {label:<12} {_counts_line(counts.get(key, {}))}" for label, key in labels]
    return "\n".join(lines)


def _partitions_header(partitions: list[dict[str, Any]]) -> str:
    if not partitions:
        return "  partitions   none"
    span = f"{partitions[0]['date']} .. {partitions[-1]['date']}"
    return f"  partitions   {len(partitions)} event dates, {span}"


def _partition_rows(partitions: list[dict[str, Any]]) -> list[str]:
    header = (
        f"    {'date':<10} {'rows':>6} {'train':>6} {'hold':>5} {'of log':>7}  "
        f"{'log offsets':<17} event ids"
    )
    rows = [header]
    for p in partitions:
        logged = "-" if p["log_feedback_events"] is None else str(p["log_feedback_events"])
        offsets = f"{p['first_log_offset']}..{p['last_log_offset']}"
        rows.append(
            f"    {p['date']:<10} {p['rows']:>6} {p['train']:>6} {p['holdout']:>5} {logged:>7}  "
            f"{offsets:<17} {p['first_event_id']} .. {p['last_event_id']}"
        )
    return rows


def render_event_lineage(lineage: dict[str, Any]) -> str:
    lines = [f"event {lineage['event_id']} ({lineage['kind']})"]
    logged = lineage["log"]
    if logged is None:
        lines.append("  log          not in the event log (known only to the curated tables)")
    else:
        fields = _EVENT_FIELDS[lineage["kind"]]
        described = ", ".join(f"{k} {logged[k]}" for k in fields if logged.get(k) is not None)
        lines.append(
            f"  log          date {logged['date']}, log offset {logged['log_offset']}, "
            f"at {logged['timestamp']} (received {logged['received_at']})"
        )
        lines.append(f"               {described or '-'}")
    curation = lineage["curation"]
    if curation is not None:
        lines.append(f"  curation     {_curation_line(curation)}")
    for fb in lineage["attributed_feedback"]:
        lines.append(
            f"  feedback     {fb['event_id']} (date {fb['date']}, log offset {fb['log_offset']}): "
            f"{fb['status']}" + (f" ({fb['reason']})" if fb["reason"] else "")
        )
    if lineage["kind"] == "prediction" and not lineage["attributed_feedback"]:
        lines.append("  feedback     none curated yet")
    datasets = lineage["datasets"]
    lines.append(f"  datasets     {len(datasets) or 'none'}")
    models = {m["version"]: m for m in lineage["models"]}
    for entry in datasets:
        trained = ", ".join(_status_of(models[v]) for v in entry["model_versions"]) or "no model"
        held = f" holds {entry['event_id']}" if lineage["kind"] == "prediction" else ""
        lines.append(f"    {entry['dataset_version']}{held}  {entry['split']:<7} -> {trained}")
    return "\n".join(lines)


def _curation_line(curation: dict[str, Any]) -> str:
    if curation["state"] == NOT_CURATED:
        where = " (its date's table predates it)" if curation["table"] else ""
        return f"not curated yet{where}"
    text = f"{curation['state']} (validated_feedback, date {curation['date']})"
    if curation["reason"]:
        text += f": {curation['reason']}"
        if curation["reason_detail"]:
            text += f" - {curation['reason_detail']}"
    return text

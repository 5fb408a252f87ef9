"""The two directions of lineage, as JSON-ready dicts: a model version to its dataset and
the dataset's partitions, and an event to the datasets holding it and the model versions
trained on them."""

from __future__ import annotations

from typing import Any

import polars as pl

from ct_assets import keys
from ct_assets.eventlog.locate import locate
from ct_assets.lineage.datasets import datasets_containing, describe_dataset
from ct_assets.lineage.errors import LineageNotFoundError
from ct_assets.lineage.events import (
    CURATION_COLUMNS,
    LoggedEvent,
    attributed_feedback,
    curation_of,
    find_in_commit,
    find_in_log,
    search_tables,
)
from ct_assets.lineage.registry_view import (
    aliases_by_version,
    init_chain,
    model_version,
    models_by_dataset,
    version_summary,
)
from ct_assets.registry import Registry
from ct_assets.retention import tombstone_of_version
from ct_assets.settings import Settings


def version_lineage(settings: Settings, registry: Registry | None, version: str) -> dict[str, Any]:
    """A model version, where it stands, what it continued from, its dataset, the dataset's
    partitions and counts; for a version ``ct-assets gc`` deleted, its tombstone (when,
    why, its dataset version and tags). :class:`LineageNotFoundError` when the registry
    has no such version and gc never deleted it."""
    mv = model_version(registry, version) if registry is not None else None
    if registry is None or mv is None:
        tombstone = tombstone_of_version(settings, version)
        if tombstone is not None:
            return {
                "model_name": settings.model_name,
                "version": version,
                "deleted": {"when": tombstone.get("when"), "why": tombstone.get("why")},
                "dataset_version": tombstone.get("dataset_version"),
                "run_id": tombstone.get("run_id"),
                "created_at": tombstone.get("created_at"),
                "tags": tombstone.get("tags", {}),
            }
        raise LineageNotFoundError(
            f"model version {version} not found in registry {settings.model_name!r}"
        )
    aliases = aliases_by_version(registry)
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
    curated, logged, answered = _indexed(settings, event_id)
    if not answered:  # the id index cannot tell: search every date
        curated = search_tables(
            settings, keys.VALIDATED_FEEDBACK, "event_id", event_id, CURATION_COLUMNS
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


def _indexed(settings: Settings, event_id: str) -> tuple[pl.DataFrame, LoggedEvent | None, bool]:
    """The event's curated rows and its place in the log, read only from the dates the
    event id index names (a cost that does not grow with the log's history; no place: the
    log does not hold it), and whether the index could tell (else: search every date)."""
    located = locate(settings.eventlog_dir, event_id)
    if located is None:
        return pl.DataFrame(), None, False
    dates = located.dates
    curated = search_tables(
        settings, keys.VALIDATED_FEEDBACK, "event_id", event_id, CURATION_COLUMNS, dates
    )
    curated_offset = (
        curated["log_offset"][0] if curated.height and "log_offset" in curated.columns else None
    )
    logged = (
        find_in_commit(settings, event_id, located.commit, curated_offset)
        if located.commit
        else None
    )
    return curated, logged or find_in_log(settings, event_id, dates), True


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

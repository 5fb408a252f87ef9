"""The decision: what gc keeps and deletes now, and why (reads only). Kept: the versions
an alias, a deployment or the champion's rollback names, the newest ``CT_KEEP_VERSIONS``
and every version a kept one continued from, with what their lineage needs; deleted:
everything else, and what versions deleted by an earlier, interrupted gc left behind."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ct_assets.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_INIT_VERSION,
    TAG_PREVIOUS_CHAMPION,
    Deployment,
    Registry,
    VersionInfo,
)
from ct_assets.retention.files import FileItem, checkpoint_items, handoff_items
from ct_assets.retention.items import (
    DATASET,
    DELETE_ORDER,
    DRIFT_REFERENCE,
    MODEL_VERSION,
    REPORT,
    RUN,
    Item,
    Plan,
)
from ct_assets.retention.segments import segment_items
from ct_assets.retention.stored import (
    object_store,
    stored_datasets,
    stored_drift_references,
    stored_reports,
)
from ct_assets.retention.tombstones import read_tombstones
from ct_assets.settings import Settings
from ct_assets.storage import ObjectStore


def kept_versions(
    versions: Mapping[str, VersionInfo],
    aliases: Mapping[str, str],
    deployment: Deployment,
    keep: int,
) -> dict[str, list[str]]:
    """The registered versions to keep, each with why: aliases, the deployed challenger,
    the champion's rollback target, the newest ``keep``, then every version a kept one
    continued from (recursively)."""
    reasons: dict[str, list[str]] = {}

    def add(version: str | None, why: str) -> None:
        if version and version in versions and why not in reasons.setdefault(version, []):
            reasons[version].append(why)

    for alias, version in sorted(aliases.items()):
        add(version, f"alias {alias}")
    if deployment.mode != "off" and CHALLENGER in aliases:
        add(aliases[CHALLENGER], f"deployed ({deployment.mode})")
    if CHAMPION in aliases:
        champion = versions.get(aliases[CHAMPION])
        previous = champion.tags.get(TAG_PREVIOUS_CHAMPION) if champion else None
        add(previous, f"rollback target of champion v{aliases[CHAMPION]}")
    for version in sorted(versions, key=int, reverse=True)[:keep]:
        add(version, f"among the newest {keep}")
    pending = list(reasons)
    while pending:
        child = pending.pop()
        parent = versions[child].tags.get(TAG_INIT_VERSION)
        if parent and parent in versions and parent not in reasons:
            pending.append(parent)
        add(parent, f"continued from by kept v{child}")
    return {v: reasons[v] for v in sorted(reasons, key=int)}


def _report_files(settings: Settings, version: str) -> list[Path]:
    folder = settings.reports_dir
    if not folder.is_dir():
        return []
    main = folder / f"validation-v{version}.json"
    plots = folder.glob(f"validation-v{version}-*.png")
    return sorted(p for p in [main, *plots] if p.exists())


def _dataset_files(settings: Settings, dataset: str) -> list[Path]:
    folder = settings.datasets_dir
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(f"{dataset}.*") if p.suffix in {".parquet", ".json"})


def _datasets_on_disk(settings: Settings) -> set[str]:
    folder = settings.datasets_dir
    if not folder.is_dir():
        return set()
    return {p.stem for p in folder.glob("*.parquet")} | {p.stem for p in folder.glob("*.json")}


def _versions_files(
    settings: Settings, store: ObjectStore | None, versions: Iterable[str]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per model version, its validation report's files and its drift reference: the local
    ones (``reports/validation-v<N>*``, the ``drift/<N>`` folder), then its objects on the
    store (each kind listed once, not once per version)."""
    reports_dir, drift_dir = settings.reports_dir, settings.drift_dir
    on_disk = {str(p) for p in reports_dir.iterdir()} if reports_dir.is_dir() else set()
    folders = {str(p) for p in drift_dir.iterdir()} if drift_dir.is_dir() else set()
    stored_report = stored_reports(store, on_disk)
    stored_drift = stored_drift_references(store, folders)
    reports: dict[str, list[str]] = {}
    drift: dict[str, list[str]] = {}
    for version in versions:
        local = [str(p) for p in _report_files(settings, version)]
        reports[version] = local + stored_report.get(version, [])
        folder = drift_dir / version
        drift[version] = ([str(folder)] if folder.exists() else []) + stored_drift.get(version, [])
    return reports, drift


def _local_artifacts(settings: Settings, artifact_uri: str) -> str | None:
    """The run's artifact folder when it is a local folder under CT_HOME's MLflow store."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return None
    path = Path(unquote(parsed.path)).resolve()
    root = settings.mlflow_dir.resolve()
    return str(path) if path.is_relative_to(root) and path != root else None


def make_plan(settings: Settings, registry: Registry | None) -> Plan:
    """What gc keeps and deletes now, and why (reads only). Without a registry (nothing was
    ever registered) only the event log's old segments are planned."""
    from mlflow.exceptions import MlflowException

    if registry is None:
        return Plan([], segment_items(settings), datetime.now(UTC).isoformat())

    versions = registry.versions()
    store = object_store(settings)
    aliases = {a: v.version for a in (CHAMPION, CHALLENGER) if (v := registry.alias(a)) is not None}
    keep = kept_versions(versions, aliases, registry.deployment(), settings.keep_versions)
    tombstones = read_tombstones(settings)
    gone = {
        i: r
        for (what, i), r in tombstones.items()
        if what == MODEL_VERSION and not r.get("cancelled") and i not in versions
    }
    kept: list[Item] = []
    deleted: list[Item] = []
    for version, info in sorted(versions.items(), key=lambda kv: int(kv[0])):
        detail = {
            "dataset_version": info.dataset_version,
            "run_id": info.run_id,
            "created_at": info.created_at,
        }
        if version in keep:
            kept.append(Item(MODEL_VERSION, version, keep[version], detail=detail))
            continue
        why = (
            f"not an alias, not deployed, not among the newest {settings.keep_versions}, "
            "not in a kept version's lineage"
        )
        deleted.append(Item(MODEL_VERSION, version, [why], detail={**detail, "tags": info.tags}))
    deleting = {i.id for i in deleted if i.what == MODEL_VERSION}
    reports, drifts = _versions_files(settings, store, deleting | set(gone) | set(keep))
    # what deleted (now or by an earlier, interrupted gc) versions leave behind
    for version in sorted(deleting | set(gone), key=int):
        why = f"of deleted model version v{version}"
        run_id = versions[version].run_id if version in versions else gone[version].get("run_id")
        if run_id:
            try:
                run = registry.client.get_run(str(run_id))
            except MlflowException:
                run = None
            used = any(v.run_id == run_id for k, v in versions.items() if k not in deleting)
            if run is not None and not used:
                local = _local_artifacts(settings, run.info.artifact_uri)
                active = run.info.lifecycle_stage != "deleted"
                if active or (local and Path(local).exists()):
                    paths = [local] if local else []
                    deleted.append(Item(RUN, str(run_id), [why], paths, {"version": version}))
        if files := reports.get(version):
            deleted.append(Item(REPORT, version, [why], files))
        if drift := drifts.get(version):
            deleted.append(Item(DRIFT_REFERENCE, version, [why], drift))
    for version in sorted(keep, key=int):
        if files := reports.get(version):
            kept.append(Item(REPORT, version, [f"of kept v{version}"], files))
        if drift := drifts.get(version):
            kept.append(Item(DRIFT_REFERENCE, version, [f"of kept v{version}"], drift))
    # datasets: kept while a remaining version uses them or no version ever did
    users: dict[str, list[str]] = {}
    for version, info in versions.items():
        if version not in deleting and info.dataset_version:
            users.setdefault(info.dataset_version, []).append(version)
    dropped: dict[str, list[str]] = {}
    for version in deleting:
        if dv := versions[version].dataset_version:
            dropped.setdefault(dv, []).append(version)
    for version, record in gone.items():
        if dv := record.get("dataset_version"):
            dropped.setdefault(str(dv), []).append(version)
    on_disk = {
        dataset: [str(p) for p in _dataset_files(settings, dataset)]
        for dataset in _datasets_on_disk(settings) | set(users)
    }
    stored = stored_datasets(store, {p for paths in on_disk.values() for p in paths})
    for dataset in sorted(set(on_disk) | set(stored)):
        paths = on_disk.get(dataset, []) + stored.get(dataset, [])
        if dataset in users:
            reasons = [f"dataset of v{v}" for v in sorted(users[dataset], key=int)]
            kept.append(Item(DATASET, dataset, reasons, paths))
        elif dataset in dropped:
            if paths:
                names = ", ".join(f"v{v}" for v in sorted(set(dropped[dataset]), key=int))
                reasons = [f"used only by deleted {names}"]
                owners: dict[str, Any] = {"versions": sorted(set(dropped[dataset]), key=int)}
                deleted.append(Item(DATASET, dataset, reasons, paths, owners))
        else:
            reasons = ["used by no registered version (may be an in-flight run's)"]
            kept.append(Item(DATASET, dataset, reasons, paths))
    gone_datasets = {i for (what, i), r in tombstones.items() if what == DATASET} - set(users)
    dead = {i.id for i in deleted if i.what == DATASET} | gone_datasets
    for keep_files, drop_files in (
        handoff_items(settings, deleting | set(gone), dead, store),
        checkpoint_items(settings, store=store),
    ):
        kept += [_item(f) for f in keep_files]
        deleted += [_item(f) for f in drop_files]
    deleted += segment_items(settings)
    order = {what: n for n, what in enumerate(DELETE_ORDER)}
    deleted.sort(key=lambda i: order[i.what])
    return Plan(kept, deleted, datetime.now(UTC).isoformat())


def _item(found: FileItem) -> Item:
    return Item(found.what, found.id, found.why, found.paths, found.detail)

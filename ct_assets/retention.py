"""Retention (``ct-assets gc``): what the loop keeps under ``CT_HOME`` and in MLflow.

Kept: the versions holding an alias (``champion``, ``challenger``), the version a
deployment (shadow, canary, ab) points at, the champion's rollback target, the newest
``CT_KEEP_VERSIONS`` registered versions, and everything a kept version's lineage needs:
the versions it continued from (``ct.init_model_version``, recursively), its dataset
(``CT_HOME/datasets/<version>.*``), its validation report, its drift reference
(``CT_HOME/drift/<version>/``) and its run. Deleted: every other registered version, its
run (marked deleted, its local artifacts removed), its report and drift reference, the
retrain runs' hand-offs naming it, datasets no remaining version uses, and checkpoints of
trainings not resumed for ``CT_GC_CHECKPOINT_AGE_HOURS`` (:mod:`ct_assets.retention_files`).
The event log and the per-date tables are never touched; a dataset no version ever used
(an in-flight run's) is kept, and so is each asset's latest hand-off.

Crash safety: the plan (``CT_HOME/gc/plan.json``) and one tombstone per deleted object
(``CT_HOME/gc/tombstones.jsonl``) are written and fsynced before anything is deleted.
Versions are deleted first (then nothing can give them an alias again), their files
after; an object whose version is tombstoned is planned for deletion again by the next
gc, so a gc killed midway and run again finishes the job and never leaves a kept version
without its dataset. Tombstones keep lineage answerable for what is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ct_assets.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_INIT_VERSION,
    TAG_PREVIOUS_CHAMPION,
    AuditRecord,
    Deployment,
    Registry,
    VersionInfo,
)
from ct_assets.retention_files import (
    CHECKPOINT,
    HANDOFF,
    FileItem,
    checkpoint_items,
    handoff_items,
    remove_checkpoint,
)
from ct_assets.settings import Settings

#: Test hook: the gc process kills itself (SIGKILL) after this many deletions.
KILL_AFTER_ENV = "CT_TEST_GC_KILL_AFTER"

MODEL_VERSION = "model_version"
RUN = "mlflow_run"
DATASET = "dataset"
REPORT = "report"
DRIFT_REFERENCE = "drift_reference"
#: The order deletions run in: a version leaves the registry before anything it needs.
DELETE_ORDER = (MODEL_VERSION, RUN, HANDOFF, REPORT, DRIFT_REFERENCE, CHECKPOINT, DATASET)


@dataclass(frozen=True)
class Item:
    """One object gc keeps or deletes: what it is, its id, the files it is, and why."""

    what: str
    id: str
    why: list[str]
    paths: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    kept: list[Item]
    deleted: list[Item]
    at: str

    def as_json(self, dry_run: bool) -> dict[str, Any]:
        return {
            "kept": [i.as_json() for i in self.kept],
            "deleted": [i.as_json() for i in self.deleted],
            "dry_run": dry_run,
            "at": self.at,
        }


def gc_dir(settings: Settings) -> Path:
    return settings.home / "gc"


def tombstones_path(settings: Settings) -> Path:
    return gc_dir(settings) / "tombstones.jsonl"


def plan_path(settings: Settings) -> Path:
    return gc_dir(settings) / "plan.json"


# --- the decision (plain) -------------------------------------------------------------------


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


# --- reading the store ----------------------------------------------------------------------


def read_tombstones(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """The last tombstone record of each (what, id); a torn last line is ignored."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    path = tombstones_path(settings)
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "what" in record and "id" in record:
            out[(str(record["what"]), str(record["id"]))] = record
    return out


def tombstone_of_version(settings: Settings, version: str) -> dict[str, Any] | None:
    """The tombstone of a model version gc deleted, or None."""
    record = read_tombstones(settings).get((MODEL_VERSION, version))
    return None if record is None or record.get("cancelled") else record


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


def _local_artifacts(settings: Settings, artifact_uri: str) -> str | None:
    """The run's artifact folder when it is a local folder under CT_HOME's MLflow store."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme not in ("", "file"):
        return None
    path = Path(unquote(parsed.path)).resolve()
    root = settings.mlflow_dir.resolve()
    return str(path) if path.is_relative_to(root) and path != root else None


def make_plan(settings: Settings, registry: Registry) -> Plan:
    """What gc keeps and deletes now, and why (reads only)."""
    from mlflow.exceptions import MlflowException

    versions = registry.versions()
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
        if files := _report_files(settings, version):
            deleted.append(Item(REPORT, version, [why], [str(p) for p in files]))
        drift = settings.drift_dir / version
        if drift.exists():
            deleted.append(Item(DRIFT_REFERENCE, version, [why], [str(drift)]))
    for version in sorted(keep, key=int):
        if files := _report_files(settings, version):
            kept.append(Item(REPORT, version, [f"of kept v{version}"], [str(p) for p in files]))
        drift = settings.drift_dir / version
        if drift.exists():
            kept.append(Item(DRIFT_REFERENCE, version, [f"of kept v{version}"], [str(drift)]))
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
    for dataset in sorted(_datasets_on_disk(settings) | set(users)):
        paths = [str(p) for p in _dataset_files(settings, dataset)]
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
        handoff_items(settings, deleting | set(gone), dead),
        checkpoint_items(settings),
    ):
        kept += [_item(f) for f in keep_files]
        deleted += [_item(f) for f in drop_files]
    order = {what: n for n, what in enumerate(DELETE_ORDER)}
    deleted.sort(key=lambda i: order[i.what])
    return Plan(kept, deleted, datetime.now(UTC).isoformat())


def _item(found: FileItem) -> Item:
    return Item(found.what, found.id, found.why, found.paths, found.detail)


# --- doing it ---------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _append_durably(path: Path, records: Iterable[dict[str, Any]]) -> None:
    lines = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a") as handle:
        handle.write(lines)
        handle.flush()
        os.fsync(handle.fileno())
    if new:
        _fsync_dir(path.parent)


def _tombstone(item: Item, at: str) -> dict[str, Any]:
    return {
        "what": item.what,
        "id": item.id,
        "when": at,
        "why": "; ".join(item.why),
        "paths": item.paths,
        **item.detail,
    }


def _remove(path: str) -> None:
    target = Path(path)
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)


def _kill_hook() -> Callable[[int], None]:
    raw = os.environ.get(KILL_AFTER_ENV, "").strip()
    if not raw:
        return lambda _done: None
    limit = int(raw)

    def hook(done: int) -> None:
        if done >= limit:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _owners(item: Item) -> set[str]:
    """The model versions an item to delete belongs to."""
    if item.what in (MODEL_VERSION, REPORT, DRIFT_REFERENCE):
        return {item.id}
    if item.what == RUN:
        return {str(item.detail.get("version"))}
    return {str(v) for v in item.detail.get("versions", [])}


def run_gc(settings: Settings, registry: Registry, *, dry_run: bool, by: str = "ct_assets") -> Plan:
    """Plan, and unless ``dry_run`` write the plan and tombstones (fsynced), then delete."""
    from mlflow.exceptions import MlflowException

    plan = make_plan(settings, registry)
    if dry_run:
        return plan
    _write_durably(plan_path(settings), json.dumps(plan.as_json(dry_run=False), indent=2))
    known = read_tombstones(settings)
    fresh = [
        _tombstone(i, plan.at)
        for i in plan.deleted
        if (i.what, i.id) not in known or known[(i.what, i.id)].get("cancelled")
    ]
    _append_durably(tombstones_path(settings), fresh)
    after_delete = _kill_hook()
    done = 0
    touched: set[str] = set()
    cancelled: set[str] = set()
    for item in plan.deleted:
        if _owners(item) & cancelled:
            continue  # belongs to a version that was kept after all
        if item.what == MODEL_VERSION:
            try:
                current = registry.client.get_model_version(registry.model_name, item.id)
            except MlflowException:
                current = None  # already gone
            if current is not None and list(current.aliases or []):
                # it got an alias since the plan was made: keep it after all
                cancelled.add(item.id)
                _append_durably(
                    tombstones_path(settings),
                    [{"what": item.what, "id": item.id, "cancelled": True, "when": plan.at}],
                )
                continue
            if current is not None:
                registry.client.delete_model_version(registry.model_name, item.id)
        elif item.what == RUN:
            try:
                if registry.client.get_run(item.id).info.lifecycle_stage != "deleted":
                    registry.client.delete_run(item.id)
            except MlflowException:
                pass
            for path in item.paths:
                _remove(path)
        elif item.what == CHECKPOINT:
            for path in item.paths:
                remove_checkpoint(path)
        else:
            for path in item.paths:
                _remove(path)
        touched |= _owners(item)
        done += 1
        after_delete(done)
    if touched:
        registry.audit(
            AuditRecord(
                "gc",
                ",".join(sorted(touched, key=int)),
                None,
                by,
                f"deleted {len(plan.deleted)} object(s); kept {len(plan.kept)} "
                f"(CT_KEEP_VERSIONS {settings.keep_versions})",
                datetime.now(UTC).isoformat(),
            )
        )
    plan_path(settings).unlink(missing_ok=True)
    _fsync_dir(gc_dir(settings))
    return plan

"""Doing it: the plan and the tombstones are written (fsynced) before anything is deleted;
versions leave the registry first, their files after; a version given an alias since the
plan was made is kept after all (its tombstone cancelled), and so is everything of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ct_assets.registry import AuditRecord, Registry
from ct_assets.retention.files import CHECKPOINT, remove_checkpoint
from ct_assets.retention.items import (
    DRIFT_REFERENCE,
    EVENT_SEGMENT,
    MODEL_VERSION,
    REPORT,
    RUN,
    Item,
    Plan,
)
from ct_assets.retention.plan import make_plan
from ct_assets.retention.segments import archive_item
from ct_assets.retention.stored import is_stored, object_store, remove_stored
from ct_assets.retention.tombstones import (
    append_durably,
    fsync_dir,
    gc_dir,
    plan_path,
    read_tombstones,
    tombstone,
    tombstones_path,
    write_durably,
)
from ct_assets.settings import Settings
from ct_assets.storage import ObjectStore

#: Test hook: the gc process kills itself (SIGKILL) after this many deletions.
KILL_AFTER_ENV = "CT_TEST_GC_KILL_AFTER"


def _remove(path: str, store: ObjectStore | None) -> None:
    """A local file or folder, or an object of ``store`` named by its URI."""
    if store is not None and is_stored(path, store):
        remove_stored(store, path)
        return
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


def run_gc(
    settings: Settings, registry: Registry | None, *, dry_run: bool, by: str = "ct_assets"
) -> Plan:
    """Plan, and unless ``dry_run`` write the plan and tombstones (fsynced), then delete."""
    from mlflow.exceptions import MlflowException

    plan = make_plan(settings, registry)
    if dry_run:
        return plan
    write_durably(plan_path(settings), json.dumps(plan.as_json(dry_run=False), indent=2))
    known = read_tombstones(settings)
    fresh = [
        tombstone(i, plan.at)
        for i in plan.deleted
        if (i.what, i.id) not in known or known[(i.what, i.id)].get("cancelled")
    ]
    append_durably(tombstones_path(settings), fresh)
    after_delete = _kill_hook()
    store = object_store(settings)
    done = 0
    touched: set[str] = set()
    cancelled: set[str] = set()
    for item in plan.deleted:
        if _owners(item) & cancelled:
            continue  # belongs to a version that was kept after all
        if item.what == MODEL_VERSION and registry is not None:
            try:
                current = registry.client.get_model_version(registry.model_name, item.id)
            except MlflowException:
                current = None  # already gone
            if current is not None and list(current.aliases or []):
                # it got an alias since the plan was made: keep it after all
                cancelled.add(item.id)
                append_durably(
                    tombstones_path(settings),
                    [{"what": item.what, "id": item.id, "cancelled": True, "when": plan.at}],
                )
                continue
            if current is not None:
                registry.client.delete_model_version(registry.model_name, item.id)
        elif item.what == RUN and registry is not None:
            try:
                if registry.client.get_run(item.id).info.lifecycle_stage != "deleted":
                    registry.client.delete_run(item.id)
            except MlflowException:
                pass
            for path in item.paths:
                _remove(path, store)
        elif item.what == EVENT_SEGMENT:
            archive_item(settings, item)
        elif item.what == CHECKPOINT:
            for path in item.paths:  # the local folder, then the stored state and model
                if is_stored(path, store):
                    _remove(path, store)
                else:
                    remove_checkpoint(path)
        else:
            for path in item.paths:
                _remove(path, store)
        touched |= _owners(item)
        done += 1
        after_delete(done)
    if touched and registry is not None:
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
    fsync_dir(gc_dir(settings))
    return plan

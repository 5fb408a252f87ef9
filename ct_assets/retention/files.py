"""What ``ct-assets gc`` decides about the files runs leave behind: the retrain job's
per-run hand-offs and interrupted trainings' checkpoints (see :mod:`ct_assets.retention`).

* Hand-offs (``CT_HOME/handoffs/<asset>/runs/<run_id>.json``, and the same keys on the
  object store): a run's record is deleted
  when a model version it names is being (or was) deleted, or, for a dataset hand-off,
  when its dataset is. Each asset's latest record (``<asset>.json``) is always kept, and
  so is a record naming only kept versions and datasets, or one that cannot be read.
* Checkpoints (``CT_HOME/checkpoints/<key>/``, and ``checkpoints/<key>/`` on the object
  store): a finished training removes its own; what is left belongs to a training that
  was killed or failed. No lineage needs one; a rerun
  of the same job resumes from it. A checkpoint not written for ``CT_GC_CHECKPOINT_AGE_HOURS``
  is deleted, its state first, so a half-deleted one is never resumed from.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ct_assets.retention.stored import stored_checkpoints, stored_handoffs
from ct_assets.settings import Settings
from ct_assets.storage import ObjectStore

HANDOFF = "handoff"
CHECKPOINT = "checkpoint"
CHECKPOINT_STATE = "state.json"


@dataclass(frozen=True)
class FileItem:
    """One file or folder to keep or delete, with why and the model versions it names."""

    what: str
    id: str
    why: list[str]
    paths: list[str]
    detail: dict[str, Any] = field(default_factory=dict)


def _names(record: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The model versions and datasets a hand-off record names."""
    versions = {str(record[k]) for k in ("model_version",) if record.get(k)}
    datasets = {str(record[k]) for k in ("dataset_version",) if record.get(k)}
    if "path" in record and record.get("version"):  # a dataset hand-off
        datasets.add(str(record["version"]))
    return versions, datasets


def handoff_items(
    settings: Settings,
    deleted_versions: Collection[str],
    deleted_datasets: Collection[str],
    store: ObjectStore | None = None,
) -> tuple[list[FileItem], list[FileItem]]:
    """The per-run hand-offs to keep and to delete: deleted when a version or dataset it
    names is among ``deleted_versions`` / ``deleted_datasets`` (now or by an earlier gc).
    A run's record on ``store`` (``handoffs/<asset>/runs/<run_id>.json``) and its local
    file are one item."""
    records: dict[str, tuple[list[str], dict[str, Any]]] = {}
    root = settings.handoffs_dir
    for path in sorted(root.glob("*/runs/*.json")) if root.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # torn or removed meanwhile: not ours to judge
        if isinstance(record, dict):
            records[f"{path.parent.parent.name}/{path.stem}"] = ([str(path)], record)
    local = [paths[0] for paths, _ in records.values()]
    for item_id, (uri, record) in stored_handoffs(store, local).items():
        paths, known = records.get(item_id, ([], record))
        records[item_id] = ([*paths, uri], known)
    kept: list[FileItem] = []
    deleted: list[FileItem] = []
    for item_id, (paths, record) in sorted(records.items()):
        versions, datasets = _names(record)
        gone_versions = sorted(versions & set(deleted_versions), key=int)
        gone_datasets = sorted(datasets & set(deleted_datasets))
        if gone_versions or gone_datasets:
            named = [f"v{v}" for v in gone_versions] + [f"dataset {d}" for d in gone_datasets]
            why = f"names deleted {', '.join(named)}"
            deleted.append(FileItem(HANDOFF, item_id, [why], paths, {"versions": gone_versions}))
        else:
            kept.append(FileItem(HANDOFF, item_id, ["names no deleted version"], paths))
    return kept, deleted


def _last_write(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times)


def checkpoint_items(
    settings: Settings, now: datetime | None = None, store: ObjectStore | None = None
) -> tuple[list[FileItem], list[FileItem]]:
    """The checkpoints to keep (written within ``CT_GC_CHECKPOINT_AGE_HOURS``: a training
    may be running or about to resume) and to delete: each job's local folder and its
    copy on ``store`` (:mod:`ct_assets.training.stored_checkpoint`) as one item."""
    kept: list[FileItem] = []
    deleted: list[FileItem] = []
    jobs: dict[str, tuple[list[str], float]] = {}
    root = settings.checkpoints_dir
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        try:
            jobs[folder.name] = ([str(folder)], _last_write(folder))
        except OSError:
            continue
    local = [paths[0] for paths, _ in jobs.values()]
    for job, (uris, written) in stored_checkpoints(store, local).items():
        paths, when = jobs.get(job, ([], written))
        jobs[job] = (paths + uris, max(when, written))
    at = (now or datetime.now(UTC)).timestamp()
    hours = settings.gc_checkpoint_age_hours
    for job, (paths, written) in sorted(jobs.items()):
        age = (at - written) / 3600
        last = {"hours_since_last_write": round(age, 1)}
        if age < hours:
            why = f"written in the last {hours} h: a training may be running or resuming"
            kept.append(FileItem(CHECKPOINT, job, [why], paths, last))
        else:
            why = f"not written for {hours} h or more: its training was not resumed"
            deleted.append(FileItem(CHECKPOINT, job, [why], paths, last))
    return kept, deleted


def remove_checkpoint(folder: str) -> None:
    """The state first (then nothing resumes from what is left), then the folder."""
    path = Path(folder)
    with contextlib.suppress(FileNotFoundError):
        (path / CHECKPOINT_STATE).unlink()
    shutil.rmtree(path, ignore_errors=True)

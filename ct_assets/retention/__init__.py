"""Retention (``ct-assets gc``): what the loop keeps under ``CT_HOME`` and in MLflow.

Kept: the versions holding an alias (``champion``, ``challenger``), the version a
deployment (shadow, canary, ab) points at, the champion's rollback target, the newest
``CT_KEEP_VERSIONS`` registered versions, and everything a kept version's lineage needs:
the versions it continued from (``ct.init_model_version``, recursively), its dataset
(``CT_HOME/datasets/<version>.*``), its validation report, its drift reference
(``CT_HOME/drift/<version>/``) and its run. Deleted: every other registered version, its
run (marked deleted, its local artifacts removed), its report and drift reference, the
retrain runs' hand-offs naming it, datasets no remaining version uses, and checkpoints of
trainings not resumed for ``CT_GC_CHECKPOINT_AGE_HOURS`` (:mod:`ct_assets.retention.files`).
The per-date tables are never touched; with ``CT_RETENTION_DAYS`` the segments of older
event dates are replaced by their lossless columnar archive (``segments``). A dataset no
version ever used (an in-flight run's) is kept, and so is each asset's latest hand-off.

Crash safety: the plan (``CT_HOME/gc/plan.json``) and one tombstone per deleted object
(``CT_HOME/gc/tombstones.jsonl``) are written and fsynced before anything is deleted.
Versions are deleted first (then nothing can give them an alias again), their files
after; an object whose version is tombstoned is planned for deletion again by the next
gc, so a gc killed midway and run again finishes the job and never leaves a kept version
without its dataset. Tombstones keep lineage answerable for what is gone.

Modules: ``plan`` (what is kept and why), ``deletion`` (doing it), ``tombstones`` (the
plan and tombstones on disk), ``items`` (what an object is), ``files`` (hand-offs and
checkpoints), ``segments`` (the event log's old segments).
"""

from __future__ import annotations

from ct_assets.retention.deletion import KILL_AFTER_ENV, run_gc
from ct_assets.retention.files import CHECKPOINT, HANDOFF, FileItem
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
from ct_assets.retention.plan import kept_versions, make_plan
from ct_assets.retention.tombstones import (
    gc_dir,
    plan_path,
    read_tombstones,
    tombstone_of_version,
    tombstones_path,
)

__all__ = [
    "CHECKPOINT",
    "DATASET",
    "DELETE_ORDER",
    "DRIFT_REFERENCE",
    "HANDOFF",
    "KILL_AFTER_ENV",
    "MODEL_VERSION",
    "REPORT",
    "RUN",
    "FileItem",
    "Item",
    "Plan",
    "gc_dir",
    "kept_versions",
    "make_plan",
    "plan_path",
    "read_tombstones",
    "run_gc",
    "tombstone_of_version",
    "tombstones_path",
]

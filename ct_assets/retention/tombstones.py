"""The gc folder (``CT_HOME/gc/``): the plan and one tombstone per deleted object, written
and fsynced before anything is deleted, and read back (by the next gc and by lineage)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ct_assets.retention.items import MODEL_VERSION, Item
from ct_assets.settings import Settings


def gc_dir(settings: Settings) -> Path:
    return settings.home / "gc"


def tombstones_path(settings: Settings) -> Path:
    return gc_dir(settings) / "tombstones.jsonl"


def plan_path(settings: Settings) -> Path:
    return gc_dir(settings) / "plan.json"


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


def tombstone(item: Item, at: str) -> dict[str, Any]:
    """The tombstone record of an item deleted at ``at``."""
    return {
        "what": item.what,
        "id": item.id,
        "when": at,
        "why": "; ".join(item.why),
        "paths": item.paths,
        **item.detail,
    }


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_durably(path: Path, records: Iterable[dict[str, Any]]) -> None:
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
        fsync_dir(path.parent)

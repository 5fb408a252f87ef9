"""What gc finds on the object store ``CT_STORAGE_URI`` names (e.g. S3): the datasets
(``datasets/<version>.*``), validation reports (``reports/validation-v<N>*``), drift
references (``drift/<version>/``), runs' hand-offs (``handoffs/<asset>/runs/``) and
checkpoints (``checkpoints/<key>/``) kept there.
Items name these objects by URI (``s3://bucket/prefix/datasets/<version>.parquet``)
beside the local files gc sees; an object that is a local file gc already lists (a store
on the local disk under ``CT_HOME``) is not listed twice."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

from ct_assets.data.dataset_objects import MANIFEST, PARQUET, REFERENCE
from ct_assets.data.dataset_objects import PREFIX as DATASETS
from ct_assets.keys import DRIFT_OBJECT_PREFIX as DRIFT
from ct_assets.keys import HANDOFFS_OBJECT_PREFIX as HANDOFFS
from ct_assets.keys import REPORTS_OBJECT_PREFIX as REPORTS
from ct_assets.settings import Settings
from ct_assets.storage import ObjectNotFoundError, ObjectStore, store_from_settings
from ct_assets.training.checkpoint import STATE_FILE
from ct_assets.training.stored_checkpoint import STORE_PREFIX as CHECKPOINTS

#: Dataset object suffixes, the longest first (``.reference.json`` ends with ``.json``).
_DATASET_SUFFIXES = (REFERENCE, MANIFEST, PARQUET)


def object_store(settings: Settings) -> ObjectStore | None:
    """The store ``CT_STORAGE_URI`` names; None when it is empty (every object is a file
    under ``CT_HOME``, which gc lists as files)."""
    if not settings.storage_uri.strip():
        return None
    return store_from_settings(settings)


def _uris(store: ObjectStore, keys: Iterable[str], local: Collection[str]) -> list[str]:
    """The URIs of ``keys``, but for objects that are (or are in) the ``local`` paths."""
    out = []
    for key in keys:
        path = store.local_path(key)
        if path is None or not any(
            str(path) == seen or str(path).startswith(seen.rstrip("/") + "/") for seen in local
        ):
            out.append(store.uri_of(key))
    return out


def stored_datasets(store: ObjectStore | None, local: Collection[str]) -> dict[str, list[str]]:
    """Per dataset version, the URIs of its objects on ``store`` (not among ``local``)."""
    if store is None:
        return {}
    found: dict[str, list[str]] = {}
    for key in store.list(DATASETS):
        name = key.removeprefix(f"{DATASETS}/")
        if "/" in name:
            continue
        for suffix in _DATASET_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                for uri in _uris(store, [key], local):
                    found.setdefault(name.removesuffix(suffix), []).append(uri)
                break
    return found


def stored_drift_references(
    store: ObjectStore | None, local: Collection[str]
) -> dict[str, list[str]]:
    """Per model version, the URIs of its drift reference objects (``drift/<version>/``) on
    ``store``, from one listing."""
    if store is None:
        return {}
    found: dict[str, list[str]] = {}
    for key in store.list(DRIFT):
        parts = key.split("/")
        if len(parts) == 3:
            for uri in _uris(store, [key], local):
                found.setdefault(parts[1], []).append(uri)
    return found


def stored_reports(store: ObjectStore | None, local: Collection[str]) -> dict[str, list[str]]:
    """Per model version, the URIs of its validation report and plots on ``store``
    (``validation-v<N>.json``, ``validation-v<N>-<plot>.png``), from one listing."""
    if store is None:
        return {}
    found: dict[str, list[str]] = {}
    for key in store.list(REPORTS):
        name = key.removeprefix(f"{REPORTS}/")
        if name.endswith(".json"):
            version = name.removesuffix(".json").removeprefix("validation-v")
        elif name.endswith(".png"):
            version = name.removeprefix("validation-v").partition("-")[0]
        else:
            continue
        if name.startswith("validation-v") and version.isdigit():
            for uri in _uris(store, [key], local):
                found.setdefault(version, []).append(uri)
    return found


def stored_handoffs(
    store: ObjectStore | None, local: Collection[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per ``<asset>/<run_id>``, the URI and record of a run's hand-off on ``store`` (records
    that cannot be read or are not objects are left alone, as on disk)."""
    if store is None:
        return {}
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for key in store.list(HANDOFFS):
        parts = key.split("/")
        if len(parts) != 4 or parts[2] != "runs" or not parts[3].endswith(".json"):
            continue
        uris = _uris(store, [key], local)
        if not uris:
            continue
        try:
            record = json.loads(store.read_bytes(key))
        except (ObjectNotFoundError, ValueError):
            continue
        if isinstance(record, dict):
            found[f"{parts[1]}/{parts[3].removesuffix('.json')}"] = (uris[0], record)
    return found


def stored_checkpoints(
    store: ObjectStore | None, local: Collection[str]
) -> dict[str, tuple[list[str], float]]:
    """Per training job key, the URIs of its checkpoint objects on ``store`` (the state
    first) and when the newest was written (POSIX seconds)."""
    if store is None:
        return {}
    jobs: dict[str, list[str]] = {}
    for key in store.list(CHECKPOINTS):
        parts = key.split("/")
        if len(parts) == 3:
            jobs.setdefault(parts[1], []).append(key)
    found: dict[str, tuple[list[str], float]] = {}
    for job, keys in sorted(jobs.items()):
        keys.sort(key=lambda k: (not k.endswith(f"/{STATE_FILE}"), k))
        uris = _uris(store, keys, local)
        if uris:
            found[job] = (uris, max(store.modified(k) for k in keys))
    return found


def is_stored(path: str, store: ObjectStore | None) -> bool:
    """Whether an item's path is an object URI of ``store``."""
    return store is not None and path.startswith(store.uri.rstrip("/") + "/")


def remove_stored(store: ObjectStore, uri: str) -> None:
    """Delete the object ``uri`` names; nothing when it is gone already."""
    store.delete(uri.removeprefix(store.uri.rstrip("/") + "/"))

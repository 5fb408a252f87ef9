"""Compiled datasets on the object store (``ct_assets.storage``).

A dataset is compiled on the local disk, under ``datasets_dir`` (``$CT_HOME/datasets``),
and then published as the objects ``datasets/<version>.parquet``,
``datasets/<version>.reference.json`` and, last, ``datasets/<version>.json`` (the
manifest: a dataset whose manifest exists is whole). Each is content-addressed and written
once. Readers ask :func:`dataset_file` for a local file: the store's own file on a local
disk, else a copy downloaded into ``datasets_dir`` (safe to keep: the same version is
always the same bytes).

With the default store (the local disk under ``CT_HOME``) the objects are the files the
compile wrote: publishing and reading do nothing more than before.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ct_assets.data.dataset import DatasetInfo
from ct_assets.storage import (
    ObjectNotFoundError,
    ObjectStore,
    atomic_file,
    get_file,
    put_file,
    same_file,
    write_bytes,
)

PREFIX = "datasets"
PARQUET = ".parquet"
MANIFEST = ".json"
REFERENCE = ".reference.json"


def dataset_key(version: str, suffix: str = PARQUET) -> str:
    return f"{PREFIX}/{version}{suffix}"


def _published_path(store: ObjectStore, key: str) -> str:
    local = store.local_path(key)
    return str(local) if local is not None else store.uri_of(key)


def publish_dataset(
    store: ObjectStore | None, datasets_dir: Path, info: DatasetInfo
) -> DatasetInfo:
    """Publish the compiled files of ``info`` under ``datasets_dir`` to ``store`` (write
    once, the manifest last); the manifest as published (its ``path`` the object's)."""
    key = dataset_key(info.version)
    if store is None or same_file(store, key, datasets_dir / f"{info.version}{PARQUET}"):
        return info
    put_file(store, key, datasets_dir / f"{info.version}{PARQUET}", once=True)
    reference = datasets_dir / f"{info.version}{REFERENCE}"
    if reference.exists():
        put_file(store, dataset_key(info.version, REFERENCE), reference, once=True)
    published = replace(info, path=_published_path(store, key))
    text = published.to_json()
    manifest_key = dataset_key(info.version, MANIFEST)
    if not write_bytes(store, manifest_key, text.encode(), once=True):
        text = store.read_bytes(manifest_key).decode()  # the first compile's, kept
    manifest = datasets_dir / f"{info.version}{MANIFEST}"
    if not manifest.exists() or manifest.read_text() != text:
        atomic_file(manifest, [text.encode()])  # the local copy, as on the store
    return DatasetInfo.from_json(text)


def dataset_file(
    store: ObjectStore | None, datasets_dir: Path, version: str, suffix: str = PARQUET
) -> Path:
    """A local file of dataset ``version`` (see the module docstring). Without a store, or
    when neither the store nor ``datasets_dir`` has it, the path under ``datasets_dir``
    (which may not exist: the caller says what is missing)."""
    local = datasets_dir / f"{version}{suffix}"
    if store is None:
        return local
    key = dataset_key(version, suffix)
    own = store.local_path(key)
    if own is not None:
        return own if own.exists() or not local.exists() else local
    if local.exists():
        return local
    try:
        return get_file(store, key, local)
    except ObjectNotFoundError:
        return local


def read_manifest(
    store: ObjectStore | None, datasets_dir: Path, version: str
) -> DatasetInfo | None:
    """The manifest of ``version``, or None when no store (nor the local folder) has it."""
    path = dataset_file(store, datasets_dir, version, MANIFEST)
    if not path.exists():
        return None
    return DatasetInfo.from_json(path.read_text())


def dataset_exists(store: ObjectStore | None, datasets_dir: Path, version: str) -> bool:
    if store is None:
        return (datasets_dir / f"{version}{MANIFEST}").exists()
    return (
        store.exists(dataset_key(version, MANIFEST))
        or (datasets_dir / f"{version}{MANIFEST}").exists()
    )

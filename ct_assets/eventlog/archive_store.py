"""Archives of old segments moved to the object store (``CT_STORAGE_URI``), so the log's
disk keeps only the dates within ``CT_RETENTION_DAYS``.

An archive (:mod:`ct_assets.eventlog.archive`) is uploaded to
``eventlog/archive/<date>/seg-<n>.parquet`` on the store, then a pointer file
``<root>/archive/<date>/seg-<n>.stored.json`` (the store's URI, the object's key, the
segment's committed end and SHA-256) is written and fsynced, and only then is the local
archive deleted. A reader that finds the pointer fetches the object with the S3 settings of
its environment, rebuilds the segment and checks it against the pointer; an unreachable
store fails the read with its address, never as damage. A process killed between the steps
leaves the local archive, which the next gc uploads again (an object already there is kept
when it rebuilds the same segment).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ct_assets.eventlog.frames import CorruptLogError, fsync_dir
from ct_assets.eventlog.layout import ARCHIVE_DIR, archive_name
from ct_assets.storage.local import TMP_SUFFIX, atomic_file

if TYPE_CHECKING:
    from ct_assets.storage import ObjectStore

POINTER_SUFFIX = ".stored.json"
#: A pointer's temporary file this old belongs to no running gc.
STALE_SECONDS = 3600.0


@dataclass(frozen=True)
class Pointer:
    """Where a segment's archive lives on the store, and what it must rebuild."""

    store: str
    key: str
    end: int
    sha256: str


def pointer_file(root: Path, key: str) -> Path:
    return root / ARCHIVE_DIR / archive_name(key, POINTER_SUFFIX)


def stored_key(key: str) -> str:
    """The object key of segment ``key``'s archive on the store."""
    return f"eventlog/{ARCHIVE_DIR}/{archive_name(key, '.parquet')}"


def read_pointer(root: Path, key: str) -> Pointer | None:
    path = pointer_file(root, key)
    try:
        raw = json.loads(path.read_bytes())
        return Pointer(str(raw["store"]), str(raw["key"]), int(raw["end"]), str(raw["sha256"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptLogError(f"{path}: pointer to a stored archive is damaged: {exc}") from exc


def stored_segment(root: Path, key: str) -> bytes | None:
    """The committed bytes of segment ``key`` from its archive on the store (None when it
    has no pointer)."""
    path = pointer_file(root, key)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return _fetched(str(path), key, stat.st_mtime_ns)


def stored_end(root: Path, key: str) -> int | None:
    pointer = read_pointer(root, key)
    return None if pointer is None else pointer.end


@functools.lru_cache(maxsize=2)
def _fetched(pointer_path: str, key: str, _mtime_ns: int) -> bytes:
    from ct_assets.eventlog.archive import rebuilt_from

    root = Path(pointer_path).parents[2]
    pointer = read_pointer(root, key)
    assert pointer is not None
    blob = _store(pointer.store).read_bytes(pointer.key)  # StorageError: the store, not damage
    where = f"{pointer.store}/{pointer.key}"
    data = rebuilt_from(blob, where, pointer.end)
    if _sha(data) != pointer.sha256:
        raise CorruptLogError(f"{where}: archive does not rebuild segment {key}")
    return data


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _store(uri: str) -> ObjectStore:
    """The store ``uri`` names, reached with the S3 settings of the environment."""
    from ct_assets.settings import Settings
    from ct_assets.storage import S3Config, open_store

    settings = Settings.from_env()
    config = S3Config(
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        region=settings.s3_region,
    )
    return open_store(uri, settings.home, config)


def upload_archive(root: Path, key: str, store: ObjectStore) -> str:
    """Move segment ``key``'s local archive to ``store``: upload, pointer (fsynced), then the
    local file goes. Returns the object's URI. A pointer already there means it is done."""
    from ct_assets.eventlog.archive import archive_file, rebuilt_from
    from ct_assets.storage import put_file

    local = archive_file(root, key)
    try:
        data = _local_segment(local)
    except FileNotFoundError:  # moved already (by another gc, maybe just now)
        done = read_pointer(root, key)
        if done is None:
            raise CorruptLogError(f"{local}: archive to move to the store is missing") from None
        return f"{done.store}/{done.key}"
    target = stored_key(key)
    if not put_file(store, target, local, once=True):  # there: kept if it rebuilds the same
        try:
            same = rebuilt_from(store.read_bytes(target), store.uri_of(target), len(data)) == data
        except CorruptLogError:
            same = False
        if not same:
            put_file(store, target, local)
    pointer = pointer_file(root, key)
    body = json.dumps(
        {"store": store.uri, "key": target, "end": len(data), "sha256": _sha(data)}, indent=1
    )
    for leftover in pointer.parent.glob(f".{pointer.name}.*{TMP_SUFFIX}"):
        # of a move killed mid-write; a younger one may be another gc's, writing now
        if time.time() - leftover.stat().st_mtime > STALE_SECONDS:
            leftover.unlink(missing_ok=True)
    atomic_file(pointer, [body.encode()])
    local.unlink(missing_ok=True)
    fsync_dir(pointer.parent)
    return store.uri_of(target)


def _local_segment(local: Path) -> bytes:
    from ct_assets.eventlog.archive import rebuilt_from

    return rebuilt_from(local.read_bytes(), str(local), None)

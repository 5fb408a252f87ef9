"""References kept in process (a few champion versions) and on disk or the object
store, built once per champion version."""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from ct_assets.storage import ObjectStore
from ct_assets.triggers.drift.encoding import ARRAYS_FILE, CACHE_SIZE, META_FILE, OBJECT_PREFIX
from ct_assets.triggers.drift.reference import DriftReference, check_version

_CACHE: OrderedDict[tuple[str, str], DriftReference] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def get_or_build(
    folder: Path,
    version: str,
    builder: Callable[[], DriftReference],
    objects: ObjectStore | None = None,
) -> DriftReference:
    """The reference of champion ``version``: from this process's cache, else loaded from
    ``folder/<version>/``, else built by ``builder()`` and saved there.

    ``folder`` is the drift root (``CT_HOME/drift``). With ``objects``, the reference is
    kept on that object store instead, as ``drift/<version>/`` (``folder`` unused). A
    stored reference that cannot be read is rebuilt. The cache keeps the
    :data:`CACHE_SIZE` most recently used versions.
    """
    check_version(version)
    if objects is not None:
        return _get_or_build_on(objects, version, builder)
    key = (str(folder.resolve()), version)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
        directory = folder / version
        reference: DriftReference | None = None
        if (directory / META_FILE).exists():
            try:
                reference = DriftReference.load(directory)
            except (OSError, ValueError, KeyError, TypeError):
                reference = None
                shutil.rmtree(directory, ignore_errors=True)
        if reference is None:
            reference = builder()
            if reference.version != version:
                raise ValueError(
                    f"the builder made a reference of version {reference.version!r}, "
                    f"not {version!r}"
                )
            reference.save(directory)
        _CACHE[key] = reference
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return reference


def _get_or_build_on(
    objects: ObjectStore, version: str, builder: Callable[[], DriftReference]
) -> DriftReference:
    """:func:`get_or_build` on an object store (the same cache, keyed by the store's URI)."""
    key = (objects.uri, version)
    prefix = f"{OBJECT_PREFIX}/{version}"
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
        reference: DriftReference | None = None
        if objects.exists(f"{prefix}/{META_FILE}"):
            try:
                reference = DriftReference.load_from(objects, prefix)
            except (FileNotFoundError, ValueError, KeyError, TypeError):
                reference = None
                objects.delete(f"{prefix}/{META_FILE}")
                objects.delete(f"{prefix}/{ARRAYS_FILE}")
        if reference is None:
            reference = builder()
            if reference.version != version:
                raise ValueError(
                    f"the builder made a reference of version {reference.version!r}, "
                    f"not {version!r}"
                )
            reference.save_to(objects, prefix)
        _CACHE[key] = reference
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return reference


# --- the decision ---------------------------------------------------------------------------

"""The object-store seam: keys (``datasets/<version>.parquet``) to bytes, on a local disk or
on an S3-compatible store.

A key is a relative, ``/``-separated path without ``.`` or ``..`` parts. Every write is
atomic: a reader sees the whole object or none of it, and a write that fails leaves no
object (and no partial one) behind. ``once=True`` writes a content-addressed object once:
an existing object under the same key is not rewritten (two writers racing on the same
key write the same bytes).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow.fs

#: Chunk size of streamed reads and writes.
CHUNK_BYTES = 1 << 20


class StorageError(OSError):
    """The store could not do what was asked (unreachable, refused, misconfigured)."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """No object under the key."""


def check_key(key: str) -> str:
    """``key`` when it is a plain relative key; :class:`ValueError` naming it otherwise."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"an object key must be a relative a/b/c path, got {key!r}")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """What the loop asks of a store (see the module docstring)."""

    @property
    def uri(self) -> str:
        """Where the store's root is (``file:///...`` or ``s3://bucket/prefix``)."""
        ...

    def uri_of(self, key: str) -> str:
        """The URI of the object ``key`` (for people and lineage)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's file when the store is a local disk; ``None`` otherwise."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The object; :class:`ObjectNotFoundError` when there is none."""
        ...

    def write_chunks(self, key: str, chunks: Iterable[bytes], *, once: bool = False) -> bool:
        """Write the object atomically from ``chunks``; False when ``once`` and it exists
        (then ``chunks`` is not consumed)."""
        ...

    def download(self, key: str, path: Path) -> None:
        """Write the object to the local file ``path`` atomically (see :func:`get_file`)."""
        ...

    def exists(self, key: str) -> bool: ...

    def modified(self, key: str) -> float:
        """When the object was last written (POSIX seconds); :class:`ObjectNotFoundError`
        when there is none."""
        ...

    def list(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (a folder key, or ``""`` for everything), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing when there is none."""
        ...

    def arrow(self, key: str) -> tuple[pyarrow.fs.FileSystem, str]:
        """A pyarrow filesystem and the object's path in it, for Parquet readers/writers."""
        ...


def write_bytes(store: ObjectStore, key: str, data: bytes, *, once: bool = False) -> bool:
    """Write ``data`` under ``key`` atomically (see :meth:`ObjectStore.write_chunks`)."""
    return store.write_chunks(key, [data], once=once)


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def same_file(store: ObjectStore, key: str, path: Path) -> bool:
    """Whether the object ``key`` of ``store`` is the local file ``path`` itself (a store on
    the local disk whose layout holds that file): then copying it there is a no-op."""
    local = store.local_path(key)
    return local is not None and local.resolve() == path.resolve()


def put_file(store: ObjectStore, key: str, path: Path, *, once: bool = False) -> bool:
    """Upload the file ``path`` as ``key`` (nothing when it already is that object)."""
    if same_file(store, key, path):
        return False
    return store.write_chunks(key, file_chunks(path), once=once)


def get_file(store: ObjectStore, key: str, path: Path) -> Path:
    """Download ``key`` to ``path`` atomically (a unique temporary sibling, fsynced, then
    renamed; nothing when it already is that file); :class:`ObjectNotFoundError` when there
    is no such object."""
    store.download(key, path)
    return path

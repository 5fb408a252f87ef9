"""File primitives of the per-date tables: atomic writes, source fingerprints kept inside the
Parquet footer, and an inter-process lock per file.

* A file is written to a temporary name unique to its writer
  (``.<name>.<pid>.<uuid>.tmp``), flushed to disk, and renamed over the final name with
  :func:`os.replace`; the directory is synced after. A reader sees the old file or the new
  one, never a partial one. Hidden, ``.tmp``-suffixed names match no table glob, so a
  leftover of a killed writer is never read; it is removed by the next writer of the same
  file, under the lock (:func:`remove_leftovers`).
* The source a table was computed from is a key of the Parquet key-value metadata
  (:data:`SOURCE_KEY`), written in the same file as the rows: a table and its source come
  from the same writer by construction.
* :class:`FileLock` is ``fcntl.flock`` on a lock file beside the table, taken with a
  timeout. The kernel releases it when its holder dies (even by SIGKILL), so a crashed
  writer never blocks the next one. Lock files are left in place (removing one while
  another process waits on it would let two holders in).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import polars as pl

# The Parquet key-value metadata entry holding a table's source fingerprint.
SOURCE_KEY = "ct/source"
# How long a writer waits for another writer of the same table before giving up.
LOCK_TIMEOUT_SECONDS = 600.0
_POLL_SECONDS = 0.05


class TableLockTimeout(TimeoutError):
    """Another process held a table's lock for longer than the timeout."""


def temporary_name(path: Path) -> Path:
    """A name beside ``path`` that no other writer (process or thread) uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def is_leftover_of(name: str, path: Path) -> bool:
    """Whether file ``name`` is a temporary of ``path`` (this module's, or the fixed
    ``<name>.tmp`` of earlier versions)."""
    return name == f"{path.name}.tmp" or (
        name.startswith(f".{path.name}.") and name.endswith(".tmp")
    )


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the temporaries of ``path`` left by killed writers. Call it only while
    holding ``path``'s lock: every live writer of ``path`` holds it too, so any temporary
    found then belongs to a dead one."""
    folder = path.parent
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if is_leftover_of(entry.name, path):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def sync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary of ``path``, sync it, and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    sync_directory(path.parent)
    return path


def write_parquet(path: Path, frame: pl.DataFrame, source: str | None = None) -> Path:
    """``frame`` as Parquet at ``path``, replaced atomically; ``source`` (if any) in the
    file's own metadata under :data:`SOURCE_KEY`."""
    metadata = {SOURCE_KEY: source} if source is not None else None
    return write_atomically(path, lambda tmp: frame.write_parquet(tmp, metadata=metadata))


def write_bytes(path: Path, data: bytes) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_bytes(data))


def read_source(path: Path) -> str | None:
    """The source fingerprint stored in the Parquet file at ``path`` (footer only); None
    when the file is missing, unreadable or has none."""
    try:
        metadata = pl.read_parquet_metadata(path)
    except Exception:  # missing or damaged: a table to (re)build, not an error
        return None
    return metadata.get(SOURCE_KEY)


def read_if_source(
    path: Path, source: str, columns: list[str] | None = None, n_rows: int | None = None
) -> pl.DataFrame | None:
    """The table at ``path`` when the source in its metadata is ``source``, footer and rows
    read from one open file (a writer replacing it meanwhile renames another file over
    the path: this read sees one or the other whole); None when it is missing, damaged
    or was computed from something else. ``columns`` and ``n_rows`` read part of it."""
    try:
        with open(path, "rb") as handle:
            if pl.read_parquet_metadata(handle).get(SOURCE_KEY) != source:
                return None
            handle.seek(0)
            return pl.read_parquet(handle, columns=columns, n_rows=n_rows)
    except Exception:  # missing or damaged: read from where it comes from instead
        return None


# The lock files this thread holds (flock is per open file: taking a lock the same thread
# already holds through another descriptor would wait for itself).
_held = threading.local()


def _held_paths() -> dict[str, int]:
    paths: dict[str, int] | None = getattr(_held, "paths", None)
    if paths is None:
        paths = {}
        _held.paths = paths
    return paths


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), waited for at most
    ``timeout`` seconds; re-entrant within a thread."""

    def __init__(self, path: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._nested = False

    def acquire(self) -> None:
        held = _held_paths()
        key = str(self.path)
        if key in held:
            held[key] += 1
            self._nested = True
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as error:
                    if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                if time.monotonic() >= deadline:
                    raise TableLockTimeout(
                        f"table lock {self.path} still held by another writer after "
                        f"{self.timeout:g} s; another run is writing the same table and date "
                        "(a lock of a dead process is released by the kernel, so a holder "
                        "is alive: see the runs writing per-date tables)"
                    )
                time.sleep(_POLL_SECONDS)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        held[key] = 1

    def release(self) -> None:
        held = _held_paths()
        key = str(self.path)
        if self._nested:
            held[key] -= 1
            self._nested = False
            return
        if self._fd is None:
            return
        del held[key]
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()


@contextlib.contextmanager
def locked(paths: list[Path], timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """Hold the locks of ``paths``, taken in sorted order (so two holders of overlapping
    sets never wait on each other in a cycle)."""
    with contextlib.ExitStack() as stack:
        for path in sorted(set(paths)):
            stack.enter_context(FileLock(path, timeout))
        yield

"""Per-date Parquet tables of the curation assets, under ``CT_HOME/tables``.

    tables/<table>/date=<YYYY-MM-DD>.parquet

One file per table and event date, replaced atomically when its partition is
materialized again (late events change a date's content); readers see the old
file or the new one, never a partial one. DuckDB and Polars scan them by glob.

Several runs may write the same date at once (the raw-partition runs of the sensor and
a retrain's refresh of stale dates). Writers of a table and date hold its lock
(``.date=<day>.lock`` beside the file, :mod:`ct_assets.data.table_files`), write under a
temporary name of their own, and rename it over the table; leftovers of a killed writer
are removed by the next one.

A table file may carry a *source*: a text naming the inputs it was computed from (e.g.
the log fingerprint of the date), so a reader can tell a current file from a stale one.
It is stored in the Parquet file's own metadata, so a table and its source always come
from the same writer. Tables of earlier versions kept it in a ``date=<day>.source`` file
beside them; those read as having no source (stale), are rebuilt by their next refresh,
and the old file is removed then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import polars as pl

from ct_assets.data import table_files
from ct_assets.data.table_files import LOCK_TIMEOUT_SECONDS, TableLockTimeout

__all__ = ["LOCK_TIMEOUT_SECONDS", "TableLockTimeout", "TableStore"]


class TableStore:
    def __init__(self, root: Path, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
        self.root = root
        self.lock_timeout = lock_timeout

    def path(self, table: str, day: str) -> Path:
        return self.root / table / f"date={day}.parquet"

    def lock_path(self, table: str, day: str) -> Path:
        return self.root / table / f".date={day}.lock"

    @contextlib.contextmanager
    def locked(self, tables: Iterable[str], day: str) -> Iterator[None]:
        """Hold the write locks of ``tables`` on ``day`` (waiting at most
        ``lock_timeout`` seconds for each, else :class:`TableLockTimeout`). Writes of
        this thread inside the block do not take them again."""
        paths = [self.lock_path(table, day) for table in tables]
        with table_files.locked(paths, self.lock_timeout):
            yield

    def write(self, table: str, day: str, frame: pl.DataFrame, source: str | None = None) -> Path:
        """Replace the table of ``day`` with ``frame``, ``source`` in its metadata."""
        path = self.path(table, day)
        with self.locked([table], day):
            table_files.remove_leftovers(path)
            table_files.write_parquet(path, frame, source)
            self._legacy_source_path(table, day).unlink(missing_ok=True)
        return path

    def _legacy_source_path(self, table: str, day: str) -> Path:
        return self.root / table / f"date={day}.source"

    def source(self, table: str, day: str) -> str | None:
        """What the table file of ``day`` was computed from; None when unknown."""
        return table_files.read_source(self.path(table, day))

    def read_current(
        self,
        table: str,
        day: str,
        source: str,
        columns: list[str] | None = None,
        n_rows: int | None = None,
    ) -> pl.DataFrame | None:
        """The table of ``day`` if it was computed from ``source``, else None (``columns``
        and ``n_rows``: part of it)."""
        return table_files.read_if_source(self.path(table, day), source, columns, n_rows)

    def write_latest(self, table: str, frame: pl.DataFrame) -> Path:
        """An unpartitioned table: ``<table>/latest.parquet``, replaced atomically."""
        return write_parquet_atomically(self.root / table / "latest.parquet", frame)

    def read(self, table: str, day: str) -> pl.DataFrame | None:
        path = self.path(table, day)
        try:
            return pl.read_parquet(path)
        except FileNotFoundError:
            return None

    def days(self, table: str) -> list[str]:
        folder = self.root / table
        if not folder.is_dir():
            return []
        return sorted(
            p.name.removeprefix("date=").removesuffix(".parquet")
            for p in folder.glob("date=*.parquet")
        )

    def read_days(self, table: str, days: Iterable[str]) -> pl.DataFrame | None:
        frames = [f for f in (self.read(table, d) for d in days) if f is not None and f.height]
        return pl.concat(frames, how="diagonal_relaxed") if frames else None


def write_parquet_atomically(path: Path, frame: pl.DataFrame) -> Path:
    return table_files.write_parquet(path, frame)


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    return table_files.write_bytes(path, data)

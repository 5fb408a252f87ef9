"""Per-date Parquet tables of the curation assets, under ``CT_HOME/tables``.

    tables/<table>/date=<YYYY-MM-DD>.parquet

One file per table and event date, replaced atomically when its partition is
materialized again (late events change a date's content); readers see the old
file or the new one, never a partial one. DuckDB and Polars scan them by glob.

A table file may carry a *source* (``date=<day>.source``): a text naming the inputs it
was computed from (e.g. the log fingerprint of the date), so a reader can tell a
current file from a stale one. The source is removed before the file is replaced
and written after, so a crash in between leaves a file without source: stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import polars as pl


class TableStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, table: str, day: str) -> Path:
        return self.root / table / f"date={day}.parquet"

    def write(self, table: str, day: str, frame: pl.DataFrame, source: str | None = None) -> Path:
        path = self.path(table, day)
        self.source_path(table, day).unlink(missing_ok=True)
        write_parquet_atomically(path, frame)
        if source is not None:
            write_bytes_atomically(self.source_path(table, day), source.encode())
        return path

    def source_path(self, table: str, day: str) -> Path:
        return self.root / table / f"date={day}.source"

    def source(self, table: str, day: str) -> str | None:
        """What the table file of ``day`` was computed from; None when unknown."""
        path = self.source_path(table, day)
        try:
            return path.read_text()
        except FileNotFoundError:
            return None

    def write_latest(self, table: str, frame: pl.DataFrame) -> Path:
        """An unpartitioned table: ``<table>/latest.parquet``, replaced atomically."""
        return write_parquet_atomically(self.root / table / "latest.parquet", frame)

    def read(self, table: str, day: str) -> pl.DataFrame | None:
        path = self.path(table, day)
        return pl.read_parquet(path) if path.exists() else None

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
    return path


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path

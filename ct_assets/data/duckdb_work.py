"""DuckDB over the Parquet tables: SQL quoting, and a connection under a memory limit that
spills to a work folder of its own.

A computation works in ``<root>/<prefix><pid>-<random>/``, removed when it ends; a
folder left by a process that was killed is removed by the next computation with the same
prefix (or after a day, since a process id may have been reused).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    import duckdb

ABANDONED_AFTER_SECONDS = 24 * 3600


def quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def file_list(paths: Sequence[Path]) -> str:
    """A DuckDB list of file names, for ``read_parquet``."""
    return "[" + ", ".join(quote(str(p)) for p in paths) + "]"


def struct_fields(dtype: Any) -> dict[str, pl.DataType]:
    """The fields of a Polars struct type; none for any other type."""
    if isinstance(dtype, pl.Struct):
        return {f.name: f.dtype for f in dtype.fields}  # type: ignore[misc]
    return {}


@contextmanager
def work_folder(root: Path, prefix: str) -> Iterator[Path]:
    """A fresh ``<root>/<prefix><pid>-<random>/`` for one computation, removed after it;
    abandoned folders of the same prefix are removed first."""
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_work(root, prefix)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def connect(memory_limit_mb: int, spill_dir: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection using at most ``memory_limit_mb``, spilling to ``spill_dir``."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
    con.execute(f"SET temp_directory = {quote(str(spill_dir))}")
    return con


def remove_abandoned_work(root: Path, prefix: str) -> None:
    """Remove the work folders under ``root`` whose process is gone (killed mid-write), and
    any older than a day (a process id may have been reused since)."""
    now = time.time()
    for folder in root.glob(f"{prefix}*"):
        pid = folder.name.removeprefix(prefix).split("-", 1)[0]
        try:
            old = now - folder.stat().st_mtime > ABANDONED_AFTER_SECONDS
        except FileNotFoundError:
            continue
        if old or not pid.isdigit() or not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""Reading the per-date tables with DuckDB: SQL quoting, typed projections of columns and
struct fields, the files of a table grouped by schema, and the session they are read in.

The figures are computed over the per-date tables the curation assets keep under
``CT_HOME/tables/<table>/date=<day>.parquet``:

* ``validated_feedback``: every feedback event of a date with its validation status;
* ``raw_predictions``: the predictions logged on a date, with their scores and features;
* ``attributed_examples``: the accepted, labeled feedback of a date with the features the
  model saw, which is what training datasets are compiled from.

DuckDB reads the files, projecting only the columns and struct fields a figure needs,
under a memory limit beyond which it spills to a work folder beside the tables. Only
small results come back, as Polars frames. Files whose schemas differ (a feature added,
the scores of another model) are read in groups of equal schema; a column or field a
file lacks reads as null.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ct_assets.data.duckdb_work import (
    connect,
    file_list,
    ident,
    quote,
    struct_fields,
    work_folder,
)
from ct_assets.data.tables import TableStore

if TYPE_CHECKING:
    import duckdb


#: Each computation spills in ``<tables>/.monitoring-<pid>-<random>/``, removed when it ends
#: or, after a crash, by the next computation.
WORK_PREFIX = ".monitoring-"

Schema = Mapping[str, pl.DataType]


def column_or_null(schema: Schema, name: str, sql_type: str, alias: str | None = None) -> str:
    """``name`` cast to ``sql_type``, or a typed null when the file lacks the column."""
    target = ident(alias or name)
    dtype = schema.get(name)
    if dtype is None or dtype == pl.Null():
        return f"NULL::{sql_type} AS {target}"
    return f"CAST({ident(name)} AS {sql_type}) AS {target}"


def field_or_null(schema: Schema, struct: str, name: str, sql_type: str, alias: str) -> str:
    """Field ``name`` of struct column ``struct``, or a typed null when the file lacks it."""
    if name not in struct_fields(schema.get(struct)):
        return f"NULL::{sql_type} AS {ident(alias)}"
    return f"CAST(struct_extract({ident(struct)}, {quote(name)}) AS {sql_type}) AS {ident(alias)}"


@dataclass(frozen=True)
class TableFiles:
    """The files of one per-date table that a figure reads, with their schemas."""

    schemas: dict[Path, Schema]

    @classmethod
    def of(cls, store: TableStore, table: str, days: Iterable[str] | None = None) -> TableFiles:
        wanted = store.days(table) if days is None else days
        paths = [store.path(table, day) for day in wanted]
        return cls({p: pl.read_parquet_schema(p) for p in paths if p.exists()})

    def __bool__(self) -> bool:
        return bool(self.schemas)

    def struct_fields(self, column: str) -> dict[str, pl.DataType]:
        """The fields of struct ``column`` over all files (each with the first type seen)."""
        fields: dict[str, pl.DataType] = {}
        for schema in self.schemas.values():
            for name, dtype in struct_fields(schema.get(column)).items():
                fields.setdefault(name, dtype)
        return fields

    def select_sql(self, project: Callable[[Schema], list[str]]) -> str:
        """One SELECT of ``project(schema)`` per group of files of equal schema, unioned."""
        groups: dict[str, tuple[Schema, list[Path]]] = {}
        for path, schema in self.schemas.items():
            key = repr(sorted((name, str(dtype)) for name, dtype in schema.items()))
            groups.setdefault(key, (schema, []))[1].append(path)
        parts = [
            f"SELECT {', '.join(project(schema))} FROM read_parquet({file_list(paths)})"
            for schema, paths in groups.values()
        ]
        return " UNION ALL BY NAME ".join(parts)


@contextmanager
def duckdb_session(work_root: Path, memory_limit_mb: int) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection limited to ``memory_limit_mb``, spilling under ``work_root``, with
    dates in UTC (the tables' dates are UTC event dates)."""
    with work_folder(work_root, WORK_PREFIX) as folder:
        con = connect(memory_limit_mb, folder / "spill")
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET preserve_insertion_order = false")
            yield con
        finally:
            con.close()


def create_table(
    con: duckdb.DuckDBPyConnection, name: str, select: str | None, columns: Mapping[str, str]
) -> None:
    """Temp table ``name`` from ``select``, or empty with ``columns`` when there is none."""
    if select is None:
        typed = ", ".join(f"{ident(c)} {t}" for c, t in columns.items())
        con.execute(f"CREATE TEMP TABLE {name} ({typed})")
    else:
        con.execute(f"CREATE TEMP TABLE {name} AS {select}")

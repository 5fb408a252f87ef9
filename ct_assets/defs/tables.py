"""Dagster table metadata from Polars frames."""

from __future__ import annotations

import dagster as dg
import polars as pl


def column_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )

"""How the figures group rows: the segment features, and the group of a null value.

Segments are feature values. They are the features named in ``CT_MONITORING_SEGMENTS``,
or by default the categorical (string) features. A feedback event's segment comes from
its own features, else from the prediction it refers to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl

from ct_assets.data.duckdb_work import quote
from ct_assets.monitoring.feedback.sql import Schema, field_or_null

#: Group of a null value (no source, no signal, a missing feature).
NO_VALUE = "(none)"
#: Dimension (and value) of the rows that total a whole day.
ALL = "all"
SEGMENT_PREFIX = "segment:"


@dataclass(frozen=True)
class Segments:
    """The features figures are split by, and the features asked for but left out, with why."""

    names: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def alias(index: int) -> str:
        """The SQL name of the ``index``-th segment's column (features may have any name)."""
        return f"seg{index}"

    def aliases(self) -> list[str]:
        return [self.alias(i) for i in range(len(self.names))]

    def feature_columns(self, schema: Schema) -> list[str]:
        """SQL: each segment feature of the ``features`` struct, as text, under its alias."""
        return [
            field_or_null(schema, "features", name, "VARCHAR", alias)
            for name, alias in zip(self.names, self.aliases(), strict=True)
        ]


def choose_segments(configured: str, features: Mapping[str, pl.DataType]) -> Segments:
    """The segment features: those named in ``configured`` (comma-separated), or, when it is
    empty, every string feature. A named feature that does not exist, or whose values are
    continuous (floats), is left out with a reason."""
    if not configured.strip():
        return Segments(tuple(sorted(n for n, t in features.items() if t == pl.String())))
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(n.strip() for n in configured.split(",") if n.strip()):
        dtype = features.get(name)
        if dtype is None:
            skipped[name] = "not a feature of the logged predictions or feedback"
        elif dtype.is_float():
            skipped[name] = f"continuous ({dtype}): name string, integer or boolean features"
        else:
            names.append(name)
    return Segments(tuple(names), skipped)


def group_sql(expression: str) -> str:
    """SQL: the group of ``expression`` as text, ``NO_VALUE`` when it is null."""
    return f"coalesce(CAST({expression} AS VARCHAR), {quote(NO_VALUE)})"

"""Label shift: the labels of the window's examples per segment value, against those of the
champion's training data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ct_assets.data.duckdb_work import quote
from ct_assets.monitoring.feedback.segments import (
    ALL,
    NO_VALUE,
    SEGMENT_PREFIX,
    Segments,
    group_sql,
)

if TYPE_CHECKING:
    import duckdb


#: A segment is judged for label shift only with this many labels on both sides.
MIN_SEGMENT_LABELS = 30


@dataclass(frozen=True)
class ShiftRow:
    segment: str
    value: str
    reference_labels: int
    current_labels: int
    reference_positive_rate: float | None
    current_positive_rate: float | None
    shift: float | None
    judged: bool


@dataclass(frozen=True)
class LabelShift:
    """Per segment value: the largest change of any class's share of the labels, between
    the reference (the champion's training data) and the window's examples. Only values
    with ``MIN_SEGMENT_LABELS`` labels on both sides are judged."""

    rows: list[ShiftRow] = field(default_factory=list)
    max_shift: float | None = None
    worst: str | None = None
    reference: str | None = None
    reason: str | None = None


def shift_from_reference(
    reference_dataset: Path | None, current: pl.DataFrame, segments: Segments, positive: str
) -> LabelShift:
    """Label shift of the window's label counts ``current`` against the train split of
    ``reference_dataset`` (the champion's dataset), or why there is none to compare with."""
    if reference_dataset is None:
        return LabelShift(reason="no champion: no training data to compare labels with")
    if not reference_dataset.exists():
        return LabelShift(reason=f"the champion's dataset {reference_dataset} is missing")
    reference = reference_label_counts(reference_dataset, segments)
    return label_shift(current, reference, positive, str(reference_dataset))


_LABEL_COUNT_SCHEMA = {"segment": pl.String, "value": pl.String, "label": pl.String, "n": pl.Int64}


def current_label_counts(con: duckdb.DuckDBPyConnection, segments: Segments) -> pl.DataFrame:
    """Labels per segment value of the window's examples (temp table ``ex``; segment
    ``all``: all of them)."""
    parts = [
        f"SELECT {quote(ALL)} AS segment, {quote(ALL)} AS value, label, count(*) AS n "
        "FROM ex WHERE label IS NOT NULL GROUP BY ALL"
    ]
    for index, name in enumerate(segments.names):
        parts.append(
            f"SELECT {quote(SEGMENT_PREFIX + name)} AS segment, "
            f"{group_sql(Segments.alias(index))} AS value, label, count(*) AS n "
            "FROM ex WHERE label IS NOT NULL GROUP BY ALL"
        )
    frame: pl.DataFrame = con.sql(" UNION ALL ".join(parts)).pl()
    return frame.select([pl.col(c).cast(t) for c, t in _LABEL_COUNT_SCHEMA.items()])


def reference_label_counts(dataset: Path, segments: Segments) -> pl.DataFrame:
    """Labels per segment value in the train split of a compiled dataset (segment ``all``:
    all of them); a segment the dataset has no column for is left out."""
    train = pl.scan_parquet(dataset).filter(pl.col("split") == "train")
    names = train.collect_schema().names()
    queries = [
        train.group_by("label")
        .agg(pl.len().alias("n"))
        .with_columns(segment=pl.lit(ALL), value=pl.lit(ALL))
    ]
    for name in segments.names:
        if name not in names:
            continue
        queries.append(
            train.group_by(pl.col(name).cast(pl.String).fill_null(NO_VALUE).alias("value"), "label")
            .agg(pl.len().alias("n"))
            .with_columns(segment=pl.lit(SEGMENT_PREFIX + name))
        )
    frames = pl.collect_all(queries)
    return pl.concat(
        [f.select([pl.col(c).cast(t) for c, t in _LABEL_COUNT_SCHEMA.items()]) for f in frames]
    )


def _shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {label: n / total for label, n in counts.items()} if total else {}


def label_shift(
    current: pl.DataFrame,
    reference: pl.DataFrame,
    positive_label: str,
    reference_name: str,
    min_labels: int = MIN_SEGMENT_LABELS,
) -> LabelShift:
    """Compare label counts (columns segment, value, label, n) of the window with the
    reference's: per (segment, value), the largest absolute change of a class's share."""
    tables: dict[str, dict[tuple[str, str], dict[str, int]]] = {"cur": {}, "ref": {}}
    for side, frame in (("cur", current), ("ref", reference)):
        for segment, value, label, n in frame.iter_rows():
            tables[side].setdefault((segment, value), {})[str(label)] = int(n)
    rows: list[ShiftRow] = []
    for group in sorted(set(tables["cur"]) | set(tables["ref"])):
        cur, ref = tables["cur"].get(group, {}), tables["ref"].get(group, {})
        cur_shares, ref_shares = _shares(cur), _shares(ref)
        both = bool(cur_shares and ref_shares)
        labels = set(cur_shares) | set(ref_shares)
        shift = (
            max(abs(cur_shares.get(c, 0.0) - ref_shares.get(c, 0.0)) for c in labels)
            if both
            else None
        )
        rows.append(
            ShiftRow(
                segment=group[0],
                value=group[1],
                reference_labels=sum(ref.values()),
                current_labels=sum(cur.values()),
                reference_positive_rate=ref_shares.get(positive_label, 0.0) if ref else None,
                current_positive_rate=cur_shares.get(positive_label, 0.0) if cur else None,
                shift=shift,
                judged=both and sum(ref.values()) >= min_labels and sum(cur.values()) >= min_labels,
            )
        )
    judged = [r for r in rows if r.judged and r.shift is not None]
    if not judged:
        return LabelShift(
            rows,
            reference=reference_name,
            reason=f"no segment with {min_labels} labels both in the window and the reference",
        )
    worst = max(judged, key=lambda r: r.shift or 0.0)
    return LabelShift(rows, worst.shift, f"{worst.segment}={worst.value}", reference_name)

"""Compiling a training dataset from the per-date tables, streaming.

The inputs are the tables the daily assets keep (``tables/validated_feedback`` and
``tables/raw_predictions``, one Parquet file per event date). The accepted feedback
of the window is small and narrow: it is read with Polars, labeled by the
:class:`~ct_assets.data.attribution.LabelPolicy` and cut to the window
(:func:`~ct_assets.data.windows.select_window`). The predictions are large and wide
(the features): DuckDB streams them from their files and joins them to the
feedback, never holding more than ``memory_limit_mb`` (it spills to ``tmp_dir``):

1. a narrow pass reads only ``prediction_id`` and ``log_offset`` of the predictions
   and picks, for each labeled feedback row, the first logged prediction it refers
   to; rows with neither a prediction nor features of their own drop out here;
2. the last ``holdout_fraction`` of the remaining rows by ``(timestamp, log_offset)``
   are marked ``holdout``;
3. one ``COPY`` joins the chosen predictions' features to the rows by the
   predictions' log offsets (unique in the log), in time order, straight into a
   Parquet file.

The file's SHA-256 (its first 16 hex digits) is the dataset version: the file is
renamed to ``<version>.parquet`` and never written again (an existing version is
reused). The same tables give the same bytes, hence the same version, as long as
the DuckDB version is the same (its Parquet writer makes the bytes).
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import polars as pl

from ct_assets.data.attribution import (
    LABEL_COLUMN,
    LABEL_SOURCE_COLUMN,
    OWN_FEATURES_COLUMN,
    LabelPolicy,
    labeled_feedback,
    supertype,
)
from ct_assets.data.dataset import (
    LABEL,
    META_COLUMNS,
    SPLIT,
    DatasetInfo,
    EmptyDatasetError,
    ReservedFeatureError,
)
from ct_assets.data.duckdb_work import connect, file_list, ident, quote, struct_fields, work_folder
from ct_assets.data.windows import WindowSpec, select_window

if TYPE_CHECKING:
    import duckdb

#: Feedback columns the compile reads (those a table lacks are null).
FEEDBACK_COLUMNS = (
    "event_id",
    "log_offset",
    "timestamp",
    "feedback_type",
    "prediction_id",
    "signal",
    "value",
    "label",
    "features",
)
_LOGGED = "__logged__"  # prefix of the predictions' flattened features in SQL
_BYTES = 1 << 20
#: Each compile works in ``<datasets_dir>/.compile-<pid>-<random>/`` (its spill files and
#: the file being written), removed when it ends or, after a crash, by the next compile.
WORK_PREFIX = ".compile-"


@dataclass(frozen=True)
class CompileSpec:
    """What to compile: the window as of ``end``, feedback below log offset ``position``."""

    window: WindowSpec
    end: datetime
    position: int
    holdout_fraction: float
    memory_limit_mb: int = 1000


def compile_from_tables(
    feedback_files: Sequence[Path],
    prediction_files: Sequence[Path],
    policy: LabelPolicy,
    spec: CompileSpec,
    datasets_dir: Path,
) -> DatasetInfo:
    """Compile the dataset (see the module docstring); returns its manifest.

    ``feedback_files`` are validated-feedback tables (only ``accepted`` rows count);
    ``prediction_files`` the raw-prediction tables the feedback may refer to.
    Raises :class:`EmptyDatasetError` when no labeled row with features is left and
    :class:`ReservedFeatureError` when a feature is named like a dataset column.
    """
    labeled = window_feedback(feedback_files, policy, spec)
    if labeled.height == 0:
        raise EmptyDatasetError("no accepted, labeled feedback in the window")
    own = struct_fields(labeled.schema.get("own"))
    groups = _prediction_groups(list(dict.fromkeys(prediction_files)))
    logged = {name: dtype for fields, _ in groups for name, dtype in fields.items()}
    features = sorted(set(own) | set(logged))
    _check_names(features)
    with work_folder(datasets_dir, WORK_PREFIX) as tmp_dir:
        out = tmp_dir / "dataset.parquet"
        con = connect(spec.memory_limit_mb, tmp_dir / "spill")
        con.register("feedback", labeled.with_row_index("rank").to_arrow())
        del labeled
        ranks = _choose_predictions(con, groups, has_own=bool(own))
        con.unregister("feedback")
        rows = len(ranks)
        if rows == 0:
            raise EmptyDatasetError("no labeled feedback with features to train on")
        holdout = max(1, math.ceil(rows * spec.holdout_fraction)) if rows > 1 else 0
        first_holdout = int(ranks[rows - holdout]) if holdout else int(ranks[-1]) + 1
        con.execute(_copy_sql(groups, own, features, first_holdout, out))
        con.close()
        version = _file_sha256(out)[:16]
        path = datasets_dir / f"{version}.parquet"
        if not path.exists():
            out.replace(path)
        return _manifest(path, version, spec.position)


def _check_names(features: Sequence[str]) -> None:
    """Column names in DuckDB (and in many consumers) ignore case: refuse features that
    collide with a dataset column or with each other once case is ignored."""
    meta = {c.lower(): c for c in META_COLUMNS}
    clashes = sorted(f for f in features if f.lower() in meta)
    if clashes:
        raise ReservedFeatureError(f"features named {clashes} clash with dataset columns")
    seen: dict[str, list[str]] = {}
    for name in features:
        seen.setdefault(name.lower(), []).append(name)
    same = [sorted(names) for names in seen.values() if len(names) > 1]
    if same:
        raise FeatureNameError(f"features {same} differ only in case; rename all but one")


class FeatureNameError(ValueError):
    """Two features whose names differ only in case."""


def window_feedback(
    feedback_files: Sequence[Path], policy: LabelPolicy, spec: CompileSpec
) -> pl.DataFrame:
    """The accepted, labeled feedback of the window: one row per event id, sorted by time,
    with ``label``, ``label_source``, ``window_part`` and the own features (``own``)."""
    scans = []
    for path in dict.fromkeys(feedback_files):
        if not path.exists():  # a date without a table has no feedback to give
            continue
        scan = pl.scan_parquet(path)
        names = scan.collect_schema().names()
        if "status" in names:
            scan = scan.filter(pl.col("status") == "accepted")
        scans.append(scan.select([c for c in FEEDBACK_COLUMNS if c in names]))
    if not scans:
        return pl.DataFrame(schema={"event_id": pl.String})
    feedback = (
        pl.concat(scans, how="diagonal_relaxed")
        .filter(pl.col("log_offset") < spec.position)
        .collect(engine="streaming")
    )
    if feedback.height == 0:
        return feedback
    labeled = labeled_feedback(feedback, policy).rename(
        {LABEL_COLUMN: LABEL, LABEL_SOURCE_COLUMN: "label_source", OWN_FEATURES_COLUMN: "own"}
    )
    del feedback  # the widest frame here: free it before the window is cut
    if labeled["event_id"].is_duplicated().any():  # validation quarantines repeats; be sure
        labeled = labeled.sort("log_offset").unique("event_id", keep="first", maintain_order=True)
    columns = ["event_id", "log_offset", "timestamp", "prediction_id", LABEL, "label_source"]
    own = ["own"] if struct_fields(labeled.schema.get("own")) else []
    labeled = labeled.select(*columns, *own)
    return select_window(labeled, spec.window, spec.end).select(*columns, "window_part", *own)


def _prediction_groups(files: Sequence[Path]) -> list[tuple[dict[str, pl.DataType], list[Path]]]:
    """Prediction tables grouped by their feature set (it changes when the model does);
    tables without rows or without features are left out."""
    groups: dict[str, tuple[dict[str, pl.DataType], list[Path]]] = {}
    for path in files:
        if not path.exists():
            continue
        schema = pl.read_parquet_schema(path)
        fields = struct_fields(schema.get("features"))
        if not fields or "prediction_id" not in schema:
            continue
        key = repr(sorted((k, str(v)) for k, v in fields.items()))
        groups.setdefault(key, (fields, []))[1].append(path)
    return list(groups.values())


def _choose_predictions(
    con: duckdb.DuckDBPyConnection,
    groups: list[tuple[dict[str, pl.DataType], list[Path]]],
    has_own: bool,
) -> npt.NDArray[np.int64]:
    """Table ``chosen``: the feedback rows that have features, each with the log offset of
    the first prediction it refers to (``p_offset``). Returns their ranks (positions in
    the time-ordered feedback), ascending."""
    files = [p for _, paths in groups for p in paths]
    if files:
        firsts = (
            "SELECT prediction_id, min(log_offset) AS p_offset "
            f"FROM read_parquet({file_list(files)}, union_by_name = true) "
            "WHERE prediction_id IN (SELECT prediction_id FROM feedback) "
            "GROUP BY prediction_id"
        )
    else:
        firsts = "SELECT NULL::VARCHAR AS prediction_id, NULL::BIGINT AS p_offset WHERE false"
    own = "f.own IS NOT NULL" if has_own else "false"
    con.execute(
        "CREATE TEMP TABLE chosen AS SELECT f.*, q.p_offset "
        f"FROM feedback f LEFT JOIN ({firsts}) q USING (prediction_id) "
        f"WHERE {own} OR q.p_offset IS NOT NULL"
    )
    ranks = con.execute("SELECT rank FROM chosen").fetchnumpy()["rank"]
    return np.sort(ranks)


def _copy_sql(
    groups: list[tuple[dict[str, pl.DataType], list[Path]]],
    own: dict[str, pl.DataType],
    features: list[str],
    first_holdout: int,
    out: Path,
) -> str:
    meta = (
        "c.event_id, c.log_offset, c.timestamp, c.label, "
        f"CASE WHEN c.rank >= {first_holdout} THEN 'holdout' ELSE 'train' END AS split, "
        "c.window_part, c.label_source, p.model_version, p.arm"
    )
    logged: dict[str, list[pl.DataType]] = {}
    for fields, _ in groups:
        for name, dtype in fields.items():
            logged.setdefault(name, []).append(dtype)
    columns = []
    for name in features:
        theirs = f"p.{ident(_LOGGED + name)}" if name in logged else "NULL"
        mine = f"c.own.{ident(name)}" if name in own else "NULL"
        types = [*logged.get(name, []), *([own[name]] if name in own else [])]
        if len(set(types)) > 1 and supertype(types) == pl.String:
            # e.g. a number logged, a text given: both as text, as the in-memory path does
            theirs, mine = f"CAST({theirs} AS VARCHAR)", f"CAST({mine} AS VARCHAR)"
        value = f"CASE WHEN c.own IS NOT NULL THEN {mine} ELSE {theirs} END" if own else theirs
        columns.append(f"{value} AS {ident(name)}")
    if groups:
        parts = []
        for fields, paths in groups:
            flat = ", ".join(f"features.{ident(n)} AS {ident(_LOGGED + n)}" for n in sorted(fields))
            parts.append(
                "SELECT log_offset, model_version, arm, "
                f"{flat} FROM read_parquet({file_list(paths)}, union_by_name = true)"
            )
        predictions = " UNION ALL BY NAME ".join(parts)
        join = "LEFT JOIN" if own else "JOIN"
        source = f"chosen c {join} ({predictions}) p ON c.p_offset = p.log_offset"
    else:
        source = "chosen c, (SELECT NULL::VARCHAR AS model_version, NULL::VARCHAR AS arm) p"
    select = ", ".join([meta, *columns])
    return (
        f"COPY (SELECT {select} FROM {source} ORDER BY c.rank) "
        f"TO {quote(str(out))} (FORMAT parquet)"
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * _BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(path: Path, version: str, position: int) -> DatasetInfo:
    """The manifest ``<version>.json`` next to the file, written once."""
    manifest = path.with_suffix(".json")
    if manifest.exists():
        return DatasetInfo.from_json(manifest.read_text())
    info = describe_file(path, version, position)
    handle, name = tempfile.mkstemp(prefix=manifest.name + ".", dir=manifest.parent)
    with os.fdopen(handle, "w") as tmp:
        tmp.write(info.to_json())
    Path(name).replace(manifest)
    return info


def describe_file(path: Path, version: str, position: int) -> DatasetInfo:
    """Row counts, features, classes and ranges of a compiled dataset, read lazily."""
    schema = pl.read_parquet_schema(path)
    feature_names = [c for c in schema if c not in META_COLUMNS]
    scan = pl.scan_parquet(path)
    stats = (
        scan.select(
            pl.len().alias("rows"),
            (pl.col(SPLIT) == "train").sum().alias("train"),
            (pl.col(SPLIT) == "holdout").sum().alias("holdout"),
            pl.col("log_offset").min().alias("first_offset"),
            pl.col("log_offset").max().alias("last_offset"),
            pl.col("event_id").first().alias("first_id"),
            pl.col("event_id").last().alias("last_id"),
            pl.col("timestamp").first().alias("start"),
            pl.col("timestamp").last().alias("end"),
        )
        .collect()
        .row(0, named=True)
    )
    classes = scan.select(pl.col(LABEL).unique().sort()).collect()[LABEL].to_list()
    return DatasetInfo(
        version=version,
        path=str(path),
        rows=int(stats["rows"]),
        train_rows=int(stats["train"]),
        holdout_rows=int(stats["holdout"]),
        feature_names=feature_names,
        categorical_features=[c for c in feature_names if schema[c] == pl.String],
        classes=[str(c) for c in classes],
        log_position=position,
        first_log_offset=int(stats["first_offset"]),
        last_log_offset=int(stats["last_offset"]),
        first_event_id=str(stats["first_id"]),
        last_event_id=str(stats["last_id"]),
        start_time=str(stats["start"]),
        end_time=str(stats["end"]),
    )

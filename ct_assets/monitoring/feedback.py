"""Figures of the feedback stream itself: daily aggregates, and bias in what gets feedback.

They are computed over the per-date tables the curation assets keep under
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

Segments are feature values. They are the features named in ``CT_MONITORING_SEGMENTS``,
or by default the categorical (string) features. A feedback event's segment comes from
its own features, else from the prediction it refers to.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ct_assets import keys
from ct_assets.data.attribution import EXPLICIT, IMPLICIT, IMPLICIT_PREFIX, LabelPolicy
from ct_assets.data.tables import TableStore

if TYPE_CHECKING:
    import duckdb

#: Group of a null value (no source, no signal, a missing feature).
NO_VALUE = "(none)"
#: Dimension (and value) of the rows that total a whole day.
ALL = "all"
SEGMENT_PREFIX = "segment:"
#: Days shown on the aggregates plot; days of feedback the bias report looks at.
PLOT_DAYS = 30
BIAS_WINDOW_DAYS = 30
DECILES = 10
#: Fewer scored predictions per decile than this and the score deciles are not judged.
MIN_PREDICTIONS_PER_DECILE = 10
#: The "top users" of the concentration figure: this share of the users (at least one).
TOP_USERS_FRACTION = 0.01
#: A segment is judged for label shift only with this many labels on both sides.
MIN_SEGMENT_LABELS = 30
#: The feature that carries the rank at which an item was shown, when the payload has one.
POSITION_FIELD = "position"
MAX_POSITION_ROWS = 50
#: Each computation spills in ``<tables>/.monitoring-<pid>-<random>/``, removed when it ends
#: or, after a crash, by the next computation.
WORK_PREFIX = ".monitoring-"
ABANDONED_AFTER_SECONDS = 24 * 3600

SELECTION_CHECK = "selection_bias"
LABEL_SHIFT_CHECK = "label_shift"
CONCENTRATION_CHECK = "concentration"

Schema = Mapping[str, pl.DataType]

AGGREGATE_SCHEMA: dict[str, pl.DataType] = {
    "day": pl.Date(),
    "dimension": pl.String(),
    "value": pl.String(),
    "events": pl.Int64(),
    "accepted": pl.Int64(),
    "quarantined": pl.Int64(),
    "pending": pl.Int64(),
    "expired": pl.Int64(),
    "acceptance_rate": pl.Float64(),
    "quarantine_rate": pl.Float64(),
    "explicit_labels": pl.Int64(),
    "positive_labels": pl.Int64(),
    "label_rate": pl.Float64(),
    "implicit_events": pl.Int64(),
    "implicit_labeled": pl.Int64(),
    "implicit_positive": pl.Int64(),
    "reward_rate": pl.Float64(),
    "mean_value": pl.Float64(),
    "predictions": pl.Int64(),
    "predictions_with_feedback": pl.Int64(),
    "coverage": pl.Float64(),
}
AGGREGATE_COUNTS = tuple(n for n, t in AGGREGATE_SCHEMA.items() if t == pl.Int64())
#: What each column of the aggregates table means (for the asset's column schema).
AGGREGATE_COLUMN_DOCS = {
    "day": "UTC date: of the feedback events, and of the predictions for coverage",
    "dimension": "all | feedback_type | signal | source | label | segment:<feature>",
    "value": f"the group within the dimension ({NO_VALUE} for null)",
    "events": "feedback events",
    "acceptance_rate": "accepted / events",
    "quarantine_rate": "quarantined / events",
    "label_rate": "explicit labels equal to the policy's positive label / explicit labels; "
    "in dimension label: this class's share of the day's explicit labels",
    "reward_rate": "implicit signals the policy labels positive / implicit signals it labels",
    "mean_value": "mean value of the implicit signals that carry one",
    "predictions": "predictions logged that day (of the segment, for all and segment rows)",
    "predictions_with_feedback": "of those, with any feedback event (any day) of the group",
    "coverage": "predictions_with_feedback / predictions",
}


# --- reading the tables -------------------------------------------------------------------


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def struct_fields(dtype: Any) -> dict[str, pl.DataType]:
    if isinstance(dtype, pl.Struct):
        return {f.name: f.dtype for f in dtype.fields}  # type: ignore[misc]
    return {}


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
            f"SELECT {', '.join(project(schema))} FROM read_parquet({_file_list(paths)})"
            for schema, paths in groups.values()
        ]
        return " UNION ALL BY NAME ".join(parts)


def _file_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(quote(str(p)) for p in paths) + "]"


@contextmanager
def duckdb_session(work_root: Path, memory_limit_mb: int) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection limited to ``memory_limit_mb``, spilling under ``work_root``, with
    dates in UTC (the tables' dates are UTC event dates)."""
    import duckdb

    work_root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_work(work_root)
    folder = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=work_root))
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
        con.execute(f"SET temp_directory = {quote(str(folder / 'spill'))}")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")
        yield con
    finally:
        con.close()
        shutil.rmtree(folder, ignore_errors=True)


def remove_abandoned_work(work_root: Path) -> None:
    """Remove the work folders of computations whose process is gone, and any older than a
    day (a process id may have been reused since)."""
    now = time.time()
    for folder in work_root.glob(f"{WORK_PREFIX}*"):
        pid = folder.name.removeprefix(WORK_PREFIX).split("-", 1)[0]
        try:
            old = now - folder.stat().st_mtime > ABANDONED_AFTER_SECONDS
        except FileNotFoundError:
            continue
        if old or not pid.isdigit() or not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_table(
    con: duckdb.DuckDBPyConnection, name: str, select: str | None, columns: Mapping[str, str]
) -> None:
    """Temp table ``name`` from ``select``, or empty with ``columns`` when there is none."""
    if select is None:
        typed = ", ".join(f"{ident(c)} {t}" for c, t in columns.items())
        con.execute(f"CREATE TEMP TABLE {name} ({typed})")
    else:
        con.execute(f"CREATE TEMP TABLE {name} AS {select}")


# --- segments and the label policy --------------------------------------------------------


@dataclass(frozen=True)
class Segments:
    """The features figures are split by, and the features asked for but left out, with why."""

    names: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def alias(index: int) -> str:
        """The SQL name of the ``index``-th segment's column (features may have any name)."""
        return f"seg{index}"


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


def _in_list(column: str, values: Iterable[str]) -> str:
    listed = sorted(values)
    if not listed:
        return "false"
    return f"{column} IN ({', '.join(quote(v) for v in listed)})"


def policy_flags_sql(policy: LabelPolicy) -> dict[str, str]:
    """SQL over the feedback columns (``feedback_type``, ``label``, ``signal``, ``value``)
    saying what the label policy makes of a row, as
    :func:`~ct_assets.data.attribution.labeled_feedback` does: booleans ``explicit_label``,
    ``explicit_positive``, ``implicit``, ``implicit_labeled``, ``implicit_positive`` and
    the implicit signal's finite ``implicit_value``."""
    explicit = f"feedback_type = {quote(EXPLICIT)}"
    implicit = f"feedback_type = {quote(IMPLICIT)}"
    positive = _in_list("signal", policy.positive_signals)
    negative = _in_list("signal", policy.negative_signals)
    finite = "(value IS NOT NULL AND NOT isnan(value))"
    if policy.dwell_signal is not None:
        dwell = f"(signal = {quote(policy.dwell_signal)} AND {finite})"
        threshold = repr(float(policy.dwell_threshold_seconds))
        dwell_positive = f"({dwell} AND value >= {threshold})"
    else:
        dwell = dwell_positive = "false"
    return {
        "explicit_label": f"coalesce({explicit} AND label IS NOT NULL, false)",
        "explicit_positive": f"coalesce({explicit} AND label = {quote(policy.positive_label)}, "
        "false)",
        "implicit": f"coalesce({implicit}, false)",
        "implicit_labeled": f"coalesce({implicit} AND ({positive} OR {negative} OR {dwell}), "
        "false)",
        "implicit_positive": f"coalesce({implicit} AND ({positive} OR {dwell_positive}), false)",
        "implicit_value": f"CASE WHEN {implicit} AND {finite} THEN value END",
    }


def _group(expression: str) -> str:
    return f"coalesce(CAST({expression} AS VARCHAR), {quote(NO_VALUE)})"


# --- feedback aggregates ------------------------------------------------------------------


@dataclass(frozen=True)
class FeedbackAggregates:
    """The aggregates table (``AGGREGATE_SCHEMA``), the segments it is split by, and why it
    is empty when it is."""

    table: pl.DataFrame
    segments: Segments
    reason: str | None = None


@dataclass(frozen=True)
class _Dimension:
    name: str
    event_group: str  # SQL over fb: the group of a feedback event
    where: str = "true"
    #: SQL over the predictions: the group a prediction counts in for coverage; None: the
    #: group of its feedback, over all the predictions of the day
    prediction_group: str | None = None


_EVENT_AGGREGATES = {
    "events": "count(*)",
    "accepted": "count_if(status = 'accepted')",
    "quarantined": "count_if(status = 'quarantined')",
    "pending": "count_if(status = 'pending')",
    "expired": "count_if(status = 'expired')",
    "explicit_labels": "count_if(explicit_label)",
    "positive_labels": "count_if(explicit_positive)",
    "implicit_events": "count_if(implicit)",
    "implicit_labeled": "count_if(implicit_labeled)",
    "implicit_positive": "count_if(implicit_positive)",
    "mean_value": "avg(implicit_value)",
}
_EVENT_COUNTS = ", ".join(f"{sql} AS {name}" for name, sql in _EVENT_AGGREGATES.items())


def _dimensions(segments: Segments) -> list[_Dimension]:
    dims = [
        _Dimension(ALL, quote(ALL), prediction_group=quote(ALL)),
        _Dimension("feedback_type", "feedback_type"),
        _Dimension("signal", "signal"),
        _Dimension("source", "source"),
        _Dimension("label", "label", where="explicit_label"),
    ]
    for index, name in enumerate(segments.names):
        alias = Segments.alias(index)
        dims.append(_Dimension(f"{SEGMENT_PREFIX}{name}", alias, prediction_group=alias))
    return dims


def _feedback_projection(segments: Segments) -> Callable[[Schema], list[str]]:
    def project(schema: Schema) -> list[str]:
        columns = [
            'CAST("timestamp" AS DATE) AS day',
            column_or_null(schema, "prediction_id", "VARCHAR"),
            column_or_null(schema, "feedback_type", "VARCHAR"),
            column_or_null(schema, "signal", "VARCHAR"),
            column_or_null(schema, "source", "VARCHAR"),
            column_or_null(schema, "status", "VARCHAR"),
            column_or_null(schema, "label", "VARCHAR"),
            column_or_null(schema, "value", "DOUBLE"),
        ]
        for index, name in enumerate(segments.names):
            columns.append(
                field_or_null(schema, "features", name, "VARCHAR", Segments.alias(index))
            )
        return columns

    return project


def _prediction_projection(
    segments: Segments, score: Callable[[Schema], str] | None = None
) -> Callable[[Schema], list[str]]:
    """The prediction columns a figure needs: id, log offset, day and segments; with
    ``score``, also the predicted class, the score and the position."""

    def project(schema: Schema) -> list[str]:
        columns = [
            'CAST("timestamp" AS DATE) AS day',
            column_or_null(schema, "prediction_id", "VARCHAR"),
            column_or_null(schema, "log_offset", "BIGINT"),
        ]
        for index, name in enumerate(segments.names):
            alias = Segments.alias(index)
            columns.append(field_or_null(schema, "features", name, "VARCHAR", alias))
        if score is not None:
            columns.append(column_or_null(schema, "prediction", "VARCHAR"))
            columns.append(f"{score(schema)} AS score")
            columns.append(field_or_null(schema, "features", POSITION_FIELD, "VARCHAR", "position"))
        return columns

    return project


def _first_logged(select: str, columns: Sequence[str]) -> str:
    """One row per prediction_id with ``columns`` of its first logged prediction (the
    lowest log offset), as attribution picks it for a prediction_id logged twice."""
    if len(columns) == 1 and columns[0] == "day":  # never null: no struct needed
        picked = "arg_min(day, log_offset) AS day"
    else:
        packed = ", ".join(f"{quote(c)}: {ident(c)}" for c in columns)
        picked = f"unnest(arg_min({{{packed}}}, log_offset))"
    return (
        f"SELECT prediction_id, {picked} FROM ({select}) "
        "WHERE prediction_id IS NOT NULL GROUP BY prediction_id"
    )


def feedback_aggregates(
    store: TableStore,
    policy: LabelPolicy,
    segments: str = "",
    memory_limit_mb: int = 1000,
) -> FeedbackAggregates:
    """Per day and per group of each dimension (all, feedback_type, signal, source, label,
    segment:<feature>): event counts per status with acceptance and quarantine rates, the
    label rate of explicit feedback, the reward rate and mean value of implicit feedback,
    and coverage, the share of the day's predictions that ever received feedback (any
    event referring to the prediction, on any day, of the group). Columns:
    ``AGGREGATE_SCHEMA``; rates are null when their denominator is 0."""
    feedback = TableFiles.of(store, keys.VALIDATED_FEEDBACK)
    predictions = TableFiles.of(store, keys.RAW_PREDICTIONS)
    features = {**feedback.struct_fields("features"), **predictions.struct_fields("features")}
    chosen = choose_segments(segments, features)
    if not feedback:
        reason = f"no validated_feedback tables yet under {store.root}"
        return FeedbackAggregates(empty_aggregates(), chosen, reason)
    aliases = [Segments.alias(i) for i in range(len(chosen.names))]
    with duckdb_session(store.root, memory_limit_mb) as con:
        prediction_sql = (
            _first_logged(predictions.select_sql(_prediction_projection(chosen)), ["day", *aliases])
            if predictions
            else None
        )
        _create_table(
            con,
            "pr",
            prediction_sql,
            {"prediction_id": "VARCHAR", "day": "DATE", **dict.fromkeys(aliases, "VARCHAR")},
        )
        flags = ", ".join(f"{sql} AS {name}" for name, sql in policy_flags_sql(policy).items())
        own_or_logged = "".join(f", coalesce(f.{a}, p.{a}) AS {a}" for a in aliases)
        con.execute(
            "CREATE TEMP TABLE fb AS SELECT f.day, f.prediction_id, f.feedback_type, f.signal, "
            f"f.source, f.status, f.label, p.day AS pday{own_or_logged}, {flags} "
            f"FROM ({feedback.select_sql(_feedback_projection(chosen))}) f "
            "LEFT JOIN pr p ON f.prediction_id = p.prediction_id"
        )
        con.execute(
            "CREATE TEMP TABLE prf AS SELECT *, prediction_id IN "
            "(SELECT prediction_id FROM fb WHERE pday IS NOT NULL) AS has_feedback FROM pr"
        )
        con.execute("DROP TABLE pr")
        counted = con.sql(_aggregate_sql(_dimensions(chosen))).pl()
    return FeedbackAggregates(_with_rates(counted), chosen)


def _aggregate_sql(dimensions: Sequence[_Dimension]) -> str:
    """Event counts per (day, dimension, value) from ``fb``; coverage from ``prf`` for the
    dimensions grouped by prediction (all, segments), else distinct predictions per
    (prediction day, value) over the total predictions of the day."""
    events = " UNION ALL ".join(
        f"SELECT day, {quote(d.name)} AS dimension, {_group(d.event_group)} AS value, "
        f"{_EVENT_COUNTS} FROM fb WHERE {d.where} GROUP BY ALL"
        for d in dimensions
    )
    by_prediction = [d for d in dimensions if d.prediction_group is not None]
    by_feedback = [d for d in dimensions if d.prediction_group is None]
    per_group = " UNION ALL ".join(
        f"SELECT day, {quote(d.name)} AS dimension, {_group(str(d.prediction_group))} AS value, "
        "count(*) AS predictions, count_if(has_feedback) AS predictions_with_feedback "
        "FROM prf GROUP BY ALL"
        for d in by_prediction
    )
    covered = " UNION ALL ".join(
        f"SELECT pday AS day, {quote(d.name)} AS dimension, {_group(d.event_group)} AS value, "
        "t.predictions, count(DISTINCT prediction_id) AS predictions_with_feedback "
        f"FROM fb JOIN per_day t ON t.day = fb.pday WHERE {d.where} GROUP BY ALL"
        for d in by_feedback
    )
    picked = ", ".join(f"e.{c}" for c in _EVENT_AGGREGATES)
    return (
        f"WITH events AS ({events}), "
        "per_day AS (SELECT day, count(*) AS predictions FROM prf GROUP BY day), "
        f"coverage AS ({per_group} UNION ALL {covered}), "
        "groups AS (SELECT day, dimension, value FROM events UNION "
        "SELECT day, dimension, value FROM coverage) "
        f"SELECT g.day, g.dimension, g.value, {picked}, "
        "c.predictions, c.predictions_with_feedback "
        "FROM groups g "
        "LEFT JOIN events e ON e.day = g.day AND e.dimension = g.dimension AND e.value = g.value "
        "LEFT JOIN coverage c "
        "ON c.day = g.day AND c.dimension = g.dimension AND c.value = g.value "
        "WHERE g.day IS NOT NULL"
    )


def empty_aggregates() -> pl.DataFrame:
    return pl.DataFrame(schema=AGGREGATE_SCHEMA)


def _ratio(numerator: str, denominator: str) -> pl.Expr:
    return (
        pl.when(pl.col(denominator) > 0)
        .then(pl.col(numerator) / pl.col(denominator))
        .otherwise(None)
    )


def _with_rates(counted: pl.DataFrame) -> pl.DataFrame:
    filled = counted.with_columns(
        [pl.col(c).fill_null(0).cast(pl.Int64) for c in AGGREGATE_COUNTS if c in counted.columns]
    )
    day_labels = pl.col("explicit_labels").sum().over("day", "dimension")
    class_share = pl.when(day_labels > 0).then(pl.col("explicit_labels") / day_labels)
    return (
        filled.with_columns(
            acceptance_rate=_ratio("accepted", "events"),
            quarantine_rate=_ratio("quarantined", "events"),
            label_rate=pl.when(pl.col("dimension") == "label")
            .then(class_share)
            .otherwise(_ratio("positive_labels", "explicit_labels")),
            reward_rate=_ratio("implicit_positive", "implicit_labeled"),
            coverage=_ratio("predictions_with_feedback", "predictions"),
        )
        .select([pl.col(n).cast(t) for n, t in AGGREGATE_SCHEMA.items()])
        .sort("day", "dimension", "value")
    )


LATEST_FIGURES = (
    "events",
    "acceptance_rate",
    "quarantine_rate",
    "coverage",
    "label_rate",
    "reward_rate",
    "predictions",
)


def latest_day_totals(table: pl.DataFrame) -> tuple[str | None, dict[str, float]]:
    """The newest day with feedback events and its totals (``LATEST_FIGURES``; a rate whose
    denominator was 0 is left out)."""
    totals = table.filter((pl.col("dimension") == ALL) & (pl.col("events") > 0)).sort("day")
    if totals.height == 0:
        return None, {}
    row = totals.row(-1, named=True)
    figures = {name: float(row[name]) for name in LATEST_FIGURES if row[name] is not None}
    return str(row["day"]), figures


def daily_plot_png(table: pl.DataFrame, days: int = PLOT_DAYS) -> bytes | None:
    """Daily events (accepted and not) and rates (acceptance, quarantine, coverage, label
    rate) of the last ``days`` days, as a PNG; None without any day."""
    totals = table.filter(pl.col("dimension") == ALL).sort("day").tail(days)
    if totals.height == 0:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 5.0), dpi=80)
    FigureCanvasAgg(figure)
    counts, rates = figure.subplots(2, 1, sharex=True)
    x = totals["day"].to_list()
    accepted = totals["accepted"].to_numpy()
    others = totals["events"].to_numpy() - accepted
    counts.bar(x, accepted, color="tab:green", label="accepted")
    counts.bar(x, others, bottom=accepted, color="tab:red", label="not accepted")
    counts.set(ylabel="feedback events", title=f"Feedback, last {totals.height} day(s)")
    counts.legend(loc="upper left", fontsize="small")
    for name, color in (
        ("acceptance_rate", "tab:green"),
        ("quarantine_rate", "tab:red"),
        ("coverage", "tab:blue"),
        ("label_rate", "tab:purple"),
    ):
        values = totals[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        rates.plot(x, values, marker="o", markersize=3, color=color, label=name)
    rates.set(ylabel="rate", ylim=(-0.02, 1.02))
    rates.legend(loc="upper left", fontsize="small", ncols=2)
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# --- bias ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateRow:
    group: str
    predictions: int
    with_feedback: int
    rate: float


@dataclass(frozen=True)
class DecileRow:
    decile: int
    min_score: float
    max_score: float
    predictions: int
    with_feedback: int
    rate: float


@dataclass(frozen=True)
class SelectionBias:
    """Share of the window's predictions that became training examples (accepted, labeled
    feedback), by predicted class and by score decile; ``ratio`` is the highest decile
    rate over the lowest (inf when the lowest is 0)."""

    by_class: list[RateRow] = field(default_factory=list)
    by_decile: list[DecileRow] = field(default_factory=list)
    ratio: float | None = None
    score: str | None = None
    reason: str | None = None


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


@dataclass(frozen=True)
class Concentration:
    """Who the labels come from: the share of the top ``TOP_USERS_FRACTION`` of users and the
    Herfindahl-Hirschman index of the users' shares (labels without a user left out)."""

    labels: int = 0
    users: int = 0
    top_users: int = 0
    top_share: float | None = None
    hhi: float | None = None
    labels_without_user: int = 0
    reason: str | None = None


@dataclass(frozen=True)
class PositionRow:
    position: str
    predictions: int
    with_feedback: int
    feedback_rate: float | None
    implicit_labels: int
    implicit_positive_rate: float | None


@dataclass(frozen=True)
class PositionEffects:
    """Exposure and implicit-feedback rates by the ``position`` feature, when there is one."""

    rows: list[PositionRow] = field(default_factory=list)
    reason: str | None = None


@dataclass(frozen=True)
class BiasReport:
    window_start: str | None
    window_end: str | None
    predictions: int
    examples: int
    segments: Segments
    selection: SelectionBias
    label_shift: LabelShift
    concentration: Concentration
    position: PositionEffects

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BiasThresholds:
    max_selection_ratio: float = 3.0
    max_label_shift: float = 0.15
    max_top_users_share: float = 0.25
    max_hhi: float = 0.05


@dataclass(frozen=True)
class BiasVerdict:
    """One bias check: passed (or not evaluated, which passes), the figures behind it."""

    check: str
    passed: bool
    evaluated: bool
    description: str
    figures: dict[str, float] = field(default_factory=dict)


def recent_days(store: TableStore, window_days: int) -> list[str]:
    """The dates with a prediction or example table among the ``window_days`` days that end
    at the newest such date."""
    days = sorted(set(store.days(keys.RAW_PREDICTIONS)) | set(store.days(keys.ATTRIBUTED_EXAMPLES)))
    if not days:
        return []
    first = (date.fromisoformat(days[-1]) - timedelta(days=window_days - 1)).isoformat()
    return [d for d in days if d >= first]


def empty_bias_report(reason: str, segments: Segments | None = None) -> BiasReport:
    return BiasReport(
        window_start=None,
        window_end=None,
        predictions=0,
        examples=0,
        segments=segments or Segments(),
        selection=SelectionBias(reason=reason),
        label_shift=LabelShift(reason=reason),
        concentration=Concentration(reason=reason),
        position=PositionEffects(reason=reason),
    )


def _score_expression(positive_label: str) -> Callable[[Schema], str]:
    """A prediction's score: its score of the positive label, else its highest score."""

    def score(schema: Schema) -> str:
        fields = struct_fields(schema.get("scores"))
        if positive_label in fields:
            return f"CAST(struct_extract(scores, {quote(positive_label)}) AS DOUBLE)"
        if fields:
            listed = ", ".join(
                f"CAST(struct_extract(scores, {quote(n)}) AS DOUBLE)" for n in sorted(fields)
            )
            return f"greatest({listed})"
        return "NULL::DOUBLE"

    return score


def _example_projection(segments: Segments) -> Callable[[Schema], list[str]]:
    def project(schema: Schema) -> list[str]:
        columns = [
            column_or_null(schema, "prediction_id", "VARCHAR"),
            column_or_null(schema, "label", "VARCHAR"),
            column_or_null(schema, "label_source", "VARCHAR"),
            column_or_null(schema, "user_id", "VARCHAR"),
            field_or_null(schema, "features", POSITION_FIELD, "VARCHAR", "position"),
        ]
        for index, name in enumerate(segments.names):
            columns.append(
                field_or_null(schema, "features", name, "VARCHAR", Segments.alias(index))
            )
        return columns

    return project


def feedback_bias(
    store: TableStore,
    policy: LabelPolicy,
    reference_dataset: Path | None,
    segments: str = "",
    window_days: int = BIAS_WINDOW_DAYS,
    memory_limit_mb: int = 1000,
) -> BiasReport:
    """Bias in the feedback of the last ``window_days`` dates (ending at the newest table):

    * selection: the share of the window's predictions that became training examples, by
      predicted class and by score decile (the score of the policy's positive label, else
      the highest score), and the ratio of the highest decile rate to the lowest;
    * label shift: per segment value, the largest change of a class's share of the labels
      between ``reference_dataset`` (a compiled dataset; its train split) and the window's
      examples;
    * concentration: share of the labels from the top 1% of users, and the HHI over users;
    * position: exposure and implicit-feedback rates per ``position`` feature value, when
      the predictions or feedback carry one.
    """
    days = recent_days(store, window_days)
    if not days:
        return empty_bias_report(
            f"no raw_predictions or attributed_examples tables yet under {store.root}"
        )
    predictions = TableFiles.of(store, keys.RAW_PREDICTIONS, days)
    examples = TableFiles.of(store, keys.ATTRIBUTED_EXAMPLES, days)
    features = {**examples.struct_fields("features"), **predictions.struct_fields("features")}
    chosen = choose_segments(segments, features)
    score = _score_description(predictions.struct_fields("scores"), policy.positive_label)
    with duckdb_session(store.root, memory_limit_mb) as con:
        _load_window(con, predictions, examples, chosen, policy.positive_label)
        n_predictions = _scalar(con, "SELECT count(*) FROM sel")
        n_examples = _scalar(con, "SELECT count(*) FROM ex")
        selection = _selection_bias(con, score)
        concentration = _concentration(con)
        current = _current_label_counts(con, chosen)
        has_position = POSITION_FIELD in features
        position = _position_effects(con, policy.positive_label) if has_position else None
    shift = _shift_from_reference(reference_dataset, current, chosen, policy.positive_label)
    return BiasReport(
        window_start=days[0],
        window_end=days[-1],
        predictions=n_predictions,
        examples=n_examples,
        segments=chosen,
        selection=selection,
        label_shift=shift,
        concentration=concentration,
        position=position
        or PositionEffects(
            reason=f"not available: neither the predictions nor the feedback carry a "
            f"{POSITION_FIELD!r} feature (schema v1 has no position field)"
        ),
    )


#: Columns of the (empty) tables of a window without prediction or example files.
_WINDOW_PREDICTION_COLUMNS = {
    "prediction_id": "VARCHAR",
    "prediction": "VARCHAR",
    "score": "DOUBLE",
    "position": "VARCHAR",
}
_EXAMPLE_COLUMNS = {
    "prediction_id": "VARCHAR",
    "label": "VARCHAR",
    "label_source": "VARCHAR",
    "user_id": "VARCHAR",
    "position": "VARCHAR",
}


def _load_window(
    con: duckdb.DuckDBPyConnection,
    predictions: TableFiles,
    examples: TableFiles,
    segments: Segments,
    positive_label: str,
) -> None:
    """Temp tables ``wp`` (the window's predictions, the first logged of each id, with
    class, score and position), ``ex`` (the window's examples) and ``sel`` (``wp`` with
    ``has_feedback``: whether an example refers to it)."""
    projection = _prediction_projection(Segments(), _score_expression(positive_label))
    _create_table(
        con,
        "wp",
        _first_logged(predictions.select_sql(projection), ["prediction", "score", "position"])
        if predictions
        else None,
        _WINDOW_PREDICTION_COLUMNS,
    )
    aliases = [Segments.alias(i) for i in range(len(segments.names))]
    _create_table(
        con,
        "ex",
        examples.select_sql(_example_projection(segments)) if examples else None,
        {**_EXAMPLE_COLUMNS, **dict.fromkeys(aliases, "VARCHAR")},
    )
    con.execute(
        "CREATE TEMP TABLE sel AS SELECT w.*, f.prediction_id IS NOT NULL AS has_feedback "
        "FROM wp w LEFT JOIN (SELECT DISTINCT prediction_id FROM ex "
        "WHERE prediction_id IS NOT NULL) f ON w.prediction_id = f.prediction_id"
    )


def _shift_from_reference(
    reference_dataset: Path | None, current: pl.DataFrame, segments: Segments, positive: str
) -> LabelShift:
    if reference_dataset is None:
        return LabelShift(reason="no champion: no training data to compare labels with")
    if not reference_dataset.exists():
        return LabelShift(reason=f"the champion's dataset {reference_dataset} is missing")
    reference = reference_label_counts(reference_dataset, segments)
    return label_shift(current, reference, positive, str(reference_dataset))


def _scalar(con: duckdb.DuckDBPyConnection, query: str) -> int:
    rows = con.execute(query).fetchall()
    row = rows[0] if rows else None
    return int(row[0]) if row and row[0] is not None else 0


def _score_description(fields: Mapping[str, pl.DataType], positive_label: str) -> str | None:
    if not fields:
        return None
    if positive_label in fields:
        return f"score of class {positive_label!r}"
    return "highest class score"


def _selection_bias(con: duckdb.DuckDBPyConnection, score: str | None) -> SelectionBias:
    by_class = [
        RateRow(str(group), int(n), int(fed), int(fed) / int(n))
        for group, n, fed in con.execute(
            f"SELECT {_group('prediction')} AS grp, count(*), count_if(has_feedback) "
            "FROM sel GROUP BY ALL ORDER BY grp"
        ).fetchall()
    ]
    scored = _scalar(con, "SELECT count(*) FROM sel WHERE score IS NOT NULL AND NOT isnan(score)")
    if score is None or scored == 0:
        return SelectionBias(by_class, reason="the window's predictions carry no scores")
    needed = DECILES * MIN_PREDICTIONS_PER_DECILE
    if scored < needed:
        return SelectionBias(
            by_class,
            score=score,
            reason=f"{scored} scored predictions in the window; score deciles need {needed}",
        )
    by_decile = [
        DecileRow(int(d), float(lo), float(hi), int(n), int(fed), int(fed) / int(n))
        for d, lo, hi, n, fed in con.execute(
            "SELECT decile, min(score), max(score), count(*), count_if(has_feedback) FROM ("
            f"SELECT score, has_feedback, ntile({DECILES}) OVER (ORDER BY score, prediction_id) "
            "AS decile FROM sel WHERE score IS NOT NULL AND NOT isnan(score)) "
            "GROUP BY decile ORDER BY decile"
        ).fetchall()
    ]
    rates = [row.rate for row in by_decile]
    if max(rates) == 0:
        return SelectionBias(
            by_class, by_decile, None, score, "no scored prediction of the window got feedback"
        )
    ratio = math.inf if min(rates) == 0 else max(rates) / min(rates)
    return SelectionBias(by_class, by_decile, ratio, score)


def _concentration(con: duckdb.DuckDBPyConnection) -> Concentration:
    without_user = _scalar(con, "SELECT count(*) FROM ex WHERE user_id IS NULL")
    row = con.execute(
        "WITH u AS (SELECT user_id, count(*) AS n FROM ex WHERE user_id IS NOT NULL "
        "GROUP BY user_id), r AS (SELECT n, row_number() OVER (ORDER BY n DESC) AS rank, "
        "count(*) OVER () AS users, sum(n) OVER () AS total FROM u) "
        "SELECT max(users), max(total), "
        f"sum(n) FILTER (WHERE rank <= greatest(1, ceil(users * {TOP_USERS_FRACTION!r}))), "
        f"count(*) FILTER (WHERE rank <= greatest(1, ceil(users * {TOP_USERS_FRACTION!r}))), "
        "sum((n / total) * (n / total)) FROM r"
    ).fetchall()[0]
    if not row[0]:
        return Concentration(
            labels_without_user=without_user,
            reason="no labeled feedback with a user_id in the window",
        )
    users, total, top, top_users, hhi = row
    return Concentration(
        labels=int(total),
        users=int(users),
        top_users=int(top_users),
        top_share=int(top) / int(total),
        hhi=float(hhi),
        labels_without_user=without_user,
    )


_LABEL_COUNT_SCHEMA = {"segment": pl.String, "value": pl.String, "label": pl.String, "n": pl.Int64}


def _current_label_counts(con: duckdb.DuckDBPyConnection, segments: Segments) -> pl.DataFrame:
    parts = [
        f"SELECT {quote(ALL)} AS segment, {quote(ALL)} AS value, label, count(*) AS n "
        "FROM ex WHERE label IS NOT NULL GROUP BY ALL"
    ]
    for index, name in enumerate(segments.names):
        parts.append(
            f"SELECT {quote(SEGMENT_PREFIX + name)} AS segment, "
            f"{_group(Segments.alias(index))} AS value, label, count(*) AS n "
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


def _position_effects(con: duckdb.DuckDBPyConnection, positive_label: str) -> PositionEffects:
    exposure = {
        str(pos): (int(n), int(fed))
        for pos, n, fed in con.execute(
            "SELECT position, count(*), count_if(has_feedback) FROM sel "
            "WHERE position IS NOT NULL GROUP BY position"
        ).fetchall()
    }
    implicit = {
        str(pos): (int(n), int(positive))
        for pos, n, positive in con.execute(
            f"SELECT position, count(*), count_if(label = {quote(positive_label)}) FROM ex "
            f"WHERE position IS NOT NULL AND starts_with(label_source, {quote(IMPLICIT_PREFIX)}) "
            "GROUP BY position"
        ).fetchall()
    }
    positions = sorted(set(exposure) | set(implicit), key=_position_order)[:MAX_POSITION_ROWS]
    if not positions:
        return PositionEffects(
            reason=f"no prediction or example of the window has a {POSITION_FIELD}"
        )
    rows = []
    for pos in positions:
        shown, fed = exposure.get(pos, (0, 0))
        labels, positive = implicit.get(pos, (0, 0))
        rows.append(
            PositionRow(
                position=pos,
                predictions=shown,
                with_feedback=fed,
                feedback_rate=fed / shown if shown else None,
                implicit_labels=labels,
                implicit_positive_rate=positive / labels if labels else None,
            )
        )
    return PositionEffects(rows)


def _position_order(position: str) -> tuple[int, float, str]:
    try:
        return (0, float(position), position)
    except ValueError:
        return (1, 0.0, position)


def judge_bias(report: BiasReport, thresholds: BiasThresholds) -> list[BiasVerdict]:
    """The three bias checks against ``thresholds``. A figure that could not be computed
    (no data, no champion) is not evaluated, and passes, with the reason."""
    selection = report.selection
    if selection.ratio is None:
        selection_verdict = BiasVerdict(
            SELECTION_CHECK, True, False, f"not evaluated: {selection.reason}"
        )
    else:
        rates = [row.rate for row in selection.by_decile]
        selection_verdict = BiasVerdict(
            SELECTION_CHECK,
            selection.ratio <= thresholds.max_selection_ratio,
            True,
            f"highest feedback rate of a score decile over the lowest: {selection.ratio:.3g} "
            f"(max {thresholds.max_selection_ratio:g})",
            {
                "ratio": selection.ratio,
                "threshold": thresholds.max_selection_ratio,
                "max_decile_rate": max(rates),
                "min_decile_rate": min(rates),
            },
        )
    shift = report.label_shift
    if shift.max_shift is None:
        shift_verdict = BiasVerdict(
            LABEL_SHIFT_CHECK, True, False, f"not evaluated: {shift.reason}"
        )
    else:
        shift_verdict = BiasVerdict(
            LABEL_SHIFT_CHECK,
            shift.max_shift <= thresholds.max_label_shift,
            True,
            f"largest change of a class's label share vs the champion's training data: "
            f"{shift.max_shift:.3f} at {shift.worst} (max {thresholds.max_label_shift:g})",
            {"max_shift": shift.max_shift, "threshold": thresholds.max_label_shift},
        )
    users = report.concentration
    if users.top_share is None or users.hhi is None:
        users_verdict = BiasVerdict(
            CONCENTRATION_CHECK, True, False, f"not evaluated: {users.reason}"
        )
    else:
        users_verdict = BiasVerdict(
            CONCENTRATION_CHECK,
            users.top_share <= thresholds.max_top_users_share and users.hhi <= thresholds.max_hhi,
            True,
            f"top {users.top_users} of {users.users} users give {users.top_share:.1%} of the "
            f"labels (max {thresholds.max_top_users_share:.0%}); HHI {users.hhi:.4f} "
            f"(max {thresholds.max_hhi:g})",
            {
                "top_users_share": users.top_share,
                "hhi": users.hhi,
                "max_top_users_share": thresholds.max_top_users_share,
                "max_hhi": thresholds.max_hhi,
            },
        )
    return [selection_verdict, shift_verdict, users_verdict]


def bias_summary_markdown(report: BiasReport, verdicts: Sequence[BiasVerdict]) -> str:
    """What is flagged, then each figure: deciles, the most shifted segments, positions."""
    window = f"{report.window_start} .. {report.window_end}" if report.window_start else "(no data)"
    flagged = [v for v in verdicts if not v.passed]
    lines = [
        f"**Window** {window}: {report.predictions} predictions, {report.examples} examples.",
        "",
        f"**Flagged**: {', '.join(v.check for v in flagged)}" if flagged else "**Flagged**: none",
        "",
    ]
    for verdict in verdicts:
        state = "FLAGGED" if not verdict.passed else "ok" if verdict.evaluated else "n/a"
        lines.append(f"- `{verdict.check}` **{state}**: {verdict.description}")
    deciles = report.selection.by_decile
    if deciles:
        lines += ["", f"Feedback rate by decile of the {report.selection.score}:", ""]
        lines += [
            "| decile | scores | predictions | with feedback | rate |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.decile} | {r.min_score:.3g}-{r.max_score:.3g} | {r.predictions} | "
            f"{r.with_feedback} | {r.rate:.3f} |"
            for r in deciles
        ]
    shifted = sorted(
        (r for r in report.label_shift.rows if r.shift is not None),
        key=lambda r: r.shift or 0.0,
        reverse=True,
    )[:10]
    if shifted:
        lines += ["", "Label shift (largest first):", ""]
        lines += [
            "| segment | value | reference labels | window labels | reference rate | "
            "window rate | shift | judged |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.segment} | {r.value} | {r.reference_labels} | {r.current_labels} | "
            f"{_rate(r.reference_positive_rate)} | {_rate(r.current_positive_rate)} | "
            f"{r.shift:.3f} | {'yes' if r.judged else 'too few labels'} |"
            for r in shifted
        ]
    lines += ["", f"Position effects: {report.position.reason or ''}".rstrip()]
    if report.position.rows:
        lines += [
            "",
            "| position | predictions | feedback rate | implicit labels | positive rate |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.position} | {r.predictions} | {_rate(r.feedback_rate)} | "
            f"{r.implicit_labels} | {_rate(r.implicit_positive_rate)} |"
            for r in report.position.rows
        ]
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

"""Daily feedback aggregates computed once per changed date, stored, and combined.

The same table as :func:`~ct_assets.monitoring.feedback.aggregates.feedback_aggregates`,
at a cost that follows new data. Under a folder (``CT_HOME/monitoring/feedback_aggregates``):

    predictions/date=<P>.parquet  the logged predictions of P, slimmed to id, log offset,
                                  day and segment values (from ``raw_predictions`` of P)
    feedback/date=<F>.parquet     the feedback events of F, each with the day and segment
                                  values of the prediction it refers to and the label
                                  policy's flags (from ``validated_feedback`` of F)
    days/date=<D>.parquet         the counts of day D, before rates
    state.json                    the key each file was computed from, and the prediction
                                  days each feedback date refers to

A file is rebuilt only when its key changed: a date's table source (its log fingerprint or
curation key), the segments, the label policy or the code. A feedback date is matched to the
predictions of its own date first, then, for ids not found there, of the other dates it may
refer to (``max_feedback_delay`` + 1 days back), then of all others. Day D's counts are
keyed by its own files and by the feedback dates that refer to D's predictions: late
feedback lands in its own date and refreshes the coverage of the prediction days it refers
to, nothing else. An id not found anywhere yet is kept open, and its feedback date is
matched again when a date holding that id arrives. The combination equals a full recompute
as long as a ``prediction_id`` is logged on one date only (it may be logged twice on that
date).

Every file is replaced atomically and ``state.json`` is written last, so a run killed half
way leaves keys that no longer match, and the next run computes those dates again (the
folder and its state: :mod:`.part_folder`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from ct_assets import keys
from ct_assets.data import table_files
from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.duckdb_work import file_list, quote
from ct_assets.data.tables import TableStore
from ct_assets.monitoring.feedback.aggregates import (
    FeedbackAggregates,
    _aggregate_sql,
    _dimensions,
    _feedback_projection,
    _with_rates,
    empty_aggregates,
)
from ct_assets.monitoring.feedback.part_folder import (
    LOCK_FILE,
    STATE_FILE,
    FolderState,
    PartFolder,
    copy_to_parquet,
)
from ct_assets.monitoring.feedback.policy_sql import policy_flags_sql
from ct_assets.monitoring.feedback.predictions import first_logged, prediction_projection
from ct_assets.monitoring.feedback.segments import Segments, choose_segments
from ct_assets.monitoring.feedback.sql import TableFiles, duckdb_session

if TYPE_CHECKING:
    import duckdb

INCREMENTAL_CODE_VERSION = "feedback-aggregates-per-date-v1"
#: Days counted by one query (a first run, or a change of segments, counts every day).
DAYS_PER_QUERY = 16


@dataclass(frozen=True)
class IncrementalAggregates:
    """The aggregates, and which dates this call computed again."""

    result: FeedbackAggregates
    predictions_computed: list[str]
    feedback_computed: list[str]
    days_computed: list[str]
    days: int


def _digest(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _table_source(store: TableStore, table: str, day: str) -> str:
    """The source recorded in a table file, else its size and modification time."""
    source = store.source(table, day)
    if source is not None:
        return source
    stat = store.path(table, day).stat()
    return f"file:{stat.st_size}:{stat.st_mtime_ns}"


def _window(day: str, delay_days: int) -> list[str]:
    """The dates whose predictions feedback of ``day`` may refer to (as curation reads)."""
    last = date.fromisoformat(day)
    return [(last - timedelta(days=i)).isoformat() for i in range(max(0, delay_days) + 2)]


def incremental_feedback_aggregates(
    store: TableStore,
    policy: LabelPolicy,
    folder: Path,
    segments: str = "",
    memory_limit_mb: int = 1000,
    max_feedback_delay_days: int = 30,
) -> IncrementalAggregates:
    """:func:`~ct_assets.monitoring.feedback.aggregates.feedback_aggregates`, with each
    date's part computed only when its inputs changed (kept under ``folder``)."""
    feedback = TableFiles.of(store, keys.VALIDATED_FEEDBACK)
    predictions = TableFiles.of(store, keys.RAW_PREDICTIONS)
    features = {**feedback.struct_fields("features"), **predictions.struct_fields("features")}
    chosen = choose_segments(segments, features)
    if not feedback:
        reason = f"no validated_feedback tables yet under {store.root}"
        return IncrementalAggregates(
            FeedbackAggregates(empty_aggregates(), chosen, reason), [], [], [], 0
        )
    config = _digest(
        [INCREMENTAL_CODE_VERSION, chosen.names, policy_flags_sql(policy), max_feedback_delay_days]
    )
    files = PartFolder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with table_files.locked([folder / LOCK_FILE]):
        state = FolderState.load(folder / STATE_FILE, config)
        fb_days = store.days(keys.VALIDATED_FEEDBACK)
        pr_days = store.days(keys.RAW_PREDICTIONS)
        with duckdb_session(store.root, memory_limit_mb) as con:
            run = _Run(con, store, files, state, chosen, policy, max_feedback_delay_days)
            pr_done = run.predictions(pr_days)
            fb_done = run.feedback(fb_days, pr_done)
            all_days = sorted({*fb_days, *pr_days})
            day_done = run.days(all_days)
        state.predictions = {d: s for d, s in state.predictions.items() if d in pr_days}
        state.feedback = {d: s for d, s in state.feedback.items() if d in fb_days}
        state.days = {d: s for d, s in state.days.items() if d in all_days}
        state.save(folder / STATE_FILE)
        files.prune("predictions", set(pr_days))
        files.prune("feedback", set(fb_days))
        files.prune("days", set(all_days))
        parts = [pl.read_parquet(files.path("days", d)) for d in all_days]
    counted = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
    table = _with_rates(counted) if counted.height else empty_aggregates()
    return IncrementalAggregates(
        FeedbackAggregates(table, chosen), pr_done, fb_done, day_done, len(all_days)
    )


class _Run:
    """One refresh: the steps share a DuckDB connection, the state and the configuration."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        store: TableStore,
        files: PartFolder,
        state: FolderState,
        segments: Segments,
        policy: LabelPolicy,
        delay_days: int,
    ) -> None:
        self.con, self.store, self.files, self.state = con, store, files, state
        self.segments, self.policy, self.delay_days = segments, policy, delay_days
        self.aliases = segments.aliases()

    def _table(self, table: str, day: str) -> TableFiles:
        path = self.store.path(table, day)
        return TableFiles({path: pl.read_parquet_schema(path)})

    def predictions(self, days: Sequence[str]) -> list[str]:
        """Slim the prediction dates whose table changed; returns them."""
        done = []
        for day in days:
            source = _table_source(self.store, keys.RAW_PREDICTIONS, day)
            path = self.files.path("predictions", day)
            if self.state.predictions.get(day) == source and path.exists():
                continue
            select = self._table(keys.RAW_PREDICTIONS, day).select_sql(
                prediction_projection(self.segments)
            )
            copy_to_parquet(self.con, select, path)
            self.state.predictions[day] = source
            done.append(day)
        return done

    def _reopened(self, changed_predictions: Sequence[str]) -> set[str]:
        """Feedback dates with ids that were not found and that a changed date now holds."""
        open_days = [
            d
            for d, s in self.state.feedback.items()
            if s.get("open") and self.files.path("feedback", d).exists()
        ]
        if not changed_predictions or not open_days:
            return set()
        new = file_list([self.files.path("predictions", d) for d in changed_predictions])
        olds = [self.files.path("feedback", d) for d in open_days]
        rows = self.con.execute(
            f"SELECT DISTINCT CAST(day AS VARCHAR) FROM read_parquet({file_list(olds)}) "
            "WHERE pday IS NULL AND prediction_id IN "
            f"(SELECT prediction_id FROM read_parquet({new}))"
        ).fetchall()
        return {str(r[0]) for r in rows} & set(open_days)

    def feedback(self, days: Sequence[str], changed_predictions: Sequence[str]) -> list[str]:
        """Match the feedback dates whose table changed (or whose open ids arrived) to
        their predictions; returns them."""
        reopened = self._reopened(changed_predictions)
        done = []
        for day in days:
            source = _table_source(self.store, keys.VALIDATED_FEEDBACK, day)
            recorded = self.state.feedback.get(day, {})
            path = self.files.path("feedback", day)
            if recorded.get("source") == source and path.exists() and day not in reopened:
                continue
            pdays, open_ids = self._match(day, path)
            key = _digest([source, pdays, open_ids])
            self.state.feedback[day] = {
                "source": source,
                "key": key,
                "pdays": pdays,
                "open": open_ids,
            }
            done.append(day)
        return done

    def _match(self, day: str, path: Path) -> tuple[list[str], int]:
        con = self.con
        projection = _feedback_projection(self.segments)
        con.execute("DROP TABLE IF EXISTS f")
        con.execute(
            "CREATE TEMP TABLE f AS "
            + self._table(keys.VALIDATED_FEEDBACK, day).select_sql(projection)
        )
        slims = {d: self.files.path("predictions", d) for d in self.state.predictions}
        window = [slims[d] for d in _window(day, self.delay_days) if d in slims]
        # the date itself first (most feedback answers the day's own predictions), then the
        # rest of its window, then everything else, each only for the ids still missing
        same = [slims[day]] if day in slims else []
        near = [p for p in window if p not in same]
        far = [p for d, p in sorted(slims.items()) if p not in window]
        con.execute("DROP TABLE IF EXISTS cand")
        typed = "".join(f", {a} VARCHAR" for a in self.aliases)
        con.execute(
            f"CREATE TEMP TABLE cand (day DATE, prediction_id VARCHAR, log_offset BIGINT{typed})"
        )
        columns = ", ".join(["day", "prediction_id", "log_offset", *self.aliases])
        wanted = "(SELECT prediction_id FROM f WHERE prediction_id IS NOT NULL)"
        missing = f"({wanted[1:-1]} EXCEPT SELECT prediction_id FROM cand)"
        for paths, ids in ((same, wanted), (near, missing), (far, missing)):
            if paths and con.execute(f"SELECT count(*) FROM {ids}").fetchone() != (0,):
                con.execute(
                    f"INSERT INTO cand SELECT {columns} FROM "
                    f"read_parquet({file_list(paths)}, union_by_name = true) "
                    f"WHERE prediction_id IN {ids}"
                )
        pr = first_logged("SELECT * FROM cand", ["day", *self.aliases])
        flags = ", ".join(f"{sql} AS {name}" for name, sql in policy_flags_sql(self.policy).items())
        own_or_logged = "".join(f", coalesce(f.{a}, p.{a}) AS {a}" for a in self.aliases)
        copy_to_parquet(
            con,
            "SELECT f.day, f.prediction_id, f.feedback_type, f.signal, f.source, f.status, "
            f"f.label, p.day AS pday{own_or_logged}, {flags} "
            f"FROM f LEFT JOIN ({pr}) p ON f.prediction_id = p.prediction_id",
            path,
        )
        read = f"read_parquet({quote(str(path))})"
        pdays = [
            str(r[0])
            for r in con.execute(
                f"SELECT DISTINCT CAST(pday AS VARCHAR) FROM {read} WHERE pday IS NOT NULL "
                "ORDER BY 1"
            ).fetchall()
        ]
        row = con.execute(
            f"SELECT count(*) FROM {read} WHERE pday IS NULL AND prediction_id IS NOT NULL"
        ).fetchone()
        return pdays, int(row[0]) if row else 0

    def days(self, days: Sequence[str]) -> list[str]:
        """Count the days whose inputs changed, a block of days per query; returns them."""
        linked: dict[str, list[str]] = {}
        for fday, recorded in sorted(self.state.feedback.items()):
            for pday in recorded["pdays"]:
                if pday != fday:
                    linked.setdefault(pday, []).append(fday)
        stale: dict[str, str] = {}
        for day in days:
            own = self.state.feedback.get(day, {}).get("key", "")
            others = {f: self.state.feedback[f]["key"] for f in linked.get(day, [])}
            key = _digest([self.state.predictions.get(day, ""), own, others])
            if self.state.days.get(day) != key or not self.files.path("days", day).exists():
                stale[day] = key
        changed = list(stale)
        for first in range(0, len(changed), DAYS_PER_QUERY):
            block = changed[first : first + DAYS_PER_QUERY]
            answering = sorted({f for d in block for f in linked.get(d, [])} - set(block))
            self._count(block, answering)
            self.state.days.update({d: stale[d] for d in block})
        return changed

    def _count(self, block: list[str], others: list[str]) -> None:
        """The counts of the days of ``block``: the feedback of those dates, the feedback of
        ``others`` answering their predictions, and their predictions."""
        con, aliases = self.con, self.aliases
        dates = ", ".join(f"DATE {quote(d)}" for d in block)
        parts = []
        own = [self.files.path("feedback", d) for d in block if d in self.state.feedback]
        if own:
            parts.append(f"SELECT * FROM read_parquet({file_list(own)}, union_by_name = true)")
        if others:
            paths = [self.files.path("feedback", f) for f in others]
            parts.append(
                f"SELECT * FROM read_parquet({file_list(paths)}, union_by_name = true) "
                f"WHERE pday IN ({dates})"
            )
        for table in ("fb", "prf"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        if parts:
            con.execute("CREATE TEMP TABLE fb AS " + " UNION ALL BY NAME ".join(parts))
        else:
            con.execute(
                f"CREATE TEMP TABLE fb AS SELECT * FROM "
                f"read_parquet({quote(str(self._any_feedback_file()))}) WHERE false"
            )
        slims = [self.files.path("predictions", d) for d in block if d in self.state.predictions]
        picked = ", ".join(["day", *aliases])
        if slims:
            source = first_logged(
                f"SELECT * FROM read_parquet({file_list(slims)}, union_by_name = true)",
                ["day", *aliases],
            )
        else:
            typed = "".join(f", NULL::VARCHAR AS {a}" for a in aliases)
            source = f"SELECT NULL::VARCHAR AS prediction_id, NULL::DATE AS day{typed} WHERE false"
        con.execute(
            f"CREATE TEMP TABLE prf AS SELECT prediction_id, {picked}, prediction_id IN "
            f"(SELECT prediction_id FROM fb WHERE pday IS NOT NULL) AS has_feedback "
            f"FROM ({source})"
        )
        counted = con.sql(
            f"SELECT * FROM ({_aggregate_sql(_dimensions(self.segments))}) WHERE day IN ({dates})"
        ).pl()
        by_day = counted.with_columns(pl.col("day").cast(pl.String).alias("_date"))
        for day in block:
            rows = by_day.filter(pl.col("_date") == day).drop("_date")
            table_files.write_parquet(self.files.path("days", day), rows)

    def _any_feedback_file(self) -> Path:
        return self.files.path("feedback", next(iter(sorted(self.state.feedback))))

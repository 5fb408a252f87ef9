"""``ct-assets backtest``: replay a labeled stream through the real pipeline.

The stream (a CSV with numeric and categorical columns and a target) is replayed in
batches on a temporary ``CT_HOME`` with the code location's own definitions:

1. the first ``warmup_rows`` rows are ingested as labeled feedback carrying their
   features, and the ``retrain`` job trains the first champion (it is also the
   never-retrained model the report compares with);
2. each batch is scored by the champion of that moment and logged as prediction
   events (what the API's ``/v1/predict`` would log); the prequential accuracy counts
   those predictions against the batch's labels;
3. the labels arrive as explicit feedback attributed to those predictions;
4. every retrain sensor of the code location is evaluated in-process, with its own
   cursor, as the daemon would; each run request executes the ``retrain`` job with the
   request's tags (dataset, candidate, gate, champion), so promotions and rejections
   are the gate's.

Times come from ``time_col`` when given (rebased so the last row is a minute ago),
else one row per ``row_interval_seconds`` ending a minute ago: the event log refuses
future timestamps, and the daily partitions need dates. The report (``report.json``)
and ``accuracy.png`` (rolling prequential accuracy, retrains and promotions marked)
are written to ``out``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ct_assets import keys
from ct_assets.settings import Settings, names_set_in

if TYPE_CHECKING:
    import dagster as dg

    from ct_assets.training.model import TrainedModel

#: Backtest defaults where the environment sets nothing: retrain on a recent window of
#: 3,000 rows (the replay's time is compressed) once a quarter of it is new, every 750
#: labeled events. On river's drifting streams every 1,000 events left the sensors 0.2
#: points below a fixed retrain every 500 rows on SEA; every 500 retrained more often
#: than that fixed schedule on Agrawal, Sine and Mixed (README, bench_drift_policies).
BACKTEST_DEFAULTS: dict[str, Any] = {
    "volume_threshold": 750,
    "training_window": 3000,
    "window_mode": "all",
    "num_boost_round": 100,
    "gate_bootstrap_resamples": 200,
    "checkpoint_every": 0,
    # the gate's PNGs are for people reading one report; a replay's decisions never use
    # them (its own accuracy.png is drawn regardless)
    "report_plots": False,
}
ROLLING_ROWS = 500


class BacktestError(ValueError):
    """The stream cannot be replayed (missing columns, too few rows, one class ...)."""


@dataclass(frozen=True)
class BacktestSpec:
    data: Path
    target: str
    out: Path
    time_col: str | None = None
    batch_rows: int = 48
    warmup_rows: int = 2000
    row_interval_seconds: int = 60
    #: A fixed-period policy instead of the sensors: a full retrain every N scored rows
    #: (the baseline the sensors are compared with); None: the code location's sensors.
    retrain_every: int | None = None


@dataclass
class Stream:
    """The replayed rows: features (columns), ``label`` (string), ``timestamp`` (UTC)."""

    frame: pl.DataFrame
    features: list[str]

    @property
    def rows(self) -> int:
        return self.frame.height


def load_stream(spec: BacktestSpec, now: datetime | None = None) -> Stream:
    """Read the CSV; every column but the target (and the time column) is a feature."""
    if not spec.data.exists():
        raise BacktestError(f"{spec.data} does not exist")
    frame = pl.read_csv(spec.data, infer_schema_length=10_000, try_parse_dates=False)
    if spec.target not in frame.columns:
        raise BacktestError(f"target column {spec.target!r} is not in {frame.columns}")
    if spec.time_col is not None and spec.time_col not in frame.columns:
        raise BacktestError(f"time column {spec.time_col!r} is not in {frame.columns}")
    frame = frame.filter(pl.col(spec.target).is_not_null())
    if frame.height <= spec.warmup_rows + spec.batch_rows:
        raise BacktestError(
            f"{frame.height} labeled rows: need more than warm-up ({spec.warmup_rows}) "
            f"plus one batch ({spec.batch_rows})"
        )
    labels = frame[spec.target].cast(pl.String)
    if labels.n_unique() < 2:
        raise BacktestError(f"target {spec.target!r} has a single value: nothing to learn")
    features = [c for c in frame.columns if c not in (spec.target, spec.time_col)]
    if not features:
        raise BacktestError("no feature columns besides the target")
    unusable = [
        c for c in features if not (frame.schema[c].is_numeric() or frame.schema[c] == pl.String)
    ]
    if unusable:
        raise BacktestError(f"columns {unusable} are neither numeric nor categorical")
    end = (now or datetime.now(UTC)) - timedelta(minutes=1)
    if spec.time_col is not None:
        times = frame[spec.time_col].cast(pl.String).str.to_datetime(time_zone="UTC", strict=False)
        if times.null_count():
            raise BacktestError(f"time column {spec.time_col!r} has unparseable values")
        shift = end - times.max()  # type: ignore[operator]
        timestamps = times + shift
        order = timestamps.arg_sort()
    else:
        offsets = np.arange(frame.height - 1, -1, -1) * spec.row_interval_seconds
        timestamps = pl.Series(
            [end - timedelta(seconds=int(s)) for s in offsets], dtype=pl.Datetime("us", "UTC")
        )
        order = pl.Series(np.arange(frame.height))
    cast = [
        pl.col(c).cast(pl.Float64) if frame.schema[c].is_numeric() else pl.col(c) for c in features
    ]
    table = (
        frame.select(*cast)
        .with_columns(label=labels, timestamp=timestamps)
        .with_row_index("row")
        .select(pl.all().gather(order))
    )
    return Stream(table, features)


def _features(row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = row[name]
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[name] = value
    return out


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@dataclass
class Outcome:
    """What the replay measured."""

    rows_scored: int = 0
    correct: int = 0
    static_correct: int = 0
    retrains: int = 0
    promotions: int = 0
    rejections: int = 0
    failures: int = 0
    triggers: Counter[str] = field(default_factory=Counter)
    hits: list[int] = field(default_factory=list)
    static_hits: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


class Replay:
    """The pipeline on a temporary CT_HOME, driven batch by batch."""

    def __init__(self, settings: Settings, stream: Stream, instance: dg.DagsterInstance) -> None:
        import dagster as dg

        from ct_assets.defs import build_definitions
        from ct_assets.eventlog import EventLog
        from ct_assets.registry import Registry

        self.settings = settings
        self.stream = stream
        self.instance = instance
        self.defs = build_definitions(settings)
        self.job = self.defs.resolve_job_def(keys.RETRAIN_JOB)
        self.log = EventLog.from_settings(settings)
        self.registry = Registry.from_settings(settings)
        self.sensors = [
            s
            for s in self.defs.sensors or []
            if isinstance(s, dg.SensorDefinition)
            and s.has_jobs
            and any(j.name == keys.RETRAIN_JOB for j in s.jobs)
        ]
        self.cursors: dict[str, str | None] = {s.name: None for s in self.sensors}
        self._resources = ExitStack()
        self.sensor_resources = self._sensor_resources(instance)
        self.models: dict[str, TrainedModel] = {}
        self.static: TrainedModel | None = None
        self.outcome = Outcome()
        self.last_batch = 0
        self.champion_version: str | None = None

    def _sensor_resources(self, instance: dg.DagsterInstance) -> dict[str, dict[str, Any]]:
        """Per sensor, the resources it requires, initialized once for the whole replay (as
        resources without state they are the same objects at every tick); each tick then
        only hands them over instead of validating and initializing every resource again."""
        import dagster as dg

        wanted = sorted({key for s in self.sensors for key in s.required_resource_keys})
        defined = self.defs.resources or {}
        built = self._resources.enter_context(
            dg.build_resources({key: defined[key] for key in wanted}, instance=instance)
        )
        ready = {
            key: dg.ResourceDefinition.hardcoded_resource(getattr(built, key)) for key in wanted
        }
        return {s.name: {key: ready[key] for key in s.required_resource_keys} for s in self.sensors}

    def close(self) -> None:
        self._resources.close()

    def ingest(self, events: list[dict[str, Any]]) -> None:
        from ct_assets.schema import convert_record, validate_events

        valid = validate_events([convert_record(e, i) for i, e in enumerate(events)])
        self.log.append(valid)

    def champion(self) -> tuple[str, TrainedModel]:
        """The champion of the moment: only a retrain of the replay can change it, so the
        registry is asked after each retrain, not for every batch."""
        if self.champion_version is None:
            raise BacktestError("no champion: the warm-up retrain did not promote a model")
        version = self.champion_version
        if version not in self.models:
            self.models[version] = self.registry.load_model(version)
        return version, self.models[version]

    def warm_up(self, rows: pl.DataFrame) -> None:
        names = self.stream.features
        self.ingest(
            [
                {
                    "kind": "feedback",
                    "event_id": f"bt-warm-{r['row']}",
                    "timestamp": _iso(r["timestamp"]),
                    "feedback_type": "explicit",
                    "label": r["label"],
                    "features": _features(r, names),
                    "source": "backtest",
                }
                for r in rows.iter_rows(named=True)
            ]
        )
        self.retrain({keys.RUN_TAG_TRIGGER: "manual", keys.RUN_TAG_MODE: "full"}, at_row=0)
        _, self.static = self.champion()

    def score(self, batch: pl.DataFrame) -> None:
        """Predict with the champion, log the predictions, count hits, send the labels."""
        version, model = self.champion()
        assert self.static is not None
        proba = model.predict_proba(batch)
        classes = model.spec.classes
        predicted = [classes[i] for i in proba.argmax(axis=1)]
        static_proba = self.static.predict_proba(batch)
        static = [self.static.spec.classes[i] for i in static_proba.argmax(axis=1)]
        names = self.stream.features
        predictions, feedback = [], []
        for r, p, label in zip(batch.iter_rows(named=True), proba, predicted, strict=True):
            pid = f"bt-{r['row']}"
            predictions.append(
                {
                    "kind": "prediction",
                    "event_id": f"bt-pe-{r['row']}",
                    "prediction_id": pid,
                    "timestamp": _iso(r["timestamp"]),
                    "model_name": self.settings.model_name,
                    "model_version": version,
                    "arm": "champion",
                    "features": _features(r, names),
                    "prediction": label,
                    # unrounded, as the API logs them: the drift check compares their
                    # distribution with unrounded reference scores
                    "scores": {c: float(v) for c, v in zip(classes, p, strict=True)},
                }
            )
            feedback.append(
                {
                    "kind": "feedback",
                    "event_id": f"bt-fb-{r['row']}",
                    "timestamp": _iso(r["timestamp"] + timedelta(seconds=1)),
                    "feedback_type": "explicit",
                    "prediction_id": pid,
                    "label": r["label"],
                    "source": "backtest",
                }
            )
        truth = batch["label"].to_list()
        hits = [int(a == b) for a, b in zip(predicted, truth, strict=True)]
        static_hits = [int(a == b) for a, b in zip(static, truth, strict=True)]
        self.outcome.hits += hits
        self.outcome.static_hits += static_hits
        self.outcome.rows_scored += len(hits)
        self.outcome.correct += sum(hits)
        self.outcome.static_correct += sum(static_hits)
        # one durable commit per batch: its predictions and then the labels attributed to
        # them (a commit is atomic, so the feedback never reaches the log without them)
        self.ingest(predictions + feedback)

    def periodic(self, at_row: int, every: int, first: int) -> None:
        """The fixed-period policy: a full retrain each time ``every`` more rows were scored."""
        if (at_row - first) // every > (at_row - first - self.last_batch) // every:
            self.outcome.triggers["schedule"] += 1
            reason = f"fixed period: every {every} scored rows"
            tags = {
                keys.RUN_TAG_TRIGGER: "schedule",
                keys.RUN_TAG_MODE: "full",
                keys.RUN_TAG_REASON: reason,
            }
            self.retrain(tags, at_row)

    def tick(self, at_row: int) -> None:
        """Evaluate every retrain sensor once; run what they request."""
        import dagster as dg

        for sensor in self.sensors:
            with dg.build_sensor_context(
                instance=self.instance,
                resources=self.sensor_resources[sensor.name],
                cursor=self.cursors[sensor.name],
            ) as context:
                data = sensor.evaluate_tick(context)
            if data.cursor is not None:
                self.cursors[sensor.name] = data.cursor
            for request in data.run_requests or []:
                tags = dict(request.tags)
                self.outcome.triggers[tags.get(keys.RUN_TAG_TRIGGER, "unknown")] += 1
                self.retrain(tags, at_row)

    def retrain(self, tags: dict[str, str], at_row: int) -> None:
        from ct_assets.registry import CHAMPION

        before = self.registry.alias(CHAMPION)
        result = self.job.execute_in_process(
            instance=self.instance,
            tags=tags,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
        after = self.registry.alias(CHAMPION)
        self.champion_version = after.version if after else None
        promoted = after is not None and (before is None or after.version != before.version)
        decision = "promote" if promoted else "reject"
        if not result.success and not _gate_failed(result):
            decision = "failed"
        if at_row > 0:
            self.outcome.retrains += 1
            self.outcome.promotions += int(decision == "promote")
            self.outcome.rejections += int(decision == "reject")
            self.outcome.failures += int(decision == "failed")
        self.outcome.events.append(
            {
                "row": at_row,
                "trigger": tags.get(keys.RUN_TAG_TRIGGER, "manual"),
                "mode": tags.get(keys.RUN_TAG_MODE, "full"),
                "reason": tags.get(keys.RUN_TAG_REASON, ""),
                "decision": decision,
                "champion": after.version if after else None,
                "gate_failed": _gate_failures(result),
            }
        )


def _gate_failed(result: Any) -> bool:
    return any(
        e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
        for e in result.all_events
    )


def _gate_failures(result: Any) -> list[str]:
    """The gate's failed criteria in a retrain run (empty when it promoted)."""
    for e in result.all_events:
        if e.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        data = e.asset_check_evaluation_data
        if data.check_name == keys.GATE_CHECK and not data.passed:
            failed = data.metadata.get("failed")
            text = str(getattr(failed, "value", failed) or "")
            return [line.removeprefix("- ") for line in text.splitlines() if line.strip()]
    return []


def backtest_settings(base: Settings, home: Path, environ: dict[str, str]) -> Settings:
    """``base`` on ``home``, with the backtest defaults where the environment sets nothing."""
    set_by_environment = names_set_in(environ)
    overrides = {
        name: value for name, value in BACKTEST_DEFAULTS.items() if name not in set_by_environment
    }
    return replace(base, **overrides).with_home(home)


def batches(stream: Stream, spec: BacktestSpec) -> Iterator[tuple[int, pl.DataFrame]]:
    for start in range(spec.warmup_rows, stream.rows, spec.batch_rows):
        yield start, stream.frame.slice(start, spec.batch_rows)


def run_backtest(
    spec: BacktestSpec,
    base: Settings,
    environ: dict[str, str],
    progress: Callable[[int], None] | None = None,
    home: Path | None = None,
) -> dict[str, Any]:
    """Replay the stream; write ``report.json`` and ``accuracy.png`` to ``spec.out``.
    ``home``: keep the replay's CT_HOME (event log, datasets, registry) there instead of
    in a temporary folder, for inspection."""
    import dagster as dg

    started = time.perf_counter()
    stream = load_stream(spec)
    spec.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ct-backtest-") as tmp:
        settings = backtest_settings(base, home or Path(tmp) / "ct", environ)
        dagster_home = Path(tmp) / "dagster"
        dagster_home.mkdir()
        quiet = {"telemetry": {"enabled": False}}
        # the replay's Dagster instance lives as long as the replay: runs and events in
        # memory (Dagster's in-memory SQLite storages), not fsynced to files thrown away
        with dg.DagsterInstance.ephemeral(tempdir=str(dagster_home), settings=quiet) as instance:
            replay = Replay(settings, stream, instance)
            try:
                replay.warm_up(stream.frame.head(spec.warmup_rows))
                for start, batch in batches(stream, spec):
                    replay.score(batch)
                    replay.last_batch = batch.height
                    if spec.retrain_every is None:
                        replay.tick(at_row=start + batch.height)
                    else:
                        replay.periodic(start + batch.height, spec.retrain_every, spec.warmup_rows)
                    if progress is not None:
                        progress(batch.height)
            finally:
                replay.close()
    outcome = replay.outcome
    report = build_report(outcome, stream, spec, settings, time.perf_counter() - started)
    (spec.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (spec.out / "accuracy.png").write_bytes(accuracy_png(outcome, spec))
    return report


def build_report(
    outcome: Outcome, stream: Stream, spec: BacktestSpec, settings: Settings, seconds: float
) -> dict[str, Any]:
    scored = max(1, outcome.rows_scored)
    return {
        "rows": stream.rows,
        "rows_scored": outcome.rows_scored,
        "warmup_rows": spec.warmup_rows,
        "batch_rows": spec.batch_rows,
        "accuracy": outcome.correct / scored,
        "static_accuracy": outcome.static_correct / scored,
        "retrains": outcome.retrains,
        "promotions": outcome.promotions,
        "rejections": outcome.rejections,
        "failed_runs": outcome.failures,
        "triggers": dict(outcome.triggers),
        "wall_seconds": seconds,
        "features": stream.features,
        "settings": {
            "volume_threshold": settings.volume_threshold,
            "volume_mode": settings.volume_mode,
            "training_window": settings.training_window,
            "window_mode": settings.window_mode,
        },
        "policy": "sensors" if spec.retrain_every is None else f"every {spec.retrain_every} rows",
        "timeline": outcome.events,
    }


def rolling(hits: list[int], window: int = ROLLING_ROWS) -> np.ndarray:  # type: ignore[type-arg]
    values = np.asarray(hits, dtype=float)
    if values.size == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, values.size + 1), window)
    starts = np.maximum(0, np.arange(1, values.size + 1) - window)
    result: np.ndarray = (sums[1:] - sums[starts]) / counts  # type: ignore[type-arg]
    return result


def accuracy_png(outcome: Outcome, spec: BacktestSpec) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    x = spec.warmup_rows + np.arange(len(outcome.hits))
    figure, axes = plt.subplots(figsize=(9, 4), dpi=90)
    axes.plot(x, rolling(outcome.hits), label="continuous training", color="tab:blue")
    axes.plot(x, rolling(outcome.static_hits), label="never retrained", color="tab:gray")
    labeled: set[bool] = set()
    for event in outcome.events:
        if event["row"] <= 0:
            continue
        promoted = event["decision"] == "promote"
        axes.axvline(
            event["row"],
            color="tab:green" if promoted else "tab:red",
            linestyle="-" if promoted else ":",
            linewidth=0.8,
            label=None
            if promoted in labeled
            else ("retrain, promoted" if promoted else "retrain, not promoted"),
        )
        labeled.add(promoted)
    axes.set_xlabel("row")
    axes.set_ylabel(f"accuracy (rolling {ROLLING_ROWS} rows)")
    axes.set_ylim(0, 1)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def summary_table(report: dict[str, Any]) -> str:
    rows = [
        ("rows scored", f"{report['rows_scored']:,}"),
        ("accuracy (continuous training)", f"{report['accuracy']:.4f}"),
        ("accuracy (never retrained)", f"{report['static_accuracy']:.4f}"),
        ("retrains", str(report["retrains"])),
        ("promotions", str(report["promotions"])),
        ("rejections", str(report["rejections"])),
        ("triggers", ", ".join(f"{k}={v}" for k, v in sorted(report["triggers"].items())) or "-"),
        ("wall time", f"{report['wall_seconds']:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)

"""The pipeline on a temporary CT_HOME, driven batch by batch: the warm-up champion,
prequential scoring logged as predictions and attributed feedback, the retrain sensors
evaluated in-process, the ``retrain`` job run for each request and its gate decision."""

from __future__ import annotations

import math
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl

from ct_assets import keys
from ct_assets.backtest.stream import BacktestError, Stream
from ct_assets.settings import Settings

if TYPE_CHECKING:
    import dagster as dg

    from ct_assets.training.model import TrainedModel


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
            last = self.outcome.events[-1] if self.outcome.events else {}
            why = "; ".join(last.get("gate_failed") or []) or (
                "its run failed" if last.get("decision") == "failed" else "no decision recorded"
            )
            raise BacktestError(
                f"no champion: the warm-up retrain did not promote a model ({why}); "
                "a longer warm-up (--warmup-rows) or a stream whose concept holds over it helps"
            )
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

"""The retrain triggers wired into Dagster: the volume, drift and performance sensors and
the retrain schedule. Each sensor reads its evidence and decides with
:mod:`ct_assets.triggers`, explains every tick, and requests at most one retrain per piece
of evidence; the drift and performance sensors chart their figures on the
``drift_monitor`` and ``performance_monitor`` assets."""

import json
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ct_assets import keys
from ct_assets.data.dataset_objects import dataset_file
from ct_assets.defs.automation import running_sensor, utc_schedule
from ct_assets.defs.dataset_store import DatasetStoreResource
from ct_assets.defs.metadata import latest_metadata
from ct_assets.defs.resources import (
    CurationResource,
    EventLogResource,
    RegistryResource,
)
from ct_assets.defs.retrain_requests import Monitor, Tick, retrain_in_flight, retrain_request
from ct_assets.settings import Settings
from ct_assets.triggers.evidence import LabeledCounter, champion_examples, champion_predictions
from ct_assets.triggers.volume import volume_decision

DRIFT_MONITOR_SPEC = dg.AssetSpec(
    keys.DRIFT_MONITOR,
    group_name=keys.MONITORING,
    kinds={"alibi-detect"},
    description=(
        "Each evaluation of drift_sensor: the smallest feature p-value, how many features "
        "drifted, the champion-score KS p-value and the window, charted over time. The "
        "reference is the champion's training data, built once per champion version."
    ),
)
PERFORMANCE_MONITOR_SPEC = dg.AssetSpec(
    keys.PERFORMANCE_MONITOR,
    group_name=keys.MONITORING,
    kinds={"lightgbm"},
    description=(
        "Each evaluation of performance_sensor: the champion's accuracy on the latest "
        "labeled feedback attributed to its predictions, its baseline (holdout accuracy at "
        "promotion) and the one-sided binomial p-value, charted over time."
    ),
)


def build_volume_sensor(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    threshold = settings.volume_threshold
    mode = settings.volume_mode
    counter = LabeledCounter()

    @running_sensor(
        settings,
        keys.VOLUME_SENSOR,
        job,
        (
            f"Retrains ({mode}) when {threshold} labeled feedback events arrived since the "
            "champion's dataset cutoff. Waits while a retrain is in flight."
        ),
    )
    def volume_sensor(
        context: dg.SensorEvaluationContext,
        event_log: EventLogResource,
        curation: CurationResource,
    ) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        last_requested = int(cursor.get("requested_upto", 0))
        champion = latest_metadata(context.instance, keys.CHAMPION_MODEL) or {}
        cutoff = int(champion.get(keys.META_LOG_POSITION, 0))
        log = event_log.log()
        position = log.counts().feedback
        baseline = max(cutoff, last_requested)
        labeled = counter.count(log, baseline, position, curation.policy())
        decision = volume_decision(position, cutoff, last_requested, threshold, labeled)
        if not decision.fire:
            return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason))
        running = retrain_in_flight(context.instance)
        if running is not None:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{decision.reason}, but retrain run {running} is in flight"
                )
            )
        return dg.SensorResult(
            run_requests=[retrain_request("volume", decision.reason, mode, str(position))],
            cursor=json.dumps({"requested_upto": position}),
        )

    return volume_sensor


def build_drift_sensor(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    from ct_assets.triggers.drift import DriftConfig

    config = DriftConfig(
        p_val=settings.drift_p_value,
        min_distance=settings.drift_min_distance,
        max_window=settings.drift_window,
        min_window=settings.drift_min_window,
        detector=settings.drift_detector,  # type: ignore[arg-type]
    )
    mode = settings.drift_mode
    monitor = Monitor(
        "drift",
        "drift",
        mode,
        settings.drift_cooldown_predictions,
        "predictions",
        keys.DRIFT_MONITOR,
    )
    drift_root = settings.drift_dir

    @running_sensor(
        settings,
        keys.DRIFT_SENSOR,
        job,
        (
            f"Retrains ({mode}) when the features of the champion's latest "
            f"{config.max_window} logged predictions (or its scores) drifted from its "
            f"training data: alibi-detect {config.detector} with {config.correction} "
            f"correction at p {config.p_val}, KS on scores; a change counts only when its "
            f"distance is at least {config.min_distance}. Evaluates once {config.min_window} "
            "new predictions were logged; fires once per champion until "
            f"{monitor.cooldown} more predictions passed; waits while a retrain is in flight."
        ),
    )
    def drift_sensor(
        context: dg.SensorEvaluationContext,
        event_log: EventLogResource,
        registry: RegistryResource,
        dataset_store: DatasetStoreResource,
    ) -> dg.SensorResult:
        from ct_assets.triggers.drift import (
            build_reference,
            check_drift,
            get_or_build,
            prediction_scores,
        )

        tick = Tick.read(context, monitor)
        version = tick.version
        if not version:
            return dg.SensorResult(skip_reason=dg.SkipReason("no champion yet"))
        log = event_log.log()
        position = log.counts().prediction
        since = "predictions logged since the last drift check"
        if (skip := tick.too_soon(position, config.min_window, since)) is not None:
            return skip
        dataset_version = str(tick.champion.get(keys.META_DATASET_VERSION, ""))

        objects = dataset_store.objects()

        def build() -> Any:
            reg = registry.registry()
            dataset = pl.read_parquet(
                dataset_file(objects, dataset_store.datasets, dataset_version)
            )
            # the model that did not fit the holdout: its scores there are out of sample
            return build_reference(version, dataset, reg.load_validated_model(version))

        reference = get_or_build(drift_root, version, build, objects)
        recent = champion_predictions(log, version, config.max_window)
        scores = prediction_scores(recent, reference.classes) if recent.height else None
        decision = check_drift(reference, recent, scores, config)
        p_values = list(decision.feature_p_values.values())
        figures = {
            "fire": decision.fire,
            "min_feature_p_value": float(min(p_values)) if p_values else 1.0,
            "drifted_features": len(decision.drifted_features),
            "score_p_value": float(decision.score_p_value)
            if decision.score_p_value is not None
            else 1.0,
            "window_rows": decision.window_rows,
        }
        return tick.outcome(
            position,
            fire=decision.fire,
            reason=decision.reason(),
            figures=figures,
            details=decision.to_dict(),
        )

    return drift_sensor


def build_performance_sensor(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    from ct_assets.triggers.change import ChangeConfig
    from ct_assets.triggers.performance import PerformanceConfig

    config = PerformanceConfig(
        min_samples=settings.performance_min_samples,
        window=settings.performance_window,
        tolerance=settings.performance_tolerance,
        alpha=settings.performance_alpha,
    )
    change_config = ChangeConfig(delta=settings.change_delta, max_window=settings.change_window)
    mode = settings.performance_mode
    window = config.window or 1000
    monitor = Monitor(
        "performance", "decay", mode, window, "feedback events", keys.PERFORMANCE_MONITOR
    )
    models: dict[str, Any] = {}

    @running_sensor(
        settings,
        keys.PERFORMANCE_SENSOR,
        job,
        (
            f"Retrains ({mode}) when the champion's accuracy on the last {config.window} "
            "labeled feedback events attributed to its predictions is below its baseline "
            f"(holdout accuracy at promotion) minus {config.tolerance}, by an exact one-sided "
            f"binomial test at alpha {config.alpha} with at least {config.min_samples} events; "
            f"or when its error rate rose over its last {change_config.max_window} outcomes "
            f"(ADWIN's cut test at delta {change_config.delta:g}): then the retrain's dataset "
            "starts at the change point (run tag ct/window_start)."
        ),
    )
    def performance_sensor(
        context: dg.SensorEvaluationContext,
        event_log: EventLogResource,
        registry: RegistryResource,
    ) -> dg.SensorResult:
        from ct_assets.triggers.decay import decide_decay
        from ct_assets.triggers.performance import outcome_stream

        tick = Tick.read(context, monitor)
        version = tick.version
        baseline = tick.champion.get(keys.META_BASELINE_ACCURACY)
        if not version or baseline is None:
            return dg.SensorResult(
                skip_reason=dg.SkipReason("no champion with a baseline accuracy yet")
            )
        log = event_log.log()
        position = log.counts().feedback
        step = max(1, config.min_samples // 2)
        since = "feedback events since the last check"
        if (skip := tick.too_soon(position, step, since)) is not None:
            return skip
        examples = champion_examples(log, version, max(2 * window, change_config.max_window))
        if version not in models:
            models.clear()
            models[version] = registry.registry().load_model(version)
        model = models[version]
        outcomes = outcome_stream(examples, model, last=max(window, change_config.max_window))
        decay = decide_decay(outcomes, float(baseline), config, change_config, model.spec.classes)
        decision, change = decay.performance, decay.change
        figures = {
            "fire": decision.fire,
            "accuracy": float(decision.metric) if decision.n else float("nan"),
            "baseline": float(baseline),
            "p_value": float(decision.p_value),
            "labeled_events": decision.n,
            "change_found": change.found,
            "change_rows_since": change.rows_since,
        }
        tags = {keys.RUN_TAG_WINDOW_START: decay.window_start} if decay.window_start else {}
        return tick.outcome(
            position,
            fire=decay.fire,
            reason=decay.reason,
            figures=figures,
            details=decay.to_dict(),
            tags=tags,
        )

    return performance_sensor


def build_retrain_schedule(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    cron = settings.retrain_cron
    return utc_schedule(
        keys.RETRAIN_SCHEDULE,
        job,
        cron,
        running=settings.retrain_schedule_on,
        tags={
            keys.RUN_TAG_TRIGGER: "schedule",
            keys.RUN_TAG_MODE: "full",
            keys.RUN_TAG_REASON: f"scheduled full retrain (cron '{cron}' UTC)",
            keys.RUN_TAG_JOB: keys.RETRAIN_JOB,
        },
        description=(
            f"A full retrain on cron '{cron}' (UTC), whatever the other triggers say; "
            "stopped unless CT_RETRAIN_SCHEDULE_ON=1 or turned on in the UI."
        ),
    )

"""The drift and performance triggers: sensors that read the inference log and feedback,
decide with :mod:`ct_assets.monitoring`, explain every tick, and chart their figures on
the ``drift_monitor`` and ``performance_monitor`` assets."""

import json
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ct_assets import keys
from ct_assets.defs.lineage import latest_metadata
from ct_assets.defs.resources import DatasetStoreResource, EventLogResource, RegistryResource
from ct_assets.defs.sensors import newest_dates, retrain_in_flight, retrain_request
from ct_assets.settings import Settings

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


def _outcome(
    context: dg.SensorEvaluationContext,
    cursor: dict[str, Any],
    *,
    trigger: str,
    word: str,
    fire: bool,
    reason: str,
    mode: str,
    version: str,
    position: int,
    cooldown: int,
    unit: str,
    event: dg.AssetMaterialization,
    tags: dict[str, str] | None = None,
) -> dg.SensorResult:
    """What a monitoring sensor does with a decision about champion ``version`` at log
    ``position``: skip with the reason; skip while a request for the same champion is
    younger than ``cooldown`` (no retrain storm); keep the evidence (cursor unchanged)
    while a retrain is in flight; or request a retrain. Every evaluation is recorded."""
    state = {**cursor, "champion": version, "checked_at": position}

    def skip(message: str, kept: str | None = json.dumps(state)) -> dg.SensorResult:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(message), cursor=kept, asset_events=[event]
        )

    if not fire:
        return skip(f"no {word}: {reason}")
    since = position - int(cursor.get("fired_at", 0))
    if cursor.get("fired_for") == version and since < cooldown:
        return skip(
            f"{word} persists ({reason}); a retrain was already requested for champion "
            f"v{version} {since} {unit} ago (cooldown {cooldown})"
        )
    if retrain_in_flight(context.instance) is not None:
        # evaluate again once it is done
        return skip(f"{word} ({reason}), but a retrain is in flight", context.cursor)
    state.update(fired_for=version, fired_at=position)
    request = retrain_request(trigger, reason, mode, f"v{version}-{position}", tags)
    return dg.SensorResult(run_requests=[request], cursor=json.dumps(state), asset_events=[event])


def build_drift_sensor(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    from ct_assets.monitoring.drift import DriftConfig

    config = DriftConfig(
        p_val=settings.drift_p_value,
        min_distance=settings.drift_min_distance,
        max_window=settings.drift_window,
        min_window=settings.drift_min_window,
        detector=settings.drift_detector,  # type: ignore[arg-type]
    )
    cooldown = settings.drift_cooldown_predictions
    mode = settings.drift_mode
    drift_root = settings.drift_dir

    @dg.sensor(
        name=keys.DRIFT_SENSOR,
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Retrains ({mode}) when the features of the champion's latest "
            f"{config.max_window} logged predictions (or its scores) drifted from its "
            f"training data: alibi-detect {config.detector} with {config.correction} "
            f"correction at p {config.p_val}, KS on scores; a change counts only when its "
            f"distance is at least {config.min_distance}. Evaluates once {config.min_window} "
            "new predictions were logged; fires once per champion until "
            f"{cooldown} more predictions passed; waits while a retrain is in flight."
        ),
    )
    def drift_sensor(
        context: dg.SensorEvaluationContext,
        event_log: EventLogResource,
        registry: RegistryResource,
        dataset_store: DatasetStoreResource,
    ) -> dg.SensorResult:
        from ct_assets.monitoring.drift import (
            build_reference,
            check_drift,
            get_or_build,
            prediction_scores,
        )

        cursor = json.loads(context.cursor) if context.cursor else {}
        champion = latest_metadata(context.instance, keys.CHAMPION_MODEL) or {}
        version = str(champion.get(keys.META_MODEL_VERSION, ""))
        if not version:
            return dg.SensorResult(skip_reason=dg.SkipReason("no champion yet"))
        log = event_log.log()
        position = log.counts().prediction
        checked = int(cursor.get("checked_at", 0)) if cursor.get("champion") == version else 0
        if position - checked < config.min_window:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{position - checked} predictions logged since the last drift check of "
                    f"champion v{version} < {config.min_window}"
                )
            )
        dataset_version = str(champion.get(keys.META_DATASET_VERSION, ""))

        def build() -> Any:
            reg = registry.registry()
            dataset = pl.read_parquet(dataset_store.datasets / f"{dataset_version}.parquet")
            # the model that did not fit the holdout: its scores there are out of sample
            return build_reference(version, dataset, reg.load_validated_model(version))

        reference = get_or_build(drift_root, version, build)
        recent = log.read("prediction", dates=newest_dates(log, 4 * config.max_window))
        if "model_version" in recent.columns:
            recent = recent.filter(pl.col("model_version") == version)
        recent = recent.tail(config.max_window)
        scores = prediction_scores(recent, reference.classes) if recent.height else None
        decision = check_drift(reference, recent, scores, config)
        reason = decision.reason()
        p_values = list(decision.feature_p_values.values())
        event = dg.AssetMaterialization(
            asset_key=keys.DRIFT_MONITOR,
            metadata={
                "champion_version": version,
                "fire": decision.fire,
                "min_feature_p_value": float(min(p_values)) if p_values else 1.0,
                "drifted_features": len(decision.drifted_features),
                "score_p_value": float(decision.score_p_value)
                if decision.score_p_value is not None
                else 1.0,
                "window_rows": decision.window_rows,
                "reason": reason,
                "details": dg.MetadataValue.json(decision.to_dict()),
            },
        )
        return _outcome(
            context,
            cursor,
            trigger="drift",
            word="drift",
            fire=decision.fire,
            reason=reason,
            mode=mode,
            version=version,
            position=position,
            cooldown=cooldown,
            unit="predictions",
            event=event,
        )

    return drift_sensor


def build_performance_sensor(
    settings: Settings, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    from ct_assets.monitoring.change import ChangeConfig
    from ct_assets.monitoring.performance import PerformanceConfig

    config = PerformanceConfig(
        min_samples=settings.performance_min_samples,
        window=settings.performance_window,
        tolerance=settings.performance_tolerance,
        alpha=settings.performance_alpha,
    )
    change_config = ChangeConfig(delta=settings.change_delta, max_window=settings.change_window)
    mode = settings.performance_mode
    models: dict[str, Any] = {}

    @dg.sensor(
        name=keys.PERFORMANCE_SENSOR,
        job=job,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
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
        from ct_assets.data.attribution import attribute_feedback
        from ct_assets.monitoring.change import detect_change
        from ct_assets.monitoring.performance import check_performance, outcome_stream

        cursor = json.loads(context.cursor) if context.cursor else {}
        champion = latest_metadata(context.instance, keys.CHAMPION_MODEL) or {}
        version = str(champion.get(keys.META_MODEL_VERSION, ""))
        baseline = champion.get(keys.META_BASELINE_ACCURACY)
        if not version or baseline is None:
            return dg.SensorResult(
                skip_reason=dg.SkipReason("no champion with a baseline accuracy yet")
            )
        log = event_log.log()
        position = log.counts().feedback
        checked = int(cursor.get("checked_at", 0)) if cursor.get("champion") == version else 0
        step = max(1, config.min_samples // 2)
        if position - checked < step:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{position - checked} feedback events since the last check of champion "
                    f"v{version} < {step}"
                )
            )
        window = config.window or 1000
        dates = newest_dates(log, 2 * max(2 * window, change_config.max_window))
        examples = attribute_feedback(
            log.read("feedback", dates=dates), log.read("prediction", dates=dates)
        )
        if "model_version" in examples.columns:
            examples = examples.filter(pl.col("model_version") == version)
        if version not in models:
            models.clear()
            models[version] = registry.registry().load_model(version)
        model = models[version]
        outcomes = outcome_stream(examples, model, last=max(window, change_config.max_window))
        y, proba = outcomes.y[-window:], outcomes.proba[-window:]
        decision = check_performance(y, proba, float(baseline), config, classes=model.spec.classes)
        change = detect_change(outcomes.errors, change_config)
        reason = decision.reason()
        tags: dict[str, str] = {}
        start = outcomes.timestamps[-change.rows_since] if change.found else None
        if start is not None:
            tags[keys.TAG_WINDOW_START] = start.isoformat()
            reason = f"change point at {start.isoformat()}: {change.reason()}; {reason}"
        elif change.found:
            reason = f"{change.reason()}; {reason}"
        elif decision.fire and outcomes.timestamps and outcomes.timestamps[0] is not None:
            # below its baseline with no cut in its outcomes: the concept changed before
            # (or as) this champion began serving; learn from what it has served
            first = outcomes.timestamps[0]
            tags[keys.TAG_WINDOW_START] = first.isoformat()
            reason = (
                f"no change point within its {len(outcomes.timestamps)} outcomes: the window "
                f"starts at its first, {first.isoformat()}; {reason}"
            )
        event = dg.AssetMaterialization(
            asset_key=keys.PERFORMANCE_MONITOR,
            metadata={
                "champion_version": version,
                "fire": decision.fire,
                "accuracy": float(decision.metric) if decision.n else float("nan"),
                "baseline": float(baseline),
                "p_value": float(decision.p_value),
                "labeled_events": decision.n,
                "change_found": change.found,
                "change_rows_since": change.rows_since,
                "reason": reason,
                "details": dg.MetadataValue.json(
                    {**decision.to_dict(), "change": change.to_dict()}
                ),
            },
        )
        return _outcome(
            context,
            cursor,
            trigger="performance",
            word="decay",
            fire=decision.fire or change.found,
            reason=reason,
            mode=mode,
            version=version,
            position=position,
            cooldown=window,
            unit="feedback events",
            event=event,
            tags=tags,
        )

    return performance_sensor

"""Canary analysis: promote the challenger, or roll it back, from labeled live traffic."""

import json
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from ct_assets import keys
from ct_assets.defs.automation import running_sensor
from ct_assets.defs.resources import EventLogResource, RegistryResource
from ct_assets.eventlog import EventLog
from ct_assets.eventlog.recent import newest_dates
from ct_assets.monitoring.canary import (
    TEST_NAME,
    CanaryConfig,
    CanaryDecision,
    arm_outcomes,
    canary_decision,
)
from ct_assets.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_DEPLOYMENT_STATUS,
    AuditRecord,
    Deployment,
    Registry,
    VersionInfo,
)
from ct_assets.serving.routing import ARM_A, ARM_B
from ct_assets.settings import Settings

CANARY_ARM = "canary"
CHAMPION_ARM = "champion"
SHADOW_ARM = "shadow"
TRAFFIC_ROWS = 50_000  # newest predictions and feedback the analysis reads


#: The arms each mode compares: (the champion's, the challenger's).
COMPARED_ARMS = {"canary": (CHAMPION_ARM, CANARY_ARM), "ab": (ARM_A, ARM_B)}


def deployment_start(deployment: Deployment, challenger: VersionInfo) -> datetime:
    """The start of the period both arms are read from: when the deployment (mode or
    challenger) last changed, and never before the challenger was registered."""
    created = datetime.fromisoformat(challenger.created_at)
    if not deployment.started_at:
        return created
    return max(created, datetime.fromisoformat(deployment.started_at))


def dates_since(log: EventLog, since: datetime) -> list[str]:
    """The log's event dates from ``since``'s UTC date on."""
    first = since.astimezone(UTC).date().isoformat()
    return sorted(day for day in log.counts_by_date() if day >= first)


def read_arm_outcomes(
    log: EventLog, champion: str, challenger: str, since: datetime, mode: str = "canary"
) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """The hits of both arms of ``mode`` for predictions served since ``since`` (see
    :func:`ct_assets.monitoring.canary.arm_outcomes`); reads only the dates from then on."""
    dates = dates_since(log, since)
    if not dates:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    return arm_outcomes(
        log.read("feedback", dates=dates),
        log.read("prediction", dates=dates),
        champion=champion,
        challenger=challenger,
        since=since,
        arms=COMPARED_ARMS[mode],
    )


def act(reg: Registry, decision: CanaryDecision, challenger: str) -> str:
    """Carry out the decision in the registry; returns what was done."""
    if decision.action == "promote":
        reg.promote(challenger, reason=f"canary: {decision.reason()}", by="canary_analysis")
        return f"promoted v{challenger}"
    if decision.action == "rollback":
        from datetime import UTC, datetime

        reg.client.delete_registered_model_alias(reg.model_name, CHALLENGER)
        reg.set_version_tag(challenger, TAG_DEPLOYMENT_STATUS, "rolled_back")
        champion = reg.alias(CHAMPION)
        reg.audit(
            AuditRecord(
                "rollback",
                champion.version if champion else "",
                challenger,
                "canary_analysis",
                decision.reason(),
                datetime.now(UTC).isoformat(),
            )
        )
        return f"rolled back v{challenger}"
    return "kept the canary running"


def build_canary_analysis(settings: Settings) -> dg.AssetsDefinition:
    config = CanaryConfig(
        min_samples=settings.canary_min_samples,
        margin=settings.canary_margin,
        alpha=settings.canary_alpha,
    )

    @dg.asset(
        name=keys.CANARY_ANALYSIS,
        group_name=keys.DEPLOYMENT,
        kinds={"mlflow"},
        description=(
            "Canary analysis, when the deployment mode is canary (or ab): the challenger's "
            "accuracy on labeled requests it served (arm canary, or b) against the "
            "champion's (arm champion, or a), both only from predictions served since the "
            "deployment started. Two always-valid tests (mixture SPRT) decide at any look: "
            f"promote once it is not worse by {config.margin}, roll back once it is worse; "
            f"each false decision has probability at most {config.alpha} however often the "
            f"analysis runs (at least {config.min_samples} labeled requests per arm before "
            "a promotion). Otherwise the canary keeps running. Every decision carries its "
            "statistics and is audited in the registry."
        ),
    )
    def canary_analysis(
        context: dg.AssetExecutionContext,
        event_log: EventLogResource,
        registry: RegistryResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        reg = registry.registry()
        champion, challenger = reg.alias(CHAMPION), reg.alias(CHALLENGER)
        deployment = reg.deployment()
        if deployment.mode not in COMPARED_ARMS or champion is None or challenger is None:
            return dg.MaterializeResult(
                metadata={
                    "action": "none",
                    "reason": f"deployment {deployment.mode}; challenger "
                    f"{challenger.version if challenger else 'none'}: nothing to analyse",
                }
            )
        since = deployment_start(deployment, challenger)
        champ_hits, chall_hits = read_arm_outcomes(
            event_log.log(), champion.version, challenger.version, since, deployment.mode
        )
        decision = canary_decision(champ_hits, chall_hits, config)
        done = act(reg, decision, challenger.version)
        context.log.info(f"{done}: {decision.reason()}")
        return dg.MaterializeResult(
            metadata={
                "action": decision.action,
                "done": done,
                "mode": deployment.mode,
                "since": since.isoformat(),
                "test": TEST_NAME,
                "champion_version": champion.version,
                "challenger_version": challenger.version,
                "champion_accuracy": decision.champion_accuracy,
                "challenger_accuracy": decision.challenger_accuracy,
                "champion_labeled": decision.champion_n,
                "challenger_labeled": decision.challenger_n,
                "p_not_worse": decision.p_not_worse,
                "p_worse": decision.p_worse,
                "alpha": decision.alpha,
                "reason": decision.reason(),
                "details": dg.MetadataValue.json(decision.to_dict()),
            }
        )

    return canary_analysis


def shadow_pairs(
    log: EventLog, champion: str, challenger: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """For requests the challenger scored in shadow: the champion's and the challenger's
    probabilities (same class order) and the label given later (-1 when none yet)."""
    from ct_assets.triggers.drift import prediction_scores

    dates = newest_dates(log, TRAFFIC_ROWS)
    predictions = log.read("prediction", dates=dates)
    empty = np.zeros((0, 0)), np.zeros((0, 0)), np.zeros(0, dtype=int)
    if not predictions.height or "arm" not in predictions.columns:
        return empty
    served = predictions.filter(
        (pl.col("arm") == CHAMPION_ARM) & (pl.col("model_version") == champion)
    ).unique("prediction_id", keep="first", maintain_order=True)
    shadow = predictions.filter(
        (pl.col("arm") == SHADOW_ARM) & (pl.col("model_version") == challenger)
    ).unique("prediction_id", keep="first", maintain_order=True)
    pairs = served.join(shadow, on="prediction_id", how="inner", suffix="_shadow")
    if not pairs.height:
        return empty
    scores = served.schema["scores"]
    classes = sorted(f.name for f in scores.fields) if isinstance(scores, pl.Struct) else []
    champ = prediction_scores(pairs, classes)
    chall = prediction_scores(pairs.select(pl.col("scores_shadow").alias("scores")), classes)
    feedback = log.read("feedback", dates=dates)
    labels = np.full(pairs.height, -1)
    if feedback.height and "label" in feedback.columns:
        given = (
            feedback.filter(pl.col("label").is_not_null())
            .unique("prediction_id", keep="first", maintain_order=True)
            .select("prediction_id", pl.col("label").cast(pl.String))
        )
        joined = pairs.select("prediction_id").join(given, on="prediction_id", how="left")
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index.get(v, -1) if v is not None else -1 for v in joined["label"]])
    return champ, chall, labels


def build_shadow_evaluation() -> dg.AssetsDefinition:
    @dg.asset(
        name=keys.SHADOW_EVALUATION,
        group_name=keys.DEPLOYMENT,
        kinds={"mlflow"},
        description=(
            "Champion against challenger on shadow traffic (deployment mode shadow: the "
            "champion answers, the challenger scores the same requests): how often they "
            "agree, the mean absolute difference of their scores, and each one's accuracy "
            "on the requests that received labels. Charted over time."
        ),
    )
    def shadow_evaluation(
        event_log: EventLogResource, registry: RegistryResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        from ct_assets.monitoring.canary import shadow_summary

        reg = registry.registry()
        champion, challenger = reg.alias(CHAMPION), reg.alias(CHALLENGER)
        if champion is None or challenger is None:
            return dg.MaterializeResult(metadata={"requests": 0, "reason": "no challenger"})
        champ, chall, labels = shadow_pairs(event_log.log(), champion.version, challenger.version)
        summary = shadow_summary(champ, chall, labels) if len(labels) else {"requests": 0.0}
        return dg.MaterializeResult(
            metadata={
                "champion_version": champion.version,
                "challenger_version": challenger.version,
                **{k: float(v) for k, v in summary.items()},
            }
        )

    return shadow_evaluation


canary_job = dg.define_asset_job(
    keys.CANARY_JOB,
    selection=dg.AssetSelection.assets(
        keys.CANARY_ANALYSIS, keys.SHADOW_EVALUATION, keys.FEEDBACK_LOOP_LATENCY
    ),
    description=(
        "Analyse live traffic of the challenger: the canary (promote, roll back, or keep "
        "going) and the shadow evaluation; then the feedback-loop latency, which a "
        "promotion changes."
    ),
    tags={keys.RUN_TAG_JOB: keys.CANARY_JOB},
)


def build_canary_sensor(settings: Settings, job: Any) -> dg.SensorDefinition:
    step = max(1, settings.canary_min_samples // 3)

    @running_sensor(
        settings,
        keys.CANARY_SENSOR,
        job,
        (
            "While the deployment mode is canary, ab or shadow and a challenger exists, "
            f"launches the canary analysis and shadow evaluation each time {step} more "
            "feedback events arrived."
        ),
    )
    def canary_sensor(
        context: dg.SensorEvaluationContext,
        event_log: EventLogResource,
        registry: RegistryResource,
    ) -> dg.SensorResult:
        reg = registry.registry()
        deployment = reg.deployment()
        challenger = reg.alias(CHALLENGER)
        if deployment.mode not in ("canary", "ab", "shadow") or challenger is None:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"deployment {deployment.mode}, challenger "
                    f"{challenger.version if challenger else 'none'}: no canary to analyse"
                )
            )
        cursor = json.loads(context.cursor) if context.cursor else {}
        position = event_log.log().counts().feedback
        last = int(cursor.get("at", 0)) if cursor.get("challenger") == challenger.version else 0
        if position - last < step:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(
                    f"{position - last} feedback events since the last canary analysis of "
                    f"v{challenger.version} < {step}"
                )
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"canary-v{challenger.version}-{position}",
                    tags={keys.RUN_TAG_JOB: keys.CANARY_JOB, keys.RUN_TAG_TRIGGER: "canary"},
                )
            ],
            cursor=json.dumps({"challenger": challenger.version, "at": position}),
        )

    return canary_sensor

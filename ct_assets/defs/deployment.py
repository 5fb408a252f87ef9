"""Deployment: the ``champion`` alias moves to a candidate that passed the gate."""

import dagster as dg
import polars as pl

from ct_assets import keys
from ct_assets.data.dataset import preview_markdown
from ct_assets.defs.handoffs import GateHandoff
from ct_assets.defs.metadata import model_version_metadata
from ct_assets.defs.resources import CurationResource, RegistryResource
from ct_assets.registry import CHAMPION, TAG_LOG_POSITION, TAG_WINDOW_START, Registry


def champion_baseline(reg: Registry, run_id: str) -> dict[str, float]:
    """The champion's holdout accuracy at promotion: the performance trigger's baseline."""
    value = reg.run_metric(run_id, "holdout_accuracy")
    return {} if value is None else {keys.META_BASELINE_ACCURACY: value}


@dg.asset(
    name=keys.CHAMPION_MODEL,
    group_name=keys.DEPLOYMENT,
    ins={"gate": dg.AssetIn(key=keys.VALIDATION_REPORT)},
    kinds={"mlflow"},
    description=(
        "The registry's `champion`: moved to the validated candidate when the deployment "
        "mode is off (with shadow, canary or A/B, the candidate becomes `challenger` and "
        "meets live traffic first). Runs only when the blocking gate check on "
        "validation_report passed. `ct/log_position` is the champion's dataset cutoff, "
        "which the volume sensor counts new feedback from."
    ),
)
def champion_model(
    context: dg.AssetExecutionContext, gate: GateHandoff, registry: RegistryResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    version = gate.model_version
    if not version or not gate.promote or gate.decision != "promote":
        raise dg.Failure(f"the validation report does not promote a candidate: {gate}")
    reg = registry.registry()
    trigger = dict(context.run.tags).get(keys.RUN_TAG_TRIGGER, "manual")
    deployment = reg.deployment()
    current = reg.alias(CHAMPION)
    if deployment.mode != "off" and current is not None and current.version != version:
        # the candidate becomes the `challenger` and meets live traffic first
        reg.set_challenger(version, deployment.mode, reason=f"gate passed; trigger {trigger}")
        context.log.info(
            f"deployment mode {deployment.mode}: v{version} is the challenger; "
            f"champion v{current.version} is unchanged"
        )
        return dg.MaterializeResult(
            metadata={
                keys.META_MODEL_VERSION: current.version,
                keys.META_DATASET_VERSION: current.dataset_version or "",
                keys.META_LOG_POSITION: int(current.tags.get(TAG_LOG_POSITION, "0")),
                keys.META_MLFLOW_RUN_ID: current.run_id,
                keys.META_TRIGGER: trigger,
                keys.META_WINDOW_START: current.tags.get(TAG_WINDOW_START, ""),
                "challenger": version,
                "deployment": f"{deployment.mode} {deployment.fraction:g}",
                **champion_baseline(reg, current.run_id),
                **model_version_metadata(reg.tracking_uri, reg.model_name, current.version),
            },
            data_version=dg.DataVersion(f"v{current.version}"),
        )
    previous = reg.promote(version, reason=f"gate passed; trigger {trigger}")
    info = reg.version(version)
    return dg.MaterializeResult(
        metadata={
            keys.META_MODEL_VERSION: version,
            keys.META_PREVIOUS_CHAMPION: previous.version if previous else "none",
            keys.META_DATASET_VERSION: info.dataset_version or "",
            keys.META_LOG_POSITION: int(info.tags.get(TAG_LOG_POSITION, "0")),
            keys.META_MLFLOW_RUN_ID: info.run_id,
            keys.META_TRIGGER: trigger,
            keys.META_WINDOW_START: info.tags.get(TAG_WINDOW_START, ""),
            **champion_baseline(reg, info.run_id),
            **model_version_metadata(reg.tracking_uri, reg.model_name, version),
        },
        data_version=dg.DataVersion(f"v{version}"),
    )


@dg.asset(
    name=keys.DEPLOYMENT_HISTORY,
    group_name=keys.DEPLOYMENT,
    deps=[keys.CHAMPION_MODEL],
    kinds={"mlflow", "polars"},
    description=(
        "Who served what, when and why it changed: every promotion, rollback and "
        "deployment-mode change from the registry's audit trail (version, previous, by, "
        "reason, time), newest first in the preview; the whole table under "
        "CT_HOME/tables/deployment_history/latest.parquet."
    ),
)
def deployment_history(
    registry: RegistryResource, curation: CurationResource
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    reg = registry.registry()
    trail = [r.__dict__ for r in reg.audit_trail()]
    schema = {k: pl.String for k in ("action", "version", "previous", "by", "reason", "at")}
    frame = pl.DataFrame(trail, schema=schema) if trail else pl.DataFrame(schema=schema)
    path = curation.store().write_latest(keys.DEPLOYMENT_HISTORY, frame)
    champion = reg.alias(CHAMPION)
    deployment = reg.deployment()
    newest = frame.reverse().head(10)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "champion": champion.version if champion else "none",
            "deployment": f"{deployment.mode} {deployment.fraction:g}",
            "promotions": int((frame["action"] == "promote").sum()) if frame.height else 0,
            "rollbacks": int((frame["action"] == "rollback").sum()) if frame.height else 0,
            "latest": dg.MetadataValue.md(preview_markdown(newest) if newest.height else "(none)"),
            "path": dg.MetadataValue.path(str(path)),
        }
    )

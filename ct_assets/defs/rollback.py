"""The rollback job: move ``champion`` back to an earlier version, audited."""

import getpass
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from ct_assets import keys
from ct_assets.defs.deployment import champion_baseline
from ct_assets.defs.metadata import model_version_metadata
from ct_assets.defs.resources import RegistryResource
from ct_assets.registry import TAG_LOG_POSITION, TAG_WINDOW_START, RollbackError


class RollbackConfig(dg.Config):
    """``to``: the version to restore (empty: the one the current champion replaced);
    ``reason``: why, for the audit trail; ``by``: who (empty: the run's user tag)."""

    reason: str
    to: str = ""
    by: str = ""


@dg.op(
    description=(
        "Moves the registry's `champion` alias back and records who, why and when; the "
        "champion_model asset shows the restored version."
    )
)
def rollback_champion(
    context: dg.OpExecutionContext, config: RollbackConfig, registry: RegistryResource
) -> Iterator[Any]:
    by = config.by or context.run.tags.get("dagster/user") or getpass.getuser()
    reg = registry.registry()
    try:
        record = reg.rollback(config.to or None, by=by, reason=config.reason)
    except RollbackError as exc:
        raise dg.Failure(str(exc)) from exc
    info = reg.version(record.version)
    context.log.info(f"champion v{record.previous} -> v{record.version} by {by}: {config.reason}")
    yield dg.AssetMaterialization(
        asset_key=keys.CHAMPION_MODEL,
        metadata={
            keys.META_MODEL_VERSION: record.version,
            keys.META_PREVIOUS_CHAMPION: record.previous or "none",
            keys.META_DATASET_VERSION: info.dataset_version or "",
            keys.META_LOG_POSITION: int(info.tags.get(TAG_LOG_POSITION, "0")),
            keys.META_MLFLOW_RUN_ID: info.run_id,
            keys.META_TRIGGER: "rollback",
            keys.META_WINDOW_START: info.tags.get(TAG_WINDOW_START, ""),
            **champion_baseline(reg, info.run_id),
            **model_version_metadata(reg.tracking_uri, reg.model_name, record.version),
            "rolled_back_by": by,
            "rollback_reason": config.reason,
            "rolled_back_at": record.at,
        },
        tags={DATA_VERSION_TAG: f"v{record.version}"},
    )
    yield dg.Output(record.to_json())


@dg.job(
    name=keys.ROLLBACK_JOB,
    description="Restore an earlier champion (config: reason, optional to and by); audited.",
    tags={keys.RUN_TAG_JOB: keys.ROLLBACK_JOB, keys.RUN_TAG_TRIGGER: "rollback"},
)
def rollback_job() -> None:
    rollback_champion()

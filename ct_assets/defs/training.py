"""Training: a LightGBM candidate, full or incremental, logged and registered in MLflow."""

from typing import Any

import dagster as dg
from pydantic import Field

from ct_assets import keys
from ct_assets.defs.dataset_store import DatasetStoreResource
from ct_assets.defs.handoffs import (
    HANDOFF_IO_MANAGER,
    CandidateHandoff,
    DatasetHandoff,
    handoff_output,
)
from ct_assets.defs.metadata import model_version_metadata
from ct_assets.defs.resources import RegistryResource, TrainingConfigResource
from ct_assets.pipeline.candidate_run import CandidateRunError, TrainingPlan, train_candidate
from ct_assets.training.candidates import RequestedMode, candidates_markdown
from ct_assets.training.train import TrainParams

TRAINING_CODE_VERSION = "lightgbm-v3"


class CandidateConfig(dg.Config):
    """What an ML engineer can shape from the Launchpad; every field left empty takes the
    code location's setting. Recorded on the model version (``ct.run_config``)."""

    mode: str = Field(
        default="",
        description="full | incremental | auto; empty: the run's ct/mode tag, else full",
    )
    num_boost_round: int | None = Field(
        default=None, description="LightGBM boosting rounds; empty: CT_NUM_BOOST_ROUND"
    )
    learning_rate: float | None = Field(
        default=None, description="LightGBM learning rate in (0, 1]; empty: CT_LEARNING_RATE"
    )
    num_leaves: int | None = Field(
        default=None, description="LightGBM leaves per tree (>= 2); empty: CT_NUM_LEAVES"
    )
    reason: str = Field(default="", description="why this run was launched (kept on the version)")

    def recorded(self) -> dict[str, Any]:
        """The fields that were set, for the version's ``ct.run_config`` tag."""
        return {k: v for k, v in self.model_dump().items() if v not in (None, "")}


def training_mode(config_mode: str, run_tags: dict[str, str]) -> RequestedMode:
    mode = config_mode or run_tags.get(keys.RUN_TAG_MODE, "") or "full"
    if mode not in ("full", "incremental", "auto"):
        raise dg.Failure(f"unknown training mode {mode!r}: use full, incremental or auto")
    return mode  # type: ignore[return-value]


def training_params(config: CandidateConfig, settings: TrainingConfigResource) -> TrainParams:
    """The settings' LightGBM parameters with the run's overrides; a bad override fails the
    run naming the field."""
    try:
        return TrainParams(
            num_boost_round=_pick(config.num_boost_round, settings.num_boost_round),
            learning_rate=_pick(config.learning_rate, settings.learning_rate),
            num_leaves=_pick(config.num_leaves, settings.num_leaves),
            seed=settings.seed,
            early_stopping_min_rows=settings.early_stopping_min_rows,
            balance_classes=settings.balance_classes,
            dask_scheduler=settings.dask_scheduler,
            dask_min_rows=settings.dask_min_rows,
        )
    except ValueError as error:
        raise dg.Failure(f"run config of {keys.CANDIDATE_MODEL}: {error}") from error


def _pick(override: Any, configured: Any) -> Any:
    return configured if override is None else override


@dg.asset(
    name=keys.CANDIDATE_MODEL,
    group_name=keys.TRAINING,
    ins={"dataset": dg.AssetIn(key=keys.TRAINING_DATASET)},
    io_manager_key=HANDOFF_IO_MANAGER,  # validation_report's input: a CandidateHandoff
    kinds={"lightgbm", "mlflow"},
    code_version=TRAINING_CODE_VERSION,
    description=(
        "LightGBM candidates trained on training_dataset's train split, one per window "
        "(CT_CANDIDATE_WINDOWS: every train row; the newest half; the champion continued "
        "on new rows, unless a change was detected), each scored on the holdout; the best "
        "is trained again with the holdout rows (CT_REFIT_ON_HOLDOUT; the gate judges the "
        "one trained without them), logged as an MLflow run and registered as a new "
        "version (the table of candidates is in its metadata). Mode full | incremental | "
        "auto from the run's ct/mode tag. Checkpointed every CT_CHECKPOINT_EVERY rounds under "
        "CT_HOME/checkpoints: a killed run's rerun resumes."
    ),
)
def candidate_model(
    context: dg.AssetExecutionContext,
    config: CandidateConfig,
    dataset: DatasetHandoff,
    dataset_store: DatasetStoreResource,
    registry: RegistryResource,
    training_config: TrainingConfigResource,
) -> dg.Output[CandidateHandoff]:
    run_tags = dict(context.run.tags)
    plan = TrainingPlan(
        mode=training_mode(config.mode, run_tags),
        params=training_params(config, training_config),
        windows=[w.strip() for w in training_config.candidate_windows.split(",") if w.strip()],
        max_incremental_chain=training_config.max_incremental_chain,
        checkpoint_every=training_config.checkpoint_every,
        refit_on_holdout=training_config.refit_on_holdout,
    )
    reg = registry.registry()
    try:
        run = train_candidate(
            reg,
            dataset.version,
            plan,
            datasets_dir=dataset_store.datasets,
            objects=dataset_store.objects(),
            checkpoints_dir=dataset_store.checkpoints,
            run_id=context.run.run_id,
            run_tags=run_tags,
            run_config=config.recorded(),
            window_start=dataset.window_start,
            note=context.log.info,
        )
    except CandidateRunError as error:
        raise dg.Failure(str(error)) from error
    registered, result = run.registered, run.result
    handoff = CandidateHandoff(
        model_version=str(registered.version),
        run_id=registered.run_id,
        dataset_version=run.info.version,
        mode=result.mode,
        dagster_run_id=context.run.run_id,
    )
    return handoff_output(
        handoff,
        {
            keys.META_MODEL_VERSION: registered.version,
            keys.META_MLFLOW_RUN_ID: registered.run_id,
            **model_version_metadata(reg.tracking_uri, reg.model_name, registered.version),
            keys.META_DATASET_VERSION: run.info.version,
            keys.META_MODE: result.mode,
            keys.META_TRIGGER: run.trigger,
            keys.META_WINDOW_START: run.window_start,
            **{f"validation_{k}": float(v) for k, v in result.validation_metrics.items()},
            "candidate_window": run.chosen.window.name,
            "candidates": dg.MetadataValue.md(candidates_markdown(run.summaries)),
            "best_iteration": result.best_iteration,
            "early_stopped": result.early_stopped,
            "training_backend": result.backend,
            "train_rows": result.train_rows,
            "validated_train_rows": run.chosen.result.train_rows,
            "train_seconds": run.train_seconds,
            "notes": "; ".join(run.notes) or "-",
            "run_config": dg.MetadataValue.json(config.recorded()),
            "resumed_from_iteration": run.resumed_from_iteration,
        },
        f"v{registered.version}",
    )

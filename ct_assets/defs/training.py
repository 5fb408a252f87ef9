"""Training: a LightGBM candidate, full or incremental, logged and registered in MLflow."""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from ct_assets import keys
from ct_assets.data.dataset import DatasetInfo
from ct_assets.defs.lineage import model_version_metadata, required_metadata
from ct_assets.defs.resources import DatasetStoreResource, RegistryResource, TrainingConfigResource
from ct_assets.registry import (
    CHAMPION,
    TAG_CANDIDATE_WINDOW,
    TAG_CANDIDATES,
    TAG_DAGSTER_RUN_ID,
    TAG_INCREMENTAL_CHAIN,
    TAG_INIT_VERSION,
    TAG_LOG_POSITION,
    TAG_NEW_AFTER_OFFSET,
    TAG_RUN_CONFIG,
    TAG_TRAIN_PARAMS,
    TAG_TRIGGER,
    TAG_WINDOW_START,
)
from ct_assets.training.candidates import (
    CandidateWindow,
    RequestedMode,
    candidates_markdown,
    chain_is_full,
    plan_windows,
    refit,
    train_candidates,
)
from ct_assets.training.checkpoint import Checkpoint
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
    mode = config_mode or run_tags.get(keys.TAG_MODE, "") or "full"
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
        )
    except ValueError as error:
        raise dg.Failure(f"run config of {keys.CANDIDATE_MODEL}: {error}") from error


def _pick(override: Any, configured: Any) -> Any:
    return configured if override is None else override


@dg.asset(
    name=keys.CANDIDATE_MODEL,
    group_name=keys.TRAINING,
    deps=[keys.TRAINING_DATASET],
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
    dataset_store: DatasetStoreResource,
    registry: RegistryResource,
    training_config: TrainingConfigResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    # one read of the dataset's materialization: its version and its window start
    dataset_meta = required_metadata(
        context.instance, keys.TRAINING_DATASET, keys.META_DATASET_VERSION
    )
    version = str(dataset_meta[keys.META_DATASET_VERSION])
    manifest = dataset_store.datasets / f"{version}.json"
    if not manifest.exists():
        raise dg.Failure(f"dataset {version} is recorded but {manifest} is missing")
    info = DatasetInfo.from_json(manifest.read_text())
    frame = pl.read_parquet(Path(info.path))
    run_tags = dict(context.run.tags)
    window_start = str(dataset_meta.get(keys.META_WINDOW_START) or "")
    mode = training_mode(config.mode, run_tags)
    reg = registry.registry()
    champion_model = None
    champion_version = ""
    new_after: int | None = None
    chain = 0
    chain_note = ""
    if mode != "full":
        champion = reg.alias(CHAMPION)
        chain = int((champion.tags if champion else {}).get(TAG_INCREMENTAL_CHAIN) or 0)
        if champion is not None and chain_is_full(chain, training_config.max_incremental_chain):
            chain_note = (
                f"champion v{champion.version} ends {chain} incremental versions in a row "
                f"(CT_MAX_INCREMENTAL_CHAIN {training_config.max_incremental_chain}): full retrain"
            )
            context.log.info(chain_note)
            mode = "full"
        elif champion is not None:
            champion_version = champion.version
            champion_model = reg.load_model(champion.version)
            new_after = int(champion.tags.get(TAG_LOG_POSITION, "0")) - 1
    params = training_params(config, training_config)
    windows = plan_windows(
        frame,
        requested=mode,
        allowed=[w.strip() for w in training_config.candidate_windows.split(",") if w.strip()],
        champion_cutoff=new_after,
        change_detected=bool(run_tags.get(keys.TAG_WINDOW_START)),
    )

    def checkpoint_for(window: CandidateWindow, refit: bool = False) -> Checkpoint | None:
        if training_config.checkpoint_every <= 0:
            return None
        # a killed run's rerun (same dataset, window, parameters, champion) resumes here
        return Checkpoint.for_job(
            dataset_store.checkpoints,
            dataset=info.version,
            mode=window.mode,
            params=params.lightgbm_params(len(info.classes)),
            num_boost_round=params.num_boost_round,
            init_model=champion_version if window.mode == "incremental" else None,
            extra={"window": window.name, "after_offset": window.after_offset, "refit": refit},
        )

    trained = train_candidates(
        frame,
        params,
        windows,
        champion_model,
        checkpoint_for=checkpoint_for,
        checkpoint_every=max(1, training_config.checkpoint_every),
    )
    chosen = trained[0]
    result = chosen.result
    if training_config.refit_on_holdout:
        result = refit(
            frame,
            params,
            chosen,
            champion_model,
            checkpoint=checkpoint_for(chosen.window, refit=True),
            checkpoint_every=max(1, training_config.checkpoint_every),
        )
    notes = [f"{t.window.name}: {note}" for t in trained for note in t.result.notes]
    if chain_note:
        notes.append(chain_note)
    if result is not chosen.result:
        notes += result.notes
    for note in notes:
        context.log.info(note)
    holdout = frame.filter(pl.col("split") == "holdout")
    summaries = [t.summary(chosen=i == 0) for i, t in enumerate(trained)]
    registered = reg.log_candidate(
        result,
        info,
        tags={
            TAG_DAGSTER_RUN_ID: context.run.run_id,
            TAG_TRIGGER: run_tags.get(keys.TAG_TRIGGER, "manual"),
            "ct.asset_key": keys.CANDIDATE_MODEL,
            TAG_TRAIN_PARAMS: json.dumps(asdict(params), sort_keys=True),
            TAG_CANDIDATE_WINDOW: chosen.window.name,
            TAG_INCREMENTAL_CHAIN: str(chain + 1 if result.mode == "incremental" else 0),
            **({TAG_RUN_CONFIG: json.dumps(config.recorded())} if config.recorded() else {}),
            TAG_CANDIDATES: json.dumps(
                [{k: v for k, v in s.items() if k != "notes"} for s in summaries], default=str
            ),
            **({TAG_WINDOW_START: window_start} if window_start else {}),
            **(
                {TAG_INIT_VERSION: champion_version, TAG_NEW_AFTER_OFFSET: str(new_after)}
                if result.mode == "incremental" and champion_version
                else {}
            ),
        },
        example=holdout.head(5),
        validated=chosen.result.model if result is not chosen.result else None,
    )
    validation = result.validation_metrics
    return dg.MaterializeResult(
        metadata={
            keys.META_MODEL_VERSION: registered.version,
            keys.META_MLFLOW_RUN_ID: registered.run_id,
            **model_version_metadata(reg.tracking_uri, reg.model_name, registered.version),
            keys.META_DATASET_VERSION: info.version,
            keys.META_MODE: result.mode,
            keys.META_TRIGGER: run_tags.get(keys.TAG_TRIGGER, "manual"),
            keys.META_WINDOW_START: window_start,
            **{f"validation_{k}": float(v) for k, v in validation.items()},
            "candidate_window": chosen.window.name,
            "candidates": dg.MetadataValue.md(candidates_markdown(summaries)),
            "best_iteration": result.best_iteration,
            "early_stopped": result.early_stopped,
            "train_rows": result.train_rows,
            "validated_train_rows": chosen.result.train_rows,
            "train_seconds": round(
                sum(t.result.seconds for t in trained)
                + (result.seconds if result is not chosen.result else 0.0),
                3,
            ),
            "notes": "; ".join(notes) or "-",
            "run_config": dg.MetadataValue.json(config.recorded()),
            # any candidate's: a killed run's rerun resumes each window from its checkpoint
            "resumed_from_iteration": max(t.result.resumed_from or 0 for t in trained),
        },
        data_version=dg.DataVersion(f"v{registered.version}"),
    )

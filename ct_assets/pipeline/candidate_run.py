"""One retrain: LightGBM candidates on a dataset's train split, the best one (refit with
the holdout when asked) logged as an MLflow run and registered as a new version.

Plain code over the registry, dataset files and paths (no Dagster): the
``candidate_model`` asset reads its resources and run config, calls
:func:`train_candidate` once and renders the :class:`CandidateRun` it returns. The
windows and training are ``training.candidates``'.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from ct_assets import keys
from ct_assets.data.dataset import DatasetInfo
from ct_assets.data.dataset_objects import MANIFEST, dataset_file, dataset_key, read_manifest
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
    Registry,
    VersionInfo,
)
from ct_assets.storage import ObjectStore
from ct_assets.training.candidates import (
    CandidateWindow,
    RequestedMode,
    TrainedCandidate,
    chain_is_full,
    plan_windows,
    refit,
    train_candidates,
)
from ct_assets.training.checkpoint import Checkpoint
from ct_assets.training.stored_checkpoint import StoredCheckpoint
from ct_assets.training.train import TrainParams, TrainResult


class CandidateRunError(ValueError):
    """The candidate cannot be trained: its dataset's manifest is missing."""


@dataclass(frozen=True)
class TrainingPlan:
    """How to train: the requested mode, the parameters, the candidate windows allowed
    (``CT_CANDIDATE_WINDOWS``), the longest incremental chain before a full retrain,
    checkpoints every so many rounds (0: none), and whether to refit with the holdout."""

    mode: RequestedMode
    params: TrainParams
    windows: Sequence[str]
    max_incremental_chain: int
    checkpoint_every: int
    refit_on_holdout: bool


@dataclass(frozen=True)
class CandidateRun:
    """A registered candidate and how it was chosen.

    ``trained``: every candidate window, the chosen one first; ``result``: the registered
    model's training (the chosen candidate's, or its refit with the holdout).
    ``summaries``: one row per candidate; ``notes``: what training reported.
    """

    registered: VersionInfo
    info: DatasetInfo
    trained: list[TrainedCandidate]
    result: TrainResult
    summaries: list[dict[str, Any]]
    notes: list[str]
    trigger: str
    window_start: str

    @property
    def chosen(self) -> TrainedCandidate:
        return self.trained[0]

    @property
    def refitted(self) -> bool:
        return self.result is not self.chosen.result

    @property
    def train_seconds(self) -> float:
        own = sum(t.result.seconds for t in self.trained)
        return round(own + (self.result.seconds if self.refitted else 0.0), 3)

    @property
    def resumed_from_iteration(self) -> int:
        """Any candidate's: a killed run's rerun resumes each window from its checkpoint."""
        return max(t.result.resumed_from or 0 for t in self.trained)


def train_candidate(
    registry: Registry,
    dataset_version: str,
    plan: TrainingPlan,
    *,
    datasets_dir: Path,
    checkpoints_dir: Path,
    run_id: str,
    run_tags: Mapping[str, str],
    run_config: Mapping[str, Any],
    window_start: str = "",
    note: Callable[[str], None] = lambda _: None,
    objects: ObjectStore | None = None,
) -> CandidateRun:
    """Train the candidates of ``plan`` on dataset ``dataset_version`` and register the
    best one, tagged with the run (``run_id``, its trigger from ``run_tags``, the
    ``run_config`` that was set) and the dataset's ``window_start``. Training notes go
    through ``note``. The dataset is read from ``objects`` (None: ``datasets_dir``)."""
    info = read_manifest(objects, datasets_dir, dataset_version)
    if info is None:
        where = objects.uri_of(dataset_key(dataset_version, MANIFEST)) if objects else datasets_dir
        raise CandidateRunError(f"dataset {dataset_version} is recorded but {where} is missing")
    frame = pl.read_parquet(dataset_file(objects, datasets_dir, info.version))
    mode = plan.mode
    params = plan.params
    champion_model = None
    champion_version = ""
    new_after: int | None = None
    chain = 0
    chain_note = ""
    if mode != "full":
        champion = registry.alias(CHAMPION)
        chain = int((champion.tags if champion else {}).get(TAG_INCREMENTAL_CHAIN) or 0)
        if champion is not None and chain_is_full(chain, plan.max_incremental_chain):
            chain_note = (
                f"champion v{champion.version} ends {chain} incremental versions in a row "
                f"(CT_MAX_INCREMENTAL_CHAIN {plan.max_incremental_chain}): full retrain"
            )
            note(chain_note)
            mode = "full"
        elif champion is not None:
            champion_version = champion.version
            champion_model = registry.load_model(champion.version)
            new_after = int(champion.tags.get(TAG_LOG_POSITION, "0")) - 1
    windows = plan_windows(
        frame,
        requested=mode,
        allowed=list(plan.windows),
        champion_cutoff=new_after,
        change_detected=bool(run_tags.get(keys.RUN_TAG_WINDOW_START)),
    )

    def checkpoint_for(window: CandidateWindow, refit: bool = False) -> Checkpoint | None:
        if plan.checkpoint_every <= 0:
            return None
        # a killed run's rerun (same dataset, window, parameters, champion) resumes here,
        # on whichever machine it runs when the checkpoint is on the object store too
        checkpoint = Checkpoint.for_job(
            checkpoints_dir,
            dataset=info.version,
            mode=window.mode,
            params=params.lightgbm_params(len(info.classes)),
            num_boost_round=params.num_boost_round,
            init_model=champion_version if window.mode == "incremental" else None,
            extra={"window": window.name, "after_offset": window.after_offset, "refit": refit},
        )
        return StoredCheckpoint.wrap(checkpoint, objects)

    every = max(1, plan.checkpoint_every)
    trained = train_candidates(
        frame,
        params,
        windows,
        champion_model,
        checkpoint_for=checkpoint_for,
        checkpoint_every=every,
    )
    chosen = trained[0]
    result = chosen.result
    if plan.refit_on_holdout:
        result = refit(
            frame,
            params,
            chosen,
            champion_model,
            checkpoint=checkpoint_for(chosen.window, refit=True),
            checkpoint_every=every,
        )
    notes = [f"{t.window.name}: {n}" for t in trained for n in t.result.notes]
    if chain_note:
        notes.append(chain_note)
    if result is not chosen.result:
        notes += result.notes
    for line in notes:
        note(line)
    holdout = frame.filter(pl.col("split") == "holdout")
    summaries = [t.summary(chosen=i == 0) for i, t in enumerate(trained)]
    trigger = run_tags.get(keys.RUN_TAG_TRIGGER, "manual")
    registered = registry.log_candidate(
        result,
        info,
        tags={
            TAG_DAGSTER_RUN_ID: run_id,
            TAG_TRIGGER: trigger,
            "ct.asset_key": keys.CANDIDATE_MODEL,
            TAG_TRAIN_PARAMS: json.dumps(asdict(params), sort_keys=True),
            TAG_CANDIDATE_WINDOW: chosen.window.name,
            TAG_INCREMENTAL_CHAIN: str(chain + 1 if result.mode == "incremental" else 0),
            **({TAG_RUN_CONFIG: json.dumps(dict(run_config))} if run_config else {}),
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
    return CandidateRun(
        registered=registered,
        info=info,
        trained=trained,
        result=result,
        summaries=summaries,
        notes=notes,
        trigger=trigger,
        window_start=window_start,
    )

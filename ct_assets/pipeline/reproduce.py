"""Reproducing a registered model: train it again from what its version records.

A candidate's registered version carries the dataset version it was trained on, the
training parameters, the chosen candidate window (and whether the model was refit with
the holdout), the mode (and for an incremental model the champion version it
continued from and the log offset after which rows were new) and the code version.
:func:`reproduce` trains again from those, in this process, and compares the new
model's predictions with the registered model's on the dataset's holdout.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ct_assets.data.dataset import SPLIT
from ct_assets.data.dataset_objects import dataset_file, read_manifest
from ct_assets.registry import (
    TAG_CANDIDATES,
    TAG_CODE_VERSION,
    TAG_DATASET_VERSION,
    TAG_INIT_VERSION,
    TAG_MODE,
    TAG_NEW_AFTER_OFFSET,
    TAG_TRAIN_PARAMS,
    TAG_VALIDATED_MODEL,
    Registry,
    code_version,
)
from ct_assets.storage import ObjectStore
from ct_assets.training.candidates import (
    TrainedCandidate,
    recorded_candidates,
    recorded_window,
    refit,
    train_window,
)
from ct_assets.training.train import Mode, TrainParams


class ReproduceError(RuntimeError):
    """The version does not record enough to be trained again, or its dataset is gone."""


@dataclass(frozen=True)
class ReproduceResult:
    version: str
    dataset_version: str
    mode: str
    holdout_rows: int
    identical: bool
    max_abs_difference: float
    recorded_code_version: str
    current_code_version: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reproduce(
    registry: Registry, version: str, datasets_dir: Path, objects: ObjectStore | None = None
) -> ReproduceResult:
    """Train ``version`` again from its recorded dataset (read from ``objects``; None:
    ``datasets_dir``), parameters and mode; compare."""
    info = registry.version(version)
    tags = info.tags
    missing = [t for t in (TAG_DATASET_VERSION, TAG_TRAIN_PARAMS) if not tags.get(t)]
    if missing:
        raise ReproduceError(f"v{version} does not record {missing}: it cannot be reproduced")
    dataset_version = tags[TAG_DATASET_VERSION]
    dataset = read_manifest(objects, datasets_dir, dataset_version)
    if dataset is None:
        where = objects.uri if objects is not None else datasets_dir
        raise ReproduceError(f"v{version}'s dataset {dataset_version} is not in {where}")
    frame = pl.read_parquet(dataset_file(objects, datasets_dir, dataset_version))
    params = TrainParams(**json.loads(tags[TAG_TRAIN_PARAMS]))
    mode: Mode = "incremental" if tags.get(TAG_MODE) == "incremental" else "full"
    notes: list[str] = []
    champion = None
    new_after: int | None = None
    if mode == "incremental":
        init = tags.get(TAG_INIT_VERSION)
        if not init:
            raise ReproduceError(f"v{version} is incremental but does not record its init model")
        champion = registry.load_model(init)
        offset = tags.get(TAG_NEW_AFTER_OFFSET)
        new_after = int(offset) if offset else None
        notes.append(f"continued from v{init} on rows after log offset {new_after}")
    recorded_code = tags.get(TAG_CODE_VERSION, "unknown")
    current_code = code_version()
    if recorded_code != current_code:
        notes.append(f"trained by code {recorded_code}, reproduced with {current_code}")
    window = recorded_window(recorded_candidates(tags.get(TAG_CANDIDATES, "")), mode)
    if mode == "incremental":
        window = replace(window, after_offset=new_after)
    result = train_window(frame, params, window, champion)
    if tags.get(TAG_VALIDATED_MODEL):
        chosen = TrainedCandidate(window, result, {})
        result = refit(frame, params, chosen, champion)
        notes.append("trained again with the holdout, as the registered model was")
    original = registry.load_model(version)
    holdout = frame.filter(pl.col(SPLIT) == "holdout")
    if holdout.height == 0:
        holdout = frame
    before = original.predict_proba(holdout)
    after = result.model.predict_proba(holdout)
    same_shape = before.shape == after.shape
    difference = float(np.max(np.abs(before - after))) if same_shape and before.size else 0.0
    return ReproduceResult(
        version=version,
        dataset_version=dataset_version,
        mode=result.mode,
        holdout_rows=holdout.height,
        identical=same_shape and bool(np.array_equal(before, after)),
        max_abs_difference=difference if same_shape else float("inf"),
        recorded_code_version=recorded_code,
        current_code_version=current_code,
        notes=notes + result.notes,
    )

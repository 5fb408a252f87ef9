"""Resuming a training job from its checkpoint: the digest of what determines the trained
model (rows, labels, weights, parameters, starting model), and the checkpointed booster of
that very job with its early stopping state, or None to train afresh."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ct_assets.training.checkpoint import Checkpoint
from ct_assets.training.early_stopping import EarlyStopping
from ct_assets.training.model import FeatureSpec

if TYPE_CHECKING:
    import lightgbm

    from ct_assets.training.train import Mode, TrainParams


def job_digest(
    *,
    mode: Mode,
    params: TrainParams,
    lgb_params: Mapping[str, Any],
    spec: FeatureSpec,
    arrays: Sequence[NDArray[Any] | None],
    init: lightgbm.Booster | None,
) -> str:
    """What determines the trained model: the rows, labels, weights, settings, first model."""
    import lightgbm

    digest = hashlib.sha256()
    settings = {
        "lightgbm": lightgbm.__version__,
        "mode": mode,
        "lgb_params": dict(lgb_params),
        "num_boost_round": params.num_boost_round,
        "early_stopping_rounds": params.early_stopping_rounds,
        "early_stopping_min_rows": params.early_stopping_min_rows,
        "min_boost_round": params.min_boost_round,
        "validation_fraction": params.validation_fraction,
        "features": spec.feature_names,
        "categories": spec.categories,
        "classes": spec.classes,
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for array in arrays:
        if array is None:
            digest.update(b"|none")
            continue
        contiguous = np.ascontiguousarray(array)
        digest.update(f"|{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.tobytes())
    digest.update(b"|init:")
    if init is not None:
        digest.update(init.model_to_string(num_iteration=-1).encode())
    return digest.hexdigest()


def resume(
    checkpoint: Checkpoint,
    job: str,
    start: int,
    num_boost_round: int,
    stopper: EarlyStopping,
    notes: list[str],
) -> lightgbm.Booster | None:
    """The checkpointed booster of this job, ``stopper`` restored; None to start afresh."""
    seen = len(checkpoint.notes)
    loaded = checkpoint.load()
    notes.extend(f"{note}; training afresh" for note in checkpoint.notes[seen:])
    if loaded is None:
        return None
    booster, state = loaded
    iteration = int(state["iteration"])
    reason = None
    if state.get("job") != job:
        reason = "it is of another training job (rows, labels, parameters or champion differ)"
    elif not start < iteration < start + num_boost_round:
        reason = f"its iteration {iteration} is not within this job's {start}..{num_boost_round}"
    else:
        try:
            stopper.restore(state, iteration)
        except ValueError as error:
            reason = str(error)
    if reason is not None:
        notes.append(f"checkpoint in {checkpoint.folder} ignored: {reason}; training afresh")
        return None
    return booster

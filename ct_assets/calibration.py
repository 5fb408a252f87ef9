"""What the configured gate and canary thresholds mean on a user's own data.

``ct-assets calibrate`` measures, on the champion's dataset, how often the promotion gate
and the canary decide wrongly, so a team knows their error rates before trusting them:

* **gate, equivalent candidates**: two models trained the same way on two bootstrap
  resamples of the dataset's train rows are equivalent by construction; the gate judges
  one against the other on the holdout. ``gate.false_rejection``: how often it does not
  promote (rejected or inconclusive).
* **gate, worse candidates**: a model trained on a resample whose labels are flipped at
  the rate that lowers its holdout AUC by the gate's tolerance (found by a short search
  first). ``gate.false_promotion``: how often the gate promotes it.
* **gate, forgetting**: one slice of the older half of the holdout (the most frequent
  value of the first categorical feature, else the top quartile of the first numeric one)
  is the older frame the candidate must not forget (judged on the newer half), and the
  candidate forgets it: its train rows of that slice get flipped labels at the rate that
  costs 5 AUC points there. ``gate.forgetting_caught``: how often the gate refuses it.
* **canary**: simulated canaries at the reference model's holdout accuracy
  (:func:`ct_assets.monitoring.canary.simulate_canaries`, looked at after every labeled
  request): ``canary.false_rollback`` of an equivalent challenger,
  ``canary.false_promotion`` of one worse by the canary margin, and
  ``canary.median_samples`` to a decision.

Every rate is reported with the runs it is measured on. Plain functions: no Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from ct_assets.data.dataset import LABEL, META_COLUMNS, SPLIT
from ct_assets.monitoring.canary import CanaryConfig, simulate_canaries
from ct_assets.training.evaluation import GateConfig, evaluate_gate
from ct_assets.training.metrics import PRIMARY_METRIC
from ct_assets.training.model import TrainedModel
from ct_assets.training.train import TrainParams, evaluate, train_model

#: AUC points a forgotten slice loses in the forgetting runs.
FORGETTING_DROP = 0.05
#: Flip rates tried when searching the one that costs a stated AUC drop.
FLIP_RATES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
FORGETTING_FRAME = "reservoir"

#: (runs done, runs in all) after each run.
Progress = Callable[[int, int], None]


class CalibrationError(ValueError):
    """The data cannot be calibrated on (no champion dataset, too few rows, one class)."""


@dataclass(frozen=True)
class CalibrationSpec:
    runs: int
    seed: int
    gate: GateConfig
    params: TrainParams
    canary: CanaryConfig
    canary_fraction: float = 0.1


@dataclass(frozen=True)
class _Data:
    train: pl.DataFrame
    holdout: pl.DataFrame
    #: Rows of the forgotten slice among the train rows / the older holdout frame.
    slice_name: str
    in_slice_train: pl.Series
    older: pl.DataFrame
    in_slice_older: pl.Series
    recent: pl.DataFrame


def calibrate(
    dataset: pl.DataFrame, spec: CalibrationSpec, progress: Progress | None = None
) -> dict[str, Any]:
    """Measure the gate's and the canary's error rates on ``dataset`` (a compiled dataset
    with its train/holdout split); see the module docstring for what each rate means."""
    if spec.runs < 1:
        raise CalibrationError("--runs must be at least 1")
    data = _prepare(dataset)
    rng = np.random.default_rng(spec.seed)
    margin = spec.gate.tolerance
    worse_flip, worse_drop = _flip_for_drop(data, spec, margin, rng, in_slice=None)
    forget_flip, forget_drop = _flip_for_drop(
        data, spec, FORGETTING_DROP, rng, in_slice=data.in_slice_train
    )
    rejected = promoted_worse = caught = 0
    drops: list[float] = []
    reference_accuracy: list[float] = []
    for run in range(spec.runs):
        reference = _fit(data.train, spec.params, rng)
        equivalent = _fit(data.train, spec.params, rng)
        worse = _fit(data.train, spec.params, rng, flip=worse_flip)
        forgetting = _fit(data.train, spec.params, rng, flip=forget_flip, only=data.in_slice_train)
        decision = evaluate_gate(equivalent, reference, data.holdout, config=spec.gate).decision
        rejected += not (decision is not None and decision.promote)
        report = evaluate_gate(worse, reference, data.holdout, config=spec.gate)
        promoted_worse += report.decision is not None and report.decision.promote
        drops.append(
            (report.champion or {}).get(PRIMARY_METRIC, math.nan)
            - report.candidate.get(PRIMARY_METRIC, math.nan)
        )
        history = {FORGETTING_FRAME: data.older.filter(data.in_slice_older)}
        forgot = evaluate_gate(forgetting, reference, data.recent, history, config=spec.gate)
        caught += not (forgot.decision is not None and forgot.decision.promote)
        reference_accuracy.append(evaluate(reference, data.holdout).get("accuracy", math.nan))
        if progress is not None:
            progress(run + 1, spec.runs)
    accuracy = float(np.nanmean(reference_accuracy))
    canary_margin = spec.canary.margin
    equivalent_canaries = simulate_canaries(
        spec.runs,
        accuracy,
        accuracy,
        fraction=spec.canary_fraction,
        config=spec.canary,
        seed=spec.seed,
    )
    worse_canaries = simulate_canaries(
        spec.runs,
        accuracy,
        max(0.0, accuracy - canary_margin),
        fraction=spec.canary_fraction,
        config=spec.canary,
        seed=spec.seed + 1,
    )
    runs = spec.runs
    return {
        "gate": {
            "false_rejection": {"rate": rejected / runs, "runs": runs},
            "false_promotion": {
                "rate": promoted_worse / runs,
                "runs": runs,
                "label_flip_rate": worse_flip,
                "auc_drop_searched": worse_drop,
                "auc_drop_measured": float(np.nanmean(drops)),
            },
            "forgetting_caught": {
                "rate": caught / runs,
                "runs": runs,
                "slice": data.slice_name,
                "label_flip_rate": forget_flip,
                "auc_drop_searched": forget_drop,
            },
            "holdout_rows": data.holdout.height,
            "tolerance": margin,
            "confidence": spec.gate.confidence,
        },
        "canary": {
            "false_promotion": {"rate": worse_canaries.promoted / runs, "runs": runs},
            "false_rollback": {"rate": equivalent_canaries.rolled_back / runs, "runs": runs},
            # labeled requests (both arms) to a decision, equivalent challengers
            "median_samples": equivalent_canaries.median_samples,
            "median_samples_worse": worse_canaries.median_samples,
            "median_samples_runs": runs,
            "champion_accuracy": accuracy,
            "margin": canary_margin,
            "alpha": spec.canary.alpha,
            "fraction": spec.canary_fraction,
        },
    }


def _prepare(dataset: pl.DataFrame) -> _Data:
    train = dataset.filter(pl.col(SPLIT) == "train")
    holdout = dataset.filter(pl.col(SPLIT) == "holdout").sort("timestamp", "log_offset")
    if train.height < 100 or holdout.height < 100:
        raise CalibrationError(
            f"{train.height} train and {holdout.height} holdout rows: need at least 100 each"
        )
    if train[LABEL].n_unique() < 2:
        raise CalibrationError("the train rows hold a single class: nothing to compare")
    older, recent = holdout.head(holdout.height // 2), holdout.tail(holdout.height // 2)
    name, in_slice = _forgotten_slice(dataset)
    return _Data(
        train=train,
        holdout=holdout,
        slice_name=name,
        in_slice_train=in_slice(train),
        older=older,
        in_slice_older=in_slice(older),
        recent=recent,
    )


def _forgotten_slice(dataset: pl.DataFrame) -> tuple[str, Callable[[pl.DataFrame], pl.Series]]:
    """The slice to forget: the most frequent value of the first categorical feature, else
    the top quartile of the first numeric feature."""
    features = [c for c in dataset.columns if c not in META_COLUMNS]
    for name in features:
        if dataset.schema[name] == pl.String:
            value = dataset[name].drop_nulls().mode().sort()[0]
            return f"{name}={value}", lambda f, n=name, v=value: f[n] == v
    for name in features:
        if dataset.schema[name].is_numeric():
            edge = float(dataset[name].drop_nulls().quantile(0.75) or 0.0)
            return f"{name} > {edge:.4g}", lambda f, n=name, e=edge: f[n].fill_null(-math.inf) > e
    raise CalibrationError("no feature to slice by")


def _fit(
    train: pl.DataFrame,
    params: TrainParams,
    rng: np.random.Generator,
    *,
    flip: float = 0.0,
    only: pl.Series | None = None,
) -> TrainedModel:
    """A model on a bootstrap resample of ``train``; labels flipped at rate ``flip`` (only
    on the rows of ``only`` when given) to another class."""
    frame = train
    if flip > 0:
        classes = sorted(train[LABEL].cast(pl.String).unique().to_list())
        labels = train[LABEL].cast(pl.String).to_numpy()
        chosen = rng.random(train.height) < flip
        if only is not None:
            chosen &= only.fill_null(False).to_numpy()
        others = rng.integers(1, len(classes), size=train.height)
        index = np.searchsorted(classes, labels)
        flipped = np.asarray(classes, dtype=object)[(index + others) % len(classes)]
        frame = train.with_columns(
            pl.Series(LABEL, np.where(chosen, flipped, labels)).cast(train.schema[LABEL])
        )
    rows = rng.integers(0, frame.height, size=frame.height)
    sample = frame[rows].sort("timestamp", "log_offset")
    return train_model(sample, replace(params, num_threads=1), score_holdout=False).model


def _flip_for_drop(
    data: _Data,
    spec: CalibrationSpec,
    drop: float,
    rng: np.random.Generator,
    *,
    in_slice: pl.Series | None,
    pilots: int = 5,
) -> tuple[float, float]:
    """The label flip rate whose models lose ``drop`` AUC against clean ones (on the whole
    holdout, or on the slice of the older frame), by linear interpolation over a few pilot
    fits per rate; and the drop that rate was measured to cost."""
    frame = data.holdout if in_slice is None else data.older.filter(data.in_slice_older)
    if frame.height < 20 or frame[LABEL].n_unique() < 2:
        raise CalibrationError(f"the slice {data.slice_name} is too small to measure forgetting")
    clean = np.mean([_auc(_fit(data.train, spec.params, rng), frame) for _ in range(pilots)])
    measured = [0.0]
    for rate in FLIP_RATES[1:]:
        aucs = [
            _auc(_fit(data.train, spec.params, rng, flip=rate, only=in_slice), frame)
            for _ in range(pilots)
        ]
        measured.append(float(clean - np.mean(aucs)))
        if measured[-1] >= drop:
            break
    rates = FLIP_RATES[: len(measured)]
    if measured[-1] < drop:
        return rates[-1], measured[-1]
    # first rate reaching the drop, interpolated from the one before
    lo, hi = len(measured) - 2, len(measured) - 1
    share = (drop - measured[lo]) / max(measured[hi] - measured[lo], 1e-9)
    return rates[lo] + share * (rates[hi] - rates[lo]), drop


def _auc(model: TrainedModel, frame: pl.DataFrame) -> float:
    return float(evaluate(model, frame).get(PRIMARY_METRIC, math.nan))

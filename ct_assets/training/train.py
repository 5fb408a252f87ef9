"""LightGBM training: full from scratch, or incremental (continue boosting the champion)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from ct_assets.data.dataset import LABEL, META_COLUMNS, SPLIT
from ct_assets.training.metrics import classification_metrics
from ct_assets.training.model import FeatureSpec, TrainedModel

Mode = Literal["full", "incremental"]


@dataclass(frozen=True)
class TrainParams:
    num_boost_round: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    seed: int = 7
    early_stopping_rounds: int = 30
    validation_fraction: float = 0.15
    num_threads: int = 0

    def lightgbm_params(self, n_classes: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            "num_threads": self.num_threads,
            "is_unbalance": n_classes == 2,
        }
        if n_classes == 2:
            params.update(objective="binary", metric=["auc", "binary_logloss"])
        else:
            params.update(objective="multiclass", num_class=n_classes, metric="multi_logloss")
        return params


@dataclass
class TrainResult:
    model: TrainedModel
    mode: Mode
    holdout_metrics: dict[str, float]
    best_iteration: int
    train_rows: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def feature_spec(frame: pl.DataFrame, params: dict[str, Any]) -> FeatureSpec:
    names = [c for c in frame.columns if c not in META_COLUMNS]
    categories = {
        name: sorted(v for v in frame[name].unique().to_list() if v is not None)
        for name in names
        if frame.schema[name] == pl.String
    }
    classes = sorted(frame[LABEL].cast(pl.String).unique().to_list())
    return FeatureSpec(names, categories, classes, params)


def train_model(
    dataset: pl.DataFrame,
    params: TrainParams,
    mode: Mode = "full",
    champion: TrainedModel | None = None,
    new_after_offset: int | None = None,
) -> TrainResult:
    """Train on the dataset's train split; early-stop on its latest slice; score the holdout.

    ``incremental`` continues boosting ``champion`` on the train rows with
    ``log_offset > new_after_offset`` only. It falls back to ``full`` when there is
    no champion, its inputs differ from the dataset's, or there are no new rows.
    """
    import lightgbm

    started = time.perf_counter()
    notes: list[str] = []
    full_train = dataset.filter(pl.col(SPLIT) == "train").sort(["timestamp", "log_offset"])
    train = full_train
    holdout = dataset.filter(pl.col(SPLIT) == "holdout")
    spec = feature_spec(dataset, {})
    if len(spec.classes) < 2:
        raise ValueError(f"need at least two classes to train; the dataset has {spec.classes}")
    init: lightgbm.Booster | None = None
    if mode == "incremental":
        if champion is None:
            notes.append("incremental requested but there is no champion: full retrain")
            mode = "full"
        elif not champion.spec.compatible_with(spec):
            notes.append("feature schema or classes changed since the champion: full retrain")
            mode = "full"
        else:
            # compatible: same features, categories and classes as the dataset's spec
            init = champion.booster
            if new_after_offset is not None:
                train = full_train.filter(pl.col("log_offset") > new_after_offset)
            if train.height < 10:
                notes.append(f"only {train.height} new rows: full retrain")
                mode, init, train = "full", None, full_train
    lgb_params = params.lightgbm_params(len(spec.classes))
    spec = FeatureSpec(spec.feature_names, spec.categories, spec.classes, lgb_params)
    n_valid = max(1, int(train.height * params.validation_fraction))
    fit, valid = train.head(train.height - n_valid), train.tail(n_valid)
    y_fit = spec.label_indices(fit[LABEL])
    y_valid = spec.label_indices(valid[LABEL])
    fit_set = lightgbm.Dataset(
        spec.matrix(fit),
        label=y_fit,
        feature_name=spec.feature_names,
        categorical_feature=spec.categorical_indices,
        free_raw_data=False,
    )
    valid_set = lightgbm.Dataset(spec.matrix(valid), label=y_valid, reference=fit_set)
    booster = lightgbm.train(
        lgb_params,
        fit_set,
        num_boost_round=params.num_boost_round,
        valid_sets=[valid_set],
        init_model=init,
        keep_training_booster=False,
        callbacks=[lightgbm.early_stopping(params.early_stopping_rounds, verbose=False)],
    )
    model = TrainedModel(booster, spec)
    metrics = evaluate(model, holdout)
    return TrainResult(
        model=model,
        mode=mode,
        holdout_metrics=metrics,
        best_iteration=int(booster.best_iteration or booster.current_iteration()),
        train_rows=fit.height,
        seconds=time.perf_counter() - started,
        notes=notes,
    )


def evaluate(model: TrainedModel, frame: pl.DataFrame) -> dict[str, float]:
    """The model's metrics on labeled rows it may or may not have seen."""
    if frame.height == 0:
        return {}
    known = frame.filter(pl.col(LABEL).cast(pl.String).is_in(model.spec.classes))
    y = model.spec.label_indices(known[LABEL])
    return classification_metrics(np.asarray(y), model.predict_proba(known))

"""LightGBM training: full from scratch, or incremental (continue boosting the champion).

Below ``early_stopping_min_rows`` training rows a model is exactly what plain LightGBM
fits on those rows with the same parameters: every round, every row. On more rows,
early stopping picks the number of rounds on the newest ``validation_fraction`` of them
(the objective's loss alone decides, never fewer than ``min_boost_round`` rounds), and the
model is then fitted on every row with that many rounds, so the newest rows are learned
from too.

Training can checkpoint every few rounds (:class:`~ct_assets.training.checkpoint.Checkpoint`):
a run killed midway then resumes from its last checkpoint, with its early stopping state,
and ends with the model an uninterrupted run would have given.

With ``dask_scheduler`` set (CT_DASK_SCHEDULER), a full training of at least
``dask_min_rows`` rows runs on that dask cluster through ``lightgbm.dask``, its rounds
picked by the same rule; incremental training and checkpoints stay in this process (see
:mod:`ct_assets.training.distributed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets.data.dataset import LABEL, META_COLUMNS, SPLIT
from ct_assets.training.checkpoint import Checkpoint
from ct_assets.training.distributed import BACKEND_DASK, BACKEND_LOCAL, SETTING
from ct_assets.training.early_stopping import EarlyStopping
from ct_assets.training.metrics import classification_metrics
from ct_assets.training.model import FeatureSpec, TrainedModel
from ct_assets.training.resume import job_digest, resume
from ct_assets.uris import scheduler_address_problem

if TYPE_CHECKING:
    import lightgbm

Mode = Literal["full", "incremental"]
#: With num_threads 0 (all cores), smaller trainings use one thread.
ONE_THREAD_BELOW_ROWS = 50_000


@dataclass(frozen=True)
class TrainParams:
    # LightGBM's own defaults: 100 rounds at learning rate 0.1, 31 leaves.
    num_boost_round: int = 100
    learning_rate: float = 0.1
    num_leaves: int = 31
    seed: int = 7
    #: Patience of early stopping (0: never stop early).
    early_stopping_rounds: int = 30
    validation_fraction: float = 0.15
    #: Early stopping only from this many training rows on: a smaller validation slice is
    #: too noisy to pick the number of rounds (a loss that wobbles early stops a model at a
    #: handful of trees), so below it every round is trained on every row.
    early_stopping_min_rows: int = 20_000
    #: Early stopping never keeps fewer rounds than this (capped by num_boost_round).
    min_boost_round: int = 20
    #: 0: all cores, or one below ONE_THREAD_BELOW_ROWS training rows.
    num_threads: int = 0
    # Class imbalance, off by default (plain LightGBM maximises accuracy at the observed
    # class rates): binary uses LightGBM's is_unbalance, multiclass per-row weights
    # inversely proportional to the class frequencies (see class_weights).
    balance_classes: bool = False
    #: A dask scheduler (tcp://host:8786) that full trainings of at least dask_min_rows
    #: rows run on through lightgbm.dask; empty: always in this process.
    dask_scheduler: str = ""
    dask_min_rows: int = 100_000

    def __post_init__(self) -> None:
        address = scheduler_address_problem(self.dask_scheduler)
        checks = [
            (self.num_boost_round >= 1, "num_boost_round must be >= 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.num_leaves >= 2, "num_leaves must be >= 2"),
            (self.early_stopping_rounds >= 0, "early_stopping_rounds must be >= 0"),
            (0 < self.validation_fraction < 1, "validation_fraction must be in (0, 1)"),
            (self.early_stopping_min_rows >= 0, "early_stopping_min_rows must be >= 0"),
            (self.min_boost_round >= 1, "min_boost_round must be >= 1"),
            (address is None, f"dask_scheduler ({SETTING}) {address}"),
            (self.dask_min_rows >= 0, "dask_min_rows must be >= 0"),
        ]
        wrong = [message for ok, message in checks if not ok]
        if wrong:
            raise ValueError("invalid training parameters: " + "; ".join(wrong))

    def stops_early(self, rows: int) -> bool:
        """Whether training on ``rows`` rows picks its rounds by early stopping."""
        return self.early_stopping_rounds > 0 and rows >= max(2, self.early_stopping_min_rows)

    def distributes(self, rows: int) -> bool:
        """Whether a full training on ``rows`` rows runs on the dask cluster."""
        return bool(self.dask_scheduler) and rows >= self.dask_min_rows

    def lightgbm_params(self, n_classes: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            "num_threads": self.num_threads,
            "is_unbalance": n_classes == 2 and self.balance_classes,
        }
        if n_classes == 2:
            # the loss first: early stopping decides by it (AUC is only reported)
            params.update(objective="binary", metric=["binary_logloss", "auc"])
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
    #: The iteration (boosting rounds done, counting the champion's in incremental mode)
    #: of the checkpoint this training resumed from; None if it started from the beginning.
    resumed_from: int | None = None
    #: The early-stopping validation slice's metrics at the kept round (LightGBM names);
    #: empty when training was too small to stop early.
    validation_metrics: dict[str, float] = field(default_factory=dict)
    #: Whether early stopping picked the rounds (then the model was refitted on all rows).
    early_stopped: bool = False
    #: Where the model was trained: ``local`` (this process) or ``dask`` (lightgbm.dask).
    backend: str = BACKEND_LOCAL


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
    *,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 25,
    callbacks: Sequence[Callable[[Any], None]] = (),
    score_holdout: bool = True,
) -> TrainResult:
    """Train on the dataset's train split (see the module's docstring for when early
    stopping picks the rounds); score the holdout.

    ``incremental`` continues boosting ``champion`` on the train rows with
    ``log_offset > new_after_offset`` only. It falls back to ``full`` when there is
    no champion, its inputs differ from the dataset's, or there are no new rows.

    With a ``checkpoint``, the booster and the early stopping state are saved every
    ``checkpoint_every`` rounds; a valid checkpoint of this very job (same rows, labels,
    weights, parameters and starting model) is resumed from, and the checkpoint is
    removed once training succeeded. ``callbacks`` are extra LightGBM callbacks.
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
    if params.num_threads == 0 and train.height < ONE_THREAD_BELOW_ROWS:
        # on a small matrix threads cost more than they give (a 2,000-row model: 0.07 s
        # on one thread, 1-2 s on all of a busy machine's); the model is the same
        lgb_params["num_threads"] = 1
    spec = FeatureSpec(spec.feature_names, spec.categories, spec.classes, lgb_params)
    early = params.stops_early(train.height)
    n_valid = max(1, int(train.height * params.validation_fraction)) if early else 0
    x_all = spec.matrix(train)
    y_all = spec.label_indices(train[LABEL])
    w_all: NDArray[np.float64] | None = None
    if len(spec.classes) > 2 and params.balance_classes:
        w_all = class_weights(y_all, len(spec.classes))
    n_fit = train.height - n_valid

    def rows(part: slice, reference: lightgbm.Dataset | None = None) -> lightgbm.Dataset:
        return lightgbm.Dataset(
            x_all[part],
            label=y_all[part],
            weight=None if w_all is None else w_all[part],
            feature_name=spec.feature_names,
            categorical_feature=spec.categorical_indices,
            free_raw_data=False,
            reference=reference,
        )

    fit_set = rows(slice(0, n_fit))
    valid_sets = [rows(slice(n_fit, None), reference=fit_set)] if early else []

    start = init.current_iteration() if init is not None else 0
    stopper = EarlyStopping(
        params.early_stopping_rounds if early else 0,
        min_rounds=min(params.min_boost_round, params.num_boost_round),
    )
    resumed_from: int | None = None
    backend = BACKEND_LOCAL
    if mode == "full" and params.distributes(train.height):
        if np.unique(y_all[:n_fit]).size < len(spec.classes):
            notes.append("a class is missing from the training rows: trained in this process")
        else:
            backend = BACKEND_DASK
    if backend == BACKEND_DASK:
        from ct_assets.training.distributed import train_distributed

        fitted = train_distributed(
            params.dask_scheduler,
            lgb_params,
            spec,
            x_all,
            y_all,
            w_all,
            n_fit=n_fit,
            rounds=params.num_boost_round,
            stopper=stopper if early else None,
        )
        booster = fitted.booster
        notes.extend(fitted.notes)
        if checkpoint is not None:
            notes.append("distributed training is not checkpointed: a killed run starts over")
    else:
        rounds = params.num_boost_round
        first_model = init
        all_callbacks: list[Callable[[Any], None]] = [*callbacks, stopper]
        if checkpoint is not None:
            job = job_digest(
                mode=mode,
                params=params,
                lgb_params=lgb_params,
                spec=spec,
                arrays=[x_all, y_all, w_all, np.asarray([n_fit])],
                init=init,
            )
            resumed = resume(checkpoint, job, start, params.num_boost_round, stopper, notes)
            if resumed is not None:
                init, resumed_from = resumed, resumed.current_iteration()
                rounds = params.num_boost_round - (resumed_from - start)
                notes.append(f"resumed from checkpoint at iteration {resumed_from}")
            all_callbacks.append(
                checkpoint.callback(
                    checkpoint_every, state=lambda: {"job": job, **stopper.state()}, start=start
                )
            )
        booster = lightgbm.train(
            lgb_params,
            fit_set,
            num_boost_round=rounds,
            valid_sets=valid_sets,
            init_model=init,
            keep_training_booster=False,
            callbacks=all_callbacks,
        )
        if early:
            # the rounds are picked; the model learns from every row, the newest included
            kept = int(booster.best_iteration or booster.current_iteration()) - start
            booster = lightgbm.train(
                lgb_params,
                rows(slice(None)),
                num_boost_round=kept,
                init_model=first_model,
                keep_training_booster=False,
                callbacks=[*callbacks],
            )
    model = TrainedModel(booster, spec)
    # the pipeline scores the holdout once, in the gate (validation_report)
    metrics = evaluate(model, holdout) if score_holdout else {}
    if checkpoint is not None:
        checkpoint.clear()
    return TrainResult(
        model=model,
        mode=mode,
        holdout_metrics=metrics,
        best_iteration=int(booster.current_iteration()),
        train_rows=train.height,
        seconds=time.perf_counter() - started,
        notes=notes,
        resumed_from=resumed_from,
        validation_metrics=stopper.best_metrics(),
        early_stopped=early,
        backend=backend,
    )


def class_weights(labels: NDArray[Any], n_classes: int) -> NDArray[np.float64]:
    """Per-row weights inversely proportional to the frequency of the row's class.

    ``n / (k * count(class))`` with ``k`` the classes present ("balanced"): every present
    class weighs as much in total, and the weights average to 1.
    """
    counts = np.bincount(labels, minlength=n_classes)
    present = counts > 0
    per_class = np.zeros(n_classes, dtype=np.float64)
    per_class[present] = labels.size / (int(present.sum()) * counts[present])
    weights: NDArray[np.float64] = per_class[np.asarray(labels, dtype=np.intp)]
    return weights


def evaluate(model: TrainedModel, frame: pl.DataFrame) -> dict[str, float]:
    """The model's metrics on labeled rows it may or may not have seen."""
    if frame.height == 0:
        return {}
    known = frame.filter(pl.col(LABEL).cast(pl.String).is_in(model.spec.classes))
    y = model.spec.label_indices(known[LABEL])
    return classification_metrics(np.asarray(y), model.predict_proba(known))

"""LightGBM training: full from scratch, or incremental (continue boosting the champion).

Training can checkpoint every few rounds (:class:`~ct_assets.training.checkpoint.Checkpoint`):
a run killed midway then resumes from its last checkpoint, with its early stopping state,
and ends with the model an uninterrupted run would have given.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

from ct_assets.data.dataset import LABEL, META_COLUMNS, SPLIT
from ct_assets.training.checkpoint import Checkpoint
from ct_assets.training.metrics import classification_metrics
from ct_assets.training.model import FeatureSpec, TrainedModel

if TYPE_CHECKING:
    import lightgbm

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
    # Class imbalance: binary uses LightGBM's is_unbalance, multiclass per-row weights
    # inversely proportional to the class frequencies (see class_weights).
    balance_classes: bool = True

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
    #: The iteration (boosting rounds done, counting the champion's in incremental mode)
    #: of the checkpoint this training resumed from; None if it started from the beginning.
    resumed_from: int | None = None
    #: The early-stopping validation slice's metrics at the kept round (LightGBM names).
    validation_metrics: dict[str, float] = field(default_factory=dict)


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
    """Train on the dataset's train split; early-stop on its latest slice; score the holdout.

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
    spec = FeatureSpec(spec.feature_names, spec.categories, spec.classes, lgb_params)
    n_valid = max(1, int(train.height * params.validation_fraction))
    fit, valid = train.head(train.height - n_valid), train.tail(n_valid)
    x_fit, x_valid = spec.matrix(fit), spec.matrix(valid)
    y_fit = spec.label_indices(fit[LABEL])
    y_valid = spec.label_indices(valid[LABEL])
    w_fit: NDArray[np.float64] | None = None
    w_valid: NDArray[np.float64] | None = None
    if len(spec.classes) > 2 and params.balance_classes:
        weights = class_weights(np.concatenate([y_fit, y_valid]), len(spec.classes))
        w_fit, w_valid = weights[: fit.height], weights[fit.height :]
    fit_set = lightgbm.Dataset(
        x_fit,
        label=y_fit,
        weight=w_fit,
        feature_name=spec.feature_names,
        categorical_feature=spec.categorical_indices,
        free_raw_data=False,
    )
    valid_set = lightgbm.Dataset(x_valid, label=y_valid, weight=w_valid, reference=fit_set)

    start = init.current_iteration() if init is not None else 0
    stopper = EarlyStopping(params.early_stopping_rounds)
    rounds = params.num_boost_round
    resumed_from: int | None = None
    all_callbacks: list[Callable[[Any], None]] = [*callbacks, stopper]
    if checkpoint is not None:
        job = _job_digest(
            mode=mode,
            params=params,
            lgb_params=lgb_params,
            spec=spec,
            arrays=[x_fit, y_fit, w_fit, x_valid, y_valid, w_valid],
            init=init,
        )
        resumed = _resume(checkpoint, job, start, params.num_boost_round, stopper, notes)
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
        valid_sets=[valid_set],
        init_model=init,
        keep_training_booster=False,
        callbacks=all_callbacks,
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
        best_iteration=int(booster.best_iteration or booster.current_iteration()),
        train_rows=fit.height,
        seconds=time.perf_counter() - started,
        notes=notes,
        resumed_from=resumed_from,
        validation_metrics=stopper.best_metrics(),
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


class EarlyStopping:
    """LightGBM's ``early_stopping`` callback, whose state can be saved and restored.

    Same rule as ``lightgbm.early_stopping(rounds)``: stop when any validation metric has
    not improved for ``rounds`` rounds, keeping that metric's best iteration; at the last
    round, keep the first metric's. Iterations are absolute (they count the trees of the
    model boosting started from), so a resumed run stops where an uninterrupted one would.
    """

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        # instance attributes: lightgbm.train sets an order on callbacks without one
        self.order = 30
        self.before_iteration = False
        self.maximize: list[bool] = []
        self.best_score: list[float] = []
        self.best_iter: list[int] = []
        self.best_results: list[list[tuple[str, str, float, bool]]] = []
        self.last_iteration: int | None = None

    def best_metrics(self) -> dict[str, float]:
        """Every validation metric at the best round of the first one (what the model
        keeps), as LightGBM names them (``auc``, ``binary_logloss`` ...)."""
        if not self.best_results:
            return {}
        return {str(r[1]): float(r[2]) for r in self.best_results[0]}

    def state(self) -> dict[str, Any]:
        """JSON-serialisable. Summary fields: the metric closest to stopping training (most
        rounds without improvement), its best (0-based) iteration and score."""
        summary: dict[str, Any] = {
            "metric": None,
            "best_iteration": None,
            "best_score": None,
            "rounds_without_improvement": 0,
        }
        if self.last_iteration is not None and self.best_iter:
            waits = [self.last_iteration - best for best in self.best_iter]
            i = waits.index(max(waits))
            summary.update(
                # best_results[i]: every metric's result at metric i's best round
                metric=self.best_results[i][i][1] if self.best_results else None,
                best_iteration=self.best_iter[i],
                best_score=self.best_score[i],
                rounds_without_improvement=waits[i],
            )
        return {
            **summary,
            "early_stopping": {
                "rounds": self.rounds,
                "last_iteration": self.last_iteration,
                "maximize": self.maximize,
                "best_score": self.best_score,
                "best_iter": self.best_iter,
                "best_results": [[list(r) for r in results] for results in self.best_results],
            },
        }

    def restore(self, state: Mapping[str, Any], iteration: int) -> None:
        """Continue from ``state()`` of a run whose last round was ``iteration - 1``."""
        try:
            saved = state["early_stopping"]
            rounds = saved["rounds"]
            last = saved["last_iteration"]
            maximize = [bool(m) for m in saved["maximize"]]
            best_score = [float(v) for v in saved["best_score"]]
            best_iter = [int(i) for i in saved["best_iter"]]
            best_results = [
                [(str(d), str(m), float(v), bool(h)) for d, m, v, h in results]
                for results in saved["best_results"]
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"early stopping state is invalid ({error!r})") from error
        n = len(maximize)
        if rounds != self.rounds or not isinstance(last, int) or (n == 0 and rounds > 0):
            raise ValueError("early stopping state is of another configuration")
        if not (len(best_score) == len(best_iter) == len(best_results) == n):
            raise ValueError("early stopping state is inconsistent")
        if last != iteration - 1:
            raise ValueError(f"early stopping state is of iteration {last}, not {iteration - 1}")
        self.maximize, self.best_score, self.best_iter = maximize, best_score, best_iter
        self.best_results, self.last_iteration = best_results, last

    def __call__(self, env: lightgbm.callback.CallbackEnv) -> None:
        import lightgbm

        self.last_iteration = env.iteration
        if self.rounds <= 0:
            return
        results = [
            (str(r[0]), str(r[1]), float(r[2]), bool(r[3]))
            for r in env.evaluation_result_list or []
        ]
        if not results:
            raise ValueError("early stopping needs at least one validation metric")
        if not self.maximize:
            self.maximize = [r[3] for r in results]
            self.best_score = [float("-inf") if r[3] else float("inf") for r in results]
            self.best_iter = [0] * len(results)
        elif len(results) != len(self.maximize):
            raise RuntimeError("the validation metrics changed during training")
        first_time = not self.best_results
        for i, (_, _, value, _) in enumerate(results):
            better = value > self.best_score[i] if self.maximize[i] else value < self.best_score[i]
            if first_time or better:
                self.best_score[i] = value
                self.best_iter[i] = env.iteration
                if first_time:
                    self.best_results.append(results)
                else:
                    self.best_results[i] = results
            stop = env.iteration - self.best_iter[i] >= self.rounds
            if stop or env.iteration == env.end_iteration - 1:
                raise lightgbm.callback.EarlyStopException(
                    self.best_iter[i], list(self.best_results[i])
                )


def _job_digest(
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


def _resume(
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


def evaluate(model: TrainedModel, frame: pl.DataFrame) -> dict[str, float]:
    """The model's metrics on labeled rows it may or may not have seen."""
    if frame.height == 0:
        return {}
    known = frame.filter(pl.col(LABEL).cast(pl.String).is_in(model.spec.classes))
    y = model.spec.label_indices(known[LABEL])
    return classification_metrics(np.asarray(y), model.predict_proba(known))

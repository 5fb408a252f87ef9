"""Full training on a dask.distributed cluster through ``lightgbm.dask`` (CT_DASK_SCHEDULER).

When a scheduler is configured and a full training has at least ``CT_DASK_MIN_ROWS``
rows, :func:`~ct_assets.training.train.train_model` trains through
``lightgbm.dask.DaskLGBMClassifier``: the rows are split into one part per worker
(interleaved, so each part spans the whole time range), each worker holds its part, and
LightGBM's data-parallel learner grows every tree from all of them. The result is a plain
``lightgbm.Booster`` in this process, so the model, its MLflow logging, signature, lineage
tags, the gate and serving are those of a model trained here.

Same parameters and number of rounds, picked the same way: when early stopping applies
(at least ``CT_EARLY_STOPPING_MIN_ROWS`` rows), the cluster trains every one of
``num_boost_round`` rounds on the older rows; this process then scores that model on the
newest ``validation_fraction`` of the rows tree by tree (the curve LightGBM would have
recorded), and the same :class:`~ct_assets.training.early_stopping.EarlyStopping` rule
(patience, minimum rounds, the loss alone decides) picks the rounds; the cluster then
trains that many rounds on every row. Patience saves no time here: the first training
runs every round.

What stays in this process: incremental training (continuing the champion's booster),
checkpoints (a killed distributed training starts over), extra LightGBM callbacks, and a
training whose rows lack one of the dataset's classes. ``lightgbm.dask``'s model is not
bit for bit the single-process one (each worker bins its own rows): predictions agree
closely, not exactly.

dask, distributed and lightgbm are imported inside functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ct_assets.training.early_stopping import EarlyStopping
from ct_assets.training.model import FeatureSpec
from ct_assets.uris import scheduler_address_problem

if TYPE_CHECKING:
    import lightgbm
    from distributed import Client

SETTING = "CT_DASK_SCHEDULER"
BACKEND_LOCAL = "local"
BACKEND_DASK = "dask"
#: How long to wait for the scheduler to answer, and for a first worker to join it.
CONNECT_TIMEOUT_SECONDS = 10.0
#: LightGBM's clipping of probabilities in its log losses.
_EPSILON = 1e-15


class DistributedTrainingError(RuntimeError):
    """The dask cluster cannot train: no scheduler answers, it has no workers, or it failed."""


@dataclass
class DistributedFit:
    """What the cluster trained: the booster (every row, the picked rounds), how many
    workers held the rows, and what to tell about it."""

    booster: lightgbm.Booster
    workers: int
    notes: list[str] = field(default_factory=list)


def train_distributed(
    address: str,
    lgb_params: Mapping[str, Any],
    spec: FeatureSpec,
    x: NDArray[Any],
    y: NDArray[Any],
    weights: NDArray[np.float64] | None,
    *,
    n_fit: int,
    rounds: int,
    stopper: EarlyStopping | None,
) -> DistributedFit:
    """Train on the cluster at ``address``. With a ``stopper``, rows ``[:n_fit]`` train
    every round, the rest pick the rounds (``stopper`` holds the kept round's metrics
    afterwards), then every row trains that many rounds; without, every row trains
    ``rounds`` rounds."""
    with _connect(address) as client:
        workers = _workers(client, address)
        kept = rounds
        if stopper is not None:
            fit_w = None if weights is None else weights[:n_fit]
            first = _fit(client, workers, lgb_params, spec, x[:n_fit], y[:n_fit], fit_w, rounds)
            valid_w = None if weights is None else weights[n_fit:]
            kept = pick_rounds(first, x[n_fit:], y[n_fit:], valid_w, lgb_params, stopper)
        booster = _fit(client, workers, lgb_params, spec, x, y, weights, kept)
    note = f"trained with lightgbm.dask on {len(workers)} workers of {address}"
    if stopper is not None:
        note += f" ({kept} of {rounds} rounds kept by early stopping)"
    return DistributedFit(booster, len(workers), [note])


def pick_rounds(
    booster: lightgbm.Booster,
    x: NDArray[Any],
    y: NDArray[Any],
    weights: NDArray[np.float64] | None,
    lgb_params: Mapping[str, Any],
    stopper: EarlyStopping,
) -> int:
    """The rounds ``stopper`` keeps on the validation rows: it sees the metrics of each
    round in turn, as during local training."""
    import lightgbm

    total = booster.current_iteration()
    names = _metric_names(lgb_params)
    for iteration, values in enumerate(validation_curve(booster, x, y, weights, names)):
        results: list[Any] = [
            ("valid_0", name, value, name == "auc")
            for name, value in zip(names, values, strict=True)
        ]
        env = lightgbm.callback.CallbackEnv(
            model=booster,
            params=dict(lgb_params),
            iteration=iteration,
            begin_iteration=0,
            end_iteration=total,
            evaluation_result_list=results,
        )
        try:
            stopper(env)
        except lightgbm.callback.EarlyStopException as stop:
            return int(stop.best_iteration) + 1
    return total


def validation_curve(
    booster: lightgbm.Booster,
    x: NDArray[Any],
    y: NDArray[Any],
    weights: NDArray[np.float64] | None,
    metrics: list[str],
) -> Iterator[list[float]]:
    """The ``metrics`` (LightGBM's ``binary_logloss``, ``auc``, ``multi_logloss``) of the
    model's first 1, 2, ... trees on the rows, one list per round: LightGBM's own
    evaluation of a validation set, computed from each tree's raw scores."""
    raw: NDArray[np.float64] | None = None
    labels = np.asarray(y, dtype=int)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=float)
    for iteration in range(booster.current_iteration()):
        tree = np.asarray(
            booster.predict(x, start_iteration=iteration, num_iteration=1, raw_score=True),
            dtype=float,
        )
        raw = tree if raw is None else raw + tree
        yield [_metric(name, raw, labels, w) for name in metrics]


def _metric(name: str, raw: NDArray[np.float64], y: NDArray[Any], w: NDArray[Any]) -> float:
    if name == "binary_logloss":
        p = 1.0 / (1.0 + np.exp(-raw))
        p_label = np.where(y > 0, p, 1.0 - p)
        return float(np.sum(-np.log(np.maximum(p_label, _EPSILON)) * w) / np.sum(w))
    if name == "multi_logloss":
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        p_label = (shifted / shifted.sum(axis=1, keepdims=True))[np.arange(len(y)), y]
        return float(np.sum(-np.log(np.maximum(p_label, _EPSILON)) * w) / np.sum(w))
    if name == "auc":
        from sklearn.metrics import roc_auc_score

        if np.unique(y).size < 2:
            return 1.0  # LightGBM's value when one class only is present
        return float(roc_auc_score(y, raw, sample_weight=w))
    raise ValueError(f"no distributed early stopping on metric {name!r}")


def _metric_names(lgb_params: Mapping[str, Any]) -> list[str]:
    metric = lgb_params.get("metric", [])
    return [metric] if isinstance(metric, str) else list(metric)


@contextmanager
def _connect(address: str) -> Iterator[Client]:
    problem = scheduler_address_problem(address)
    if problem is not None:
        raise DistributedTrainingError(f"{SETTING} {problem}, got {address!r}")
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_SECONDS, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise DistributedTrainingError(
            f"{SETTING}={address}: no dask scheduler answered within "
            f"{CONNECT_TIMEOUT_SECONDS:g} s ({error})"
        ) from error
    try:
        with client.as_current():  # lightgbm.dask finds the client it waits on here
            yield client
    except (OSError, TimeoutError) as error:
        raise DistributedTrainingError(
            f"{SETTING}={address}: the dask cluster failed during training ({error!r})"
        ) from error
    finally:
        client.close()


def _workers(client: Client, address: str) -> list[str]:
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError) as error:
        raise DistributedTrainingError(
            f"{SETTING}={address}: the dask scheduler has no workers "
            f"(none joined within {CONNECT_TIMEOUT_SECONDS:g} s)"
        ) from error
    return sorted(client.ncores())


def _fit(
    client: Client,
    workers: list[str],
    lgb_params: Mapping[str, Any],
    spec: FeatureSpec,
    x: NDArray[Any],
    y: NDArray[Any],
    weights: NDArray[np.float64] | None,
    rounds: int,
) -> lightgbm.Booster:
    """``rounds`` rounds of ``lightgbm.dask`` on the rows, one interleaved part per worker
    (scattered to it); the booster brought back into this process."""
    import lightgbm
    from lightgbm.dask import DaskLGBMClassifier

    n = max(1, min(len(workers), len(y)))
    x_data = _scattered(client, workers, [x[i::n] for i in range(n)])
    y_data = _scattered(client, workers, [y[i::n] for i in range(n)])
    w_data = None
    if weights is not None:
        w_data = _scattered(client, workers, [weights[i::n] for i in range(n)])
    # lightgbm.dask sets the threads of each worker and the class count itself
    params = {k: v for k, v in lgb_params.items() if k not in ("num_threads", "num_class")}
    model = DaskLGBMClassifier(client=client, n_estimators=rounds, **params)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parameter .* will be ignored")
        model.fit(
            x_data,
            y_data,
            sample_weight=w_data,
            feature_name=list(spec.feature_names),
            categorical_feature=spec.categorical_indices,
        )
    # a fresh booster from the model text: no trace of the cluster's network settings
    return lightgbm.Booster(model_str=model.booster_.model_to_string())


def _scattered(client: Client, workers: list[str], parts: list[NDArray[Any]]) -> Any:
    """A dask array of ``parts``, part ``i`` held by worker ``i``."""
    import dask.array as da

    chunks = []
    for i, part in enumerate(parts):
        data = np.ascontiguousarray(part)
        future = client.scatter(data, workers=[workers[i % len(workers)]], hash=False)
        chunks.append(da.from_delayed(future, shape=data.shape, dtype=data.dtype))
    return da.concatenate(chunks)

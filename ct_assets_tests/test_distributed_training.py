"""Training on a dask.distributed cluster (CT_DASK_SCHEDULER) through lightgbm.dask.

A real ``distributed.LocalCluster`` (two worker processes, one thread each) on loopback:
the distributed model is close to the single-process one on the same rows, its rounds are
picked by the same early stopping rule (whose validation curve is LightGBM's own), the
retrain job registers it with ``ct.training_backend=dask``, a scheduler that is down fails
the run naming the setting and leaves the champion where it was, and small or incremental
trainings never reach for the cluster.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.registry import CHAMPION, TAG_TRAINING_BACKEND, Registry
from ct_assets.settings import Settings, SettingsError
from ct_assets.training.distributed import (
    BACKEND_DASK,
    BACKEND_LOCAL,
    DistributedTrainingError,
    pick_rounds,
    validation_curve,
)
from ct_assets.training.early_stopping import EarlyStopping
from ct_assets.training.model import TrainedModel
from ct_assets.training.train import TrainParams, train_model
from ct_assets.uris import scheduler_address_problem

from .conftest import dataset_frame, ingest, simulated_events

PARAMS = TrainParams(num_boost_round=60, num_threads=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _down_scheduler() -> str:
    """The address of a port nothing listens on."""
    return f"tcp://127.0.0.1:{_free_port()}"


def _binary(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.normal(size=rows) > 0).astype(int)
    return x, y


def _multiclass_frame(rows: int, seed: int = 1) -> pl.DataFrame:
    """Three unbalanced classes and a categorical feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    colour = rng.choice(["red", "green", "blue"], size=rows)
    score = x[:, 0] + np.where(colour == "red", 1.0, 0.0) + 0.5 * rng.normal(size=rows)
    y = np.digitize(score, [0.3, 1.3])
    frame = dataset_frame(x, y, holdout=rows // 5)
    return frame.with_columns(pl.Series("colour", colour))


# --- without a cluster --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("", True),
        ("tcp://127.0.0.1:8786", True),
        ("tls://scheduler.internal:8786", True),
        ("tcp://[::1]:8786", True),
        ("127.0.0.1:8786", False),
        ("tcp://127.0.0.1", False),
        ("http://127.0.0.1:8786", False),
        ("tcp://127.0.0.1:99999", False),
        ("tcp://user:pw@host:8786", False),
        ("tcp://host:8786/path", False),
    ],
)
def test_scheduler_addresses(address: str, ok: bool) -> None:
    assert (scheduler_address_problem(address) is None) is ok


def test_a_bad_scheduler_address_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"CT_DASK_SCHEDULER must be .*tcp://host:port"):
        Settings.from_env({"CT_DASK_SCHEDULER": "localhost:8786"})
    with pytest.raises(SettingsError, match="CT_DASK_MIN_ROWS"):
        Settings.from_env({"CT_DASK_MIN_ROWS": "-1"})
    settings = Settings.from_env(
        {"CT_DASK_SCHEDULER": "tcp://127.0.0.1:8786", "CT_DASK_MIN_ROWS": "5000"}
    )
    assert (settings.dask_scheduler, settings.dask_min_rows) == ("tcp://127.0.0.1:8786", 5000)
    assert Settings().dask_scheduler == ""
    with pytest.raises(ValueError, match=r"dask_scheduler \(CT_DASK_SCHEDULER\) must be"):
        TrainParams(dask_scheduler="http://127.0.0.1:8786")


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_the_validation_curve_is_lightgbms_own_evaluation(kind: str) -> None:
    """The curve distributed early stopping decides on equals what LightGBM records on
    the same validation rows, round by round (weights and categories included)."""
    import lightgbm

    from ct_assets.training.train import class_weights, feature_spec

    frame = (
        dataset_frame(*_binary(6000), holdout=0) if kind == "binary" else _multiclass_frame(6000)
    )
    spec = feature_spec(frame, {})
    params = PARAMS.lightgbm_params(len(spec.classes))
    x, y = spec.matrix(frame), spec.label_indices(frame["label"])
    w = class_weights(y, len(spec.classes)) if kind == "multiclass" else None
    fit, valid = slice(0, 5000), slice(5000, None)

    def data(part: slice, reference: Any = None) -> Any:
        return lightgbm.Dataset(
            x[part],
            label=y[part],
            weight=None if w is None else w[part],
            categorical_feature=spec.categorical_indices,
            reference=reference,
        )

    train_set = data(fit)
    recorded: dict[str, dict[str, list[float]]] = {}
    booster = lightgbm.train(
        params,
        train_set,
        num_boost_round=40,
        valid_sets=[data(valid, train_set)],
        callbacks=[lightgbm.record_evaluation(recorded)],
    )
    names = list(recorded["valid_0"])
    assert names == (["binary_logloss", "auc"] if kind == "binary" else ["multi_logloss"])
    weights = None if w is None else w[valid]
    curve = np.array(list(validation_curve(booster, x[valid], y[valid], weights, names)))
    expected = np.array([recorded["valid_0"][name] for name in names]).T
    assert curve.shape == expected.shape == (40, len(names))
    # LightGBM keeps weights as float32: equal to about 1e-9
    np.testing.assert_allclose(curve, expected, rtol=1e-7, atol=1e-12)


def test_the_rounds_are_picked_as_local_early_stopping_picks_them() -> None:
    """Early stopping during local training, and the same rule replayed on a model that
    trained every round, keep the same number of rounds."""
    import lightgbm

    x, y = _binary(8000, seed=3)
    params = {**PARAMS.lightgbm_params(2), "learning_rate": 0.3}
    fit, valid = slice(0, 6000), slice(6000, None)
    train_set = lightgbm.Dataset(x[fit], label=y[fit])
    valid_set = lightgbm.Dataset(x[valid], label=y[valid], reference=train_set)
    local_stop = EarlyStopping(5, min_rounds=3)
    stopped = lightgbm.train(params, train_set, 200, valid_sets=[valid_set], callbacks=[local_stop])
    every_round = lightgbm.train(params, train_set, 200)
    replayed = EarlyStopping(5, min_rounds=3)
    kept = pick_rounds(every_round, x[valid], y[valid], None, params, replayed)
    assert 3 <= kept < 200, "the test needs a curve that stops early"
    assert kept == stopped.best_iteration
    assert replayed.best_metrics() == pytest.approx(local_stop.best_metrics(), rel=1e-9)


def test_small_and_incremental_trainings_never_reach_for_the_cluster() -> None:
    """Below CT_DASK_MIN_ROWS, and in incremental mode, training stays in the process: the
    configured scheduler is down, and nothing fails."""
    frame = dataset_frame(*_binary(3000), holdout=600)
    params = dataclasses.replace(PARAMS, dask_scheduler=_down_scheduler(), dask_min_rows=5000)
    small = train_model(frame, params)
    assert small.backend == BACKEND_LOCAL and small.mode == "full"
    assert small.model.booster.current_iteration() == PARAMS.num_boost_round
    anywhere = dataclasses.replace(params, dask_min_rows=0)
    more = train_model(frame, anywhere, "incremental", small.model, new_after_offset=1200)
    assert more.mode == "incremental" and more.backend == BACKEND_LOCAL


def test_a_scheduler_that_is_down_fails_training_naming_the_setting() -> None:
    frame = dataset_frame(*_binary(3000), holdout=600)
    address = _down_scheduler()
    params = dataclasses.replace(PARAMS, dask_scheduler=address, dask_min_rows=0)
    with pytest.raises(DistributedTrainingError) as caught:
        train_model(frame, params)
    assert f"CT_DASK_SCHEDULER={address}: no dask scheduler answered" in str(caught.value)


# --- on a LocalCluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    ) as cluster:
        yield str(cluster.scheduler_address)


@pytest.mark.slow
def test_the_distributed_model_is_close_to_the_single_process_one(
    scheduler: str, tmp_path: Path
) -> None:
    """Same rows, parameters and early stopping rule on two workers: the model is a plain
    Booster that saves and loads like any other, and predicts within a small tolerance of
    single-process LightGBM (not identically: each worker bins its own rows)."""
    import lightgbm

    from ct_assets.training.metrics import PRIMARY_METRIC

    frame = dataset_frame(*_binary(30_000), holdout=6000)
    params = dataclasses.replace(PARAMS, num_boost_round=150, early_stopping_min_rows=0)
    local = train_model(frame, params)
    distributed = train_model(
        frame, dataclasses.replace(params, dask_scheduler=scheduler, dask_min_rows=1000)
    )
    assert (local.backend, distributed.backend) == (BACKEND_LOCAL, BACKEND_DASK)
    assert distributed.early_stopped and distributed.mode == "full"
    assert set(distributed.validation_metrics) == {"binary_logloss", "auc"}
    assert params.min_boost_round <= distributed.best_iteration <= params.num_boost_round
    assert any("lightgbm.dask on 2 workers" in note for note in distributed.notes)
    assert isinstance(distributed.model.booster, lightgbm.Booster)
    assert distributed.model.spec == local.model.spec

    ours, theirs = local.holdout_metrics, distributed.holdout_metrics
    assert abs(ours["accuracy"] - theirs["accuracy"]) <= 0.02
    assert abs(ours[PRIMARY_METRIC] - theirs[PRIMARY_METRIC]) <= 0.01
    holdout = frame.filter(pl.col("split") == "holdout")
    agree = np.mean(np.array(local.model.predict(holdout)) == distributed.model.predict(holdout))
    assert agree >= 0.95

    loaded = TrainedModel.load(distributed.model.save(tmp_path / "model"))
    np.testing.assert_array_equal(
        loaded.predict_proba(holdout), distributed.model.predict_proba(holdout)
    )


@pytest.mark.slow
def test_multiclass_weights_and_categories_train_on_the_cluster(scheduler: str) -> None:
    frame = _multiclass_frame(12_000)
    params = dataclasses.replace(PARAMS, balance_classes=True)
    local = train_model(frame, params)
    distributed = train_model(
        frame, dataclasses.replace(params, dask_scheduler=scheduler, dask_min_rows=1000)
    )
    assert distributed.backend == BACKEND_DASK and not distributed.early_stopped
    assert distributed.best_iteration == params.num_boost_round
    assert distributed.model.spec.categories == {"colour": ["blue", "green", "red"]}
    holdout = frame.filter(pl.col("split") == "holdout")
    assert distributed.model.predict_proba(holdout).shape == (holdout.height, 3)
    assert abs(local.holdout_metrics["accuracy"] - distributed.holdout_metrics["accuracy"]) <= 0.03


@pytest.mark.slow
def test_the_retrain_job_trains_on_the_cluster_and_a_down_one_fails_the_run(
    scheduler: str, settings: Settings
) -> None:
    """A first champion trained in the process; a retrain whose scheduler is down fails at
    candidate_model naming CT_DASK_SCHEDULER, registering nothing and leaving the champion;
    the same retrain on the LocalCluster registers a version tagged
    ct.training_backend=dask that the gate then judges."""
    events = simulated_events(5000, drift_at=0.6)
    registry = Registry.from_settings(settings)
    with dg.instance_for_test() as instance:
        ingest(settings, events[:3000])
        job = build_definitions(settings).resolve_job_def(keys.RETRAIN_JOB)
        assert job.execute_in_process(instance=instance).success
        first = registry.alias(CHAMPION)
        assert first is not None and first.tags[TAG_TRAINING_BACKEND] == BACKEND_LOCAL
        versions = set(registry.versions())

        ingest(settings, events[3000:])
        down = dataclasses.replace(settings, dask_scheduler=_down_scheduler(), dask_min_rows=1000)
        failed = (
            build_definitions(down)
            .resolve_job_def(keys.RETRAIN_JOB)
            .execute_in_process(instance=instance, raise_on_error=False)
        )
        assert not failed.success
        failure = next(
            e for e in failed.all_events if e.is_step_failure and e.step_key == "candidate_model"
        )
        assert "CT_DASK_SCHEDULER=" in failure.step_failure_data.error.to_string()
        assert registry.alias(CHAMPION) == first
        assert set(registry.versions()) == versions

        on_cluster = dataclasses.replace(settings, dask_scheduler=scheduler, dask_min_rows=1000)
        result = (
            build_definitions(on_cluster)
            .resolve_job_def(keys.RETRAIN_JOB)
            .execute_in_process(instance=instance)
        )
        assert result.success
        new = [v for k, v in registry.versions().items() if k not in versions]
        assert len(new) == 1
        version = new[0]
        assert version.tags[TAG_TRAINING_BACKEND] == BACKEND_DASK
        run = registry.client.get_run(version.run_id)
        assert run.data.tags[TAG_TRAINING_BACKEND] == BACKEND_DASK
        candidate = next(
            e.materialization
            for e in result.all_events
            if e.is_step_materialization and e.asset_key.to_user_string() == keys.CANDIDATE_MODEL
        )
        assert candidate.metadata["training_backend"].value == BACKEND_DASK
        assert result.is_node_success(keys.VALIDATION_REPORT)
        model = registry.load_model(version.version)
        assert model.predict_proba(pl.DataFrame({"x0": [0.1]})).shape[0] == 1

"""Checkpointed training: a killed run resumes to the same model; bad or foreign checkpoints
are ignored; class imbalance of multiclass datasets is weighted. Real LightGBM throughout."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import polars as pl
import pytest

from ct_assets.training.checkpoint import (
    STATE_FILE,
    Checkpoint,
    checkpoint_key,
    checkpoints_root,
)
from ct_assets.training.early_stopping import EarlyStopping
from ct_assets.training.train import (
    TrainParams,
    TrainResult,
    class_weights,
    train_model,
)

REPO = Path(__file__).resolve().parents[1]
START = datetime(2024, 1, 1, tzinfo=UTC)
EVERY = 5
# Early stopping well before num_boost_round: the stop itself must survive a resume. On
# this small dataset only because early stopping is asked for from the first row on.
PARAMS = TrainParams(
    num_boost_round=300,
    learning_rate=0.1,
    early_stopping_rounds=20,
    early_stopping_min_rows=0,
    min_boost_round=1,
    num_threads=1,
    balance_classes=True,
)


def make_dataset(rows: int = 2000, seed: int = 3, noise: float = 0.3) -> pl.DataFrame:
    """A dataset frame as compile_dataset makes them: meta columns, then features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    logit = 1.2 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(scale=noise, size=rows)
    holdout = rows // 5
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(rows)],
            "log_offset": np.arange(rows),
            "timestamp": [START + timedelta(minutes=i) for i in range(rows)],
            "label": (logit > 0).astype(int).astype(str),
            "split": ["train"] * (rows - holdout) + ["holdout"] * holdout,
            **{f"x{j}": x[:, j] for j in range(5)},
            "channel": rng.choice(["app", "store", "web"], size=rows),
        }
    )


@pytest.fixture(scope="module")
def dataset() -> pl.DataFrame:
    return make_dataset()


@pytest.fixture(scope="module")
def reference(dataset: pl.DataFrame) -> TrainResult:
    """The uninterrupted training every resumed one must reproduce."""
    result = train_model(dataset, PARAMS)
    # the run stops early, and there is a checkpoint between its best round and its stop
    assert after_best(result) < result.best_iteration + PARAMS.early_stopping_rounds
    assert result.best_iteration + PARAMS.early_stopping_rounds < PARAMS.num_boost_round
    return result


def after_best(result: TrainResult) -> int:
    """The first checkpoint iteration after the best one: patience is being used up there."""
    return (result.best_iteration // EVERY + 1) * EVERY


class Crash(Exception):
    """A training run dying midway."""


def crash_at(iteration: int) -> Callable[[Any], None]:
    def callback(env: Any) -> None:
        if env.iteration == iteration:
            raise Crash(iteration)

    return callback


def crashed_run(
    frame: pl.DataFrame, params: TrainParams, checkpoint: Checkpoint, at: int, **kwargs: Any
) -> None:
    with pytest.raises(Crash):
        train_model(
            frame,
            params,
            checkpoint=checkpoint,
            checkpoint_every=EVERY,
            callbacks=[crash_at(at)],
            **kwargs,
        )


def assert_same_model(result: TrainResult, expected: TrainResult, frame: pl.DataFrame) -> None:
    assert result.best_iteration == expected.best_iteration
    booster, other = result.model.booster, expected.model.booster
    assert booster.current_iteration() == other.current_iteration()
    # exactly the same trees, hence exactly the same predictions
    assert np.array_equal(result.model.predict_proba(frame), expected.model.predict_proba(frame))
    # the same text too, but for the parameters section's num_iterations: a resumed run
    # records the rounds it had left
    assert trees(booster) == trees(other)
    assert result.holdout_metrics == expected.holdout_metrics


def trees(booster: lightgbm.Booster) -> str:
    """The model text up to its parameters: trees, feature names, importances."""
    text = booster.model_to_string()
    assert "\nparameters:\n" in text
    return text.split("\nparameters:\n")[0]


# --- a killed process resumes -----------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import polars as pl

    from ct_assets.training.checkpoint import Checkpoint
    from ct_assets.training.train import TrainParams, train_model

    data, folder, key, params, slow_from, every = sys.argv[1:7]

    def slow(env):
        # fast up to the checkpoint awaited, then slow: the kill lands before the end
        if env.iteration >= int(slow_from):
            time.sleep(0.25)

    train_model(
        pl.read_parquet(data),
        TrainParams(**json.loads(params)),
        checkpoint=Checkpoint(Path(folder), key),
        checkpoint_every=int(every),
        callbacks=[slow],
    )
    print("finished", flush=True)
    """
)


def kill_at_checkpoint(
    script: str, args: list[str], checkpoint: Checkpoint, k: int, stderr: Path, timeout: float
) -> None:
    """Run ``script`` in a child process and SIGKILL it once ``checkpoint`` holds at least
    ``k`` iterations."""
    with open(stderr, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", script, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=err
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            state = checkpoint.peek()
            if state is not None and state["iteration"] >= k:
                os.kill(child.pid, signal.SIGKILL)
                break
            assert child.poll() is None, f"child ended first: {stderr.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.005)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_killed_training_resumes_to_the_uninterrupted_model(
    tmp_path: Path, dataset: pl.DataFrame, reference: TrainResult
) -> None:
    data = tmp_path / "dataset.parquet"
    dataset.write_parquet(data)
    frame = pl.read_parquet(data)
    assert frame.equals(dataset)
    checkpoint = Checkpoint.for_job(
        checkpoints_root(tmp_path / "ct"),
        dataset="digest-of-the-dataset",
        mode="full",
        params=PARAMS.lightgbm_params(2),
        num_boost_round=PARAMS.num_boost_round,
    )
    k = after_best(reference)  # past the best round: the patience counter must carry over
    args = [str(data), str(checkpoint.folder), checkpoint.key]
    args += [json.dumps(dataclasses.asdict(PARAMS)), str(k - 1), str(EVERY)]
    kill_at_checkpoint(CHILD, args, checkpoint, k, tmp_path / "child.err", timeout=60)
    saved = checkpoint.peek()
    assert saved is not None and saved["iteration"] >= k
    assert saved["rounds_without_improvement"] > 0  # killed while waiting for an improvement

    result = train_model(frame, PARAMS, checkpoint=checkpoint, checkpoint_every=EVERY)
    assert result.resumed_from is not None
    assert result.resumed_from == saved["iteration"] >= k
    assert result.notes == [f"resumed from checkpoint at iteration {saved['iteration']}"]
    # its best round was found before the kill: the early stopping state was resumed
    assert result.best_iteration < result.resumed_from
    assert_same_model(result, reference, frame)
    assert not checkpoint.folder.exists()
    assert reference.resumed_from is None


@pytest.mark.parametrize("crash", ["before-first-checkpoint", "early", "after-best"])
def test_crashed_training_resumes_exactly(
    tmp_path: Path, dataset: pl.DataFrame, reference: TrainResult, crash: str
) -> None:
    at = {"before-first-checkpoint": 3, "early": 12, "after-best": after_best(reference) + 2}
    checkpoint = Checkpoint(tmp_path / "ck", "job")
    crashed_run(dataset, PARAMS, checkpoint, at[crash])
    saved = checkpoint.peek()
    if crash == "before-first-checkpoint":
        assert saved is None
    else:
        assert saved is not None
        assert saved["iteration"] == at[crash] // EVERY * EVERY
        # the metric closest to stopping: how long it has waited for an improvement
        assert saved["metric"] in ("auc", "binary_logloss")
        waited = saved["rounds_without_improvement"]
        assert waited == saved["iteration"] - 1 - saved["best_iteration"] >= 0
        if crash == "after-best":
            assert waited > 0 and saved["best_iteration"] == reference.best_iteration - 1
        assert sorted(p.name for p in checkpoint.folder.iterdir()) == sorted(
            [STATE_FILE, saved["model_file"]]
        )
    result = train_model(dataset, PARAMS, checkpoint=checkpoint, checkpoint_every=EVERY)
    assert result.resumed_from == (saved["iteration"] if saved else None)
    assert_same_model(result, reference, dataset)
    assert not checkpoint.folder.exists()


@pytest.mark.parametrize(("classes", "patience", "threads"), [(3, 20, 2), (3, 0, 1), (2, 0, 2)])
def test_resume_is_exact_for_multiclass_threads_and_without_early_stopping(
    tmp_path: Path, dataset: pl.DataFrame, classes: int, patience: int, threads: int
) -> None:
    frame = dataset if classes == 2 else three_classes(dataset)
    params = dataclasses.replace(
        PARAMS,
        learning_rate=0.05,
        num_boost_round=300 if patience else 60,
        early_stopping_rounds=patience,
        num_threads=threads,
    )
    uninterrupted = train_model(frame, params)
    checkpoint = Checkpoint(tmp_path / "ck", "job")
    crashed_run(frame, params, checkpoint, at=47)
    result = train_model(frame, params, checkpoint=checkpoint, checkpoint_every=EVERY)
    assert result.resumed_from == 45
    assert_same_model(result, uninterrupted, frame)
    if not patience:
        assert result.best_iteration == result.model.booster.current_iteration() == 60


# --- torn, corrupt and foreign checkpoints ----------------------------------------------------


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory: pytest.TempPathFactory, dataset: pl.DataFrame) -> Checkpoint:
    """A checkpoint of PARAMS on the dataset at iteration 10 (copy it before changing it)."""
    checkpoint = Checkpoint(tmp_path_factory.mktemp("saved") / "job", "job")
    crashed_run(dataset, PARAMS, checkpoint, at=12)
    return checkpoint


def copy_of(checkpoint: Checkpoint, folder: Path, key: str | None = None) -> Checkpoint:
    shutil.copytree(checkpoint.folder, folder)
    return Checkpoint(folder, key or checkpoint.key)


def _state(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / STATE_FILE).read_text())
    return data


def _edit_state(folder: Path, **changes: Any) -> None:
    (folder / STATE_FILE).write_text(json.dumps({**_state(folder), **changes}))


def _truncate_model(folder: Path) -> None:
    model = folder / _state(folder)["model_file"]
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])


def _model_same_size_flipped(folder: Path) -> None:
    model = folder / _state(folder)["model_file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))


def _not_a_model_but_matching_digest(folder: Path) -> None:
    import hashlib

    garbage = b"tree\nversion=v4\nnot a model at all"
    (folder / "model-0000010.txt").write_bytes(garbage)
    _edit_state(
        folder,
        model_file="model-0000010.txt",
        model_bytes=len(garbage),
        model_sha256=hashlib.sha256(garbage).hexdigest(),
    )


def _missing_model(folder: Path) -> None:
    (folder / _state(folder)["model_file"]).unlink()


CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated model": (_truncate_model, "bytes, not"),
    "flipped byte in model": (_model_same_size_flipped, "does not match its digest"),
    "missing model": (_missing_model, "cannot be read"),
    "model that does not load": (_not_a_model_but_matching_digest, "does not load"),
    "garbage state": (lambda f: (f / STATE_FILE).write_bytes(b"\x00\xffgarbage"), "not valid"),
    "truncated state": (
        lambda f: (f / STATE_FILE).write_text((f / STATE_FILE).read_text()[:40]),
        "not valid JSON",
    ),
    "state not an object": (lambda f: (f / STATE_FILE).write_text("[1, 2]"), "not a JSON object"),
    "state without iteration": (lambda f: _edit_state(f, iteration="ten"), "no valid iteration"),
    "model path escaping": (
        lambda f: _edit_state(f, model_file="../../etc/passwd"),
        "no valid model_file",
    ),
    "older format": (lambda f: _edit_state(f, format=0), "format 0"),
    "iteration not the model's": (lambda f: _edit_state(f, iteration=15), "iterations"),
    "early stopping state garbage": (
        lambda f: _edit_state(f, early_stopping={"rounds": 20}),
        "early stopping state",
    ),
    "early stopping state of another iteration": (
        lambda f: _edit_state(
            f, early_stopping={**_state(f)["early_stopping"], "last_iteration": 4}
        ),
        "early stopping state is of iteration 4",
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_checkpoint_is_ignored(
    tmp_path: Path,
    dataset: pl.DataFrame,
    reference: TrainResult,
    saved_checkpoint: Checkpoint,
    corruption: str,
) -> None:
    corrupt, reason = CORRUPTIONS[corruption]
    checkpoint = copy_of(saved_checkpoint, tmp_path / "job")
    assert checkpoint.load() is not None  # the copy is valid before it is damaged
    corrupt(checkpoint.folder)
    result = train_model(dataset, PARAMS, checkpoint=checkpoint, checkpoint_every=EVERY)
    assert result.resumed_from is None
    assert len(result.notes) == 1, result.notes
    assert "ignored" in result.notes[0] and "training afresh" in result.notes[0]
    assert reason in result.notes[0]
    assert_same_model(result, reference, dataset)
    assert not checkpoint.folder.exists()


def test_leftovers_of_a_torn_write_are_ignored_and_removed(
    tmp_path: Path, dataset: pl.DataFrame, reference: TrainResult, saved_checkpoint: Checkpoint
) -> None:
    """Killed while writing the next checkpoint: its temporary or unreferenced model files
    stay behind; the previous checkpoint is still whole and is resumed from."""
    checkpoint = copy_of(saved_checkpoint, tmp_path / "job")
    (checkpoint.folder / ".model-0000015.txt.123.abcd.tmp").write_text("tree\nhalf a mod")
    (checkpoint.folder / ".state.json.123.abcd.tmp").write_text('{"format": 1, "ke')
    (checkpoint.folder / "model-0000015.txt").write_text("complete, but not yet in the state")
    result = train_model(dataset, PARAMS, checkpoint=checkpoint, checkpoint_every=EVERY)
    assert result.resumed_from == 10 and result.notes == ["resumed from checkpoint at iteration 10"]
    assert_same_model(result, reference, dataset)
    assert not checkpoint.folder.exists()


def test_checkpoint_of_another_key_is_not_used(
    tmp_path: Path, dataset: pl.DataFrame, reference: TrainResult, saved_checkpoint: Checkpoint
) -> None:
    root = tmp_path / "checkpoints"
    ours = copy_of(saved_checkpoint, root / "job")
    other = Checkpoint(root / "other", "other")
    assert other.load() is None and other.notes == []  # another folder: simply not there
    result = train_model(dataset, PARAMS, checkpoint=other, checkpoint_every=EVERY)
    assert result.resumed_from is None and result.notes == []
    assert_same_model(result, reference, dataset)
    assert ours.load() is not None  # the other job's checkpoint is left alone
    # the files of another key moved into this key's folder
    moved = copy_of(saved_checkpoint, root / "moved", key="moved")
    assert moved.load() is None
    assert "another training job (key 'job')" in moved.notes[0]
    result = train_model(dataset, PARAMS, checkpoint=moved, checkpoint_every=EVERY)
    assert result.resumed_from is None and "another training job" in result.notes[0]
    assert_same_model(result, reference, dataset)
    assert not moved.folder.exists()


def _other_labels(frame: pl.DataFrame) -> pl.DataFrame:
    flipped = pl.when(pl.col("log_offset") % 50 == 0).then(
        pl.when(pl.col("label") == "1").then(pl.lit("0")).otherwise(pl.lit("1"))
    )
    return frame.with_columns(flipped.otherwise(pl.col("label")).alias("label"))


OTHER_JOBS: dict[str, tuple[Callable[[pl.DataFrame], pl.DataFrame], TrainParams]] = {
    "other learning rate": (lambda f: f, dataclasses.replace(PARAMS, learning_rate=0.2)),
    "other seed": (lambda f: f, dataclasses.replace(PARAMS, seed=8)),
    "more rounds": (lambda f: f, dataclasses.replace(PARAMS, num_boost_round=301)),
    "other patience": (lambda f: f, dataclasses.replace(PARAMS, early_stopping_rounds=21)),
    "other rows": (lambda f: f.filter(pl.col("log_offset") != 7), PARAMS),
    "other labels": (_other_labels, PARAMS),
    "other feature values": (lambda f: f.with_columns(pl.col("x4") * 2), PARAMS),
}


@pytest.mark.parametrize("job", sorted(OTHER_JOBS))
def test_checkpoint_of_another_job_under_the_same_key_is_not_used(
    tmp_path: Path, dataset: pl.DataFrame, saved_checkpoint: Checkpoint, job: str
) -> None:
    """A key computed carelessly by a caller still cannot make a job resume another's."""
    change, params = OTHER_JOBS[job]
    frame = change(dataset)
    checkpoint = copy_of(saved_checkpoint, tmp_path / "job")
    result = train_model(frame, params, checkpoint=checkpoint, checkpoint_every=EVERY)
    assert result.resumed_from is None
    assert len(result.notes) == 1 and "another training job" in result.notes[0]
    assert_same_model(result, train_model(frame, params), frame)
    assert not checkpoint.folder.exists()


# --- incremental ------------------------------------------------------------------------------


def test_incremental_training_resumes_exactly(
    tmp_path: Path, dataset: pl.DataFrame, reference: TrainResult
) -> None:
    champion = reference.model
    champion_trees = champion.booster.current_iteration()
    offsets = dataset.filter(pl.col("split") == "train")["log_offset"].sort()
    cutoff = int(offsets[len(offsets) // 2])
    incremental: dict[str, Any] = {
        "mode": "incremental",
        "champion": champion,
        "new_after_offset": cutoff,
    }
    uninterrupted = train_model(dataset, PARAMS, **incremental)
    assert uninterrupted.mode == "incremental" and uninterrupted.notes == []
    new_trees = uninterrupted.model.booster.current_iteration() - champion_trees
    assert 0 < new_trees <= PARAMS.num_boost_round

    checkpoint = Checkpoint(tmp_path / "ck", "incremental-job")
    crashed_run(dataset, PARAMS, checkpoint, at=champion_trees + 12, **incremental)
    saved = checkpoint.peek()
    assert saved is not None and saved["iteration"] == champion_trees + 10
    result = train_model(
        dataset, PARAMS, checkpoint=checkpoint, checkpoint_every=EVERY, **incremental
    )
    assert result.mode == "incremental"
    assert result.resumed_from == champion_trees + 10
    assert result.notes == [f"resumed from checkpoint at iteration {champion_trees + 10}"]
    # champion trees + new trees, the champion's not boosted in twice
    assert result.model.booster.current_iteration() == champion_trees + new_trees
    assert_same_model(result, uninterrupted, dataset)
    matrix = champion.spec.matrix(dataset)
    assert np.array_equal(
        result.model.booster.predict(matrix, num_iteration=champion_trees),
        champion.booster.predict(matrix),
    )
    assert champion.booster.current_iteration() == champion_trees  # champion untouched
    assert not checkpoint.folder.exists()

    # a checkpoint of the incremental job is not resumed by a full training, nor by the
    # incremental training of another champion
    crashed_run(dataset, PARAMS, checkpoint, at=champion_trees + 12, **incremental)
    template = tmp_path / "template"
    shutil.copytree(checkpoint.folder, template)
    full = train_model(dataset, PARAMS, checkpoint=checkpoint, checkpoint_every=EVERY)
    assert full.resumed_from is None and "another training job" in full.notes[0]
    assert_same_model(full, reference, dataset)
    shutil.copytree(template, checkpoint.folder)
    other_champion = train_model(dataset, dataclasses.replace(PARAMS, num_boost_round=30))
    other = train_model(
        dataset,
        PARAMS,
        checkpoint=checkpoint,
        checkpoint_every=EVERY,
        **{**incremental, "champion": other_champion.model},
    )
    assert other.resumed_from is None and "another training job" in other.notes[0]
    other_trees = other_champion.model.booster.current_iteration()
    assert other.model.booster.current_iteration() > other_trees


# --- the early stopping callback --------------------------------------------------------------


@pytest.mark.parametrize("classes", [2, 3])
def test_early_stopping_is_lightgbms(
    monkeypatch: pytest.MonkeyPatch, dataset: pl.DataFrame, classes: int
) -> None:
    """Without checkpoints, the resumable early stopping stops where LightGBM's does when
    the first metric (the loss) alone decides."""
    frame = dataset if classes == 2 else three_classes(dataset)
    params = dataclasses.replace(PARAMS, early_stopping_rounds=10)
    ours = train_model(frame, params)
    train: Callable[..., Any] = lightgbm.train

    def with_lightgbms_early_stopping(*args: Any, callbacks: list[Any], **kwargs: Any) -> Any:
        stoppers = [c for c in callbacks if isinstance(c, EarlyStopping)]
        others = [c for c in callbacks if c not in stoppers]
        builtin = [
            lightgbm.early_stopping(s.rounds, first_metric_only=True, verbose=False)
            for s in stoppers
        ]
        return train(*args, callbacks=[*others, *builtin], **kwargs)

    monkeypatch.setattr(lightgbm, "train", with_lightgbms_early_stopping)
    theirs = train_model(frame, params)
    assert ours.best_iteration < params.num_boost_round
    assert_same_model(ours, theirs, frame)


def three_classes(frame: pl.DataFrame) -> pl.DataFrame:
    label = (
        pl.when(pl.col("x0") < -0.5)
        .then(pl.lit("low"))
        .when(pl.col("x0") < 0.8)
        .then(pl.lit("mid"))
        .otherwise(pl.lit("high"))
    )
    return frame.with_columns(label.alias("label"))


# --- class imbalance --------------------------------------------------------------------------


def test_class_weights_are_balanced() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    weights = class_weights(labels, 3)
    assert weights.shape == (100,)
    assert np.allclose([weights[labels == c].sum() for c in range(3)], 100 / 3)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[-1] == pytest.approx(100 / 3) and weights[0] == pytest.approx(100 / 270)
    # an absent class takes no share
    assert np.allclose(class_weights(np.array([0, 0, 2, 2]), 3), 1.0)


def test_multiclass_imbalance_is_weighted(dataset: pl.DataFrame) -> None:
    rng = np.random.default_rng(5)
    score = dataset["x0"].to_numpy() + rng.normal(scale=0.3, size=dataset.height)
    common, rare = np.quantile(score, [0.90, 0.99])
    labels = np.where(score > rare, "rare", np.where(score > common, "some", "common"))
    frame = dataset.with_columns(pl.Series("label", labels))
    shares = {c: float(np.mean(labels == c)) for c in ("common", "some", "rare")}
    assert shares == pytest.approx({"common": 0.90, "some": 0.09, "rare": 0.01}, abs=0.002)
    params = dataclasses.replace(PARAMS, num_boost_round=100)
    weighted = train_model(frame, params)
    unweighted = train_model(frame, dataclasses.replace(params, balance_classes=False))
    assert weighted.model.spec.params["is_unbalance"] is False  # multiclass: weights instead

    def rare_recall_and_probability(result: TrainResult) -> tuple[float, float]:
        is_rare = labels == "rare"
        predicted = np.array(result.model.predict(frame))
        proba = result.model.predict_proba(frame)[:, result.model.spec.classes.index("rare")]
        return float(np.mean(predicted[is_rare] == "rare")), float(proba[is_rare].mean())

    recall, probability = rare_recall_and_probability(weighted)
    recall_unweighted, probability_unweighted = rare_recall_and_probability(unweighted)
    assert recall >= 0.8
    assert recall >= recall_unweighted + 0.1
    assert probability >= probability_unweighted + 0.1
    # deterministic, weights and all
    assert_same_model(train_model(frame, params), weighted, frame)


def test_binary_is_unbalance_only_when_balancing(reference: TrainResult) -> None:
    assert reference.model.spec.params["is_unbalance"] is True
    # off by default: plain LightGBM's accuracy at the observed class rates
    assert TrainParams().lightgbm_params(2)["is_unbalance"] is False
    assert TrainParams().lightgbm_params(3)["is_unbalance"] is False


# --- the Checkpoint itself --------------------------------------------------------------------


def test_checkpoint_save_load_clear(tmp_path: Path, reference: TrainResult) -> None:
    booster = reference.model.booster
    checkpoint = Checkpoint(tmp_path / "a" / "job", "job")
    assert not checkpoint.exists() and checkpoint.load() is None and checkpoint.peek() is None
    iteration = checkpoint.save(booster, {"note": "x", "iteration": -5, "key": "forged"})
    assert iteration == booster.current_iteration()
    state = checkpoint.peek()
    assert state is not None
    assert state["iteration"] == iteration and state["key"] == "job" and state["note"] == "x"
    loaded = checkpoint.load()
    assert loaded is not None and checkpoint.notes == []
    restored, restored_state = loaded
    assert restored_state == state
    assert restored.model_to_string() == booster.model_to_string()
    # a later save replaces the model file: one model at a time
    (checkpoint.folder / ".model-0000001.txt.1.x.tmp").write_text("leftover")
    checkpoint.save(lightgbm.Booster(model_str=booster.model_to_string(num_iteration=3)))
    assert sorted(p.name for p in checkpoint.folder.iterdir()) == [
        "model-0000003.txt",
        STATE_FILE,
    ]
    checkpoint.clear()
    assert not checkpoint.folder.exists() and (tmp_path / "a").exists()
    checkpoint.clear()  # nothing to clear: fine
    # files that are not the checkpoint's are left alone, and so is the folder then
    checkpoint.save(booster)
    (checkpoint.folder / "README").write_text("someone else's")
    checkpoint.clear()
    assert [p.name for p in checkpoint.folder.iterdir()] == ["README"]


def test_checkpoint_key_names_the_job(tmp_path: Path) -> None:
    job: dict[str, Any] = {
        "dataset": "d1",
        "mode": "full",
        "params": {"learning_rate": 0.1, "num_leaves": 31},
        "num_boost_round": 300,
        "init_model": None,
    }
    key = checkpoint_key(**job)
    assert key == checkpoint_key(**{**job, "params": {"num_leaves": 31, "learning_rate": 0.1}})
    changes: list[dict[str, Any]] = [
        {"dataset": "d2"},
        {"mode": "incremental"},
        {"params": {"learning_rate": 0.2, "num_leaves": 31}},
        {"num_boost_round": 301},
        {"init_model": "7"},
        {"extra": {"early_stopping_rounds": 10}},
    ]
    keys = {checkpoint_key(**{**job, **change}) for change in changes}
    assert len(keys) == len(changes) and key not in keys
    checkpoint = Checkpoint.for_job(checkpoints_root(tmp_path), **job)
    assert checkpoint.key == key and checkpoint.folder == tmp_path / "checkpoints" / key
    for bad in ("", "../x", "a/b", "x" * 129):
        with pytest.raises(ValueError, match="checkpoint key"):
            Checkpoint(tmp_path, bad)
    with pytest.raises(ValueError, match="at least 1"):
        checkpoint.callback(0)

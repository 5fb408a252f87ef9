"""Candidate windows of one retrain, scored on the same holdout."""

from __future__ import annotations

import os
import threading

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import log_loss

from ct_assets.training.candidates import (
    CandidateWindow,
    candidates_markdown,
    plan_windows,
    recorded_candidates,
    recorded_window,
    refit,
    side_by_side,
    train_candidates,
)
from ct_assets.training.model import TrainedModel
from ct_assets.training.train import TrainParams, train_model

from .conftest import dataset_frame

PARAMS = TrainParams(num_threads=1)


def dataset(rows: int, change_at: int | None = None, seed: int = 0) -> pl.DataFrame:
    """Time-ordered rows whose concept flips sign at ``change_at``; the newest 20% held out."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 4))
    sign = np.ones(rows)
    if change_at is not None:
        sign[change_at:] = -1.0
    y = (sign * (x[:, 0] + 0.5 * x[:, 1]) + rng.normal(scale=0.3, size=rows) > 0).astype(int)
    return dataset_frame(x, y, holdout=rows // 5)


def first_half_champion(frame: pl.DataFrame) -> TrainedModel:
    """A champion trained on the rows before offset 1,500 (the last 300 held out)."""
    old = frame.filter(pl.col("log_offset") < 1500).with_columns(
        split=pl.when(pl.col("log_offset") < 1200)
        .then(pl.lit("train"))
        .otherwise(pl.lit("holdout"))
    )
    return train_model(old, PARAMS).model


def names(windows: list[CandidateWindow]) -> list[str]:
    return [w.name for w in windows]


def test_plans_follow_the_mode_and_the_evidence() -> None:
    frame = dataset(3000)
    plan = plan_windows(frame, requested="auto", champion_cutoff=1200, change_detected=False)
    assert names(plan) == ["window", "recent", "incremental"]
    # the newest half of the 2,400 train rows
    assert plan[1].after_offset == 1199
    assert plan[2].mode == "incremental" and plan[2].after_offset == 1200
    after_change = plan_windows(frame, requested="auto", champion_cutoff=1200, change_detected=True)
    assert names(after_change) == ["window", "recent"]
    assert names(
        plan_windows(frame, requested="full", champion_cutoff=1200, change_detected=False)
    ) == ["window", "recent"]
    assert names(
        plan_windows(frame, requested="incremental", champion_cutoff=1200, change_detected=True)
    ) == ["incremental"]
    # no champion: nothing to continue; too few rows: no recent half
    small = dataset(900)
    assert names(
        plan_windows(small, requested="auto", champion_cutoff=None, change_detected=False)
    ) == ["window"]
    only = plan_windows(
        frame, requested="auto", allowed=["window"], champion_cutoff=1, change_detected=False
    )
    assert names(only) == ["window"]
    with pytest.raises(ValueError, match=r"unknown candidate windows \['longest'\]"):
        plan_windows(
            frame,
            requested="auto",
            allowed=["longest"],
            champion_cutoff=None,
            change_detected=False,
        )


def test_after_a_change_the_recent_half_wins() -> None:
    # the concept flips at row 1,800: the holdout (rows 2,400..2,999) and most of the newest
    # half of the train rows (1,200..2,399) follow the new one
    frame = dataset(3000, change_at=1800)
    plan = plan_windows(frame, requested="full", champion_cutoff=None, change_detected=False)
    trained = train_candidates(frame, PARAMS, plan, None)
    assert [t.window.name for t in trained] == ["recent", "window"]
    assert trained[0].score > trained[1].score + 0.05
    assert trained[0].result.train_rows == 1200 and trained[1].result.train_rows == 2400
    table = candidates_markdown([t.summary(chosen=i == 0) for i, t in enumerate(trained)])
    assert table.splitlines()[2].startswith("| recent | full | 1200 | 100 |")
    assert table.splitlines()[2].endswith("| yes |")


def test_the_champion_continued_competes_and_is_its_own_model() -> None:
    frame = dataset(3000)
    champion = first_half_champion(frame)
    plan = plan_windows(frame, requested="auto", champion_cutoff=1499, change_detected=False)
    trained = train_candidates(frame, PARAMS, plan, champion)
    assert sorted(t.window.name for t in trained) == ["incremental", "recent", "window"]
    scores = [t.score for t in trained[1:]]
    assert scores == sorted(scores, reverse=True)
    if trained[0].window.name != "window":  # only when clearly better than the default
        assert trained[0].versus_default is not None and trained[0].versus_default[0] > 0
    incremental = next(t for t in trained if t.window.name == "incremental")
    assert incremental.result.mode == "incremental"
    assert incremental.result.train_rows == 900  # train rows after offset 1,499
    trees = incremental.result.model.booster.current_iteration()
    assert trees == champion.booster.current_iteration() + PARAMS.num_boost_round


def test_on_a_stationary_stream_the_default_window_keeps_its_data() -> None:
    """A smaller window wins only when clearly better on the holdout, so the noise of a
    small holdout rarely trades half the rows away."""
    switched = 0
    for seed in range(12):
        frame = dataset(2000, seed=100 + seed)
        plan = plan_windows(frame, requested="full", champion_cutoff=None, change_detected=False)
        trained = train_candidates(frame, PARAMS, plan, None, seed=seed)
        assert trained[1].versus_default is not None
        switched += trained[0].window.name != "window"
    assert switched <= 2, switched


def test_an_incremental_candidate_that_falls_back_to_full_is_not_trained_twice() -> None:
    frame = dataset(3000)
    plan = plan_windows(frame, requested="auto", champion_cutoff=1499, change_detected=False)
    # no champion model given: the incremental window falls back to a full retrain
    trained = train_candidates(frame, PARAMS, plan, None)
    assert sorted(t.window.name for t in trained) == ["recent", "window"]


def test_recorded_candidates_are_read_back() -> None:
    assert recorded_candidates('[{"window": "recent", "chosen": true}]') == [
        {"window": "recent", "chosen": True}
    ]
    assert recorded_candidates("") == [] and recorded_candidates("not json") == []
    assert candidates_markdown([]) == ""


def plain_lightgbm(frame: pl.DataFrame, rounds: int) -> np.ndarray:  # type: ignore[type-arg]
    """``LGBMClassifier`` with the same parameters, fitted plainly on every row of
    ``frame``; its probabilities of the positive class on the same rows."""
    import lightgbm

    x = frame.select([c for c in frame.columns if c.startswith("x")]).to_numpy()
    y = frame["label"].cast(pl.Int64).to_numpy()
    model = lightgbm.LGBMClassifier(
        n_estimators=rounds,
        learning_rate=0.1,
        num_leaves=31,
        random_state=PARAMS.seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    ).fit(x, y)
    return np.asarray(model.predict_proba(x)[:, 1])


@pytest.mark.parametrize("change_at", [None, 1800])
def test_the_refit_is_the_chosen_recipe_on_every_row_of_its_window(change_at: int | None) -> None:
    frame = dataset(3000, change_at=change_at)
    allowed = ["window"] if change_at is None else ["window", "recent"]
    plan = plan_windows(
        frame, requested="full", allowed=allowed, champion_cutoff=None, change_detected=False
    )
    chosen = train_candidates(frame, PARAMS, plan, None)[0]
    assert chosen.window.name == ("window" if change_at is None else "recent")
    result = refit(frame, PARAMS, chosen, None)
    # the window's train rows and the 600 holdout rows, for the rounds the candidate kept
    assert result.train_rows == chosen.result.train_rows + 600
    assert result.model.booster.current_iteration() == chosen.result.best_iteration
    rows = (
        frame
        if chosen.window.after_offset is None
        else frame.filter(pl.col("log_offset") > chosen.window.after_offset)
    )
    ours = result.model.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(ours, plain_lightgbm(rows, chosen.result.best_iteration), atol=1e-9)
    # the validated candidate did not learn the holdout; the refit did
    holdout = frame.filter(pl.col("split") == "holdout")
    y = holdout["label"].cast(pl.Int64).to_numpy()
    validated_log_loss = log_loss(y, chosen.result.model.predict_proba(holdout)[:, 1])
    refit_log_loss = log_loss(y, result.model.predict_proba(holdout)[:, 1])
    assert refit_log_loss < validated_log_loss
    assert any("refit on" in note for note in result.notes)


def test_an_incremental_refit_continues_the_champion_on_the_new_rows_and_the_holdout() -> None:
    frame = dataset(3000)
    old = frame.filter(pl.col("log_offset") < 1500).with_columns(split=pl.lit("train"))
    champion = train_model(old, PARAMS).model
    plan = plan_windows(frame, requested="incremental", champion_cutoff=1499, change_detected=False)
    chosen = train_candidates(frame, PARAMS, plan, champion)[0]
    result = refit(frame, PARAMS, chosen, champion)
    assert result.mode == "incremental"
    assert result.train_rows == 1500  # 900 new train rows and the 600 holdout rows
    trees = result.model.booster.current_iteration()
    assert trees == champion.booster.current_iteration() + PARAMS.num_boost_round


def test_the_recorded_window_is_read_back_for_reproduction() -> None:
    recorded = [
        {"window": "window", "chosen": False, "after_offset": None},
        {"window": "recent", "chosen": True, "after_offset": 1199},
    ]
    assert recorded_window(recorded, "full") == CandidateWindow("recent", "full", 1199)
    assert recorded_window([], "full") == CandidateWindow("window", "full")
    assert recorded_window([], "incremental") == CandidateWindow("incremental", "incremental")


def test_windows_trained_side_by_side_are_those_trained_one_after_the_other() -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: windows are trained one after the other")
    frame = dataset(3000, change_at=2000)
    champion = first_half_champion(frame)
    plan = plan_windows(frame, requested="auto", champion_cutoff=1499, change_detected=False)
    threads_unset = TrainParams()
    assert side_by_side(frame, threads_unset, len(plan)) == min(3, os.cpu_count() or 1)
    assert side_by_side(frame, PARAMS, len(plan)) == 1, "threads set: one after the other"
    assert side_by_side(dataset(70_000), threads_unset, len(plan)) == 1, "big: all cores each"
    threads: list[str] = []

    def record(_: CandidateWindow) -> None:  # called in the thread training the window
        threads.append(threading.current_thread().name)

    together = train_candidates(frame, threads_unset, plan, champion, checkpoint_for=record)
    assert len(threads) == 3 and all(n.startswith("candidate") for n in threads), threads
    apart = train_candidates(frame, PARAMS, plan, champion)
    assert [t.window for t in together] == [t.window for t in apart]
    for a, b in zip(together, apart, strict=True):
        assert a.holdout == b.holdout
        assert (
            a.result.model.booster.dump_model()["tree_info"]
            == (b.result.model.booster.dump_model()["tree_info"])
        )

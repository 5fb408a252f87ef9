"""The promotion gate's evaluation: bootstrap, calibration, forgetting, slices, plots.

Real LightGBM models (``train_model``) on small synthetic datasets with the dataset
columns of ``ct_assets.data.dataset``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from numpy.typing import NDArray
from sklearn.metrics import log_loss, roc_auc_score

from ct_assets.training.bootstrap import BootstrapResult, paired_bootstrap
from ct_assets.training.evaluation import (
    GateConfig,
    GateReport,
    HistoryMetrics,
    SliceMetrics,
    evaluate_gate,
)
from ct_assets.training.gate import GateDecision, decide, holm
from ct_assets.training.metrics import (
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
)
from ct_assets.training.model import TrainedModel
from ct_assets.training.plots import calibration_png, importance_png, png_markdown, roc_png
from ct_assets.training.train import TrainParams, train_model

PARAMS = TrainParams(num_boost_round=60, learning_rate=0.1, num_threads=1)
START = datetime(2024, 1, 1, tzinfo=UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEGMENTS = ["a", "b", "c"]


def sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def dataset_frame(
    features: dict[str, NDArray[np.float64] | list[str]],
    labels: NDArray[np.int64],
    holdout_fraction: float = 0.25,
    offset: int = 0,
) -> pl.DataFrame:
    """A dataset frame: the meta columns, then one column per feature; the latest held out."""
    n = len(labels)
    n_holdout = int(n * holdout_fraction)
    offsets = np.arange(offset, offset + n)
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in offsets],
            "log_offset": offsets,
            "timestamp": [START + timedelta(minutes=int(i)) for i in offsets],
            "label": [str(v) for v in labels],
            "split": ["train"] * (n - n_holdout) + ["holdout"] * n_holdout,
            "window_part": ["reservoir" if i % 5 == 0 else "recent" for i in offsets],
            "label_source": ["explicit"] * n,
            "model_version": [str(1 + i % 2) for i in offsets],
            "arm": ["challenger" if i % 4 == 0 else "champion" for i in offsets],
            **features,
        }
    )


def concept_frame(n: int, seed: int) -> pl.DataFrame:
    """Binary label from a logistic concept on f0, f1, f2; a categorical segment."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 3))
    segment = [SEGMENTS[i] for i in rng.integers(0, 3, n)]
    logit = 2.0 * f[:, 0] - 1.5 * f[:, 1] + 0.5 * f[:, 2]
    labels = (rng.random(n) < sigmoid(logit)).astype(np.int64)
    return dataset_frame({"f0": f[:, 0], "f1": f[:, 1], "f2": f[:, 2], "segment": segment}, labels)


def holdout_of(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("split") == "holdout")


def with_train_labels(frame: pl.DataFrame, labels: pl.Expr) -> pl.DataFrame:
    """Replace the labels of the train split only: the holdout keeps the truth."""
    return frame.with_columns(
        pl.when(pl.col("split") == "train").then(labels).otherwise(pl.col("label")).alias("label")
    )


@pytest.fixture(scope="module")
def data() -> pl.DataFrame:
    return concept_frame(4000, seed=1)


@pytest.fixture(scope="module")
def good(data: pl.DataFrame) -> TrainedModel:
    return train_model(data, PARAMS).model


@pytest.fixture(scope="module")
def shuffled(data: pl.DataFrame) -> TrainedModel:
    rng = np.random.default_rng(2)
    noise = pl.Series(rng.permutation(data["label"].to_numpy()))
    return train_model(with_train_labels(data, pl.lit(noise)), PARAMS).model


@pytest.fixture(scope="module")
def weak(data: pl.DataFrame) -> TrainedModel:
    """Little and noisy data: 300 train rows, a third of their labels flipped."""
    rng = np.random.default_rng(3)
    small = pl.concat([data.filter(pl.col("split") == "train").head(300), holdout_of(data)])
    flip = pl.Series(rng.random(small.height) < 0.33)
    flipped = (
        pl.when(pl.lit(flip))
        .then((1 - pl.col("label").cast(pl.Int64)).cast(pl.String))
        .otherwise(pl.col("label"))
    )
    noisy = with_train_labels(small, flipped)
    return train_model(noisy, PARAMS).model


# --- metrics: ECE -----------------------------------------------------------------------------


def test_ece_is_zero_for_calibrated_and_large_for_overconfident_probabilities() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(50_000) < p).astype(int)
    calibrated = np.column_stack([1 - p, p])
    assert expected_calibration_error(y, calibrated) < 0.01
    sharp = sigmoid(4.0 * np.log(p / (1 - p)))  # same ranking, far too confident
    overconfident = np.column_stack([1 - sharp, sharp])
    assert expected_calibration_error(y, overconfident) > 0.1
    # multiclass: labels drawn from the predicted distribution
    proba = rng.dirichlet([1.0, 1.0, 1.0], size=50_000)
    y3 = np.array([rng.choice(3, p=row) for row in proba[:20_000]])
    assert expected_calibration_error(y3, proba[:20_000]) < 0.015
    powered = proba[:20_000] ** 4
    powered /= powered.sum(axis=1, keepdims=True)
    assert expected_calibration_error(y3, powered) > 0.1


def test_ece_by_hand_and_calibration_bins() -> None:
    y = np.array([1, 1, 0, 0])
    proba = np.array([[0.1, 0.9], [0.1, 0.9], [0.3, 0.7], [0.6, 0.4]])
    # bin (0.8, 0.9]: conf 0.9, acc 1.0 (2 rows); (0.6, 0.7]: 0.7 vs 0; (0.5, 0.6]: 0.6 vs 1
    expected = (2 * 0.1 + 0.7 + 0.4) / 4
    assert expected_calibration_error(y, proba) == pytest.approx(expected)
    bins = calibration_bins(y, proba, bins=10)
    assert bins.counts.sum() == 4 and bins.counts[8] == 2
    assert math.isnan(expected_calibration_error(np.array([], dtype=int), np.empty((0, 2))))


def test_classification_metrics_include_ece() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]])
    m = classification_metrics(y, proba)
    assert set(m) == {"accuracy", "auc", "log_loss", "brier", "ece", "rows"}
    assert m["ece"] == pytest.approx(expected_calibration_error(y, proba))


def test_multiclass_auc_with_an_absent_class_averages_the_present_ones() -> None:
    y = np.array([0, 1, 0, 1])
    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]])
    m = classification_metrics(y, proba)
    assert m["auc"] == pytest.approx(1.0)


# --- paired bootstrap -------------------------------------------------------------------------


def test_bootstrap_interval_has_the_sign_of_an_obvious_difference() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    informative = sigmoid(2.0 * (2 * y - 1) + rng.normal(size=2000))
    random = rng.random(2000)
    result = paired_bootstrap(y, informative, random, n_resamples=500, seed=1)
    true_delta = roc_auc_score(y, informative) - roc_auc_score(y, random)
    assert result.delta == pytest.approx(true_delta)
    assert 0 < result.low <= result.delta <= result.high
    assert result.n_resamples == 500 and result.metric == "auc"
    worse = paired_bootstrap(y, random, informative, n_resamples=500, seed=1)
    assert worse.high < 0 and worse.delta == pytest.approx(-true_delta)


def test_bootstrap_of_identical_models_is_exactly_zero() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 1000)
    p = rng.random(1000)
    result = paired_bootstrap(y, p, p.copy(), n_resamples=200)
    assert (result.delta, result.low, result.high) == (0.0, 0.0, 0.0)


def test_bootstrap_is_paired_and_seeded() -> None:
    """Two nearly identical models: the paired interval is much narrower than either AUC's."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    p = sigmoid((2 * y - 1) + rng.normal(size=1000))
    q = np.clip(p + rng.normal(scale=0.01, size=1000), 0, 1)
    result = paired_bootstrap(y, p, q, n_resamples=300, seed=5)
    assert result.high - result.low < 0.01
    assert paired_bootstrap(y, p, q, n_resamples=300, seed=5) == result
    assert paired_bootstrap(y, p, q, n_resamples=300, seed=6) != result


def test_bootstrap_multiclass_and_other_metrics() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 1500)
    logits = rng.normal(size=(1500, 3))
    logits[np.arange(1500), y] += 1.5
    good = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    bad = rng.dirichlet([1.0, 1.0, 1.0], size=1500)
    auc = paired_bootstrap(y, good, bad, n_resamples=200)
    expected = roc_auc_score(y, good, multi_class="ovr") - roc_auc_score(y, bad, multi_class="ovr")
    assert auc.delta == pytest.approx(expected)
    assert auc.low > 0
    accuracy = paired_bootstrap(y, good, bad, metric="accuracy", n_resamples=200)
    assert accuracy.delta == pytest.approx(
        np.mean(good.argmax(1) == y) - np.mean(bad.argmax(1) == y)
    )
    loss = paired_bootstrap(y, good, bad, metric="log_loss", n_resamples=200)
    assert loss.delta == pytest.approx(log_loss(y, good) - log_loss(y, bad))
    assert loss.high < 0  # lower is better: the good model's loss is clearly lower
    with pytest.raises(ValueError, match="unknown bootstrap metric"):
        paired_bootstrap(y, good, bad, metric="f1")


def test_bootstrap_skips_resamples_with_a_single_class() -> None:
    y = np.array([0] * 18 + [1] * 2)
    p = np.linspace(0, 1, 20)
    result = paired_bootstrap(y, p, p[::-1], n_resamples=400)
    assert 0 < result.n_resamples < 400  # ~12% of resamples draw no positive
    none = paired_bootstrap(np.zeros(10, dtype=int), p[:10], p[:10], n_resamples=50)
    assert none.n_resamples == 0 and math.isnan(none.low) and math.isnan(none.delta)


def test_bootstrap_on_50k_rows_with_ties() -> None:
    """Its speed is measured by benchmarks/bench_gate_bootstrap.py, not here."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 50_000)
    p = np.round(sigmoid((2 * y - 1) + rng.normal(size=50_000)), 3)  # with ties, like trees
    q = np.round(sigmoid(0.8 * (2 * y - 1) + rng.normal(size=50_000)), 3)
    result = paired_bootstrap(y, p, q, n_resamples=1000)
    assert result.n_resamples == 1000 and result.low > 0
    assert result.delta == pytest.approx(roc_auc_score(y, p) - roc_auc_score(y, q))


# --- the gate on real models ------------------------------------------------------------------


def test_gate_rejects_a_candidate_trained_on_shuffled_labels(
    data: pl.DataFrame, good: TrainedModel, shuffled: TrainedModel
) -> None:
    report = evaluate_gate(shuffled, good, holdout_of(data), {}, ["segment"], GateConfig())
    assert report.decision is not None and not report.decision.promote
    assert report.bootstrap is not None and report.bootstrap.high < 0
    assert report.candidate["auc"] < 0.65 < 0.8 < report.champion["auc"]  # type: ignore[index]
    bootstrap_reasons = [r for r in report.decision.failed if "bootstrap" in r]
    assert len(bootstrap_reasons) == 1
    assert bootstrap_reasons[0].startswith("worse: 95% paired bootstrap interval")
    assert f"{report.bootstrap.high:+.4f}]" in bootstrap_reasons[0]
    assert "lies below -tolerance -0.0200" in bootstrap_reasons[0]
    assert not report.decision.inconclusive
    assert report.decision == decide(report, GateConfig())


def test_gate_promotes_a_better_candidate(
    data: pl.DataFrame, good: TrainedModel, weak: TrainedModel
) -> None:
    history = {"reservoir": data.filter(pl.col("window_part") == "reservoir")}
    slices = ["segment", "f0", "arm", "model_version"]
    report = evaluate_gate(good, weak, holdout_of(data), history, slices, GateConfig())
    decision = report.decision
    assert decision is not None and decision.promote, decision
    assert decision.failed == []
    assert report.bootstrap is not None and report.bootstrap.low > 0
    assert report.candidate["auc"] > report.champion["auc"] + 0.03  # type: ignore[index]
    for name in ("accuracy", "auc", "log_loss", "brier", "ece", "rows"):
        assert name in report.candidate and name in report.champion  # type: ignore[operator]
    assert report.candidate["rows"] == 1000
    # every criterion has its line
    joined = "\n".join(decision.reasons)
    for expected in ("floor", "ece", "champion", "bootstrap", "remembers reservoir"):
        assert expected in joined
    for column in slices:
        assert f"slices of {column}:" in joined
    # slices: categorical values, numeric quartiles, meta columns; rows add up
    by_column: dict[str, list[SliceMetrics]] = {}
    for s in report.slices:
        by_column.setdefault(s.column, []).append(s)
    assert [s.value for s in by_column["segment"]] == SEGMENTS
    assert [s.value[:2] for s in by_column["f0"]] == ["q1", "q2", "q3", "q4"]
    assert {s.value for s in by_column["arm"]} == {"champion", "challenger"}
    assert {s.value for s in by_column["model_version"]} == {"1", "2"}
    for group in by_column.values():
        assert sum(s.rows for s in group) == 1000
    assert all(200 <= s.rows <= 300 for s in by_column["f0"])
    assert report.forgetting[0].name == "reservoir" and report.forgetting[0].rows == 800


def test_gate_without_champion_checks_floor_and_calibration_only(
    data: pl.DataFrame, shuffled: TrainedModel
) -> None:
    holdout = holdout_of(data)
    report = evaluate_gate(shuffled, None, holdout, {"old": holdout}, ["segment"], GateConfig())
    assert report.champion is None and report.bootstrap is None
    assert report.slices and all(s.champion is None for s in report.slices)
    decision = report.decision
    assert decision is not None
    assert not decision.promote  # the floor (0.55)
    assert [r for r in decision.failed if "floor" in r]
    assert any("no champion" in r for r in decision.reasons)
    assert not any("slice" in r or "old" in r for r in decision.reasons)
    lenient = evaluate_gate(shuffled, None, holdout, {}, [], GateConfig(min_metric=0.0))
    assert lenient.decision is not None and lenient.decision.promote


def test_gate_ignores_rows_with_unknown_labels(data: pl.DataFrame, good: TrainedModel) -> None:
    holdout = holdout_of(data)
    mixed = pl.concat([holdout, holdout.head(7).with_columns(pl.lit("unknown").alias("label"))])
    report = evaluate_gate(good, good, mixed, {}, ["segment"], GateConfig(n_resamples=100))
    clean = evaluate_gate(good, good, holdout, {}, ["segment"], GateConfig(n_resamples=100))
    assert report.candidate == pytest.approx(clean.candidate)
    assert report.candidate["rows"] == 1000
    assert any("7 holdout rows" in note for note in report.notes)
    assert sum(s.rows for s in report.slices) == 1000
    # the same model as champion: delta 0, promoted
    assert report.bootstrap is not None and report.bootstrap.delta == 0.0
    assert report.decision is not None and report.decision.promote


def concept_region(n: int, seed: int, region: tuple[float, float], driver: str) -> pl.DataFrame:
    """The label follows ``driver`` (f0 or f1) in a region of f2."""
    rng = np.random.default_rng(seed)
    f0, f1 = rng.normal(size=n), rng.normal(size=n)
    f2 = rng.uniform(*region, size=n)
    signal = f0 if driver == "f0" else f1
    labels = (signal + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    return dataset_frame({"f0": f0, "f1": f1, "f2": f2}, labels)


def mixed(old: pl.DataFrame, new: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The train rows of both concepts in one window, interleaved in time, split again.

    Their holdout rows are left out: they are the frames the gate scores.
    """
    train = pl.concat([old, new]).filter(pl.col("split") == "train")
    both = train.sample(fraction=1.0, shuffle=True, seed=seed)
    n = both.height
    return both.with_columns(
        log_offset=pl.Series(np.arange(n)),
        timestamp=pl.Series([START + timedelta(minutes=i) for i in range(n)]),
        split=pl.Series(["train"] * (n - n // 4) + ["holdout"] * (n // 4)),
    )


def test_gate_rejects_a_candidate_that_forgets_an_old_concept() -> None:
    old = concept_region(2000, seed=10, region=(-3.0, -1.0), driver="f0")
    new = concept_region(2000, seed=11, region=(1.0, 3.0), driver="f1")
    champion = train_model(mixed(old, new, seed=1), PARAMS).model
    forgetful = train_model(new, PARAMS).model
    history = {"older_window": holdout_of(old)}
    config = GateConfig(tolerance=0.02)
    report = evaluate_gate(forgetful, champion, holdout_of(new), history, [], config)
    assert report.decision is not None and not report.decision.promote
    forgets = [r for r in report.decision.failed if r.startswith("forgets older_window")]
    assert len(forgets) == 1, report.decision.reasons
    old_metrics = report.forgetting[0]
    assert old_metrics.rows == 500
    assert old_metrics.candidate["auc"] < 0.7 < 0.9 < old_metrics.champion["auc"]  # type: ignore[index]
    # a candidate that learned both concepts (other data, other seed) remembers
    both = mixed(
        concept_region(2000, seed=20, region=(-3.0, -1.0), driver="f0"),
        concept_region(2000, seed=21, region=(1.0, 3.0), driver="f1"),
        seed=2,
    )
    other = train_model(
        both, TrainParams(num_boost_round=60, learning_rate=0.1, num_threads=1, seed=3)
    )
    remembering = evaluate_gate(other.model, champion, holdout_of(new), history, [], config)
    assert remembering.decision is not None
    reasons = remembering.decision.reasons
    assert any(r.startswith("remembers older_window") for r in reasons), reasons
    assert not any("forgets" in r for r in reasons)


def test_older_data_of_a_changed_concept_is_reported_but_the_reservoir_still_counts() -> None:
    """Concept drift in the same region: the label used to follow f0 and now follows f1.
    The adapted candidate is clearly better on the current holdout, so doing worse than
    the champion on the champion's older window is the drift being learned, not
    forgetting; a reservoir (kept in the window on purpose) is still held against it."""
    before = concept_region(2000, seed=30, region=(-1.0, 1.0), driver="f0")
    after = concept_region(2000, seed=31, region=(-1.0, 1.0), driver="f1")
    champion = train_model(before, PARAMS).model
    adapted = train_model(after, PARAMS).model
    config = GateConfig(tolerance=0.02)
    older = {"older_window": holdout_of(before)}
    report = evaluate_gate(adapted, champion, holdout_of(after), older, [], config)
    assert report.decision is not None and report.decision.promote, report.decision
    assert report.bootstrap is not None and report.bootstrap.low > 0
    assert report.forgetting[0].candidate["auc"] < 0.7 < 0.9 < report.forgetting[0].champion["auc"]  # type: ignore[index]
    assert any("older_window not held against the candidate" in r for r in report.decision.reasons)
    kept = {"reservoir": holdout_of(before)}
    strict = evaluate_gate(adapted, champion, holdout_of(after), kept, [], config)
    assert strict.decision is not None and not strict.decision.promote
    assert [r for r in strict.decision.failed if r.startswith("forgets reservoir")]


def test_slice_check_flags_a_candidate_worse_on_one_segment(
    data: pl.DataFrame, good: TrainedModel
) -> None:
    inverted = (
        pl.when(pl.col("segment") == "c")
        .then((1 - pl.col("label").cast(pl.Int64)).cast(pl.String))
        .otherwise(pl.col("label"))
    )
    biased = train_model(with_train_labels(data, inverted), PARAMS).model
    config = GateConfig(tolerance=1.0, max_ece=1.0)  # only the slice check can reject
    report = evaluate_gate(biased, good, holdout_of(data), {}, ["segment"], config)
    assert report.decision is not None and not report.decision.promote
    flagged = [r for r in report.decision.failed if r.startswith("worse on slice")]
    assert len(flagged) == 1 and "segment=c" in flagged[0], report.decision.reasons
    assert report.decision.failed == flagged
    c = next(s for s in report.slices if s.value == "c")
    assert c.candidate["auc"] < 0.5 < 0.8 < c.champion["auc"]  # type: ignore[index]
    # the same slice below min_slice_rows is not compared
    small = decide(report, GateConfig(tolerance=1.0, max_ece=1.0, min_slice_rows=10_000))
    assert small.promote
    assert any("slices of segment: none compared; 3 with < 10000 rows" in r for r in small.reasons)


def test_gate_on_a_multiclass_model() -> None:
    rng = np.random.default_rng(7)
    n = 2400
    f = rng.normal(size=(n, 2))
    labels = np.where(f[:, 0] < -0.5, 0, np.where(f[:, 0] < 0.5, 1, 2))
    frame = dataset_frame({"f0": f[:, 0], "f1": f[:, 1]}, labels)
    frame = frame.with_columns(pl.col("label").replace({"0": "low", "1": "mid", "2": "high"}))
    model = train_model(frame, PARAMS).model
    blind = train_model(frame.drop("f0"), PARAMS).model
    report = evaluate_gate(blind, model, holdout_of(frame), {}, ["f0", "arm"], GateConfig())
    assert report.candidate["auc"] < 0.7 < 0.95 < report.champion["auc"]  # type: ignore[index]
    assert report.bootstrap is not None and report.bootstrap.high < 0
    # quartiles of f0 hold one or two classes: AUC over the classes present
    assert all(not math.isnan(s.champion["auc"]) for s in report.slices if s.column == "arm")  # type: ignore[index]
    assert report.decision is not None and not report.decision.promote
    json.dumps(report.to_dict(), allow_nan=False)


# --- decide on hand-made reports --------------------------------------------------------------


def report_of(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    bootstrap: BootstrapResult | None = None,
    slices: list[SliceMetrics] | None = None,
    forgetting: list[HistoryMetrics] | None = None,
) -> GateReport:
    return GateReport(
        "auc", candidate, champion, bootstrap, slices or [], forgetting or [], GateConfig()
    )


def test_decide_reasons_name_the_numbers() -> None:
    config = GateConfig(tolerance=0.02, min_metric=0.6)
    candidate = {"auc": 0.80, "ece": 0.05, "rows": 1000.0}
    champion = {"auc": 0.82, "ece": 0.04, "rows": 1000.0}
    interval = "95% paired bootstrap interval of auc delta (candidate - champion)"

    def bootstrap(delta: float, low: float, high: float) -> BootstrapResult:
        return BootstrapResult(delta, low, high, 1000, "auc", 0.95)

    # the interval straddles -tolerance: the holdout cannot tell, and says what would
    unsure = decide(report_of(candidate, champion, bootstrap(-0.02, -0.05, 0.01)), config)
    assert not unsure.promote and unsure.label == "reject" and unsure.inconclusive
    assert unsure.reasons[:2] == [
        "candidate auc 0.8000 >= floor 0.6000",
        "candidate ece 0.0500 <= max 0.1500",
    ]
    assert unsure.failed == [
        f"inconclusive: {interval} [-0.0500, +0.0100], delta -0.0200 (1000 resamples) holds "
        "-tolerance -0.0200; the difference is at the tolerance itself: no holdout of "
        "practical size decides it (now 1000 rows)"
    ]
    closer = decide(report_of(candidate, champion, bootstrap(-0.01, -0.04, 0.02)), config)
    # half-width 0.03 over a distance of 0.01 to -tolerance: 9 times the rows
    assert closer.inconclusive and closer.failed[0].endswith(
        "about 9000 holdout rows would decide a difference of this size (now 1000)"
    )
    worse = decide(report_of(candidate, champion, bootstrap(-0.06, -0.09, -0.03)), config)
    assert not worse.promote and not worse.inconclusive
    assert worse.failed == [
        f"worse: {interval} [-0.0900, -0.0300], delta -0.0600 (1000 resamples) lies below "
        "-tolerance -0.0200"
    ]
    # not worse by the tolerance, even with the point estimate below the champion
    within = decide(report_of(candidate, champion, bootstrap(-0.005, -0.015, 0.01)), config)
    assert within.promote and within.failed == [] and len(within.reasons) == 3
    assert within.reasons[2].startswith("not worse: ")


def test_decide_without_a_metric_rejects() -> None:
    for candidate in ({}, {"auc": float("nan")}):
        decision = decide(report_of(candidate, {"auc": 0.8}), GateConfig())
        assert decision == GateDecision(False, decision.reasons, decision.reasons)
        assert decision.reasons == ["candidate has no auc on the holdout"]


def test_decide_calibration() -> None:
    config = GateConfig(max_ece=0.15, min_metric=0.5)
    candidate = {"auc": 0.8, "ece": 0.30}
    alone = decide(report_of(candidate, None), config)
    assert alone.promote, alone.reasons
    assert "candidate ece 0.3000 > max 0.1500: not held against a first model" in (alone.reasons[1])
    no_champion_ece = decide(report_of(candidate, {"auc": 0.8}), config)
    assert not no_champion_ece.promote
    assert no_champion_ece.failed[0].startswith("poorly calibrated")
    worse = decide(report_of(candidate, {"auc": 0.8, "ece": 0.25}), config)
    assert not worse.promote
    assert worse.failed == [
        "poorly calibrated: candidate ece 0.3000 > max 0.1500 and > champion 0.2500 + 0.0200"
    ]
    as_bad = decide(report_of(candidate, {"auc": 0.8, "ece": 0.29}), config)
    assert as_bad.promote, as_bad.reasons


def test_decide_forgetting_and_slices_need_enough_rows() -> None:
    config = GateConfig(min_metric=0.5, min_slice_rows=50)
    metrics = {"auc": 0.8, "ece": 0.05}
    few = HistoryMetrics("older_window", 49, {"auc": 0.5}, {"auc": 0.9})
    enough = HistoryMetrics("reservoir", 50, {"auc": 0.5}, {"auc": 0.9})
    slices = [
        SliceMetrics("arm", "a", 49, {"auc": 0.1}, {"auc": 0.9}),
        SliceMetrics("arm", "b", 60, {"auc": 0.86}, {"auc": 0.9}),
        SliceMetrics("arm", "c", 60, {"auc": float("nan")}, {"auc": 0.9}),
    ]
    decision = decide(report_of(metrics, metrics, None, slices, [few, enough]), config)
    assert not decision.promote
    # without a bootstrap of the drop, the drop alone decides (p taken as 0)
    assert decision.failed == [
        "forgets reservoir: candidate auc 0.5000 < champion 0.9000 - 0.0200 on 50 rows; "
        "significant: one-sided p 0.0000 by Holm over 2 compared at 0.025"
    ]
    assert "older_window: 49 rows < 50, not compared" in decision.reasons
    assert "no paired bootstrap: the point estimate decides" in decision.reasons
    assert (
        "slices of arm: 1 compared, 0 below champion - 0.0500 (lowest delta -0.0400 at b); "
        "1 with < 50 rows; 1 with auc undefined"
    ) in decision.reasons


def test_drops_beyond_tolerance_fail_only_when_significant_by_holm() -> None:
    config = GateConfig(min_metric=0.5, tolerance=0.02, slice_tolerance=0.05)
    metrics = {"auc": 0.8, "ece": 0.05, "rows": 2000.0}
    same = BootstrapResult(0.0, -0.01, 0.01, 1000, "auc", 0.90)

    def dropped(value: str, p: float) -> SliceMetrics:
        b = BootstrapResult(-0.1, -0.2, 0.0, 1000, "auc", 0.90, p_worse=p)
        return SliceMetrics("segment", value, 60, {"auc": 0.7}, {"auc": 0.8}, b)

    # 10 slices compared: p 0.002 <= 0.025 / 10 rejects; p 0.01 > 0.025 / 9 does not
    slices = [dropped("a", 0.002), dropped("b", 0.01)]
    slices += [SliceMetrics("segment", f"s{i}", 60, {"auc": 0.8}, {"auc": 0.8}) for i in range(8)]
    decision = decide(report_of(metrics, metrics, same, slices), config)
    assert not decision.promote and not decision.inconclusive
    assert decision.failed == [
        "worse on slice segment=a (60 rows): candidate auc 0.7000 < champion 0.8000 - 0.0500; "
        "significant: one-sided p 0.0020 by Holm over 10 compared at 0.025"
    ]
    assert (
        "within noise: worse on slice segment=b (60 rows): candidate auc 0.7000 < champion "
        "0.8000 - 0.0500; not significant: one-sided p 0.0100 by Holm over 10 compared at 0.025"
    ) in decision.reasons
    # fewer slices compared: the same p-values are significant
    assert not decide(report_of(metrics, metrics, same, slices[:2]), config).promote
    assert holm([0.004, 0.02], 0.05, family=10) == [True, False]
    assert holm([0.004, 0.02], 0.05) == [True, True]
    assert holm([0.04, 0.001, 0.03], 0.05) == [False, True, False]


# --- report rendering and plots ---------------------------------------------------------------


def test_report_to_dict_and_markdown(
    data: pl.DataFrame, good: TrainedModel, weak: TrainedModel
) -> None:
    history = {"older_window": holdout_of(data).head(30), "reservoir": holdout_of(data)}
    report = evaluate_gate(good, weak, holdout_of(data), history, ["segment", "f1"], GateConfig())
    as_dict = report.to_dict()
    text = json.dumps(as_dict, allow_nan=False)
    assert json.loads(text)["decision"] == "promote"
    assert as_dict["bootstrap"]["metric"] == "auc"
    assert len(as_dict["slices"]) == 3 + 4 and as_dict["config"]["min_slice_rows"] == 50
    assert as_dict["reasons"] == report.decision.reasons  # type: ignore[union-attr]
    markdown = report.markdown()
    for heading in ("### Holdout", "### Paired bootstrap", "### Slices", "### Forgetting"):
        assert heading in markdown
    assert markdown.startswith("**promote**")
    assert "| segment | c |" in markdown and "| older_window | 30 |" in markdown
    assert "older_window: 30 rows < 50, not compared" in markdown
    # NaN (a slice without both classes) becomes None in the dict and "-" in the markdown
    one_class = holdout_of(data).filter(pl.col("label") == "1")
    nan_report = evaluate_gate(good, weak, one_class, {}, [], GateConfig(n_resamples=20))
    assert nan_report.to_dict()["candidate"]["auc"] is None
    assert "| auc | - | - | - |" in nan_report.markdown()
    assert nan_report.decision is not None and not nan_report.decision.promote


def test_plots_are_small_pngs(data: pl.DataFrame, good: TrainedModel, weak: TrainedModel) -> None:
    holdout = holdout_of(data)
    y = good.spec.label_indices(holdout["label"])
    probas = {"candidate": good.predict_proba(holdout), "champion": weak.predict_proba(holdout)}
    images = {
        "roc": roc_png(y, probas, good.spec.classes),
        "calibration": calibration_png(y, probas, good.spec.classes),
        "importance": importance_png(good.booster),
        "roc3": roc_png(
            np.array([0, 1, 2, 2]), {"m": np.eye(3)[[0, 1, 2, 1]] * 0.7 + 0.1}, ["x", "y", "z"]
        ),
    }
    for name, png in images.items():
        assert png.startswith(PNG_MAGIC), name
        assert 2_000 < len(png) < 60_000, (name, len(png))
    embedded = png_markdown(images["roc"], "ROC")
    assert embedded.startswith("![ROC](data:image/png;base64,") and len(embedded) < 80_000


def test_older_data_before_a_change_point_is_not_held_against_the_candidate() -> None:
    """history_frames: the champion's held-out rows before the candidate's window are
    checked for forgetting, but only from a detected change point on."""
    from datetime import UTC, datetime, timedelta

    from ct_assets.pipeline.gate_run import history_frames

    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def frame(minutes: range, split: str) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "timestamp": [t0 + timedelta(minutes=m) for m in minutes],
                "split": [split] * len(minutes),
                "window_part": ["recent"] * len(minutes),
                "label": ["1"] * len(minutes),
            }
        )

    champion_dataset = frame(range(0, 100), "holdout")
    dataset = frame(range(80, 200), "train")
    older = history_frames(dataset, champion_dataset)["older_window"]
    assert older.height == 80  # minutes 0..79, before the candidate's window
    after_change = history_frames(dataset, champion_dataset, t0 + timedelta(minutes=60))
    assert after_change["older_window"].height == 20  # minutes 60..79
    at_window = history_frames(dataset, champion_dataset, t0 + timedelta(minutes=80))
    assert "older_window" not in at_window

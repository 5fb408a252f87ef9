"""Unit tests of training, metrics, the promotion gate, the model wrapper and the simulator."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ct_assets import schema
from ct_assets.data.dataset import compile_dataset, labeled_examples
from ct_assets.eventlog import EventLog
from ct_assets.simulate import CHANNELS, N_NUMERIC, SimulationSpec, simulate_events, simulate_rows
from ct_assets.training.gate import GateDecision
from ct_assets.training.gate import decide_on_metrics as decide
from ct_assets.training.metrics import PRIMARY_METRIC, classification_metrics
from ct_assets.training.model import MODEL_FILE, SPEC_FILE, FeatureSpec, TrainedModel
from ct_assets.training.train import TrainParams, TrainResult, evaluate, feature_spec, train_model

END = datetime(2024, 6, 1, tzinfo=UTC)
# One thread: fast and steady on a busy machine; determinism with threads is tested below.
PARAMS = TrainParams(num_boost_round=50, learning_rate=0.1, num_threads=1)
FEATURES = sorted([*(f"x{j}" for j in range(N_NUMERIC)), "channel"])


def simulated_dataset(root: Path, rows: int, drift: str = "none") -> pl.DataFrame:
    """The whole path: simulator -> schema -> event log -> labeled examples -> dataset."""
    spec = SimulationSpec(rows=rows, seed=11, drift=drift, kind="both", end=END)  # type: ignore[arg-type]
    candidates = [schema.convert_record(r, i) for i, r in enumerate(simulate_events(spec))]
    log = EventLog(root)
    assert log.append(schema.validate_events(candidates)).accepted == 2 * rows
    examples = labeled_examples(log.read("feedback"), log.read("prediction"))
    return compile_dataset(examples, window=rows, holdout_fraction=0.2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return simulated_dataset(tmp_path_factory.mktemp("sim") / "eventlog", rows=3000)


@pytest.fixture(scope="module")
def champion(dataset: pl.DataFrame) -> TrainResult:
    return train_model(dataset, PARAMS)


def train_median_offset(dataset: pl.DataFrame) -> int:
    offsets = dataset.filter(pl.col("split") == "train")["log_offset"].sort()
    return int(offsets[len(offsets) // 2])


# --- full training ----------------------------------------------------------------------------


def test_simulated_dataset_shape(dataset: pl.DataFrame) -> None:
    assert dataset.height == 3000
    assert dataset.columns[:5] == ["event_id", "log_offset", "timestamp", "label", "split"]
    assert sorted(dataset.columns[5:]) == FEATURES
    assert dataset.filter(pl.col("split") == "holdout").height == 600
    assert set(dataset["label"].unique()) == {"0", "1"}


def test_full_training_learns_the_concept(dataset: pl.DataFrame, champion: TrainResult) -> None:
    assert champion.mode == "full" and champion.notes == []
    metrics = champion.holdout_metrics
    assert metrics[PRIMARY_METRIC] > 0.8
    assert metrics["accuracy"] > 0.7
    assert metrics["rows"] == 600
    assert {"accuracy", "log_loss", "brier", "auc", "rows"} <= set(metrics)
    # a small dataset: every round on every train row, as plain LightGBM trains
    assert not champion.early_stopped and champion.validation_metrics == {}
    assert champion.best_iteration == PARAMS.num_boost_round
    assert champion.model.booster.current_iteration() == champion.best_iteration
    n_train = dataset.filter(pl.col("split") == "train").height
    assert champion.train_rows == n_train
    assert champion.seconds > 0
    spec = champion.model.spec
    assert sorted(spec.feature_names) == FEATURES
    assert spec.categories == {"channel": sorted(CHANNELS)}
    assert spec.classes == ["0", "1"]
    assert spec.params["objective"] == "binary"
    # the reported metrics are those of evaluate() on the holdout
    holdout = dataset.filter(pl.col("split") == "holdout")
    assert evaluate(champion.model, holdout) == pytest.approx(metrics)


def test_training_is_deterministic(dataset: pl.DataFrame, champion: TrainResult) -> None:
    again = train_model(dataset, PARAMS)
    assert again.best_iteration == champion.best_iteration
    assert np.array_equal(again.model.predict_proba(dataset), champion.model.predict_proba(dataset))
    assert again.holdout_metrics == champion.holdout_metrics


def test_training_with_threads_is_deterministic(dataset: pl.DataFrame) -> None:
    params = TrainParams(num_boost_round=50, learning_rate=0.1, num_threads=2)
    first, second = train_model(dataset, params), train_model(dataset, params)
    assert first.best_iteration == second.best_iteration
    assert np.array_equal(first.model.predict_proba(dataset), second.model.predict_proba(dataset))


def test_other_params_give_another_model(dataset: pl.DataFrame, champion: TrainResult) -> None:
    other = train_model(
        dataset, TrainParams(num_boost_round=50, learning_rate=0.1, num_leaves=4, num_threads=1)
    )
    assert not np.array_equal(
        other.model.predict_proba(dataset), champion.model.predict_proba(dataset)
    )


def test_predictions_are_probabilities_in_class_order(
    champion: TrainResult, dataset: pl.DataFrame
) -> None:
    proba = champion.model.predict_proba(dataset)
    assert proba.shape == (dataset.height, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all()
    predicted = champion.model.predict(dataset)
    assert predicted == [["0", "1"][i] for i in proba.argmax(axis=1)]
    # class "1" is more likely where the true logit (2*x0 - 1.5*x1 + x2 ...) is high
    high = dataset.filter((pl.col("x0") > 1.0) & (pl.col("x1") < -1.0))
    low = dataset.filter((pl.col("x0") < -1.0) & (pl.col("x1") > 1.0))
    assert champion.model.predict_proba(high)[:, 1].mean() > 0.8
    assert champion.model.predict_proba(low)[:, 1].mean() < 0.2


def test_single_class_cannot_be_trained(dataset: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="two classes"):
        train_model(dataset.filter(pl.col("label") == "1"), PARAMS)


# --- incremental ------------------------------------------------------------------------------


def test_incremental_continues_boosting_the_champion(
    dataset: pl.DataFrame, champion: TrainResult
) -> None:
    champion_trees = champion.model.booster.current_iteration()
    cutoff = train_median_offset(dataset)
    result = train_model(
        dataset, PARAMS, mode="incremental", champion=champion.model, new_after_offset=cutoff
    )
    assert result.mode == "incremental" and result.notes == []
    assert result.model.booster.current_iteration() > champion_trees
    assert champion.model.booster.current_iteration() == champion_trees  # champion untouched
    assert result.model.spec.compatible_with(champion.model.spec)
    new_train = dataset.filter((pl.col("split") == "train") & (pl.col("log_offset") > cutoff))
    assert result.train_rows == new_train.height
    assert result.train_rows < champion.train_rows
    # its first trees are the champion's
    matrix = champion.model.spec.matrix(dataset)
    assert np.allclose(
        result.model.booster.predict(matrix, num_iteration=champion_trees),
        champion.model.booster.predict(matrix),
    )
    assert result.holdout_metrics[PRIMARY_METRIC] > 0.8


def test_incremental_without_champion_is_full(dataset: pl.DataFrame, champion: TrainResult) -> None:
    result = train_model(dataset, PARAMS, mode="incremental", champion=None)
    assert result.mode == "full"
    assert any("no champion" in note for note in result.notes)
    assert np.array_equal(
        result.model.predict_proba(dataset), champion.model.predict_proba(dataset)
    )


def test_incremental_falls_back_when_features_differ(dataset: pl.DataFrame) -> None:
    narrow = dataset.drop("x7")
    old = train_model(narrow, PARAMS)
    assert "x7" not in old.model.spec.feature_names
    result = train_model(
        dataset,
        PARAMS,
        mode="incremental",
        champion=old.model,
        new_after_offset=train_median_offset(dataset),
    )
    assert result.mode == "full"
    assert any("feature schema or classes changed" in note for note in result.notes)
    assert "x7" in result.model.spec.feature_names
    assert result.model.booster.current_iteration() <= PARAMS.num_boost_round
    n_train = dataset.filter(pl.col("split") == "train").height
    assert result.train_rows == n_train


def test_incremental_falls_back_when_categories_differ(dataset: pl.DataFrame) -> None:
    fewer = dataset.filter(pl.col("channel") != "store")
    old = train_model(fewer, PARAMS)
    result = train_model(dataset, PARAMS, mode="incremental", champion=old.model)
    assert result.mode == "full"
    assert result.model.spec.categories["channel"] == sorted(CHANNELS)
    assert result.notes


def test_incremental_with_too_few_new_rows_is_full(
    dataset: pl.DataFrame, champion: TrainResult
) -> None:
    last = int(dataset.filter(pl.col("split") == "train")["log_offset"].max())  # type: ignore[arg-type]
    result = train_model(
        dataset, PARAMS, mode="incremental", champion=champion.model, new_after_offset=last - 3
    )
    assert result.mode == "full"
    assert any("new rows" in note for note in result.notes)
    assert result.model.booster.current_iteration() == champion.model.booster.current_iteration()
    assert np.array_equal(
        result.model.predict_proba(dataset), champion.model.predict_proba(dataset)
    )


# --- multiclass -------------------------------------------------------------------------------


def test_multiclass_training(dataset: pl.DataFrame) -> None:
    three = dataset.with_columns(
        pl.when(pl.col("x0") < -0.5)
        .then(pl.lit("low"))
        .when(pl.col("x0") < 0.5)
        .then(pl.lit("mid"))
        .otherwise(pl.lit("high"))
        .alias("label")
    )
    result = train_model(three, PARAMS)
    spec = result.model.spec
    assert spec.classes == ["high", "low", "mid"]
    assert spec.params["objective"] == "multiclass" and spec.params["num_class"] == 3
    proba = result.model.predict_proba(three)
    assert proba.shape == (three.height, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    predicted = result.model.predict(three)
    accuracy = np.mean(np.array(predicted) == three["label"].to_numpy())
    assert accuracy > 0.9
    assert result.holdout_metrics["auc"] > 0.9
    assert result.holdout_metrics["accuracy"] > 0.9


# --- model persistence ------------------------------------------------------------------------


def test_model_save_load_roundtrip(
    tmp_path: Path, dataset: pl.DataFrame, champion: TrainResult
) -> None:
    directory = champion.model.save(tmp_path / "model")
    assert sorted(p.name for p in directory.iterdir()) == sorted([MODEL_FILE, SPEC_FILE])
    loaded = TrainedModel.load(directory)
    assert loaded.spec == champion.model.spec
    assert np.array_equal(loaded.predict_proba(dataset), champion.model.predict_proba(dataset))
    assert loaded.predict(dataset) == champion.model.predict(dataset)
    assert evaluate(loaded, dataset.filter(pl.col("split") == "holdout")) == pytest.approx(
        champion.holdout_metrics
    )


def test_feature_spec_json_roundtrip() -> None:
    spec = FeatureSpec(["a", "c"], {"c": ["x", "y"]}, ["0", "1"], {"seed": 1})
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert spec.categorical_indices == [1]


def test_feature_spec_matrix_codes_categories_and_marks_missing() -> None:
    spec = FeatureSpec(["num", "cat", "absent"], {"cat": ["a", "b"]}, ["no", "yes"])
    frame = pl.DataFrame(
        {"num": [1, None, 3], "cat": ["b", "unseen", None], "label": ["yes", "no", "yes"]}
    )
    matrix = spec.matrix(frame)
    assert matrix.shape == (3, 3)
    assert matrix[:, 0].tolist()[0] == 1.0 and math.isnan(matrix[1, 0]) and matrix[2, 0] == 3.0
    assert matrix[0, 1] == 1.0 and math.isnan(matrix[1, 1]) and math.isnan(matrix[2, 1])
    assert np.isnan(matrix[:, 2]).all()
    assert spec.label_indices(frame["label"]).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="maybe"):
        spec.label_indices(pl.Series(["yes", "maybe"]))
    assert FeatureSpec([], {}, ["a", "b"]).matrix(frame).shape == (3, 0)


def test_feature_spec_from_frame() -> None:
    frame = pl.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "log_offset": [0, 1, 2],
            "timestamp": [END] * 3,
            "label": [1, 0, 1],
            "split": ["train", "train", "holdout"],
            "b": [1.0, 2.0, 3.0],
            "a": ["y", None, "x"],
        }
    )
    spec = feature_spec(frame, {"k": 1})
    assert spec.feature_names == ["b", "a"]
    assert spec.categories == {"a": ["x", "y"]}
    assert spec.classes == ["0", "1"]
    compatible = FeatureSpec(["b", "a"], {"a": ["x", "y"]}, ["0", "1"], {"other": 2})
    assert spec.compatible_with(compatible)
    assert not spec.compatible_with(FeatureSpec(["a", "b"], {"a": ["x", "y"]}, ["0", "1"]))
    assert not spec.compatible_with(FeatureSpec(["b", "a"], {"a": ["x"]}, ["0", "1"]))
    assert not spec.compatible_with(FeatureSpec(["b", "a"], {"a": ["x", "y"]}, ["0", "1", "2"]))


def test_evaluate_on_empty_or_unknown_labels(champion: TrainResult, dataset: pl.DataFrame) -> None:
    assert evaluate(champion.model, dataset.clear()) == {}
    holdout = dataset.filter(pl.col("split") == "holdout")
    mixed = pl.concat([holdout, holdout.head(5).with_columns(pl.lit("unknown").alias("label"))])
    assert evaluate(champion.model, mixed) == pytest.approx(evaluate(champion.model, holdout))


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_of_perfect_and_inverted_binary_predictions() -> None:
    y = np.array([0, 1, 1, 0])
    perfect = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.7, 0.3]])
    m = classification_metrics(y, perfect)
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0 and m["rows"] == 4.0
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.9, 0.7])))
    assert m["brier"] == pytest.approx(np.mean([0.02, 0.08, 0.02, 0.18]))
    inverted = classification_metrics(y, perfect[:, ::-1])
    assert inverted["auc"] == 0.0 and inverted["accuracy"] == 0.0
    assert inverted["log_loss"] > m["log_loss"]


def test_metrics_with_one_class_present_have_nan_auc() -> None:
    m = classification_metrics(np.array([1, 1, 1]), np.array([[0.2, 0.8]] * 3))
    assert math.isnan(m["auc"])
    assert m["accuracy"] == 1.0
    assert math.isfinite(m["log_loss"])


def test_multiclass_metrics() -> None:
    y = np.array([0, 1, 2, 2, 1, 0])
    proba = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.1, 0.8],
            [0.2, 0.2, 0.6],
            [0.3, 0.6, 0.1],
            [0.5, 0.25, 0.25],
        ]
    )
    m = classification_metrics(y, proba)
    assert m["auc"] == 1.0 and m["accuracy"] == 1.0
    shuffled = classification_metrics(y, proba[:, [1, 2, 0]])
    assert shuffled["auc"] < 0.5 and shuffled["accuracy"] == 0.0


def test_metrics_tolerate_zero_probabilities() -> None:
    m = classification_metrics(np.array([0, 1]), np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert math.isfinite(m["log_loss"]) and m["log_loss"] > 10


# --- the promotion gate -----------------------------------------------------------------------


def test_gate_equal_metric_passes() -> None:
    decision = decide({"auc": 0.8}, {"auc": 0.8}, tolerance=0.0, min_metric=0.55)
    assert decision == GateDecision(True, decision.reasons)
    assert decision.promote and decision.label == "promote"
    assert len(decision.reasons) == 2


def test_gate_within_tolerance_passes_below_rejects() -> None:
    assert decide({"auc": 0.79}, {"auc": 0.8}, tolerance=0.01, min_metric=0.5).promote
    assert decide({"auc": 0.795}, {"auc": 0.8}, tolerance=0.01, min_metric=0.5).promote
    rejected = decide({"auc": 0.78}, {"auc": 0.8}, tolerance=0.01, min_metric=0.5)
    assert not rejected.promote and rejected.label == "reject"
    assert any("champion" in r and "0.7800" in r and "0.8000" in r for r in rejected.reasons)
    strict = decide({"auc": 0.799}, {"auc": 0.8}, tolerance=0.0, min_metric=0.5)
    assert not strict.promote


def test_gate_better_candidate_passes() -> None:
    assert decide({"auc": 0.9}, {"auc": 0.8}, tolerance=0.0, min_metric=0.55).promote


@pytest.mark.parametrize("candidate", [{}, {"auc": float("nan")}, {"accuracy": 0.99}])
def test_gate_missing_or_nan_metric_rejects(candidate: dict[str, float]) -> None:
    for champion_metrics in (None, {"auc": 0.5}):
        decision = decide(candidate, champion_metrics, tolerance=0.1, min_metric=0.0)
        assert not decision.promote
        assert decision.reasons and "no auc" in decision.reasons[0]


def test_gate_floor_is_enforced() -> None:
    below = decide({"auc": 0.54}, {"auc": 0.5}, tolerance=0.0, min_metric=0.55)
    assert not below.promote
    assert any("floor" in r and "<" in r for r in below.reasons)
    assert decide({"auc": 0.55}, {"auc": 0.5}, tolerance=0.0, min_metric=0.55).promote


def test_gate_without_champion_is_decided_by_the_floor() -> None:
    passed = decide({"auc": 0.6}, None, tolerance=0.0, min_metric=0.55)
    assert passed.promote and any("no champion" in r for r in passed.reasons)
    failed = decide({"auc": 0.5}, None, tolerance=0.0, min_metric=0.55)
    assert not failed.promote and any("no champion" in r for r in failed.reasons)


def test_gate_champion_without_metric_is_not_compared() -> None:
    for champion_metrics in ({}, {"auc": float("nan")}):
        assert decide({"auc": 0.6}, champion_metrics, 0.0, 0.55).promote
        assert not decide({"auc": 0.5}, champion_metrics, 0.0, 0.55).promote


def test_gate_on_real_models(dataset: pl.DataFrame, champion: TrainResult) -> None:
    holdout = dataset.filter(pl.col("split") == "holdout")
    weak = train_model(dataset.select(pl.exclude("x0", "x1", "x2")), PARAMS)
    weak_metrics = evaluate(weak.model, holdout)
    assert weak_metrics["auc"] < champion.holdout_metrics["auc"] - 0.05
    assert not decide(weak_metrics, champion.holdout_metrics, 0.01, 0.5).promote
    assert decide(champion.holdout_metrics, weak_metrics, 0.0, 0.5).promote


# --- the simulator ----------------------------------------------------------------------------


def test_simulation_is_determined_by_its_spec() -> None:
    spec = SimulationSpec(rows=50, seed=4, kind="both", end=END)
    first, second = list(simulate_events(spec)), list(simulate_events(spec))
    assert first == second
    other = list(simulate_events(SimulationSpec(rows=50, seed=5, kind="both", end=END)))
    assert other != first
    features = [[e.get("features") for e in events] for events in (first, other)]
    assert features[0] != features[1]
    assert [e["event_id"] for e in first][:2] == ["pe-4-00000000", "fb-4-00000000"]


def test_simulated_events_are_valid_and_spread_over_the_days() -> None:
    spec = SimulationSpec(rows=40, seed=1, kind="both", days=2, end=END)
    records = list(simulate_events(spec))
    assert len(records) == 80
    events = schema.validate_events(
        [schema.convert_record(r, i) for i, r in enumerate(records)], now=END
    )
    assert len({e.event_id for e in events}) == 80
    predictions = [e for e in events if isinstance(e, schema.PredictionEvent)]
    feedback = [e for e in events if isinstance(e, schema.FeedbackEvent)]
    assert len(predictions) == len(feedback) == 40
    assert all(
        f.prediction_id == p.prediction_id for p, f in zip(predictions, feedback, strict=True)
    )
    assert all(f.features is None for f in feedback)
    assert predictions[0].timestamp == END - timedelta(days=2)
    assert max(e.timestamp for e in events) < END
    assert sorted(predictions[0].features) == FEATURES


@pytest.mark.parametrize(("kind", "n_pred", "n_fb"), [("feedback", 0, 30), ("predictions", 30, 0)])
def test_simulation_kinds(kind: str, n_pred: int, n_fb: int) -> None:
    spec = SimulationSpec(rows=30, kind=kind, end=END)  # type: ignore[arg-type]
    records = list(simulate_events(spec))
    assert sum(r["kind"] == "prediction" for r in records) == n_pred
    assert sum(r["kind"] == "feedback" for r in records) == n_fb
    if kind == "feedback":
        assert all("features" in r and "prediction_id" not in r for r in records)


def test_simulated_drift() -> None:
    rows = list(simulate_rows(SimulationSpec(rows=100, drift="concept", drift_at=0.3, end=END)))
    assert [r["drifted"] for r in rows] == [False] * 30 + [True] * 70
    assert not any(r["drifted"] for r in simulate_rows(SimulationSpec(rows=50, drift="none")))
    base = list(simulate_rows(SimulationSpec(rows=2000, drift="none", end=END)))
    shifted = list(simulate_rows(SimulationSpec(rows=2000, drift="covariate", end=END)))
    mean_x0 = [np.mean([r["features"]["x0"] for r in rs[1000:]]) for rs in (base, shifted)]
    assert mean_x0[1] - mean_x0[0] == pytest.approx(1.5, abs=0.01)

"""Unit tests of feedback attribution, training windows and the active-learning queue
(ct_assets.data.attribution, .windows, .uncertainty)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from ct_assets import schema
from ct_assets.data.attribution import (
    EXAMPLE_COLUMNS,
    LabelPolicy,
    UnknownSignalError,
    attribute_feedback,
    attribution_summary,
    unattributed,
    unlabeled,
)
from ct_assets.data.dataset import compile_dataset
from ct_assets.data.uncertainty import QUEUE_COLUMNS, labeling_queue, uncertainty
from ct_assets.data.windows import WindowSpec, partitions_for, select_window
from ct_assets.eventlog.decode import events_to_frame

T0 = datetime(2024, 5, 1, tzinfo=UTC)


# --- event builders -----------------------------------------------------------------------------


def pred(
    i: int,
    features: dict[str, Any] | None = None,
    prediction_id: str | None = None,
    scores: dict[str, float] | None = None,
    minute: float | None = None,
    model_version: str = "3",
    arm: str = "champion",
    prediction: Any = 1,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "prediction",
        "event_id": f"pe-{i}",
        "prediction_id": prediction_id or f"pred-{i}",
        "timestamp": (T0 + timedelta(minutes=i if minute is None else minute)).isoformat(),
        "features": features if features is not None else {"x": float(i), "channel": "web"},
        "prediction": prediction,
        "model_name": "m",
        "model_version": model_version,
        "arm": arm,
        "entity_id": f"entity-{i}",
    }
    if scores is not None:
        record["scores"] = scores
    return record


def fb(
    i: int,
    *,
    label: Any = None,
    signal: str | None = None,
    value: float | None = None,
    prediction_id: str | None = None,
    features: dict[str, Any] | None = None,
    minute: float | None = None,
) -> dict[str, Any]:
    """Explicit feedback (label) or, given a signal, implicit feedback."""
    record: dict[str, Any] = {
        "kind": "feedback",
        "event_id": f"fb-{i}",
        "timestamp": (T0 + timedelta(minutes=60 + (i if minute is None else minute))).isoformat(),
        "feedback_type": "implicit" if signal is not None else "explicit",
        "user_id": f"user-{i}",
        "source": "app",
    }
    if signal is not None:
        record["signal"] = signal
    else:
        record["label"] = i % 2 if label is None else label
    for name, item in (("value", value), ("prediction_id", prediction_id), ("features", features)):
        if item is not None:
            record[name] = item
    return record


def frame(records: Sequence[dict[str, Any]], offsets: Sequence[int] | None = None) -> pl.DataFrame:
    """Events as ``read_events`` gives them (validated, then converted by the reader)."""
    events = [schema.convert_record(r, i) for i, r in enumerate(records)]
    valid = schema.validate_events(events, now=T0 + timedelta(days=3650))
    kind = schema.kind_of(valid[0]) if valid else "feedback"
    return events_to_frame(valid, kind, offsets)


def by_event(examples: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["event_id"]: row for row in examples.iter_rows(named=True)}


# --- attribution --------------------------------------------------------------------------------


def test_explicit_feedback_gets_features_and_serving_context_of_its_prediction() -> None:
    predictions = frame(
        [pred(0), pred(1, {"x": 7.0, "channel": "store"}, model_version="4", arm="challenger")]
    )
    feedback = frame(
        [fb(0, prediction_id="pred-1", label="spam"), fb(1, prediction_id="pred-0", label=1)]
    )
    ex = attribute_feedback(feedback, predictions)
    assert ex.columns == list(EXAMPLE_COLUMNS)
    rows = by_event(ex)
    assert set(rows) == {"fb-0", "fb-1"}
    assert rows["fb-0"]["features"] == {"channel": "store", "x": 7.0}
    assert rows["fb-0"]["label"] == "spam"
    assert rows["fb-0"]["label_source"] == "explicit"
    assert (rows["fb-0"]["model_version"], rows["fb-0"]["arm"]) == ("4", "challenger")
    assert rows["fb-0"]["prediction_time"] == T0 + timedelta(minutes=1)
    assert rows["fb-0"]["served_prediction"] == "1"
    assert rows["fb-0"]["timestamp"] == T0 + timedelta(minutes=60)  # the feedback's time
    assert (rows["fb-0"]["user_id"], rows["fb-0"]["source"]) == ("user-0", "app")
    assert rows["fb-1"]["features"] == {"channel": "web", "x": 0.0}
    assert (rows["fb-1"]["model_version"], rows["fb-1"]["arm"]) == ("3", "champion")
    assert rows["fb-1"]["label"] == "1"


def test_feedback_with_own_features_is_an_example_and_they_win() -> None:
    predictions = frame([pred(0, {"x": 1.0, "channel": "web"})])
    feedback = frame(
        [
            fb(0, features={"x": 100.0, "channel": "own"}),  # no prediction_id at all
            fb(1, prediction_id="pred-0", features={"x": 5.0, "channel": "mine"}),
            fb(2, prediction_id="pred-never-logged", features={"x": 6.0, "channel": "o"}),
        ]
    )
    rows = by_event(attribute_feedback(feedback, predictions))
    assert rows["fb-0"]["features"] == {"channel": "own", "x": 100.0}
    assert rows["fb-0"]["model_version"] is None and rows["fb-0"]["prediction_id"] is None
    # own features win, but the serving context of the prediction is still carried
    assert rows["fb-1"]["features"] == {"channel": "mine", "x": 5.0}
    assert rows["fb-1"]["model_version"] == "3"
    assert rows["fb-2"]["features"] == {"channel": "o", "x": 6.0}
    assert rows["fb-2"]["model_version"] is None
    assert unattributed(feedback, predictions).height == 0
    # without any predictions, own features still make examples
    assert attribute_feedback(feedback, None).height == 3


@pytest.mark.parametrize(
    ("signal", "label"),
    [
        ("click", "1"),
        ("purchase", "1"),
        ("like", "1"),
        ("convert", "1"),
        ("skip", "0"),
        ("dismiss", "0"),
        ("dislike", "0"),
        ("hide", "0"),
    ],
)
def test_implicit_signals_are_labeled_by_the_policy(signal: str, label: str) -> None:
    ex = attribute_feedback(frame([fb(0, signal=signal, prediction_id="pred-0")]), frame([pred(0)]))
    assert ex["label"].to_list() == [label]
    assert ex["label_source"].to_list() == [f"implicit:{signal}"]


def test_custom_policy_signals_and_labels() -> None:
    policy = LabelPolicy(
        positive_signals=frozenset({"add_to_cart"}),
        negative_signals=frozenset({"return"}),
        positive_label="yes",
        negative_label="no",
        dwell_signal=None,
    )
    feedback = frame(
        [
            fb(0, signal="add_to_cart", prediction_id="pred-0"),
            fb(1, signal="return", prediction_id="pred-0"),
            fb(2, signal="click", prediction_id="pred-0"),  # not in this policy
            fb(3, signal="dwell", value=100, prediction_id="pred-0"),  # dwell disabled
        ]
    )
    ex = attribute_feedback(feedback, frame([pred(0)]), policy)
    assert ex.select("event_id", "label").rows() == [("fb-0", "yes"), ("fb-1", "no")]
    assert unlabeled(feedback, policy)["unlabeled_reason"].to_list() == ["unknown_signal"] * 2


def test_dwell_threshold_boundary() -> None:
    policy = LabelPolicy(dwell_threshold_seconds=10.0)
    feedback = frame(
        [
            fb(0, signal="dwell", value=9.999, prediction_id="pred-0"),
            fb(1, signal="dwell", value=10.0, prediction_id="pred-0"),
            fb(2, signal="dwell", value=250.0, prediction_id="pred-0"),
            fb(3, signal="dwell", value=0.0, prediction_id="pred-0"),
            fb(4, signal="dwell", prediction_id="pred-0"),  # no value: no label
        ]
    )
    ex = attribute_feedback(feedback, frame([pred(0)]), policy)
    assert ex.select("event_id", "label").rows() == [
        ("fb-0", "0"),
        ("fb-1", "1"),
        ("fb-2", "1"),
        ("fb-3", "0"),
    ]
    assert set(ex["label_source"]) == {"implicit:dwell"}
    missing = unlabeled(feedback, policy)
    assert missing.select("event_id", "unlabeled_reason").rows() == [("fb-4", "missing_value")]
    # the default threshold is 30 s
    default = attribute_feedback(feedback, frame([pred(0)]))
    assert default["label"].to_list() == ["0", "0", "1", "0"]


def test_unknown_signals_are_ignored_and_counted_or_rejected() -> None:
    predictions = frame([pred(0)])
    feedback = frame(
        [
            fb(0, signal="click", prediction_id="pred-0"),
            fb(1, signal="wiggle", prediction_id="pred-0"),
            fb(2, signal="wiggle", prediction_id="pred-0"),
            fb(3, signal="Click", prediction_id="pred-0"),  # case matters
        ]
    )
    ex = attribute_feedback(feedback, predictions)
    assert ex["event_id"].to_list() == ["fb-0"]
    left_out = unlabeled(feedback)
    assert left_out["event_id"].to_list() == ["fb-1", "fb-2", "fb-3"]
    assert set(left_out["unlabeled_reason"]) == {"unknown_signal"}
    summary = attribution_summary(ex, unlabeled_rows=left_out)
    assert summary["unlabeled"] == 3
    assert summary["unknown_signals"] == {"Click": 1, "wiggle": 2}
    with pytest.raises(UnknownSignalError, match="wiggle") as raised:
        attribute_feedback(feedback, predictions, LabelPolicy(ignore_unknown=False))
    assert raised.value.counts == {"Click": 1, "wiggle": 2}
    known = frame([fb(0, signal="click", prediction_id="pred-0")])
    strict = attribute_feedback(known, predictions, LabelPolicy(ignore_unknown=False))
    assert strict.height == 1


def test_duplicate_prediction_ids_use_the_first_logged() -> None:
    # frame order is not log order: the copy with the lower log_offset comes second here
    predictions = frame(
        [
            pred(1, {"x": 2.0, "channel": "later"}, prediction_id="pred-0", model_version="9"),
            pred(0, {"x": 1.0, "channel": "first"}, model_version="1"),
        ],
        offsets=[7, 3],
    )
    ex = attribute_feedback(frame([fb(0, prediction_id="pred-0")]), predictions)
    assert ex.height == 1  # one example, not one per logged copy
    assert ex["features"].to_list() == [{"channel": "first", "x": 1.0}]
    assert ex["model_version"].to_list() == ["1"]


def test_own_and_logged_feature_sets_are_unioned() -> None:
    predictions = frame([pred(0, {"x": 1.5, "channel": "web"})])
    feedback = frame(
        [fb(0, prediction_id="pred-0"), fb(1, features={"x": 5, "vip": True})],
    )
    ex = attribute_feedback(feedback, predictions)
    features = ex.schema["features"]
    assert isinstance(features, pl.Struct)
    assert {f.name: f.dtype for f in features.fields} == {
        "channel": pl.String,
        "vip": pl.Boolean,
        "x": pl.Float64,  # Int64 own and Float64 logged: both fit in Float64
    }
    rows = by_event(ex)
    assert rows["fb-0"]["features"] == {"channel": "web", "vip": None, "x": 1.5}
    assert rows["fb-1"]["features"] == {"channel": None, "vip": True, "x": 5.0}
    # and the examples compile into a dataset with every feature as a column
    ds = compile_dataset(ex, window=10, holdout_fraction=0.5)
    assert {"channel", "vip", "x"} <= set(ds.columns)


def test_missing_prediction_is_unattributed_until_it_arrives() -> None:
    feedback = frame(
        [fb(0, prediction_id="pred-0"), fb(1, prediction_id="pred-1", signal="like")],
    )
    early = frame([pred(0)])
    ex = attribute_feedback(feedback, early)
    assert ex["event_id"].to_list() == ["fb-0"]
    pending = unattributed(feedback, early)
    assert pending["event_id"].to_list() == ["fb-1"]
    assert pending.columns == feedback.columns  # the feedback rows as they are
    assert unattributed(feedback, None)["event_id"].to_list() == ["fb-0", "fb-1"]
    summary = attribution_summary(ex, unattributed_rows=pending)
    assert summary["unattributed"] == 1
    # the prediction is logged late: the same feedback now makes an example
    late = frame([pred(0), pred(1, {"x": 11.0, "channel": "app"})])
    ex = attribute_feedback(feedback, late)
    assert ex["event_id"].to_list() == ["fb-0", "fb-1"]
    assert by_event(ex)["fb-1"]["features"] == {"channel": "app", "x": 11.0}
    assert by_event(ex)["fb-1"]["label"] == "1"
    assert unattributed(feedback, late).height == 0


def test_examples_are_sorted_by_time_then_log_offset() -> None:
    minutes = [30, 10, 10, 20, 0]
    feedback = frame([fb(i, features={"x": 1.0}, minute=m) for i, m in enumerate(minutes)])
    ex = attribute_feedback(feedback, None)
    assert ex["event_id"].to_list() == ["fb-4", "fb-1", "fb-2", "fb-3", "fb-0"]
    shuffled = feedback.sample(fraction=1.0, shuffle=True, seed=3)
    assert attribute_feedback(shuffled, None).equals(ex)


def test_validation_columns_are_carried_through() -> None:
    feedback = frame([fb(0, prediction_id="pred-0"), fb(1, prediction_id="pred-0")])
    feedback = feedback.with_columns(
        status=pl.Series(["ok", "quarantined"]), reason=pl.Series([None, "late"])
    )
    ex = attribute_feedback(feedback, frame([pred(0)]))
    assert ex.select("event_id", "status", "reason").rows() == [
        ("fb-0", "ok", None),
        ("fb-1", "quarantined", "late"),
    ]
    assert "status" not in attribute_feedback(feedback.drop("status", "reason"), None).columns


def test_attribution_summary_counts() -> None:
    predictions = frame(
        [pred(0), pred(1, model_version="4", arm="challenger"), pred(2, model_version="4")]
    )
    feedback = frame(
        [
            fb(0, prediction_id="pred-0"),
            fb(1, prediction_id="pred-1", signal="click"),
            fb(2, prediction_id="pred-2", signal="skip"),
            fb(3, features={"x": 1.0}),
        ]
    )
    summary = attribution_summary(attribute_feedback(feedback, predictions))
    assert summary == {
        "examples": 4,
        "by_label_source": {"explicit": 2, "implicit:click": 1, "implicit:skip": 1},
        "by_model_version": {"(none)": 1, "3": 1, "4": 2},
        "by_arm": {"(none)": 1, "challenger": 1, "champion": 2},
        "by_label": {"0": 2, "1": 2},
    }


def test_empty_inputs_give_empty_examples() -> None:
    empty = events_to_frame([], "feedback")
    assert attribute_feedback(empty, frame([pred(0)])).height == 0
    assert unattributed(empty, None).height == 0
    assert unlabeled(empty).height == 0
    only_ids = frame([fb(0, prediction_id="pred-0")])  # no features column at all
    assert attribute_feedback(only_ids, events_to_frame([], "prediction")).height == 0


def test_label_policy_json_roundtrip_and_checks() -> None:
    policy = LabelPolicy(
        positive_signals=frozenset({"b", "a"}), dwell_threshold_seconds=12.5, ignore_unknown=False
    )
    text = policy.to_json()
    assert LabelPolicy.from_json(text) == policy
    assert '"positive_signals": ["a", "b"]' in text
    assert LabelPolicy.from_json("{}") == LabelPolicy()
    described = LabelPolicy().describe()
    assert "click" in described and "skip" in described and ">= 30s" in described
    with pytest.raises(ValueError, match="both positive and negative"):
        LabelPolicy(positive_signals=frozenset({"x"}), negative_signals=frozenset({"x"}))
    with pytest.raises(ValueError, match="dwell"):
        LabelPolicy(positive_signals=frozenset({"dwell"}))
    with pytest.raises(ValueError, match="unknown label policy fields"):
        LabelPolicy.from_json('{"positive": ["a"]}')


# --- windows ------------------------------------------------------------------------------------

END = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def examples_at(times: Sequence[datetime], prefix: str = "fb") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"{prefix}-{i:05d}" for i in range(len(times))],
            "log_offset": list(range(len(times))),
            "timestamp": list(times),
            "label": ["1"] * len(times),
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )


def test_sliding_window_boundaries() -> None:
    start = END - timedelta(days=7)
    ex = examples_at(
        [
            start - timedelta(microseconds=1),  # just before: out
            start,  # exactly end - window_days: in
            END - timedelta(hours=1),
            END,  # exactly end: in
            END + timedelta(microseconds=1),  # after end: never
        ]
    )
    window = select_window(ex, WindowSpec(mode="sliding", window_days=7), END)
    assert window["event_id"].to_list() == ["fb-00001", "fb-00002", "fb-00003"]
    assert set(window["window_part"]) == {"recent"}


def test_all_takes_everything_up_to_end() -> None:
    ex = examples_at([END - timedelta(days=400), END - timedelta(days=1), END + timedelta(hours=1)])
    window = select_window(ex, WindowSpec(mode="all"), END)
    assert window["event_id"].to_list() == ["fb-00000", "fb-00001"]
    assert window.columns == [*ex.columns, "window_part"]


def test_max_rows_keeps_the_newest() -> None:
    times = [END - timedelta(hours=h) for h in (5, 1, 3, 2, 4)]  # not in time order
    ex = examples_at(times)
    window = select_window(ex, WindowSpec(mode="sliding", window_days=1, max_rows=2), END)
    assert window["event_id"].to_list() == ["fb-00003", "fb-00001"]  # 2 h and 1 h ago
    capped_all = select_window(ex, WindowSpec(mode="all", max_rows=3), END)
    assert capped_all["event_id"].to_list() == ["fb-00002", "fb-00003", "fb-00001"]


def test_since_a_change_keeps_the_rows_from_the_change_on() -> None:
    times = [END - timedelta(hours=h) for h in range(10, 0, -1)]  # 10 h .. 1 h ago
    ex = examples_at(times)
    change = END - timedelta(hours=3, minutes=30)
    spec = WindowSpec(mode="all", max_rows=8, since=change, min_rows=2)
    window = select_window(ex, spec, END)
    assert window["event_id"].to_list() == ["fb-00007", "fb-00008", "fb-00009"]
    assert "since the change at" in spec.describe() and "(at least 2 rows)" in spec.describe()
    # fewer rows than min_rows since the change: the newest min_rows of the window
    later = WindowSpec(mode="all", max_rows=8, since=END - timedelta(minutes=90), min_rows=4)
    assert select_window(ex, later, END)["event_id"].to_list() == [
        "fb-00006",
        "fb-00007",
        "fb-00008",
        "fb-00009",
    ]
    # a change before the window's start changes nothing
    old = WindowSpec(mode="all", max_rows=8, since=END - timedelta(days=2), min_rows=4)
    assert select_window(ex, old, END).equals(
        select_window(ex, WindowSpec(mode="all", max_rows=8), END)
    )
    with pytest.raises(ValueError, match="no time zone"):
        WindowSpec(since=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="min_rows must be >= 0"):
        WindowSpec(min_rows=-1)


def _reservoir_ids(window: pl.DataFrame) -> list[str]:
    return window.filter(pl.col("window_part") == "reservoir")["event_id"].to_list()


def test_reservoir_is_deterministic_and_stable_under_new_examples() -> None:
    spec = WindowSpec(mode="sliding_reservoir", window_days=2, reservoir_size=5, seed=11)
    old = [END - timedelta(days=3, minutes=m) for m in range(50)]
    recent = [END - timedelta(hours=h) for h in range(10)]
    ex = examples_at(old + recent)
    window = select_window(ex, spec, END)
    assert window.filter(pl.col("window_part") == "recent").height == 10
    chosen = _reservoir_ids(window)
    assert len(chosen) == 5
    start = END - timedelta(days=2)
    assert all(t < start for t in window.filter(pl.col("window_part") == "reservoir")["timestamp"])
    # same inputs, any row order: same rows in the same order
    assert select_window(ex, spec, END).equals(window)
    shuffled = ex.sample(fraction=1.0, shuffle=True, seed=5)
    assert select_window(shuffled, spec, END).equals(window)
    # newer examples arrive (the older pool is unchanged): the reservoir does not move
    newer = examples_at([END - timedelta(minutes=m) for m in range(1, 40)], prefix="new")
    grown = pl.concat([ex, newer.with_columns(pl.col("log_offset") + 1000)])
    assert _reservoir_ids(select_window(grown, spec, END)) == chosen
    # another seed samples other examples; size 0 or plain sliding: no reservoir
    other = select_window(ex, WindowSpec("sliding_reservoir", 2, reservoir_size=5, seed=12), END)
    assert _reservoir_ids(other) != chosen
    assert _reservoir_ids(select_window(ex, WindowSpec("sliding", 2), END)) == []
    big = select_window(ex, WindowSpec("sliding_reservoir", 2, reservoir_size=500), END)
    assert len(_reservoir_ids(big)) == 50


def test_reservoir_keeps_its_members_as_the_pool_grows() -> None:
    """An example once sampled stays unless one with a lower hash joins the pool."""
    spec = WindowSpec(mode="sliding_reservoir", window_days=1, reservoir_size=4, seed=1)
    times = [END - timedelta(days=10) + timedelta(hours=6 * i) for i in range(40)]
    ex = examples_at(times)
    before = set(_reservoir_ids(select_window(ex, spec, END - timedelta(days=3))))
    after = set(_reservoir_ids(select_window(ex, spec, END)))
    pool_before = {
        e for e, t in zip(ex["event_id"], times, strict=True) if t < END - timedelta(days=4)
    }
    assert before <= pool_before
    # no example of the old pool is newly chosen: the old choices only lose members
    assert after & pool_before <= before
    # whatever left the reservoir was displaced by an example new to the pool
    assert len(after - pool_before) == len(before - after)


def test_window_needs_an_aware_end() -> None:
    with pytest.raises(ValueError, match="time zone"):
        select_window(examples_at([END]), WindowSpec(), END.replace(tzinfo=None))
    with pytest.raises(ValueError):
        WindowSpec(mode="sliding", window_days=0)
    with pytest.raises(ValueError):
        WindowSpec(max_rows=0)
    with pytest.raises(ValueError):
        WindowSpec(mode="tumbling")  # type: ignore[arg-type]


def test_partitions_for() -> None:
    first = date(2024, 5, 20)
    sliding = WindowSpec(mode="sliding", window_days=3)
    assert partitions_for(sliding, END, first) == [
        "2024-05-29",
        "2024-05-30",
        "2024-05-31",
        "2024-06-01",
    ]
    assert partitions_for(sliding, END, date(2024, 5, 31)) == ["2024-05-31", "2024-06-01"]
    assert partitions_for(sliding, END, first, lookback_days=2)[0] == "2024-05-27"
    everything = partitions_for(WindowSpec(mode="all"), END, first)
    assert everything[0] == "2024-05-20" and everything[-1] == "2024-06-01"
    assert len(everything) == 13
    reservoir = WindowSpec(mode="sliding_reservoir", window_days=3, reservoir_size=10)
    assert partitions_for(reservoir, END, first) == everything
    assert partitions_for(sliding, END, date(2024, 7, 1)) == []
    midnight = datetime(2024, 6, 1, tzinfo=UTC)  # end is included: its date is needed
    assert partitions_for(WindowSpec("sliding", 1), midnight, first) == [
        "2024-05-31",
        "2024-06-01",
    ]
    # a window that ends in another time zone uses UTC dates
    from zoneinfo import ZoneInfo

    tokyo = datetime(2024, 6, 2, 1, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 2024-06-01 16:00 UTC
    assert partitions_for(WindowSpec("sliding", 1), tokyo, first)[-1] == "2024-06-01"


# --- uncertainty --------------------------------------------------------------------------------


def entropy(*probs: float) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


def scored(rows: Sequence[dict[str, float] | None]) -> pl.DataFrame:
    return frame([pred(i, scores=s) for i, s in enumerate(rows)])


def test_margin_and_entropy_values() -> None:
    predictions = scored(
        [
            {"0": 0.2, "1": 0.8},
            {"a": 1.0, "b": 1.0, "c": 2.0},  # sums to 4: normalised to .25 .25 .5
            {"only": 3.0},
            None,  # no scores: skipped
            {"0": 0.0, "1": 0.0},  # nothing to normalise: skipped
            {"0": 0.5, "1": 0.3, "2": 0.2},
            {"0": 0.4, "1": 0.4, "2": 0.2},  # a tie for the top: no margin
            {"0": -1.0, "1": 2.0},  # not probabilities: skipped
        ]
    )
    margin = uncertainty(predictions, "margin").to_list()
    expected_margin = [0.6, 0.25, 1.0, None, None, 0.2, 0.0, None]
    for got, want in zip(margin, expected_margin, strict=True):
        assert got == pytest.approx(want) if want is not None else got is None
    ent = uncertainty(predictions, "entropy").to_list()
    expected_entropy = [
        entropy(0.2, 0.8),
        entropy(0.25, 0.25, 0.5),
        0.0,
        None,
        None,
        entropy(0.5, 0.3, 0.2),
        entropy(0.4, 0.4, 0.2),
        None,
    ]
    for got, want in zip(ent, expected_entropy, strict=True):
        assert got == pytest.approx(want) if want is not None else got is None
    assert ent[2] == 0.0 and math.copysign(1.0, ent[2]) == 1.0  # not -0.0
    # the expression form gives the same numbers
    via_expr = predictions.select(uncertainty(pl.col("scores"), "entropy"))["uncertainty"]
    assert via_expr.to_list() == ent
    no_scores = frame([pred(0), pred(1)])
    assert uncertainty(no_scores, "margin").to_list() == [None, None]
    with pytest.raises(ValueError, match="method"):
        uncertainty(predictions, "variance")  # type: ignore[call-overload]


def queue_predictions() -> pl.DataFrame:
    return frame(
        [
            pred(0, scores={"0": 0.5, "1": 0.5}, minute=0),  # margin 0
            pred(1, scores={"0": 0.45, "1": 0.55}, minute=1),  # margin .1
            pred(2, scores={"0": 0.1, "1": 0.9}, minute=2),  # margin .8
            pred(3, scores={"0": 0.5, "1": 0.5}, minute=3),  # margin 0, newer than pred-0
            pred(4, scores={"0": 0.3, "1": 0.7}, minute=4),  # margin .4
            pred(5, minute=5),  # no scores
            pred(6, scores={"0": 0.2, "1": 0.3, "2": 0.5}, minute=6),  # margin .2, 3 classes
        ]
    )


def test_labeling_queue_orders_by_uncertainty_then_newest() -> None:
    queue = labeling_queue(queue_predictions(), None, "margin", budget=10)
    assert queue.columns == list(QUEUE_COLUMNS)
    assert queue["prediction_id"].to_list() == [
        "pred-3",  # tie at margin 0: newest first
        "pred-0",
        "pred-1",
        "pred-6",
        "pred-4",
        "pred-2",
    ]
    assert queue["uncertainty"].to_list() == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.4, 0.8])
    assert set(queue["method"]) == {"margin"}
    first = queue.row(0, named=True)
    assert first["model_version"] == "3" and first["entity_id"] == "entity-3"
    assert first["features"] == {"x": 3.0, "channel": "web"}
    by_entropy = labeling_queue(queue_predictions(), None, "entropy", budget=3)
    assert by_entropy["prediction_id"].to_list() == ["pred-6", "pred-3", "pred-0"]
    assert by_entropy["uncertainty"][0] == pytest.approx(entropy(0.2, 0.3, 0.5))


def test_labeling_queue_skips_answered_predictions_and_respects_budget_and_since() -> None:
    predictions = queue_predictions()
    feedback = frame(
        [
            fb(0, prediction_id="pred-3"),
            fb(1, prediction_id="pred-1", signal="click"),
            fb(2, features={"x": 1.0}),  # refers to no prediction
        ]
    )
    queue = labeling_queue(predictions, feedback, "margin", budget=2)
    assert queue["prediction_id"].to_list() == ["pred-0", "pred-6"]
    since = T0 + timedelta(minutes=2)  # inclusive
    recent = labeling_queue(predictions, feedback, "margin", budget=10, since=since)
    assert recent["prediction_id"].to_list() == ["pred-6", "pred-4", "pred-2"]
    assert labeling_queue(predictions, feedback, "margin", budget=0).height == 0
    assert labeling_queue(predictions, events_to_frame([], "feedback"), budget=1).height == 1
    with pytest.raises(ValueError):
        labeling_queue(predictions, feedback, "margin", budget=-1)


def test_labeling_queue_is_deterministic_and_dedupes_prediction_ids() -> None:
    rng = random.Random(4)
    records = [
        pred(i, scores={"0": p, "1": 1 - p}, minute=i % 7)
        for i, p in enumerate(rng.choice([0.5, 0.4, 0.3]) for _ in range(60))
    ]
    records.append(pred(99, prediction_id="pred-0", scores={"0": 0.5, "1": 0.5}))
    predictions = frame(records)
    queue = labeling_queue(predictions, None, "margin", budget=20)
    assert queue["prediction_id"].n_unique() == 20
    shuffled = predictions.sample(fraction=1.0, shuffle=True, seed=9)
    assert labeling_queue(shuffled, None, "margin", budget=20).equals(queue)
    keys = list(zip(queue["uncertainty"], queue["timestamp"], strict=True))
    # a prediction id logged twice is queued once, as first logged (minute 0, not 99)
    everything = labeling_queue(predictions, None, "margin", budget=1000)
    assert everything.height == 60
    assert everything.filter(pl.col("prediction_id") == "pred-0")["timestamp"].to_list() == [T0]
    assert keys == sorted(keys, key=lambda k: (k[0], -k[1].timestamp()))

"""Unit tests of the reference schema and feedback validation (ct_assets.data.reference,
ct_assets.data.feedback_rules)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ct_assets import schema
from ct_assets.data.dataset import compile_dataset, labeled_examples
from ct_assets.data.feedback_rules import (
    FeedbackReason,
    FeedbackStatus,
    ValidationRules,
    validate_feedback,
    validation_summary,
)
from ct_assets.data.reference import (
    MAX_CATEGORIES,
    FeatureStats,
    ReferenceSchema,
    apply_overrides,
    infer_reference,
    infer_reference_from_columns,
)
from ct_assets.eventlog.decode import events_to_frame
from ct_assets.simulate import DriftKind, SimulationSpec, simulate_events

T0 = datetime(2024, 5, 1, tzinfo=UTC)
RULES = ValidationRules()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def pred(
    pid: str,
    when: datetime = T0,
    features: dict[str, Any] | None = None,
    prediction: Any = 1,
    scores: dict[str, float] | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "prediction",
        "event_id": f"pe-{pid}",
        "prediction_id": pid,
        "timestamp": when.isoformat(),
        "features": {"x": 5.0, "channel": "web"} if features is None else features,
        "prediction": prediction,
    }
    if scores is not None:
        record["scores"] = scores
    return record


def fb(
    eid: str,
    when: datetime = T0,
    pid: str | None = None,
    label: Any = 1,
    user: str | None = None,
    source: str | None = None,
    feedback_type: str = "explicit",
    signal: str | None = None,
    features: dict[str, Any] | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "feedback",
        "event_id": eid,
        "timestamp": when.isoformat(),
        "feedback_type": feedback_type,
    }
    optional = {
        "prediction_id": pid,
        "user_id": user,
        "source": source,
        "signal": signal,
        "features": features,
    }
    record.update({k: v for k, v in optional.items() if v is not None})
    if feedback_type == "explicit":
        record["label"] = label
    elif signal is None:
        record["signal"] = "click"
    return record


def own(eid: str, when: datetime = T0, **kwargs: Any) -> dict[str, Any]:
    """Feedback carrying its own (in-range) features: needs no prediction."""
    return fb(eid, when, features={"x": 1.0, "channel": "web"}, **kwargs)


def frame(records: list[dict[str, Any]], kind: schema.EventKind) -> pl.DataFrame:
    events = [schema.convert_record(r, i, kind) for i, r in enumerate(records)]
    assert not [e for e in events if isinstance(e, schema.FieldError)], events
    return events_to_frame(events, kind)  # type: ignore[arg-type]


def validate(
    predictions: list[dict[str, Any]],
    feedback: list[dict[str, Any]],
    reference: ReferenceSchema | None = None,
    rules: ValidationRules = RULES,
    as_of: datetime = T0 + timedelta(hours=1),
) -> pl.DataFrame:
    result = validate_feedback(
        frame(feedback, "feedback"), frame(predictions, "prediction"), reference, rules, as_of
    )
    assert result.height == len(feedback)
    return result


def outcome(validated: pl.DataFrame) -> dict[str, tuple[str, str | None]]:
    return {
        r["event_id"]: (r["status"], r["reason"])
        for r in validated.select("event_id", "status", "reason").iter_rows(named=True)
    }


def reasons(validated: pl.DataFrame) -> dict[str, str | None]:
    return {k: v[1] for k, v in outcome(validated).items()}


ACCEPTED = (FeedbackStatus.ACCEPTED.value, None)


def quarantined(reason: FeedbackReason) -> tuple[str, str]:
    return (FeedbackStatus.QUARANTINED.value, reason.value)


REFERENCE = ReferenceSchema(
    features={
        "x": FeatureStats("x", "numeric", min=0.0, max=10.0),
        "channel": FeatureStats("channel", "categorical", categories=["app", "web"]),
        "note": FeatureStats("note", "categorical", categories=None),
        "ignored": FeatureStats("ignored", "numeric", min=0.0, max=1.0, check=False),
    },
    labels=["0", "1"],
)


# --- reference schema ---------------------------------------------------------------------


def examples_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "features": [
                {"x": 1.5, "n": 3, "channel": "web", "flag": True},
                {"x": -2.0, "n": 7, "channel": "app", "flag": False},
                {"x": None, "n": 5, "channel": "web", "flag": None},
                {"x": 4.0, "n": 4, "channel": None, "flag": True},
            ],
            "label": ["1", "0", "1", "2"],
        }
    )


def test_infer_reference_numeric_categorical_labels() -> None:
    ref = infer_reference(examples_frame())
    assert set(ref.features) == {"x", "n", "channel", "flag"}
    assert ref.features["x"] == FeatureStats("x", "numeric", min=-2.0, max=4.0, null_fraction=0.25)
    assert ref.features["n"] == FeatureStats("n", "numeric", min=3.0, max=7.0)
    assert ref.features["channel"] == FeatureStats(
        "channel", "categorical", categories=["app", "web"], null_fraction=0.25
    )
    assert ref.features["flag"].categories == ["false", "true"]
    assert ref.labels == ["0", "1", "2"]


def test_infer_from_flat_columns_matches_struct_inference() -> None:
    flat = examples_frame().unnest("features")
    ref = infer_reference_from_columns(flat, ["x", "n", "channel", "flag"], "label")
    assert ref == infer_reference(examples_frame())
    assert ref.version == infer_reference(examples_frame()).version


def test_infer_from_a_compiled_dataset_of_simulated_feedback() -> None:
    spec = SimulationSpec(rows=300, seed=4, drift="none", end=T0)
    feedback = frame(list(simulate_events(spec)), "feedback")
    examples = labeled_examples(feedback, None)
    ref = infer_reference(examples)
    assert sorted(ref.features) == ["channel", *[f"x{i}" for i in range(8)]]
    assert ref.features["channel"].categories == ["app", "store", "web"]
    assert ref.labels == ["0", "1"]
    dataset = compile_dataset(examples, window=300, holdout_fraction=0.2)
    names = [c for c in dataset.columns if c.startswith("x") or c == "channel"]
    assert infer_reference_from_columns(dataset, names, "label") == ref


def test_many_distinct_strings_are_free_text() -> None:
    def ref_of(n: int) -> ReferenceSchema:
        values = [f"v{i}" for i in range(n)]
        return infer_reference_from_columns(pl.DataFrame({"s": values}), ["s"], None)

    assert len(ref_of(MAX_CATEGORIES).features["s"].categories or []) == MAX_CATEGORIES
    assert ref_of(MAX_CATEGORIES + 1).features["s"].categories is None
    assert ref_of(3).labels is None


def test_reference_json_round_trip(tmp_path: Path) -> None:
    ref = infer_reference(examples_frame())
    again = ReferenceSchema.from_json(ref.to_json())
    assert again == ref
    assert again.version == ref.version
    assert json.loads(ref.to_json())["version"] == ref.version
    path = ref.save(tmp_path / "refs" / "reference.json")
    assert ReferenceSchema.load(path) == ref
    assert not list(path.parent.glob("*.tmp"))


def test_version_follows_content_only() -> None:
    ref = infer_reference(examples_frame())
    assert infer_reference(examples_frame().reverse()).version == ref.version
    assert ReferenceSchema(dict(reversed(ref.features.items())), ref.labels).version == ref.version
    wider = examples_frame().with_columns(pl.col("features").struct.with_fields(pl.field("x") * 2))
    assert infer_reference(wider).version != ref.version
    relabeled = examples_frame().with_columns(pl.lit("1").alias("label"))
    assert infer_reference(relabeled).version != ref.version


def test_overrides_widen_fix_and_drop() -> None:
    ref = infer_reference(examples_frame())
    overrides = {
        "features": {
            "x": {"min": -100, "max": 100},
            "channel": {"categories": ["web", "app", "kiosk"]},
            "flag": {"check": False},
            "extra": {"kind": "categorical", "categories": [1, 2]},
        },
        "labels": [0, 1],
    }
    changed = apply_overrides(ref, json.loads(json.dumps(overrides)))
    assert changed.features["x"].min == -100.0 and changed.features["x"].max == 100.0
    assert changed.features["x"].null_fraction == 0.25  # untouched fields are kept
    assert changed.features["channel"].categories == ["app", "kiosk", "web"]
    assert not changed.features["flag"].check
    assert [f.name for f in changed.checked_features()] == ["channel", "extra", "n", "x"]
    assert changed.features["extra"].categories == ["1", "2"]
    assert changed.labels == ["0", "1"]
    assert changed.version != ref.version
    assert apply_overrides(ref, {}).version == ref.version
    same = apply_overrides(ref, {"features": {"x": {"min": -2.0}}})
    assert same.version == ref.version


@pytest.mark.parametrize(
    "overrides",
    [
        {"feature": {}},
        {"features": {"x": {"maximum": 3}}},
        {"features": {"unknown": {"min": 1}}},
        {"features": {"x": {"min": 5, "max": 1}}},
        {"features": {"x": {"kind": "text"}}},
        {"features": {"x": {"max": float("inf")}}},
    ],
)
def test_bad_overrides_are_errors(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        apply_overrides(infer_reference(examples_frame()), overrides)


# --- duplicates and timing ----------------------------------------------------------------


def test_duplicate_keeps_the_first_by_log_offset() -> None:
    predictions = [pred("p1"), pred("p2")]
    feedback = [
        fb("a", at(1), "p1", user="u1"),
        fb("b", at(2), "p1", user="u1", label=0),  # same user, same prediction: duplicate
        fb("c", at(3), "p1", user="u2"),  # another user
        fb("d", at(4), "p1", user="u1", feedback_type="implicit", signal="click"),
        fb("e", at(5), "p1", user="u1", feedback_type="implicit", signal="view"),
        fb("f", at(6), "p1", user="u1", feedback_type="implicit", signal="click"),
        fb("g", at(7), "p2"),  # anonymous: the same (null) user is the same key
        fb("h", at(8), "p2"),
        own("i", at(9)),  # no prediction_id: never a duplicate
        own("j", at(9)),
    ]
    result = outcome(validate(predictions, feedback))
    dup = quarantined(FeedbackReason.DUPLICATE)
    assert result == {
        "a": ACCEPTED,
        "b": dup,
        "c": ACCEPTED,
        "d": ACCEPTED,
        "e": ACCEPTED,
        "f": dup,
        "g": ACCEPTED,
        "h": dup,
        "i": ACCEPTED,
        "j": ACCEPTED,
    }


def test_duplicate_order_is_the_log_order_not_the_row_order() -> None:
    feedback = frame([fb("a", at(1), "p1", user="u"), fb("b", at(1), "p1", user="u")], "feedback")
    swapped = feedback.reverse()  # rows in another order, log offsets unchanged
    result = validate_feedback(swapped, frame([pred("p1")], "prediction"), None, RULES, at(60))
    assert result["event_id"].to_list() == ["b", "a"]  # input order kept
    assert result["reason"].to_list() == ["duplicate", None]
    assert "event a (log offset 0)" in result["reason_detail"][0]


@pytest.mark.parametrize(
    ("delta", "reason"),
    [
        (timedelta(microseconds=-1), FeedbackReason.TIMESTAMP_BEFORE_PREDICTION),
        (timedelta(0), None),
        (RULES.max_feedback_delay, None),
        (RULES.max_feedback_delay + timedelta(microseconds=1), FeedbackReason.FEEDBACK_TOO_LATE),
    ],
)
def test_feedback_time_relative_to_its_prediction(
    delta: timedelta, reason: FeedbackReason | None
) -> None:
    predicted = at(10)
    result = validate(
        [pred("p1", predicted)], [fb("a", predicted + delta, "p1")], as_of=at(10) + delta
    )
    assert reasons(result) == {"a": reason.value if reason else None}
    if reason is not None:
        assert result["reason_detail"][0] and " h " in result["reason_detail"][0]


def test_timing_is_not_checked_without_the_prediction() -> None:
    result = validate([], [own("a", at(0), user="u")], as_of=at(1))
    assert outcome(result) == {"a": ACCEPTED}


# --- reference checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        ({"x": 0.0, "channel": "web"}, None),
        ({"x": -1.0, "channel": "web"}, None),  # range 0..10, tolerance 0.1 -> -1..11
        ({"x": 11.0, "channel": "app"}, None),
        ({"x": 11.01, "channel": "app"}, FeedbackReason.OUT_OF_RANGE),
        ({"x": -1.01, "channel": "app"}, FeedbackReason.OUT_OF_RANGE),
        ({"x": "abc", "channel": "app"}, FeedbackReason.OUT_OF_RANGE),
        ({"x": 3, "channel": "kiosk"}, FeedbackReason.UNKNOWN_CATEGORY),
        ({"x": 99.0, "channel": "kiosk"}, FeedbackReason.OUT_OF_RANGE),  # precedence
        ({"x": None, "channel": None}, None),  # missing values are not checked
        ({"other": 1e9}, None),  # features unknown to the reference are not checked
        ({"x": 1.0, "note": "any free text"}, None),
        ({"x": 1.0, "ignored": 1e9}, None),  # check=False
    ],
)
def test_own_features_against_the_reference(
    features: dict[str, Any], reason: FeedbackReason | None
) -> None:
    rules = replace(RULES, range_tolerance=0.1)
    feedback = [fb("a", at(1), features=features)]
    result = validate([], feedback, REFERENCE, rules)
    assert reasons(result) == {"a": reason.value if reason else None}
    assert reasons(validate([], feedback, None, rules)) == {"a": None}


def test_logged_features_of_the_prediction_are_checked() -> None:
    predictions = [
        pred("ok", features={"x": 2.0, "channel": "web"}),
        pred("far", features={"x": 50.0, "channel": "web"}),
        pred("new", features={"x": 2.0, "channel": "kiosk"}),
    ]
    feedback = [
        fb("a", at(1), "ok"),
        fb("b", at(1), "far"),
        fb("c", at(1), "new"),
        fb("d", at(1), "far", user="u", features={"x": 1.0, "channel": "app"}),  # own wins
    ]
    result = validate(predictions, feedback, REFERENCE)
    assert reasons(result) == {
        "a": None,
        "b": "out_of_range",
        "c": "unknown_category",
        "d": None,
    }
    details = dict(zip(result["event_id"], result["reason_detail"], strict=True))
    assert "x=50.0" in details["b"] and "[-2.5, 12.5]" in details["b"]
    assert "channel=kiosk" in details["c"]


def test_unknown_label() -> None:
    feedback = [
        fb("a", at(1), "p", label=1),
        fb("b", at(1), "p", label=2, user="u"),
        fb("c", at(1), "p", feedback_type="implicit", user="v"),
    ]
    result = validate([pred("p")], feedback, REFERENCE)
    assert reasons(result) == {"a": None, "b": "unknown_label", "c": None}
    free = ReferenceSchema(REFERENCE.features, labels=None)
    assert reasons(validate([pred("p")], feedback, free)) == {"a": None, "b": None, "c": None}


# --- pending, then served or never served -------------------------------------------------


def test_late_prediction_pending_then_accepted_or_quarantined_as_never_served() -> None:
    given = at(0)
    feedback = [fb("a", given, "p1", user="u"), own("b", given, pid="p2")]
    expiry = RULES.pending_expiry
    waiting = validate([], feedback, as_of=given + expiry - timedelta(microseconds=1))
    assert outcome(waiting) == {"a": ("pending", "awaiting_prediction"), "b": ACCEPTED}
    arrived = validate([pred("p1", given - timedelta(seconds=5))], feedback, as_of=given)
    assert outcome(arrived) == {"a": ACCEPTED, "b": ACCEPTED}
    expired = validate([], feedback, as_of=given + expiry)
    assert outcome(expired) == {"a": quarantined(FeedbackReason.UNKNOWN_PREDICTION), "b": ACCEPTED}
    assert "prediction_id p1 was never served" in expired["reason_detail"][0]
    late_but_arrived = validate([pred("p1", given)], feedback, as_of=given + 10 * expiry)
    assert outcome(late_but_arrived)["a"] == ACCEPTED


def test_as_of_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        validate([], [own("a")], as_of=datetime(2024, 5, 1))


# --- rate abuse ---------------------------------------------------------------------------


def background(hours: int = 1, users: int = 30) -> list[dict[str, Any]]:
    """One feedback event per user and hour: the population's usual rate is 1 per window."""
    return [
        own(f"bg-{h}-{u}", at(60 * h + u), user=f"bg{u}", source=f"src{u}")
        for h in range(hours)
        for u in range(users)
    ]


def burst(actor: str, n: int, hour: int = 0, prefix: str = "burst") -> list[dict[str, Any]]:
    kwargs = {"user": actor} if actor.startswith("u") else {"source": actor}
    return [own(f"{prefix}-{hour}-{i}", at(60 * hour + i * 0.5), **kwargs) for i in range(n)]


@pytest.mark.parametrize("actor", ["u-heavy", "s-heavy"])
@pytest.mark.parametrize(
    ("n", "factor", "min_events", "flagged"),
    [
        (10, 10.0, 5, False),  # 10 is not more than 10 x the population median of 1
        (11, 10.0, 5, True),
        (10, 2.0, 11, False),  # fewer than rate_min_events
        (11, 2.0, 11, True),
    ],
)
def test_rate_abuse_against_the_population(
    actor: str, n: int, factor: float, min_events: int, flagged: bool
) -> None:
    rules = replace(RULES, rate_factor=factor, rate_min_events=min_events)
    result = validate([], background() + burst(actor, n), rules=rules)
    got = reasons(result)
    expected = "rate_abuse" if flagged else None
    assert {got[f"burst-0-{i}"] for i in range(n)} == {expected}
    assert {v for k, v in got.items() if k.startswith("bg-")} == {None}
    if flagged:
        detail = result.filter(pl.col("reason") == "rate_abuse")["reason_detail"][0]
        assert f"sent {n} feedback events" in detail and "population median" in detail


@pytest.mark.parametrize(
    ("history", "n", "flagged"),
    [
        (3, 20, False),  # usual = own median 10: 20 is not more than 2 x 10
        (3, 21, True),
        (2, 20, True),  # too little history: compared with the population (median 1)
    ],
)
def test_rate_abuse_against_its_own_history(history: int, n: int, flagged: bool) -> None:
    # rate_min_events 11: the usual windows of 10 are not judged themselves
    rules = replace(RULES, rate_factor=2.0, rate_min_events=11, rate_min_history=3)
    feedback = background(hours=history + 1)
    for hour in range(history):
        feedback += burst("u-regular", 10, hour, prefix="usual")
    feedback += burst("u-regular", n, history)
    got = reasons(validate([], feedback, rules=rules, as_of=at(600)))
    assert {got[f"burst-{history}-{i}"] for i in range(n)} == {"rate_abuse" if flagged else None}
    assert {v for k, v in got.items() if not k.startswith("burst")} == {None}


# --- dominance ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mine", "others", "flagged"),
    [(6, 4, True), (5, 5, False), (6, 3, False)],  # share 0.6 / 0.5 / total 9 < 10
)
def test_dominant_user(mine: int, others: int, flagged: bool) -> None:
    rules = replace(RULES, dominance_share=0.5, dominance_min_labels=10)
    feedback = [own(f"m{i}", at(i), user="boss") for i in range(mine)]
    feedback += [own(f"o{i}", at(i), user=f"other{i}") for i in range(others)]
    feedback += [  # implicit feedback is not a label: does not count
        own(f"i{i}", at(i), user="boss", feedback_type="implicit") for i in range(5)
    ]
    got = reasons(validate([], feedback, rules=rules))
    assert {got[f"m{i}"] for i in range(mine)} == {"dominant_user" if flagged else None}
    assert {v for k, v in got.items() if not k.startswith("m")} == {None}


def test_dominance_is_per_window() -> None:
    rules = replace(RULES, dominance_share=0.5, dominance_min_labels=10)
    day = 24 * 60
    feedback = [own(f"m{i}", at(i * day / 3), user="boss") for i in range(6)]  # 3 per day
    feedback += [own(f"o{i}", at(i * day / 2), user=f"o{i}") for i in range(4)]  # 2 per day
    assert set(reasons(validate([], feedback, rules=rules)).values()) == {None}


# --- label flipping -----------------------------------------------------------------------

FLIP_RULES = replace(RULES, flip_min_labels=5, flip_disagreement=0.5)


def voted(
    n: int, flipped: int, honest: int = 3
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """n predictions labeled 1 by honest users; 'flipper' labels the first ``flipped`` 0."""
    predictions = [pred(f"p{i}", at(i)) for i in range(n)]
    feedback = [
        fb(f"h{u}-{i}", at(i + 1), f"p{i}", label=1, user=f"honest{u}")
        for i in range(n)
        for u in range(honest)
    ]
    feedback += [
        fb(f"f-{i}", at(i + 1), f"p{i}", label=0 if i < flipped else 1, user="flipper")
        for i in range(n)
    ]
    return predictions, feedback


@pytest.mark.parametrize(
    ("n", "flipped", "flagged"),
    [(5, 5, True), (4, 4, False), (10, 5, False), (10, 6, True)],
)
def test_label_flipping_against_the_consensus(n: int, flipped: int, flagged: bool) -> None:
    predictions, feedback = voted(n, flipped)
    result = validate(predictions, feedback, rules=FLIP_RULES)
    got = reasons(result)
    assert {got[f"f-{i}"] for i in range(n)} == {"label_flipping" if flagged else None}
    assert {v for k, v in got.items() if k.startswith("h")} == {None}
    if flagged:
        detail = result.filter(pl.col("reason") == "label_flipping")["reason_detail"][0]
        assert f"on {flipped} of {n} comparable labels" in detail


@pytest.mark.parametrize(("confidence", "flagged"), [(0.9, True), (0.89, False)])
def test_label_flipping_against_a_confident_model(confidence: float, flagged: bool) -> None:
    scores = {"0": round(1 - confidence, 6), "1": confidence}
    predictions = [pred(f"p{i}", at(i), prediction=1, scores=scores) for i in range(10)]
    feedback = [fb(f"f-{i}", at(i + 1), f"p{i}", label=0, user="flipper") for i in range(5)]
    # one honest user: the flipper is judged against the median of the others (0%), not of all
    feedback += [fb(f"h-{i}", at(i + 1), f"p{i}", label=1, user="honest") for i in range(5, 10)]
    got = reasons(validate(predictions, feedback, rules=FLIP_RULES))
    assert {got[f"f-{i}"] for i in range(5)} == {"label_flipping" if flagged else None}
    assert {got[f"h-{i}"] for i in range(5, 10)} == {None}


def test_consensus_wins_over_the_model() -> None:
    confident = {"0": 0.01, "1": 0.99}
    predictions = [pred(f"p{i}", at(i), prediction=1, scores=confident) for i in range(6)]
    feedback = [  # everyone says 0 where the model was sure of 1: no one is a flipper
        fb(f"{u}-{i}", at(i + 1), f"p{i}", label=0, user=u)
        for i in range(6)
        for u in ("a", "b", "c")
    ]
    assert set(reasons(validate(predictions, feedback, rules=FLIP_RULES)).values()) == {None}


def test_a_tie_among_the_others_is_no_consensus() -> None:
    predictions = [pred(f"p{i}", at(i)) for i in range(8)]  # no scores: no model fallback
    feedback = [
        fb(f"{user}-{i}", at(i + 1), f"p{i}", label=label, user=user)
        for i in range(8)
        for user, label in (("x", 1), ("y", 0), ("t", 1))
    ]
    rules = replace(FLIP_RULES, flip_peer_factor=0.0)
    got = reasons(validate(predictions, feedback, rules=rules))
    # x and t each see one vote for 1 and one for 0; y sees two votes for 1
    assert {v for k, v in got.items() if k[0] in "xt"} == {None}
    assert {v for k, v in got.items() if k[0] == "y"} == {"label_flipping"}


def test_a_flipper_does_not_make_its_only_co_labeler_a_flipper() -> None:
    predictions, feedback = voted(6, 6)
    # 'lone' labels 6 other predictions honestly, only the flipper labels them too
    predictions += [pred(f"q{i}", at(i)) for i in range(6)]
    feedback += [fb(f"lone-{i}", at(i + 1), f"q{i}", label=1, user="lone") for i in range(6)]
    feedback += [fb(f"fq-{i}", at(i + 1), f"q{i}", label=0, user="flipper") for i in range(6)]
    got = reasons(validate(predictions, feedback, rules=FLIP_RULES))
    assert {got[f"lone-{i}"] for i in range(6)} == {None}
    assert {got[f"f-{i}"] for i in range(6)} | {got[f"fq-{i}"] for i in range(6)} == {
        "label_flipping"
    }


def simulated_frames(
    rows: int, seed: int, drift: DriftKind = "none", drift_at: float = 0.5, n_users: int = 200
) -> tuple[pl.DataFrame, pl.DataFrame, datetime]:
    end = datetime(2024, 6, 1, tzinfo=UTC)
    spec = SimulationSpec(
        rows=rows,
        seed=seed,
        drift=drift,
        drift_at=drift_at,
        kind="both",
        end=end,
        n_users=n_users,
    )
    events = list(simulate_events(spec))
    predictions = frame([e for e in events if e["kind"] == "prediction"], "prediction")
    feedback = frame([e for e in events if e["kind"] == "feedback"], "feedback")
    return predictions, feedback, end


def test_a_model_everyone_contradicts_flags_no_one() -> None:
    """After a concept drift the served model is confidently wrong for everyone: the peer
    guard keeps honest users from being flagged as flippers."""
    predictions, feedback, end = simulated_frames(
        3000, seed=5, drift="concept", drift_at=0.0, n_users=20
    )
    rules = replace(RULES, flip_min_labels=20, dominance_min_labels=10**9)
    guarded = validate_feedback(feedback, predictions, None, rules, end)
    assert guarded.filter(pl.col("status") != "accepted").height == 0
    unguarded = validate_feedback(
        feedback, predictions, None, replace(rules, flip_peer_factor=0.0), end
    )
    flagged_users = unguarded.filter(pl.col("reason") == "label_flipping")["user_id"].n_unique()
    assert flagged_users >= 10  # most of the 20 users


# --- whole frames -------------------------------------------------------------------------


def mixed() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    predictions, feedback = voted(6, 6)
    predictions += [pred("old", at(-60 * 24 * 40)), pred("range", at(0), {"x": 99.0})]
    feedback += [
        fb("dup", at(3), "p0", user="honest0"),
        fb("late", at(10), "old"),
        fb("early", at(-10), "p1", user="early"),
        fb("range", at(1), "range"),
        fb("label", at(5), "p2", label=7, user="odd"),
        fb("waiting", at(30), "missing"),
        fb("gone", at(-60 * 25), "missing-too"),
        own("own", at(2), user="ownuser"),
        fb("click", at(5), "p3", feedback_type="implicit", user="clicker"),
    ]
    return predictions, feedback


def test_mixed_frame_conserves_rows_and_summarises() -> None:
    predictions, feedback = mixed()
    result = validate(predictions, feedback, REFERENCE, FLIP_RULES)
    assert result["event_id"].to_list() == [r["event_id"] for r in feedback]
    assert result.columns[-3:] == ["status", "reason", "reason_detail"]
    got = outcome(result)
    assert got["dup"] == quarantined(FeedbackReason.DUPLICATE)
    assert got["late"] == quarantined(FeedbackReason.FEEDBACK_TOO_LATE)
    assert got["early"] == quarantined(FeedbackReason.TIMESTAMP_BEFORE_PREDICTION)
    assert got["range"] == quarantined(FeedbackReason.OUT_OF_RANGE)
    assert got["label"] == quarantined(FeedbackReason.UNKNOWN_LABEL)
    assert got["f-0"] == quarantined(FeedbackReason.LABEL_FLIPPING)
    assert got["waiting"] == ("pending", "awaiting_prediction")
    assert got["gone"] == quarantined(FeedbackReason.UNKNOWN_PREDICTION)
    assert got["own"] == got["click"] == got["h0-0"] == ACCEPTED
    assert result.filter(pl.col("reason").is_not_null())["reason_detail"].null_count() == 0
    assert result.filter(pl.col("reason").is_null())["reason_detail"].null_count() == (
        result.filter(pl.col("reason").is_null()).height
    )

    summary = validation_summary(result)
    statuses = [summary[f"status.{s.value}"] for s in FeedbackStatus]
    assert sum(statuses) == summary["rows"] == len(feedback)
    assert summary["status.pending"] == summary["reason.unknown_prediction"] == 1
    assert summary["status.expired"] == 0
    # five rules, six flipped labels and the never-served prediction id
    assert summary["status.quarantined"] == 5 + 6 + 1
    assert summary["reason.label_flipping"] == 6
    assert summary["reason.rate_abuse"] == 0
    assert (
        sum(summary[f"reason.{r.value}"] for r in FeedbackReason)
        == len(feedback) - (summary["status.accepted"])
    )


def test_same_inputs_same_output_whatever_the_row_order() -> None:
    predictions, feedback = mixed()
    fb_frame, pred_frame = frame(feedback, "feedback"), frame(predictions, "prediction")
    args = (REFERENCE, FLIP_RULES, at(60))
    first = validate_feedback(fb_frame, pred_frame, *args)
    assert validate_feedback(fb_frame, pred_frame, *args).equals(first)
    shuffled = fb_frame.sample(fraction=1.0, shuffle=True, seed=3)
    again = validate_feedback(shuffled, pred_frame.reverse(), *args)
    assert again["event_id"].to_list() == shuffled["event_id"].to_list()
    assert again.sort("log_offset").equals(first.sort("log_offset"))


def test_empty_feedback() -> None:
    result = validate_feedback(frame([], "feedback"), None, REFERENCE, RULES, T0)
    assert result.height == 0
    assert result.columns[-3:] == ["status", "reason", "reason_detail"]
    assert validation_summary(result)["rows"] == 0


def test_simulated_stream_conserves_rows() -> None:
    predictions, feedback, end = simulated_frames(2000, seed=2, drift="concept")
    kept = predictions.filter(pl.col("log_offset") % 7 != 0)  # some predictions never logged
    reference = infer_reference(labeled_examples(feedback.head(1000), predictions))
    result = validate_feedback(feedback, kept, reference, RULES, end)
    summary = validation_summary(result)
    assert result.height == feedback.height
    assert sum(summary[f"status.{s.value}"] for s in FeedbackStatus) == feedback.height
    never = summary["reason.unknown_prediction"]
    assert never > 0  # the early ones whose prediction is missing
    assert summary["status.pending"] > 0  # the last day's
    assert never + summary["status.pending"] == feedback.height - sum(
        1 for offset in range(feedback.height) if offset % 7 != 0
    )


# --- poisoning ----------------------------------------------------------------------------


def test_poisoning_is_quarantined_and_clean_feedback_is_not() -> None:
    predictions, clean, end = simulated_frames(5000, seed=11)
    sources = ["web-widget", "mobile", "email", "support"]
    clean = clean.with_columns(
        pl.col("log_offset").map_elements(lambda i: sources[i % 4], pl.String).alias("source")
    )
    rng = random.Random(7)
    preds = predictions.select("prediction_id", "timestamp").rows()
    labels = dict(zip(clean["prediction_id"], clean["label"], strict=True))

    # (a) a label flipper: inverts the label of 300 predictions that also have a clean label
    flipped = [
        fb(f"flip-{k}", ts + timedelta(seconds=90), pid, label=1 - int(labels[pid]), user="mallory")
        for k, (pid, ts) in enumerate(rng.sample(preds, 300))
    ]
    # (b) a flooding source: 20x the usual per-source rate for three hours, all labels 1
    usual_per_hour = clean.height / (14 * 24) / len(sources)
    flood_start = end - timedelta(days=5)
    n_flood = int(20 * usual_per_hour * 3)
    targets = [p for p in preds if p[1] < flood_start]
    flood = [
        fb(
            f"flood-{k}",
            flood_start + timedelta(hours=3) * k / n_flood,
            pid,
            label=1,
            user=f"bot-{k % 50}",
            source="flood-bot",
        )
        for k, (pid, _) in enumerate(rng.sample(targets, n_flood))
    ]
    injected = frame(flipped + flood, "feedback").with_columns(pl.col("log_offset") + clean.height)
    feedback = pl.concat([clean, injected], how="diagonal_relaxed")

    result = validate_feedback(feedback, predictions, None, RULES, end)
    assert result.height == feedback.height
    by_kind = result.with_columns(pl.col("event_id").str.extract(r"^(flip|flood)").alias("kind"))
    reasons_of = {
        kind: dict(by_kind.filter(pl.col("kind") == kind)["reason"].value_counts().iter_rows())
        for kind in ("flip", "flood")
    }
    assert reasons_of["flip"] == {"label_flipping": 300}
    assert reasons_of["flood"] == {"rate_abuse": n_flood}
    clean_result = by_kind.filter(pl.col("kind").is_null())
    assert clean_result.height == clean.height
    share = clean_result.filter(pl.col("status") != "accepted").height / clean.height
    assert share < 0.02
    # without the injection, the same clean stream is (almost) entirely accepted
    alone = validate_feedback(clean, predictions, None, RULES, end)
    assert alone.filter(pl.col("status") != "accepted").height / clean.height < 0.02

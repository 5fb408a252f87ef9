"""Routing of /v1/predict requests (pure functions) and scoring on real LightGBM models.

The models are trained with ``train_model`` on small synthetic datasets (no registry
needed here); ``test_serving`` serves the same kind of models from a real MLflow registry.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ct_assets.serving.bodies import PredictInstance
from ct_assets.serving.models import ServedModel, Snapshot
from ct_assets.serving.predict import check_features, serve
from ct_assets.serving.routing import (
    ARM_A,
    ARM_B,
    ARM_CANARY,
    ARM_CHAMPION,
    ARM_SHADOW,
    CHAMPION_ONLY,
    MODES,
    Route,
    bucket,
    parse_deployment,
    route,
    routing_key,
)
from ct_assets.training.model import TrainedModel
from ct_assets.training.train import TrainParams, train_model

USERS = [f"user-{i:05d}" for i in range(10_000)]
PARAMS = TrainParams(num_boost_round=20, learning_rate=0.2, num_threads=1)
CHANNELS = ["web", "app", "store"]
START = datetime(2024, 1, 1, tzinfo=UTC)


# -- small real models -------------------------------------------------------------------------


def synthetic_dataset(rule: str, rows: int = 800, seed: int = 0) -> pl.DataFrame:
    """A dataset as ``compile_dataset`` makes them: x0, x1 (numeric), channel (categorical)
    and a binary label given by ``rule`` (models trained on different rules disagree)."""
    rng = np.random.default_rng(seed)
    x0, x1 = rng.normal(size=rows), rng.normal(size=rows)
    channel = rng.choice(CHANNELS, size=rows)
    web = channel == "web"
    labels = {
        "x0": x0 + web > 0.3,
        "x1": x1 - 0.5 * x0 > 0.0,
        "not-x0": x0 - web < -0.2,
    }[rule]
    holdout = rows // 5
    return pl.DataFrame(
        {
            "event_id": [f"ev-{rule}-{i}" for i in range(rows)],
            "log_offset": list(range(rows)),
            "timestamp": [START + timedelta(minutes=i) for i in range(rows)],
            "label": [str(int(v)) for v in labels],
            "split": ["train"] * (rows - holdout) + ["holdout"] * holdout,
            "channel": channel.tolist(),
            "x0": x0,
            "x1": x1,
        }
    )


def trained(rule: str) -> TrainedModel:
    return train_model(synthetic_dataset(rule), PARAMS).model


def instance_rows(count: int, seed: int = 5) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "x0": float(rng.normal()),
            "x1": float(rng.normal()),
            "channel": CHANNELS[int(rng.integers(0, 3))],
        }
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def models() -> tuple[ServedModel, ServedModel]:
    return ServedModel.of("1", trained("x0")), ServedModel.of("2", trained("x1"))


# -- the pure routing --------------------------------------------------------------------------


def test_bucket_is_blake2b_of_the_key_in_the_unit_interval() -> None:
    digest = hashlib.blake2b(b"user:alice", digest_size=8).digest()
    assert bucket("user:alice") == int.from_bytes(digest, "big") / 2**64
    points = [bucket(u) for u in USERS]
    assert all(0.0 <= p < 1.0 for p in points)
    assert abs(float(np.mean(points)) - 0.5) < 0.01  # uniform enough: sd of the mean ~0.003


def test_routing_key_prefers_the_user_and_names_its_kind() -> None:
    assert routing_key("u1", "e1") == "user:u1"
    assert routing_key(None, "e1") == "entity:e1"
    assert routing_key(None, None) is None


def test_off_and_no_challenger_always_serve_the_champion() -> None:
    for user in USERS[:200]:
        assert route("off", 1.0, user) == CHAMPION_ONLY
        for mode in MODES:
            assert route(mode, 1.0, user, has_challenger=False) == CHAMPION_ONLY
    assert Route(ARM_CHAMPION, shadow=False) == CHAMPION_ONLY


def test_shadow_serves_the_champion_and_scores_the_challenger() -> None:
    for user in [*USERS[:200], None]:
        chosen = route("shadow", 0.3, user)
        assert chosen.arm_served == ARM_CHAMPION and chosen.shadow
        assert not chosen.challenger_serves


def test_canary_share_is_the_fraction_and_sticky_per_user() -> None:
    for fraction in (0.05, 0.2, 0.5):
        arms = [route("canary", fraction, routing_key(u, None)).arm_served for u in USERS]
        counts = Counter(arms)
        assert set(counts) <= {ARM_CANARY, ARM_CHAMPION}
        share = counts[ARM_CANARY] / len(USERS)
        # binomial sd at 10,000 users is at most 0.005: 4 sd
        assert abs(share - fraction) < 0.02, (fraction, share)
        again = [route("canary", fraction, routing_key(u, None)).arm_served for u in USERS]
        assert again == arms  # sticky: every user keeps their arm
    # raising the fraction only moves users to the canary, never back
    small = {u for u in USERS if route("canary", 0.1, u).challenger_serves}
    large = {u for u in USERS if route("canary", 0.3, u).challenger_serves}
    assert small < large


def test_each_challenger_version_draws_its_own_users_and_keeps_them() -> None:
    """The hash is salted with the challenger's version: two canaries at the same fraction
    route different sets of users (no more overlap than chance), and within one canary a
    user keeps their arm."""
    keys = [routing_key(u, None) for u in USERS]
    first = {k for k in keys if route("canary", 0.1, k, salt="7").challenger_serves}
    second = {k for k in keys if route("canary", 0.1, k, salt="8").challenger_serves}
    assert abs(len(first) / len(keys) - 0.1) < 0.02 and abs(len(second) / len(keys) - 0.1) < 0.02
    # independent draws share about 0.1 * 0.1 of the users (sd ~0.001 at 10,000): not 0.1
    overlap = len(first & second) / len(keys)
    assert overlap < 0.02, f"{overlap:.3f} of users on both canaries"
    for _ in range(3):  # sticky within a canary
        assert {k for k in keys if route("canary", 0.1, k, salt="7").challenger_serves} == first
    # and raising the fraction of the same canary still only adds users
    assert first < {k for k in keys if route("canary", 0.3, k, salt="7").challenger_serves}
    # a long version string is a valid salt too (hashed to BLAKE2b's 16 bytes)
    assert 0.0 <= bucket("user:x", "v" * 100) < 1.0
    assert bucket("user:x", "v" * 100) != bucket("user:x", "v" * 99)


def test_ab_split_is_deterministic_across_processes() -> None:
    keys = [routing_key(u, None) for u in USERS[:500]]
    arms = [route("ab", 0.5, k).arm_served for k in keys]
    assert set(arms) == {ARM_A, ARM_B}
    assert abs(arms.count(ARM_B) / len(arms) - 0.5) < 0.1
    assert [route("ab", 0.5, k).arm_served for k in keys] == arms
    pairs = zip(keys, arms, strict=True)
    assert all(route("ab", 0.5, k).challenger_serves == (a == ARM_B) for k, a in pairs)
    # another interpreter, another hash seed: the same arms
    code = (
        "import json, sys\n"
        "from ct_assets.serving.routing import route\n"
        "keys = json.load(sys.stdin)\n"
        "print(json.dumps([route('ab', 0.5, k).arm_served for k in keys]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert json.loads(out.stdout) == arms


def test_requests_without_a_key_get_a_draw_each() -> None:
    assert route("canary", 0.2, None, draw=lambda: 0.1).arm_served == ARM_CANARY
    assert route("canary", 0.2, None, draw=lambda: 0.9).arm_served == ARM_CHAMPION
    assert route("ab", 0.5, None, draw=lambda: 0.4).arm_served == ARM_B
    assert route("ab", 0.5, None, draw=lambda: 0.6).arm_served == ARM_A
    arms = Counter(route("canary", 0.5, None).arm_served for _ in range(2000))
    assert min(arms.values()) > 800  # random, not stuck on one arm
    with pytest.raises(ValueError, match="unknown deployment mode"):
        route("blue-green", 0.5, "user:x")


def test_deployment_tags_are_read_defensively() -> None:
    assert parse_deployment(None) == ("off", 0.0)
    assert parse_deployment({}) == ("off", 0.0)
    assert parse_deployment({"ct.deployment.mode": "weird"}) == ("off", 0.0)
    assert parse_deployment({"ct.deployment.mode": "shadow"}) == ("shadow", 1.0)
    canary = {"ct.deployment.mode": "canary", "ct.deployment.fraction": "0.25"}
    assert parse_deployment(canary) == ("canary", 0.25)
    assert parse_deployment({"ct.deployment.mode": "canary"}) == ("canary", 0.1)
    assert parse_deployment({"ct.deployment.mode": "ab", "ct.deployment.fraction": "x"}) == (
        "ab",
        0.5,
    )
    assert parse_deployment({"ct.deployment.mode": "ab", "ct.deployment.fraction": "7"}) == (
        "ab",
        1.0,
    )
    assert parse_deployment({"ct.deployment.mode": "ab", "ct.deployment.fraction": "nan"}) == (
        "ab",
        0.5,
    )


# -- scoring with real models ------------------------------------------------------------------


def test_served_scores_equal_the_trained_models_predict_proba(
    models: tuple[ServedModel, ServedModel],
) -> None:
    rows: list[dict[str, object]] = [
        *instance_rows(50),
        {"x0": 0.3},  # missing features
        {"x0": None, "x1": 1.0, "channel": None},  # nulls
        {"x0": 1.0, "x1": -1.0, "channel": "kiosk"},  # an unseen category
        {"x0": True, "x1": 0, "channel": "web"},  # a boolean and an integer
    ]
    frame = pl.DataFrame(
        rows, schema={"x0": pl.Float64, "x1": pl.Float64, "channel": pl.String}, strict=False
    )
    for served in models:
        expected = served.model.predict_proba(frame)
        np.testing.assert_allclose(served.score(rows), expected, rtol=0, atol=1e-12)
        one = served.score(rows[:1])  # one thread for small batches: the same numbers
        np.testing.assert_allclose(one, expected[:1], rtol=0, atol=1e-12)


def test_shadow_never_changes_the_response(models: tuple[ServedModel, ServedModel]) -> None:
    champion, challenger = models
    instances = [
        PredictInstance(row, user_id=f"u{k}", prediction_id=f"p{k}")  # type: ignore[arg-type]
        for k, row in enumerate(instance_rows(300))
    ]
    now = datetime.now(UTC)
    alone = Snapshot(champion, None, "off", 0.0)
    shadowed = Snapshot(champion, challenger, "shadow", 1.0)
    plain = serve(alone, instances, model_name="m", now=now)
    shadow = serve(shadowed, instances, model_name="m", now=now)
    assert shadow.predictions == plain.predictions
    assert {p["arm"] for p in shadow.predictions} == {ARM_CHAMPION}
    assert {p["model_version"] for p in shadow.predictions} == {"1"}
    # the challenger disagrees on some rows, so the shadow records are not a copy
    assert len(plain.records) == 300 and len(shadow.records) == 600
    logged = [json.loads(r.line) for r in shadow.records]
    assert [e["arm"] for e in logged] == [ARM_CHAMPION, ARM_SHADOW] * 300
    assert [e["model_version"] for e in logged] == ["1", "2"] * 300
    assert [e["prediction_id"] for e in logged[::2]] == [f"p{k}" for k in range(300)]
    assert [e["prediction_id"] for e in logged[1::2]] == [f"p{k}" for k in range(300)]
    expected = challenger.score([i.features for i in instances])
    shadow_scores = np.array([[e["scores"]["0"], e["scores"]["1"]] for e in logged[1::2]])
    np.testing.assert_allclose(shadow_scores, expected, rtol=0, atol=1e-12)
    served = [e["prediction"] for e in logged[::2]]
    assert served != [e["prediction"] for e in logged[1::2]]


def test_canary_serves_the_challengers_scores(models: tuple[ServedModel, ServedModel]) -> None:
    champion, challenger = models
    rows = instance_rows(400)
    instances = [PredictInstance(r, user_id=f"u{k}") for k, r in enumerate(rows)]  # type: ignore[arg-type]
    snapshot = Snapshot(champion, challenger, "canary", 0.3)
    result = serve(snapshot, instances, model_name="m", now=datetime.now(UTC))
    by_champion, by_challenger = champion.score(rows), challenger.score(rows)
    for k, prediction in enumerate(result.predictions):
        canary = route("canary", 0.3, f"user:u{k}", salt="2").challenger_serves
        assert prediction["arm"] == (ARM_CANARY if canary else ARM_CHAMPION)
        assert prediction["model_version"] == ("2" if canary else "1")
        scores = (by_challenger if canary else by_champion)[k]
        assert prediction["scores"] == {"0": scores[0], "1": scores[1]}
    arms = Counter(p["arm"] for p in result.predictions)
    assert 60 < arms[ARM_CANARY] < 180
    # the next challenger (another version, same fraction) meets other users
    following = ServedModel.of("3", challenger.model)
    later = serve(
        Snapshot(champion, following, "canary", 0.3),
        instances,
        model_name="m",
        now=datetime.now(UTC),
    )
    before = {k for k, p in enumerate(result.predictions) if p["arm"] == ARM_CANARY}
    after = {k for k, p in enumerate(later.predictions) if p["arm"] == ARM_CANARY}
    assert before != after and len(before & after) < 0.6 * min(len(before), len(after))


def test_features_are_checked_against_the_served_models(
    models: tuple[ServedModel, ServedModel],
) -> None:
    champion, _ = models
    snapshot = Snapshot(champion, None, "off", 0.0)
    good = PredictInstance({"x0": 1, "x1": None, "channel": "nowhere"})
    bad = PredictInstance({"x0": "high", "channel": 3, "colour": "red", "x1": True})
    errors = check_features([good, bad], snapshot)
    found = {(e.index, e.field, e.reason) for e in errors}
    assert found == {
        (1, "features.x0", "schema"),
        (1, "features.channel", "schema"),
        (1, "features.colour", "unknown_field"),
    }
    assert any("categorical" in e.message for e in errors if e.field == "features.channel")

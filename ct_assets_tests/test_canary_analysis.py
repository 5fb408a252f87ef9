"""The canary analysis on a real instance, event log and registry: labeled live traffic of
each arm decides between rolling the challenger back and promoting it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pytest

from ct_assets import keys
from ct_assets.cli import main
from ct_assets.defs import build_definitions
from ct_assets.eventlog import EventLog
from ct_assets.monitoring.canary import arm_outcomes, canary_decision
from ct_assets.registry import CHALLENGER, CHAMPION, TAG_DEPLOYMENT_STATUS, Registry
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events


def _traffic(
    settings: Settings,
    arm: str,
    version: str,
    accuracy: float,
    n: int,
    tag: str,
    served_at: datetime | None = None,
) -> None:
    """Served predictions of one arm (served now, or at ``served_at``) and the labels users
    gave them."""
    rng = np.random.default_rng(len(tag) + n)
    at = (served_at or datetime.now(UTC)).isoformat()
    events: list[dict[str, Any]] = []
    for i in range(n):
        label = int(rng.integers(0, 2))
        served = label if rng.random() < accuracy else 1 - label
        pid = f"{tag}-{i}"
        events.append(
            {
                "kind": "prediction",
                "event_id": f"{pid}-p",
                "prediction_id": pid,
                "timestamp": at,
                "model_version": version,
                "arm": arm,
                "features": {"x0": float(i), "channel": "web"},
                "prediction": served,
                "scores": {"0": 0.5, "1": 0.5},
            }
        )
        events.append(
            {
                "kind": "feedback",
                "event_id": f"{pid}-f",
                "prediction_id": pid,
                "timestamp": at,
                "feedback_type": "explicit",
                "label": label,
            }
        )
    ingest(settings, events)


def _analyse(
    defs: dg.Definitions, instance: dg.DagsterInstance, asset: str = keys.CANARY_ANALYSIS
) -> dict[str, Any]:
    result = defs.resolve_job_def(keys.CANARY_JOB).execute_in_process(instance=instance)
    assert result.success
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == dg.AssetKey(asset)
    ]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_canary_rolls_a_worse_challenger_back_and_promotes_a_better_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    # the gate and the canary at their defaults
    events = simulated_events(4000, drift_at=1.0)
    registry = Registry.from_settings(settings)
    defs = build_definitions(settings)
    retrain = defs.resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        ingest(settings, events[:2000])
        assert retrain.execute_in_process(instance=instance).success
        champion = registry.alias(CHAMPION)
        assert champion is not None
        assert main(["deploy", "--mode", "canary", "--fraction", "0.2"]) == 0
        ingest(settings, events[2000:3000])
        assert retrain.execute_in_process(instance=instance).success
        worse = registry.alias(CHALLENGER)
        assert worse is not None and registry.alias(CHAMPION) == champion

        sensor = defs.resolve_sensor_def(keys.CANARY_SENSOR)
        with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
            tick = sensor.evaluate_tick(context)
        assert [r.run_key for r in tick.run_requests] == [f"canary-v{worse.version}-3000"]
        with dg.build_sensor_context(
            instance=instance, resources=defs.resources, cursor=tick.cursor
        ) as context:
            again = sensor.evaluate_tick(context)
        assert not again.run_requests and "since the last canary analysis" in (
            again.skip_message or ""
        )

        _traffic(settings, "champion", champion.version, 0.85, 600, "c1")
        _traffic(settings, "canary", worse.version, 0.55, 150, "w1")
        meta = _analyse(defs, instance)
        assert meta["action"] == "rollback", meta["reason"]
        assert "clearly worse" in meta["reason"]
        assert registry.alias(CHALLENGER) is None and registry.alias(CHAMPION) == champion
        assert registry.version(worse.version).tags[TAG_DEPLOYMENT_STATUS] == "rolled_back"

        ingest(settings, events[3000:])
        assert retrain.execute_in_process(instance=instance).success
        better = registry.alias(CHALLENGER)
        assert better is not None and better.version != worse.version
        # a new canary: the champion's traffic of the last one is not compared with it
        _traffic(settings, "champion", champion.version, 0.85, 600, "c2")
        _traffic(settings, "canary", better.version, 0.95, 100, "b1")
        early = _analyse(defs, instance)
        assert early["action"] == "continue", early["reason"]
        _traffic(settings, "canary", better.version, 0.95, 400, "b2")
        meta = _analyse(defs, instance)
        assert meta["action"] == "promote", meta["reason"]
        assert (meta["champion_labeled"], meta["challenger_labeled"]) == (600, 500)
        promoted = registry.alias(CHAMPION)
        assert promoted is not None and promoted.version == better.version
    actions = [(r.action, r.by) for r in registry.audit_trail()]
    assert ("rollback", "canary_analysis") in actions
    assert actions[-1] == ("promote", "canary_analysis")


def test_champion_traffic_from_before_the_deployment_started_is_not_compared(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An A/B deployment (the same stop rule as a canary): arm ``a`` served poorly before
    the challenger existed; since then both arms are close. Read without a lower bound
    (as the analysis once did) the old traffic makes the challenger look better and it
    would be promoted; bounded by the deployment's start, only the same period counts and
    the experiment keeps running, until the challenger's own traffic shows it is worse."""
    monkeypatch.setenv("CT_HOME", str(settings.home))
    events = simulated_events(3000, drift_at=1.0)
    registry = Registry.from_settings(settings)
    defs = build_definitions(settings)
    retrain = defs.resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        ingest(settings, events[:2000])
        assert retrain.execute_in_process(instance=instance).success
        champion = registry.alias(CHAMPION)
        assert champion is not None
        assert main(["deploy", "--mode", "ab", "--fraction", "0.4"]) == 0
        ingest(settings, events[2000:])
        assert retrain.execute_in_process(instance=instance).success
        challenger = registry.alias(CHALLENGER)
        assert challenger is not None
        started = datetime.fromisoformat(registry.deployment().started_at)
        assert started >= datetime.fromisoformat(challenger.created_at)

        before = started - timedelta(minutes=10)
        _traffic(settings, "a", champion.version, 0.60, 3000, "old", served_at=before)
        _traffic(settings, "a", champion.version, 0.85, 600, "a1")
        _traffic(settings, "b", challenger.version, 0.80, 400, "b1")
        meta = _analyse(defs, instance)
        assert meta["mode"] == "ab" and meta["since"] == started.isoformat()
        assert meta["action"] == "continue", meta["reason"]
        assert (meta["champion_labeled"], meta["challenger_labeled"]) == (600, 400)
        assert registry.alias(CHALLENGER) == challenger and registry.alias(CHAMPION) == champion

        # what the unbounded read saw: the old traffic of arm a as well; it promotes
        log = EventLog.from_settings(settings)
        everything = arm_outcomes(
            log.read("feedback"),
            log.read("prediction"),
            champion=champion.version,
            challenger=challenger.version,
            since=None,
            arms=("a", "b"),
        )
        assert len(everything[0]) == 3600
        assert canary_decision(*everything).action == "promote"

        _traffic(settings, "b", challenger.version, 0.55, 300, "b2")
        meta = _analyse(defs, instance)
        assert meta["action"] == "rollback", meta["reason"]
        assert registry.alias(CHALLENGER) is None and registry.alias(CHAMPION) == champion


def test_shadow_evaluation_compares_both_models_on_the_same_requests(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    events = simulated_events(3000, drift_at=1.0)
    registry = Registry.from_settings(settings)
    defs = build_definitions(settings)
    retrain = defs.resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        ingest(settings, events[:2000])
        assert retrain.execute_in_process(instance=instance).success
        assert main(["deploy", "--mode", "shadow"]) == 0
        ingest(settings, events[2000:])
        assert retrain.execute_in_process(instance=instance).success
        champion, challenger = registry.alias(CHAMPION), registry.alias(CHALLENGER)
        assert champion is not None and challenger is not None
        at = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
        served: list[dict[str, Any]] = []
        for i in range(8):
            # champion says 1 (0.8) every time; the challenger agrees on the first 6
            theirs = 0.7 if i < 6 else 0.3
            for arm, version, p1 in (
                ("champion", champion.version, 0.8),
                ("shadow", challenger.version, theirs),
            ):
                served.append(
                    {
                        "kind": "prediction",
                        "event_id": f"s{i}-{arm}",
                        "prediction_id": f"s{i}",
                        "timestamp": at,
                        "model_version": version,
                        "arm": arm,
                        "features": {"x0": 0.0},
                        "prediction": int(p1 >= 0.5),
                        "scores": {"0": 1 - p1, "1": p1},
                    }
                )
        labels = [
            {
                "kind": "feedback",
                "event_id": f"s{i}-label",
                "prediction_id": f"s{i}",
                "timestamp": at,
                "feedback_type": "explicit",
                "label": 1 if i < 2 else 0,
            }
            for i in range(4)
        ]
        ingest(settings, served + labels)
        meta = _analyse(defs, instance, keys.SHADOW_EVALUATION)
    assert meta["requests"] == 8 and meta["agreement"] == 0.75
    assert meta["mean_abs_score_difference"] == pytest.approx((6 * 0.1 + 2 * 0.5) / 8)
    assert meta["labeled"] == 4
    assert meta["champion_accuracy"] == 0.5 and meta["challenger_accuracy"] == 0.5

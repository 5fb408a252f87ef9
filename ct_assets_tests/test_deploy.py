"""``ct-assets deploy``: the deployment mode in the registry, and what the gate does with it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.cli import main
from ct_assets.defs import build_definitions
from ct_assets.defs.metadata import latest_metadata
from ct_assets.registry import CHALLENGER, CHAMPION, TAG_DEPLOYMENT_STATUS, Registry
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events


def test_deploy_refuses_what_it_cannot_do(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    assert main(["deploy", "--mode", "blue-green"]) == 2
    assert "unknown deployment mode 'blue-green'" in capsys.readouterr().err
    assert main(["deploy", "--mode", "canary", "--fraction", "1.5"]) == 2
    assert "must be in (0, 1)" in capsys.readouterr().err
    assert Registry.from_settings(settings).deployment().mode == "off"


def test_with_a_canary_on_a_passing_candidate_stays_challenger_until_it_is_off(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    events = simulated_events(3200, drift_at=1.0)
    registry = Registry.from_settings(settings)
    defs = build_definitions(settings)
    job = defs.resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        ingest(settings, events[:2000])
        assert job.execute_in_process(instance=instance).success
        first = registry.alias(CHAMPION)
        assert first is not None

        assert registry.alias(CHALLENGER) is None, "promoted: no challenger left"
        assert main(["deploy", "--mode", "canary", "--fraction", "0.2", "--by", "bob"]) == 0
        assert "off 0 -> canary 0.2" in capsys.readouterr().out
        ingest(settings, events[2000:])
        assert job.execute_in_process(instance=instance).success
        champion, challenger = registry.alias(CHAMPION), registry.alias(CHALLENGER)
        assert champion == first, "the champion waits for the canary"
        assert challenger is not None and challenger.version != first.version
        assert registry.version(challenger.version).tags[TAG_DEPLOYMENT_STATUS] == (
            "challenger in canary"
        )
        meta = latest_metadata(instance, keys.CHAMPION_MODEL) or {}
        assert meta[keys.META_MODEL_VERSION] == first.version
        assert meta["challenger"] == challenger.version
        assert main(["status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        deployment = status["deployment"]
        assert (deployment["mode"], deployment["fraction"]) == ("canary", 0.2)
        # the canary began when the challenger got its alias, after it was registered
        started = datetime.fromisoformat(deployment["started_at"])
        assert started >= datetime.fromisoformat(challenger.created_at)
        deploys = [r for r in registry.audit_trail() if r.action == "deploy"]
        assert deploys[-1].by == "bob" and deploys[-1].reason == "off 0 -> canary 0.2"

        assert main(["deploy", "--mode", "off"]) == 0
        assert job.execute_in_process(instance=instance).success
        promoted = registry.alias(CHAMPION)
        assert promoted is not None and promoted.version != first.version


def test_a_rejected_candidate_never_meets_traffic_and_a_passing_one_supersedes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    strict = replace(settings, gate_min_auc=0.999)
    events = simulated_events(3200, drift_at=1.0)
    registry = Registry.from_settings(settings)
    retrain = build_definitions(settings).resolve_job_def(keys.RETRAIN_JOB)
    refuse = build_definitions(strict).resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        ingest(settings, events[:2000])
        assert retrain.execute_in_process(instance=instance).success
        assert main(["deploy", "--mode", "canary", "--fraction", "0.2"]) == 0
        ingest(settings, events[2000:2400])
        assert retrain.execute_in_process(instance=instance).success
        live = registry.alias(CHALLENGER)
        assert live is not None

        ingest(settings, events[2400:2800])
        assert not refuse.execute_in_process(instance=instance, raise_on_error=False).success
        rejected = registry.version(str(int(live.version) + 1))
        assert rejected.tags[TAG_DEPLOYMENT_STATUS] == "rejected"
        still = registry.alias(CHALLENGER)
        assert still is not None and still.version == live.version, "the canary goes on"

        ingest(settings, events[2800:])
        assert retrain.execute_in_process(instance=instance).success
        newer = registry.alias(CHALLENGER)
        assert newer is not None and newer.version == str(int(rejected.version) + 1)
    assert registry.version(live.version).tags[TAG_DEPLOYMENT_STATUS] == "superseded"
    challenges = [
        (r.version, r.previous) for r in registry.audit_trail() if r.action == "challenge"
    ]
    assert challenges == [(live.version, None), (newer.version, live.version)]


def test_deployment_history_lists_every_change_of_the_champion_and_the_mode(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polars as pl

    monkeypatch.setenv("CT_HOME", str(settings.home))
    ingest(settings, simulated_events(2000, drift_at=1.0))
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance).success
        assert main(["deploy", "--mode", "shadow", "--by", "carol", "--reason", "try it"]) == 0
        job = dg.define_asset_job("history", selection=[keys.DEPLOYMENT_HISTORY]).resolve(
            asset_graph=defs.resolve_asset_graph()
        )
        result = job.execute_in_process(instance=instance, resources=defs.resources)
        assert result.success
        (event,) = result.get_asset_materialization_events()
        meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    assert meta["dagster/row_count"] == 2
    assert meta["promotions"] == 1 and meta["deployment"] == "shadow 1"
    table = pl.read_parquet(str(meta["path"]))
    assert table["action"].to_list() == ["promote", "deploy"]
    assert table.row(1, named=True)["by"] == "carol"
    assert table.row(1, named=True)["reason"] == "off 0 -> shadow 1: try it"

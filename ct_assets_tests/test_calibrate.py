"""``ct-assets calibrate`` on a real champion's dataset (real retrain job, real registry)."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.cli import main
from ct_assets.defs import build_definitions
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events

RUNS = 20


def test_without_a_champion_it_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    assert main(["calibrate", "--runs", "2"]) == 1
    assert "no champion to calibrate on" in capsys.readouterr().err


@pytest.mark.slow
def test_calibrate_measures_the_gate_and_the_canary_on_the_champions_data(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_HOME", str(settings.home))
    ingest(settings, simulated_events(3000, drift_at=1.0))
    job = build_definitions(settings).resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(instance=instance).success
    assert main(["calibrate", "--runs", str(RUNS), "--seed", "3", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert f"{RUNS}/{RUNS} runs" in captured.err  # the progress bar
    gate, canary = result["gate"], result["canary"]
    with capsys.disabled():
        print("\n" + json.dumps(result, indent=1))
    for part, name in (
        (gate, "false_rejection"),
        (gate, "false_promotion"),
        (gate, "forgetting_caught"),
        (canary, "false_promotion"),
        (canary, "false_rollback"),
    ):
        assert part[name]["runs"] == RUNS, name
        assert 0.0 <= part[name]["rate"] <= 1.0, name
    assert canary["median_samples_runs"] == RUNS
    # the worse candidates are worse by about the gate's tolerance, and the gate mostly
    # refuses them; equivalent ones mostly pass; 5 forgotten points are mostly caught
    assert gate["tolerance"] == settings.gate_tolerance
    assert 0.01 < gate["false_promotion"]["auc_drop_measured"] < 0.04
    assert gate["false_promotion"]["rate"] <= 0.25
    assert gate["false_rejection"]["rate"] <= 0.5
    assert gate["forgetting_caught"]["rate"] >= 0.5
    assert canary["false_promotion"]["rate"] <= 0.2
    assert canary["false_rollback"]["rate"] <= 0.2
    assert canary["median_samples"] > 0 and canary["median_samples_worse"] > 0
    # the same seed measures the same rates
    assert main(["calibrate", "--runs", "3", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "equivalent candidate not promoted:" in text and "each over 3 runs" in text

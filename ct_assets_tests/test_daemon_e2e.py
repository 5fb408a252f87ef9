"""End to end: a real dagster-daemon evaluates the volume sensor and the champion changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.instance import prepare_dagster_home
from ct_assets.registry import CHAMPION, Registry
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events
from .daemon_helpers import running_daemon

WAIT_SECONDS = 240


@pytest.mark.slow
def test_daemon_launches_a_retrain_and_the_champion_changes(settings: Settings) -> None:
    settings = replace(settings, sensor_interval_seconds=2)
    home = prepare_dagster_home(settings)
    env = {**os.environ, **settings.as_env(), "DAGSTER_HOME": str(home)}
    events = simulated_events(4000, drift_at=0.6)
    ingest(settings, events[:2400])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        job = build_definitions(settings).resolve_job_def(keys.RETRAIN_JOB)
        assert job.execute_in_process(instance=instance).success
    registry = Registry.from_settings(settings)
    first = registry.alias(CHAMPION)
    assert first is not None

    with running_daemon(settings) as daemon:
        ingest(settings, events[2400:])
        deadline = time.monotonic() + WAIT_SECONDS
        champion = first
        while time.monotonic() < deadline and champion.version == first.version:
            assert daemon.alive(), daemon.output()
            time.sleep(2)
            champion = registry.alias(CHAMPION) or first
        assert champion.version != first.version, daemon.output()
        # the champion moves in the run's last step; the run ends moments later
        with dg.DagsterInstance.from_config(str(home)) as instance:
            while time.monotonic() < deadline:
                runs = instance.get_runs(dg.RunsFilter(tags={keys.RUN_TAG_TRIGGER: "volume"}))
                if runs and runs[0].is_finished:
                    break
                time.sleep(1)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={keys.RUN_TAG_TRIGGER: "volume"}))
        assert len(runs) == 1
        assert runs[0].status == dg.DagsterRunStatus.SUCCESS
        assert runs[0].tags["dagster/sensor_name"] == keys.VOLUME_SENSOR
        assert champion.tags["ct.dagster_run_id"] == runs[0].run_id

    status = subprocess.run(
        [str(Path(sys.executable).with_name("ct-assets")), "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(status.stdout)
    assert report["champion"]["version"] == champion.version
    assert report["last_trigger"]["kind"] == "volume"
    assert report["last_retrain"]["status"] == "SUCCESS"

"""A retrain killed in the middle of training: the champion is untouched, the rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.registry import CHALLENGER, CHAMPION, Registry
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events

# The child materializes dataset and candidate on a persistent instance, training slowly
# (a callback sleeps each round) so that the kill lands after a checkpoint was written.
CHILD = """
import functools, sys, time
import dagster as dg
import ct_assets.training.candidates as training
from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.settings import Settings

def slow(env):
    time.sleep(0.05)

training.train_model = functools.partial(training.train_model, callbacks=[slow])
settings = Settings.from_env()
defs = build_definitions(settings)
job = dg.define_asset_job(
    "train_only", selection=[keys.TRAINING_DATASET, keys.CANDIDATE_MODEL]
).resolve(asset_graph=defs.resolve_asset_graph())
with dg.DagsterInstance.get() as instance:
    job.execute_in_process(instance=instance, resources=defs.resources)
"""


def _checkpoint_iteration(folder: Path) -> int:
    import json

    for state in folder.glob("*/state.json"):
        try:
            return int(json.loads(state.read_text())["iteration"])
        except (ValueError, KeyError, OSError):
            continue
    return 0


def test_a_killed_training_run_leaves_the_champion_and_its_rerun_resumes(
    settings: Settings, tmp_path: Path
) -> None:
    # many slow rounds at a small learning rate: the kill lands mid-training, and the
    # model stays calibrated enough for the gate
    settings = replace(settings, num_boost_round=400, learning_rate=0.02, checkpoint_every=10)
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("{}\n")
    events = simulated_events(4000, drift_at=1.0)
    ingest(settings, events[:2500])
    registry = Registry.from_settings(settings)
    defs = build_definitions(settings)
    env = {
        **os.environ,
        "CT_HOME": str(settings.home),
        "DAGSTER_HOME": str(dagster_home),
        "CT_NUM_BOOST_ROUND": "400",
        "CT_LEARNING_RATE": "0.02",
        "CT_CHECKPOINT_EVERY": "10",
        "CT_TRAINING_WINDOW": str(settings.training_window),
    }
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance).success
        champion = registry.alias(CHAMPION)
        assert champion is not None
        ingest(settings, events[2500:])

        child = subprocess.Popen([sys.executable, "-c", CHILD], env=env)
        deadline = time.monotonic() + 120
        while _checkpoint_iteration(settings.checkpoints_dir) < 30:
            assert child.poll() is None, "training finished before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = _checkpoint_iteration(settings.checkpoints_dir)

        assert registry.alias(CHAMPION) == champion, "the champion is untouched"
        assert registry.alias(CHALLENGER) is None, "the killed run registered nothing"

        job = dg.define_asset_job(
            "train_only", selection=[keys.TRAINING_DATASET, keys.CANDIDATE_MODEL]
        ).resolve(asset_graph=defs.resolve_asset_graph())
        rerun = job.execute_in_process(instance=instance, resources=defs.resources)
        assert rerun.success
        (candidate,) = [
            e.materialization
            for e in rerun.get_asset_materialization_events()
            if e.materialization.asset_key == dg.AssetKey(keys.CANDIDATE_MODEL)
        ]
        meta = {k: getattr(v, "value", v) for k, v in candidate.metadata.items()}
        assert meta["resumed_from_iteration"] >= killed_at >= 30
        assert "resumed from checkpoint" in meta["notes"]
        assert not list(settings.checkpoints_dir.glob("*/state.json")), "cleared on success"
        assert registry.alias(CHAMPION) == champion, "only the gate moves the champion"

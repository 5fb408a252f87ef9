"""The complete production loop, with real processes only.

* ``ct-assets api`` (uvicorn on loopback) serves the champion from the MLflow registry and
  logs every prediction it serves;
* a client posts feedback against the ``prediction_id``s it was given, for traffic whose
  concept changed since the champion was trained;
* a real ``dagster-daemon`` runs the sensors: ``performance_sensor`` sees the champion's
  accuracy decay on that feedback and launches a retrain; the gate passes the candidate,
  which becomes the ``challenger`` because the deployment mode is canary;
* the API picks the challenger up and routes a sticky fraction of users to it;
  ``canary_sensor`` launches the canary analysis on the labeled canary traffic until it
  promotes the challenger; the API then serves the new champion.

The volume and drift triggers are turned off here (thresholds out of reach) so that one
trigger drives the loop and the assertions name it; each has its own tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.defs.pipeline_health import build_pipeline_health
from ct_assets.eventlog import EventLog
from ct_assets.instance import prepare_dagster_home
from ct_assets.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_DEPLOYMENT_STATUS,
    Registry,
    VersionInfo,
)
from ct_assets.settings import Settings

from .api_helpers import ApiServer, start_api
from .conftest import ingest, simulated_events
from .daemon_helpers import daemon_log_path, log_tail, running_daemon

TOKEN = "loop-" + uuid.uuid4().hex
WAIT_SECONDS = 300
CANARY_FRACTION = 0.5
USERS = [f"user-{i:04d}" for i in range(240)]
CT_ASSETS = str(Path(sys.executable).with_name("ct-assets"))


class Traffic:
    """A client of the API: asks for predictions, then gives the labels users gave."""

    def __init__(self, api: ApiServer, rows: list[dict[str, Any]]) -> None:
        self.api = api
        self.http = httpx.Client(
            base_url=api.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30.0
        )
        self.rows = iter(rows)
        self.served: list[dict[str, Any]] = []  # one per answered instance, with its user
        self.feedback_ids: list[str] = []
        self.predict_calls: list[int] = []  # instances per POST /v1/predict
        self.log = EventLog(api.eventlog_dir)

    def send(self, n: int) -> list[dict[str, Any]]:
        """``n`` requests (one batch), then their labels once every prediction is logged."""
        rows = [next(self.rows) for _ in range(n)]
        users = [USERS[(len(self.served) + i) * 7 % len(USERS)] for i in range(n)]
        body = {
            "instances": [
                {"features": r["features"], "user_id": u} for r, u in zip(rows, users, strict=True)
            ]
        }
        response = self.http.post("/v1/predict", json=body)
        self.predict_calls.append(n)
        assert response.status_code == 200, response.text
        answers: list[dict[str, Any]] = response.json()["predictions"]
        for answer, user in zip(answers, users, strict=True):
            answer["user_id"] = user
        self.served += answers
        self.wait_logged({a["prediction_id"] for a in answers})
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        feedback = [
            {
                "kind": "feedback",
                "schema_version": 1,
                "event_id": f"fb-{a['prediction_id']}",
                "prediction_id": a["prediction_id"],
                "timestamp": now,
                "feedback_type": "explicit",
                "label": r["label"],
                "user_id": a["user_id"],
                "source": "loop-test",
            }
            for a, r in zip(answers, rows, strict=True)
        ]
        posted = self.http.post("/v1/feedback", json=feedback)
        assert posted.status_code == 202, posted.text
        assert posted.json()["accepted"] == n, posted.text
        self.feedback_ids += [f["event_id"] for f in feedback]
        return answers

    def wait_logged(self, ids: set[str], timeout: float = 30.0) -> None:
        """The inference log writes in the background: wait until these ids are durable."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.log.read("prediction")
            missing = ids - set(frame["prediction_id"].to_list() if frame.height else [])
            if not missing:
                return
            assert time.monotonic() < deadline, f"{len(missing)} predictions never logged"
            time.sleep(0.1)

    def serving(self) -> dict[str, Any]:
        status: dict[str, Any] = self.http.get("/healthz").json()["serving"]
        return status


def wait_for(what: str, probe: Callable[[], Any], diagnostics: Callable[[], str]) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}\n{diagnostics()}")


@pytest.fixture
def loop_settings(settings: Settings) -> Settings:
    return replace(
        settings,
        sensor_interval_seconds=2,
        training_window=1000,
        volume_threshold=1_000_000,
        drift_window=1_000_000,
        drift_min_window=1_000_000,
        performance_window=2000,
        performance_min_samples=800,
        canary_min_samples=150,
    )


def finished(instance: dg.DagsterInstance, sensor: str) -> list[dg.DagsterRun]:
    return [r for r in sensor_runs(instance, sensor) if r.is_finished]


def analyses(instance: dg.DagsterInstance) -> str:
    """What each canary analysis decided, for a failure message."""
    records = instance.fetch_materializations(dg.AssetKey(keys.CANARY_ANALYSIS), limit=20).records
    return "\n".join(
        str(r.asset_materialization.metadata["reason"].value)
        for r in records
        if r.asset_materialization is not None
    )


def sensor_runs(instance: dg.DagsterInstance, sensor: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": sensor})))


@pytest.mark.slow
def test_the_production_loop_closes_through_real_processes(
    loop_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = loop_settings
    monkeypatch.setenv("CT_HOME", str(settings.home))
    events = simulated_events(4000, drift_at=0.4)
    old, new = events[:1600], events[1600:]
    # -- the first champion, trained on the old concept; canary deployment ------------------
    ingest(settings, old)
    home = prepare_dagster_home(settings)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        job = build_definitions(settings).resolve_job_def(keys.RETRAIN_JOB)
        assert job.execute_in_process(instance=instance).success
    registry = Registry.from_settings(settings)
    first = registry.alias(CHAMPION)
    assert first is not None
    env = {**os.environ, **settings.as_env()}
    deploy = [CT_ASSETS, "deploy", "--mode", "canary", "--fraction", str(CANARY_FRACTION)]
    subprocess.run(deploy, env=env, check=True, capture_output=True, text=True)

    api = start_api(settings.home, TOKEN, env={"CT_SERVING_POLL_SECONDS": "0.2"})
    traffic = Traffic(api, new)

    def diagnostics() -> str:
        tail = log_tail(daemon_log_path(settings))
        return f"registry: {registry.alias(CHAMPION)} / {registry.alias(CHALLENGER)}\n{tail}"

    try:
        with running_daemon(settings):
            # -- the champion serves the new concept; its users' labels show the decay ---------
            assert traffic.serving()["champion"] == first.version
            for _ in range(10):
                answers = traffic.send(100)
                assert {(a["model_version"], a["arm"]) for a in answers} == {
                    (first.version, "champion")
                }, "no challenger yet: the champion answers everyone"
            decayed = len(traffic.served)

            challenger: VersionInfo = wait_for(
                "a challenger from the retrain the performance sensor launched",
                lambda: registry.alias(CHALLENGER),
                diagnostics,
            )
            assert registry.alias(CHAMPION).version == first.version, (
                "canary mode: the gate does not promote"
            )

            # -- the canary: a sticky half of the users meets the challenger ---------------------
            wait_for(
                "the API to load the challenger",
                lambda: traffic.serving().get("challenger") == challenger.version,
                diagnostics,
            )
            with dg.DagsterInstance.from_config(str(home)) as instance:
                while (registry.alias(CHAMPION) or first).version != challenger.version:
                    if registry.alias(CHALLENGER) is None:
                        pytest.fail(f"the canary rolled the challenger back\n{diagnostics()}")
                    if len(traffic.served) - decayed >= 1300:
                        pytest.fail(f"no canary decision\n{analyses(instance)}\n{diagnostics()}")
                    # labels of 100 more requests, then the analysis the sensor launches for them
                    done = len(finished(instance, keys.CANARY_SENSOR))
                    traffic.send(100)
                    wait_for(
                        "a canary analysis of the new labels",
                        lambda: len(finished(instance, keys.CANARY_SENSOR)) > done,  # noqa: B023
                        diagnostics,
                    )
            # -- the API serves the new champion ---------------------------------------------------
            wait_for(
                "the API to serve the promoted champion",
                lambda: traffic.serving().get("champion") == challenger.version,
                diagnostics,
            )
            after = traffic.send(50)
            assert {(a["model_version"], a["arm"]) for a in after} == {
                (challenger.version, "champion")
            }
            with dg.DagsterInstance.from_config(str(home)) as instance:
                wait_for(
                    "the canary run to finish",
                    lambda: all(r.is_finished for r in sensor_runs(instance, keys.CANARY_SENSOR)),
                    diagnostics,
                )
        # the loop's own health, from the instance the daemon wrote and the live API
        watched = replace(settings, api_metrics_url=api.url("/metrics"))
        with dg.DagsterInstance.from_config(str(home)) as instance:
            result = dg.materialize([build_pipeline_health(watched)], instance=instance)
        (event,) = result.get_asset_materialization_events()
        health = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    finally:
        api.stop()
        traffic.http.close()

    # the retrain: launched by the performance sensor, trained on the feedback users gave
    with dg.DagsterInstance.from_config(str(home)) as instance:
        retrains = sensor_runs(instance, keys.PERFORMANCE_SENSOR)
        canaries = sensor_runs(instance, keys.CANARY_SENSOR)
    assert [r.status for r in retrains] == [dg.DagsterRunStatus.SUCCESS], diagnostics()
    assert retrains[0].tags[keys.RUN_TAG_TRIGGER] == "performance"
    assert "accuracy" in retrains[0].tags[keys.RUN_TAG_REASON]
    assert challenger.tags["ct.dagster_run_id"] == retrains[0].run_id
    dataset = pl.read_parquet(settings.datasets_dir / f"{challenger.dataset_version}.parquet")
    learned = dataset.filter(pl.col("event_id").is_in(traffic.feedback_ids[:decayed]))
    assert learned.height >= settings.performance_min_samples, "it learned from the API feedback"
    assert set(learned["model_version"].to_list()) == {first.version}
    assert set(learned["arm"].to_list()) == {"champion"}

    # the canary: sticky per user, about the configured fraction, one switch to the new
    # champion, every prediction logged with the version and arm that served it
    phase = traffic.served[decayed : len(traffic.served) - len(after)]
    during = [a for a in phase if a["model_version"] == first.version or a["arm"] == "canary"]
    assert during == phase[: len(during)], "the new champion answered before the canary ended"
    assert all(a["model_version"] == challenger.version for a in phase[len(during) :])
    canary_phase = [a for a in during if a["arm"] == "canary"]
    assert all(a["model_version"] == challenger.version for a in canary_phase)
    arms: dict[str, set[str]] = {}
    for answer in during:
        arms.setdefault(answer["user_id"], set()).add(answer["arm"])
    moved = sorted(u for u, seen in arms.items() if len(seen) > 1)
    assert not moved, f"users moved between arms during the canary: {moved[:5]}"
    share = sum(seen == {"canary"} for seen in arms.values()) / len(arms)
    assert abs(share - CANARY_FRACTION) < 0.15, f"{share:.2f} of users on the canary"
    logged = EventLog(settings.eventlog_dir).read("prediction")
    served_by_canary = logged.filter(
        (pl.col("arm") == "canary") & (pl.col("model_version") == challenger.version)
    )
    assert set(served_by_canary["prediction_id"].to_list()) == {
        a["prediction_id"] for a in canary_phase
    }

    # the promotion: by the canary analysis, audited, with its statistics as the reason
    assert canaries and all(r.status == dg.DagsterRunStatus.SUCCESS for r in canaries)
    audit = registry.audit_trail()
    assert (audit[-1].action, audit[-1].version, audit[-1].by) == (
        "promote",
        challenger.version,
        "canary_analysis",
    )
    assert audit[-1].reason.startswith("canary:") and "challenger" in audit[-1].reason
    assert registry.version(challenger.version).tags[TAG_DEPLOYMENT_STATUS] == "champion"
    assert registry.version(first.version).tags[TAG_DEPLOYMENT_STATUS] != "champion"

    # pipeline health: the daemon's ticks, the runs it launched, the API's traffic
    details = health["details"]
    sensors = {row["sensor"]: row for row in details["sensors"]}
    assert sensors[keys.PERFORMANCE_SENSOR]["fired"] == 1
    assert sensors[keys.CANARY_SENSOR]["fired"] == len(canaries)
    assert sensors[keys.VOLUME_SENSOR]["fired"] == 0 < sensors[keys.VOLUME_SENSOR]["skipped"]
    assert any(
        "threshold N" in r["reason"] for r in sensors[keys.VOLUME_SENSOR]["top_skip_reasons"]
    )
    jobs = {row["job"]: row for row in details["jobs"]}
    assert jobs[keys.RETRAIN_JOB]["runs"] == 2 and jobs[keys.RETRAIN_JOB]["failed"] == 0
    assert jobs[keys.CANARY_JOB]["runs"] == len(canaries)
    routes = {row["route"]: row for row in details["api"]}
    assert routes["/v1/predict"]["requests"] == len(traffic.predict_calls)
    assert routes["/v1/feedback"]["requests"] == len(traffic.predict_calls)
    assert routes["/v1/predict"]["server_error_rate"] == 0.0
    assert health["api/v1/predict/latency_p99_ms"] > 0

    status = subprocess.run(
        [CT_ASSETS, "status", "--json"], env=env, capture_output=True, text=True, check=True
    )
    report = json.loads(status.stdout)
    assert report["champion"]["version"] == challenger.version
    assert report["deployment"]["mode"] == "canary"
    assert report["last_trigger"]["kind"] == "performance"
    # the canary run that promoted it measured its feedback-loop latency
    latency = report["feedback_loop_latency"]
    assert latency["version"] == challenger.version and latency["trigger"] == "performance"
    assert latency["events"] >= settings.performance_min_samples * 0.8
    assert 0 < latency["p50_seconds"] <= latency["max_seconds"] < WAIT_SECONDS * 3
    assert latency["trigger_to_promotion_seconds"] > 0

"""The distributed profile's runs: a real dagster-daemon on PostgreSQL storage hands the
volume-triggered retrain to RabbitMQ (CeleryRunLauncher), a real Celery worker started in
an empty directory executes it, task states go to Redis, and the champion is registered."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest
from dagster_celery.launcher import CeleryRunLauncher

from ct_assets import keys
from ct_assets.cluster.engines import create_database, drop_database
from ct_assets.instance import CELERY_WORKER_CONFIG, prepare_dagster_home
from ct_assets.registry import CHAMPION, Registry
from ct_assets.settings import Settings
from ct_assets.status import collect_status

from .conftest import ingest, simulated_events
from .daemon_helpers import log_tail, running_daemon

WAIT_SECONDS = 360
BIN = Path(sys.executable).parent
TASK_ID_TAG = "dagster-celery/task_id"


def _postgres_server_url() -> str:
    url = os.environ.get("CT_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CT_REQUIRE_POSTGRES") == "1":
            pytest.fail("CT_REQUIRE_POSTGRES=1 but CT_TEST_POSTGRES_URL is not set")
        pytest.skip("CT_TEST_POSTGRES_URL is not set")
    return url


@pytest.fixture
def dagster_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test's Dagster instance, dropped afterwards."""
    server = _postgres_server_url()
    name = f"ct_celery_test_{uuid.uuid4().hex[:12]}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        drop_database(server, name)


def _unavailable(reason: str) -> None:
    """Skip (fail under CT_REQUIRE_CELERY=1, as in .ci/run): a server is missing."""
    if os.environ.get("CT_REQUIRE_CELERY") == "1":
        pytest.fail(f"CT_REQUIRE_CELERY=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this test's own (its queues go with it), on the server of
    CT_TEST_RABBITMQ_URL (default amqp://guest:guest@127.0.0.1:5672)."""
    server = os.environ.get("CT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
    user = urlsplit(server).username or "guest"
    vhost = f"ct_celery_test_{uuid.uuid4().hex[:12]}"

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)

    try:
        ctl("add_vhost", vhost)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"cannot create a RabbitMQ vhost with rabbitmqctl: {exc}")
    try:
        ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield f"{server.rstrip('/')}/{vhost}"
    finally:
        ctl("delete_vhost", vhost)


@pytest.fixture
def backend_url(dagster_database: str) -> Iterator[str]:
    """Redis for task states (CT_TEST_REDIS_URL, default redis://127.0.0.1:6379/0); the
    states of the test's runs are deleted afterwards (after the worker stopped: its
    fixture is torn down first)."""
    import psycopg2
    import redis

    url = os.environ.get("CT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {url} does not answer: {exc}")
    yield url

    with psycopg2.connect(dagster_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT value FROM run_tags WHERE key = %s", (TASK_ID_TAG,))
        task_ids = [row[0] for row in cur.fetchall()]
    conn.close()
    if task_ids:
        redis.Redis.from_url(url).delete(*(f"celery-task-meta-{t}" for t in task_ids))


@pytest.fixture
def celery_env(
    settings: Settings,
    dagster_database: str,
    broker_url: str,
    backend_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """The celery instance of ``settings`` (sensors every 2 s) on this test's database,
    vhost and Redis, in the environment the daemon and the workers inherit."""
    settings = replace(settings, sensor_interval_seconds=2)
    for name, value in {
        "CT_DAGSTER_INSTANCE": "celery",
        "CT_DAGSTER_POSTGRES_URL": dagster_database,
        "CT_CELERY_BROKER_URL": broker_url,
        "CT_CELERY_BACKEND_URL": backend_url,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **settings.as_env(),
    }.items():
        monkeypatch.setenv(name, value)
    home = prepare_dagster_home(settings)
    assert "CeleryRunLauncher" in (home / "dagster.yaml").read_text()
    return settings


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    name: str
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return log_tail(self.log_path)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process group ``proc`` leads (it was started in a new session)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            # the group may outlive its leader: make sure the pool children are gone too
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        time.sleep(1)


@pytest.fixture
def celery_worker(tmp_path: Path, celery_env: Settings) -> Iterator[Any]:
    """Starts ``dagster-celery worker start`` in an empty directory with the environment
    the test has set up; stopped (its whole process group) on exit."""
    started: list[Worker] = []

    def start(env: dict[str, str]) -> Worker:
        cwd = tmp_path / f"worker-{len(started)}"
        cwd.mkdir()
        name = f"ct-test-{uuid.uuid4().hex[:8]}@%h"
        log_path = tmp_path / f"worker-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    str(BIN / "dagster-celery"),
                    "worker",
                    "start",
                    "-A",
                    "dagster_celery.app",
                    "-y",
                    str(CELERY_WORKER_CONFIG),
                    "-n",
                    name,
                    "-l",
                    "INFO",
                ],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, name, log_path)
        started.append(worker)
        deadline = time.monotonic() + 120
        while " ready." not in worker.output():
            assert worker.alive(), worker.output()
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.5)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            _stop_group(worker.proc)


def _ancestors(pid: int) -> list[int]:
    """``pid``'s parent, grandparent, ... (from /proc; empty once it has exited)."""
    chain = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
        chain.append(pid)
    return chain


def _volume_run(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    runs = instance.get_runs(dg.RunsFilter(tags={keys.RUN_TAG_TRIGGER: "volume"}), limit=1)
    return runs[0] if runs else None


def _run_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that executes the run (its "Started process" event)."""
    for event in instance.all_logs(run_id):
        if event.message.startswith("Started process for run"):
            return int(re.findall(r"pid: (\d+)", event.message)[0])
    return None


@pytest.mark.slow
@pytest.mark.postgres
def test_retrain_runs_on_a_celery_worker(celery_env: Settings, celery_worker: Any) -> None:
    settings = celery_env
    ingest(settings, simulated_events(2400, drift_at=0.6))
    worker = celery_worker(dict(os.environ))
    with running_daemon(settings) as daemon:
        deadline = time.monotonic() + WAIT_SECONDS
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            assert isinstance(instance.run_launcher, CeleryRunLauncher)
            run = None
            while time.monotonic() < deadline:
                assert daemon.alive(), daemon.output()
                assert worker.alive(), worker.output()
                run = _volume_run(instance)
                if run is not None and run.is_finished:
                    break
                time.sleep(2)
            assert run is not None and run.is_finished, daemon.output() + worker.output()
            assert run.status == dg.DagsterRunStatus.SUCCESS, worker.output()
            task_id = run.tags[TASK_ID_TAG]
            run_pid = _run_pid(instance, run.run_id)
        assert run_pid is not None
        # the pid's ancestry is read while the worker lives
        worker_pids = {run_pid, *_ancestors(run_pid)}
        daemon_pid = daemon.proc.pid
        worker_log = worker.log_path.read_text(errors="replace")

    # executed by the worker (its task, in a process under it), not by the daemon
    assert f"execute_job[{task_id}] received" in worker_log, worker_log
    assert re.search(rf"execute_job\[{task_id}\] succeeded in [0-9.]+s: 0\n", worker_log)
    assert worker.proc.pid in worker_pids
    assert daemon_pid not in worker_pids

    champion = Registry.from_settings(settings).alias(CHAMPION)
    assert champion is not None
    assert champion.tags["ct.dagster_run_id"] == run.run_id

    backends = collect_status(settings)["backends"]
    assert backends["run_launcher"] == "MonitoredCeleryRunLauncher"
    assert backends["instance"]["kind"] == "postgres"
    assert (
        os.environ["CT_DAGSTER_POSTGRES_URL"].rpartition("/")[2]
        in (backends["instance"]["location"])
    )
    assert backends["event_store"] == {
        "kind": "embedded",
        "location": str(settings.eventlog_dir),
    }


@pytest.mark.slow
@pytest.mark.postgres
def test_a_worker_killed_mid_run_fails_the_run_and_leaves_the_champion(
    celery_env: Settings, celery_worker: Any
) -> None:
    settings = celery_env
    ingest(settings, simulated_events(2400, drift_at=0.6))
    worker = celery_worker(dict(os.environ))
    with running_daemon(settings) as daemon:
        deadline = time.monotonic() + WAIT_SECONDS
        with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
            run, run_pid = None, None
            while run_pid is None and time.monotonic() < deadline:
                assert daemon.alive(), daemon.output()
                run = _volume_run(instance)
                if run is not None:
                    assert not run.is_finished, worker.output()
                    # mid-run: STARTED (a run killed while STARTING is failed by the
                    # monitor's start timeout, not by the worker's missed pings)
                    if run.status == dg.DagsterRunStatus.STARTED:
                        run_pid = _run_pid(instance, run.run_id)
                time.sleep(0.5)
            assert run is not None and run_pid is not None, daemon.output() + worker.output()
            assert worker.proc.pid in {run_pid, *_ancestors(run_pid)}
            os.kill(run_pid, signal.SIGKILL)  # the Celery worker process executing the run
            killed_at = time.monotonic()
            while time.monotonic() < deadline:
                assert daemon.alive(), daemon.output()
                run = instance.get_run_by_id(run.run_id)
                assert run is not None
                if run.is_finished:
                    break
                time.sleep(2)
            assert run.status == dg.DagsterRunStatus.FAILURE, daemon.output()
            # run monitoring (10 s polls, 3 missed pings) noticed within about a minute
            assert time.monotonic() - killed_at < 120
            messages = [e.message for e in instance.all_logs(run.run_id)]
            assert any("did not answer" in m for m in messages), messages[-5:]
    assert Registry.from_settings(settings).alias(CHAMPION) is None

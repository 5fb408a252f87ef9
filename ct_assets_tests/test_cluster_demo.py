"""``make cluster-demo`` end to end: ``ct-assets cluster-demo`` in a process of its own on a
fresh CT_HOME with ``CT_DEMO_NO_UI=1``, on the machine's PostgreSQL, RabbitMQ and Redis;
it starts SeaweedFS, the MLflow server, NATS, two APIs, the consumer, two Celery workers,
the webserver and the daemon itself, and must leave none of them running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ct_assets.cluster.processes import Services

# The polite service sets its own SIGTERM handling (default action, not blocked), so it
# does not depend on what an earlier test left in this process's signal state (an
# ignored disposition and a blocked mask both survive exec into a child).
_POLITE = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
    "signal.pthread_sigmask(signal.SIG_SETMASK, [])\n"
    "print('ready', flush=True)\n"
    "time.sleep(300)\n"
)


def _signal_state(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    return "; ".join(line for line in lines if line.startswith(("State", "SigBlk", "SigIgn")))


def test_stop_all_ends_each_process_group_also_what_ignores_sigterm(tmp_path: Path) -> None:
    # a few seconds for the polite one to go after SIGTERM, as a loaded machine may need
    services = Services(tmp_path / "logs", dict(os.environ), term_seconds=5.0)
    polite = services.start("polite", [sys.executable, "-c", _POLITE], cwd=tmp_path / "a")
    # ignores SIGTERM, and leaves a child of its own in its group
    stubborn = services.start(
        "stubborn", ["sh", "-c", "trap '' TERM; sleep 300 & wait"], cwd=tmp_path / "b"
    )
    deadline = time.monotonic() + 60
    while b"ready" not in polite.log_path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert polite.alive() and stubborn.alive()
    before = _signal_state(polite.proc.pid)
    assert services.stop_all() == ["polite", "stubborn (SIGKILL)"], before
    for service in (polite, stubborn):
        assert not service.alive()
        with pytest.raises(ProcessLookupError):
            os.killpg(service.proc.pid, 0)
    assert services.started == []


def _require(reason: str) -> None:
    if os.environ.get("CT_REQUIRE_CELERY") == "1":
        pytest.fail(f"CT_REQUIRE_CELERY=1 but {reason}")
    pytest.skip(reason)


def _servers() -> dict[str, str]:
    """The demo's CT_CLUSTER_* variables for the test servers (CT_TEST_POSTGRES_URL,
    CT_TEST_RABBITMQ_URL, CT_TEST_REDIS_URL as in test_celery_launcher.py); skips (fails
    under CT_REQUIRE_*) without them."""
    import redis
    from kombu.connection import Connection

    server = os.environ.get("CT_TEST_POSTGRES_URL")
    if not server:
        if os.environ.get("CT_REQUIRE_POSTGRES") == "1":
            pytest.fail("CT_REQUIRE_POSTGRES=1 but CT_TEST_POSTGRES_URL is not set")
        pytest.skip("CT_TEST_POSTGRES_URL is not set")
    rabbit = os.environ.get("CT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
    broker = f"{rabbit.rstrip('/')}//"  # the default vhost: the demo's queue is its own
    backend = os.environ.get("CT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(backend, socket_timeout=5).ping()
    except redis.RedisError as exc:
        _require(f"Redis at {backend} does not answer: {exc}")
    try:
        with Connection(broker, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
            conn.connect()
    except OSError as exc:
        _require(f"RabbitMQ at {rabbit} does not answer: {exc}")
    return {
        "CT_CLUSTER_POSTGRES_URL": server,
        "CT_CLUSTER_BROKER_URL": broker,
        "CT_CLUSTER_REDIS_URL": backend,
    }


def _processes_with_home(home: Path) -> list[str]:
    """Processes whose environment names ``home`` as CT_HOME (every one the demo starts)."""
    marker = f"CT_HOME={home}".encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker in (proc / "environ").read_bytes():
                found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(1500)  # about five minutes on two shared cores
def test_cluster_demo_runs_the_loop_on_the_distributed_profile(tmp_path: Path) -> None:
    servers = _servers()
    home = tmp_path / "ct"
    env = {
        **os.environ,
        "CT_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "CT_DEMO_NO_UI": "1",
        "CT_REPORT_PLOTS": "0",
        **servers,
    }
    cli = Path(sys.executable).with_name("ct-assets")
    demo = subprocess.Popen(
        [str(cli), "cluster-demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = demo.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        # SIGTERM: the demo stops what it started before it exits
        demo.send_signal(signal.SIGTERM)
        stdout, stderr = demo.communicate(timeout=300)
        pytest.fail(f"the demo did not finish within 15 minutes:\n{stdout[-4000:]}")
    finally:
        if demo.poll() is None:
            demo.kill()
        left = _processes_with_home(home)
    done = subprocess.CompletedProcess(demo.args, demo.returncode, stdout, stderr)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-3000:]
    assert left == [], left
    assert "first champion: v1" in out and "new champion: v2" in out, out[-3000:]
    # the console has the demo's lines, not Dagster's step events
    assert not re.search(r"STEP_(START|SUCCESS)|DEBUG", out), out[-3000:]

    status = json.loads((home / "cluster-status.json").read_text())
    assert status["champion"]["version"] == "2"
    backends = status["backends"]
    assert backends["instance"]["kind"] == "postgres"
    assert "ct_cluster_dagster_" in backends["instance"]["location"]
    assert backends["run_launcher"] == "MonitoredCeleryRunLauncher"
    assert backends["compute_logs"] == "S3ComputeLogManager s3://ct-cluster/dagster/compute-logs"
    assert backends["event_store"]["kind"] == "nats"
    assert backends["tracking_uri"].startswith("http://127.0.0.1:")
    assert backends["artifact_root"] == f"mlflow-artifacts: via {backends['tracking_uri']}"
    assert str(backends["dataset_root"]).startswith("s3://ct-cluster/")
    assert "ctcluster" not in json.dumps(status) or "***" in json.dumps(status)

    # the volume sensor's retrain executed on one of the two workers: its task id (a run
    # tag the demo prints) was received and succeeded in that worker's log
    volume = re.search(
        r"retrain run (\w{8}) \(volume\) is success: executed by Celery worker "
        r"(ct-\w+-[12]) \(task ([0-9a-f-]+)\)",
        out,
    )
    assert volume, out[-3000:]
    worker, task = volume.group(2), volume.group(3)
    # its stdout and stderr reached the bucket through dagster-aws's S3ComputeLogManager
    compute_logs = status["compute_logs"]
    assert compute_logs["uri"] == "s3://ct-cluster/dagster/compute-logs"
    counts = {r: n for r, n in compute_logs["objects_by_run"].items() if r.startswith(volume[1])}
    assert list(counts.values()) and all(n > 0 for n in counts.values()), compute_logs
    log = (home / "logs" / f"celery-worker-{worker[-1]}.log").read_text(errors="replace")
    assert f"execute_job[{task}] received" in log
    assert re.search(rf"execute_job\[{task}\] succeeded in [0-9.]+s: 0", log), log[-2000:]
    # what it made on the shared servers is gone: the task states, the databases
    import psycopg2
    import redis

    assert not redis.Redis.from_url(servers["CT_CLUSTER_REDIS_URL"]).exists(
        f"celery-task-meta-{task}"
    )
    with psycopg2.connect(servers["CT_CLUSTER_POSTGRES_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'ct_cluster_%'")
        names = [row[0] for row in cur.fetchall()]
    conn.close()
    demo_id = worker.split("-")[1]
    assert [n for n in names if n.endswith(demo_id)] == []
    # the workers kept nothing in their working directories
    for index in (1, 2):
        assert list((home / "cluster" / f"worker-{index}").iterdir()) == []
    assert "still on this host's disk" in out and "eventlog/" in out

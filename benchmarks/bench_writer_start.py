"""What a new writer (an API worker starting) costs against the size of the log.

Fills a log with N feedback events (batches of 1,000), then, in fresh processes,
measures constructing an :class:`EventLogWriter` and its first ``refresh()`` (the
API's start path): wall time and the growth of the process's resident memory.
Usage: python benchmarks/bench_writer_start.py [--events 1000 100000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

_PROBE = r"""
import json, sys, time, resource
from pathlib import Path

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

from ct_assets.eventlog.writer import EventLogWriter
import ct_assets.eventlog.writer, msgspec, sqlite3  # imports are not the start cost
before = rss_kib()
started = time.perf_counter()
writer = EventLogWriter(Path(sys.argv[1]))
writer.refresh()
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rss_kib": rss_kib() - before}))
"""


def fill(root: Path, events: int) -> None:
    from ct_assets.eventlog.writer import EventLogWriter
    from ct_assets.schema import FeedbackEvent

    writer = EventLogWriter(root)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    for start in range(0, events, 1000):
        writer.append(
            [
                FeedbackEvent(
                    event_id=f"00000000-0000-4000-8000-{i:012d}",
                    timestamp=t0 + timedelta(seconds=i),
                    feedback_type="explicit",
                    prediction_id=f"pred-{i}",
                    label=i % 2,
                )
                for i in range(start, min(events, start + 1000))
            ]
        )


def probe(root: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(root)], check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.events:
            root = Path(tmp) / f"log-{n}"
            fill(root, n)
            runs = [probe(root) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            print(
                json.dumps(
                    {"events": n, "seconds": round(best["seconds"], 4), "rss_kib": best["rss_kib"]}
                )
            )


if __name__ == "__main__":
    main()

"""Commit throughput of the event-log writer, this tree against another checkout.

Commits fresh ids (1,000 per commit by default) into a new log, then re-sends
batches that are all duplicates, and prints events/s for each. Run the same
script against two checkouts, alternating, to compare them under the same
conditions: ``--other /path/to/checkout`` runs each measurement in a subprocess
with that checkout first on ``PYTHONPATH`` too.
Usage: python benchmarks/bench_commit_rate.py [--events 200000] [--batch 1000]
       [--rounds 3] [--other DIR] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(root: Path, events: int, batch: int, prefill: int) -> dict[str, float]:
    from ct_assets.eventlog.writer import EventLogWriter, prepare_batch
    from ct_assets.schema import FeedbackEvent

    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def prepared(ids: list[str]):  # type: ignore[no-untyped-def]
        return prepare_batch(
            [
                FeedbackEvent(
                    event_id=event_id,
                    timestamp=t0 + timedelta(seconds=i),
                    feedback_type="explicit",
                    prediction_id=f"pred-{i}",
                    label=i % 2,
                )
                for i, event_id in enumerate(ids)
            ]
        )

    writer = EventLogWriter(root)
    for _ in range(0, prefill, batch):
        writer.commit([prepared([str(uuid.uuid4()) for _ in range(batch)])])
    batches = [prepared([str(uuid.uuid4()) for _ in range(batch)]) for _ in range(events // batch)]
    started = time.perf_counter()
    for prepared_batch in batches:
        writer.commit([prepared_batch])
    fresh = time.perf_counter() - started
    started = time.perf_counter()
    for prepared_batch in batches[-20:]:
        result = writer.commit([prepared_batch])[0]
        assert result.duplicates == len(prepared_batch)
    duplicate = time.perf_counter() - started
    close = getattr(writer, "close", None)
    if close is not None:
        close()
    return {
        "fresh_events_per_s": round(len(batches) * batch / fresh),
        "duplicate_events_per_s": round(min(20, len(batches)) * batch / duplicate),
    }


def run(tree: Path, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(tmp / f"log-{time.monotonic_ns()}"),
            "--events",
            str(args.events),
            "--batch",
            str(args.batch),
            "--prefill",
            str(args.prefill),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--prefill", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other", type=Path, default=None)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--child", type=Path, default=None)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.events, args.batch, args.prefill)))
        return
    trees = {"this": ROOT} | ({"other": args.other.resolve()} if args.other else {})
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.rounds):
            for name, tree in trees.items():
                result = run(tree, args, Path(tmp))
                kept = best.setdefault(name, result)
                for key, value in result.items():
                    kept[key] = max(kept[key], value)
    for name, result in best.items():
        print(json.dumps({"tree": name, **result}))
    if "other" in best:
        print(
            json.dumps(
                {
                    key: round(best["other"][key] / best["this"][key], 2)
                    for key in best["this"]
                    if best["this"][key]
                }
                | {"ratio": "other / this"}
            )
        )


if __name__ == "__main__":
    main()

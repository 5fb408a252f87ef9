"""What ``CT_RETENTION_DAYS`` gives and costs: the disk an event date takes as segments and
as their columnar archive, the time to archive it, and a read of an archived date against
the same read from its segments (both the first read of the date in a fresh process).

Fills a log through the real write path (predictions with 20 features and their feedback,
commits of ``--commit`` events over ``--dates`` dates), copies it, archives every segment of
the copy, then reads each date from both. Usage:
    python benchmarks/bench_retention.py [--events 200000] [--dates 10] [--commit 100]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

_READ = r"""
import json, sys, time
from pathlib import Path
from ct_assets.eventlog.reader import read_events
import polars, pyarrow.parquet  # imports are not the read's cost
root, day = Path(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
rows = sum(read_events(root, kind, dates=[day]).height for kind in ("prediction", "feedback"))
print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))
"""


def fill(root: Path, events: int, dates: int, commit: int) -> list[str]:
    from ct_assets.eventlog import EventLog
    from ct_assets.schema import FeedbackEvent, PredictionEvent

    rng = random.Random(1)
    log = EventLog(root)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch: list[FeedbackEvent | PredictionEvent] = []
    for n in range(events // 2):
        when = start + timedelta(seconds=n * dates * 86_400 // (events // 2))
        features = {f"f{i}": round(rng.gauss(0, 1), 6) for i in range(20)}
        batch.append(
            PredictionEvent(
                event_id=f"pe-{n:09d}",
                prediction_id=f"p-{n:09d}",
                timestamp=when,
                features=features,
                prediction=rng.randrange(2),
                model_version="1",
            )
        )
        batch.append(
            FeedbackEvent(
                event_id=f"fb-{n:09d}",
                timestamp=when + timedelta(seconds=30),
                feedback_type="explicit",
                prediction_id=f"p-{n:09d}",
                label=rng.randrange(2),
            )
        )
        if len(batch) >= commit:
            log.append(batch)
            batch = []
    if batch:
        log.append(batch)
    log.writer.close()
    return sorted(log.counts_by_date())


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def read(root: Path, day: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _READ, str(root), day], capture_output=True, text=True, check=True
    )
    found: dict[str, float] = json.loads(done.stdout)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--dates", type=int, default=10)
    parser.add_argument("--commit", type=int, default=100)
    args = parser.parse_args()

    from ct_assets.eventlog.archive import archive_old_segment, old_segments

    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        plain, archived = Path(tmp) / "plain", Path(tmp) / "archived"
        started = time.perf_counter()
        days = fill(plain, args.events, args.dates, args.commit)
        filled = time.perf_counter() - started
        shutil.copytree(plain, archived)
        started = time.perf_counter()
        segments = old_segments(archived, "9999-12-31")
        for key, _end in segments:
            archive_old_segment(archived, key)
        archiving = time.perf_counter() - started
        seg_bytes, arc_bytes = size(plain / "segments"), size(archived / "archive")
        print(
            f"{args.events:,} events over {len(days)} dates in commits of {args.commit} "
            f"(written in {filled:.1f} s); {len(segments)} segments"
        )
        print(
            f"disk: segments {seg_bytes / 2**20:.1f} MiB, archive {arc_bytes / 2**20:.1f} MiB "
            f"(ratio {arc_bytes / seg_bytes:.3f}); archived in {archiving:.2f} s "
            f"({seg_bytes / 2**20 / archiving:.0f} MiB/s, checked by reading back)"
        )
        ratios = []
        for day in days[1:-1]:
            base, from_archive = read(plain, day), read(archived, day)
            assert base["rows"] == from_archive["rows"], day
            ratios.append(from_archive["seconds"] / base["seconds"])
            print(
                f"  {day}: {int(base['rows']):,} events read in {base['seconds']:.3f} s from "
                f"segments, {from_archive['seconds']:.3f} s from the archive "
                f"(ratio {ratios[-1]:.2f})"
            )
        ratios.sort()
        median = ratios[len(ratios) // 2]
        print(f"read of an archived date / read of its segments: median {median:.2f}")


if __name__ == "__main__":
    main()

"""Compiling a training dataset from logged predictions and validated feedback, against a
single hand-written DuckDB query doing the same join, dedup and write.

Inputs are Parquet tables shaped like the per-date tables the pipeline keeps
(``tables/raw_predictions``, ``tables/validated_feedback``): predictions with a
20-feature struct, feedback with a status, some duplicated deliveries on both sides.
Each side runs in its own child process (so peak memory is its own), one after the
other in this run:

* ``ct_assets``: :func:`ct_assets.data.attribution.attribute_feedback` on the accepted
  feedback, :func:`ct_assets.data.dataset.compile_dataset`, ``write_parquet``.
* ``duckdb``: one SQL statement: dedup both sides, join, order, COPY to Parquet.

Prints seconds and peak RSS of both and their ratio. The issue's target is 10M
predictions and 5M feedback at <= 1.5x DuckDB and < 2.5 GB; ``--predictions`` and
``--feedback`` scale it. Usage: python benchmarks/bench_compile_dataset.py [--predictions N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_FEATURES = 20
CHUNK = 1_000_000


def generate(folder: Path, n_predictions: int, n_feedback: int, seed: int = 7) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    (folder / "predictions").mkdir(parents=True)
    (folder / "feedback").mkdir(parents=True)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    for part, first in enumerate(range(0, n_predictions, CHUNK)):
        n = min(CHUNK, n_predictions - first)
        ids = np.arange(first, first + n)
        features = {f"f{i:02d}": rng.normal(size=n) for i in range(N_FEATURES)}
        frame = pl.DataFrame(
            {
                "event_id": [f"pe-{i}" for i in ids],
                "prediction_id": [f"p-{i}" for i in ids],
                "timestamp": start + ids.astype("timedelta64[s]"),
                "log_offset": ids,
                "model_version": "3",
                "arm": "champion",
                "prediction": (features["f00"] > 0).astype(np.int64).astype(str),
                **features,
            }
        ).select(
            pl.exclude([f"f{i:02d}" for i in range(N_FEATURES)]),
            pl.struct([f"f{i:02d}" for i in range(N_FEATURES)]).alias("features"),
        )
        frame.write_parquet(folder / "predictions" / f"part-{part:04d}.parquet")
    for part, first in enumerate(range(0, n_feedback, CHUNK)):
        n = min(CHUNK, n_feedback - first)
        ids = np.arange(first, first + n)
        # every 50th feedback event is delivered twice (same event_id, later log offset)
        refers = rng.integers(0, n_predictions, size=n)
        frame = pl.DataFrame(
            {
                "event_id": [f"fb-{i}" for i in ids],
                "prediction_id": [f"p-{i}" for i in refers],
                "timestamp": start + (refers + 60).astype("timedelta64[s]"),
                "log_offset": ids,
                "feedback_type": "explicit",
                "label": rng.integers(0, 2, size=n).astype(str),
                "user_id": [f"u-{i % 5000}" for i in ids],
                "source": "bench",
                "status": np.where(rng.random(n) < 0.97, "accepted", "quarantined"),
            }
        )
        twice = frame.filter(pl.col("log_offset") % 50 == 0).with_columns(
            pl.col("log_offset") + n_feedback
        )
        pl.concat([frame, twice]).write_parquet(folder / "feedback" / f"part-{part:04d}.parquet")


OURS = """
import polars as pl, sys
from ct_assets.data.attribution import LabelPolicy, attribute_feedback
from ct_assets.data.dataset import compile_dataset
folder, out = sys.argv[1], sys.argv[2]
feedback = (
    pl.read_parquet(folder + "/feedback/*.parquet")
    .filter(pl.col("status") == "accepted")
    .unique("event_id", keep="first", maintain_order=True)
)
predictions = pl.read_parquet(folder + "/predictions/*.parquet")
examples = attribute_feedback(feedback, predictions, LabelPolicy())
compile_dataset(examples, examples.height, 0.2).write_parquet(out)
"""

DUCKDB = """
import duckdb, sys
folder, out = sys.argv[1], sys.argv[2]
duckdb.sql(f'''
COPY (
  WITH p AS (
    SELECT prediction_id, model_version, arm, features, timestamp AS prediction_time
    FROM read_parquet('{folder}/predictions/*.parquet')
    QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY log_offset) = 1
  ), f AS (
    SELECT event_id, prediction_id, timestamp, log_offset, label
    FROM read_parquet('{folder}/feedback/*.parquet')
    WHERE status = 'accepted'
    QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY log_offset) = 1
  )
  SELECT f.event_id, f.log_offset, f.timestamp, f.label, p.model_version, p.arm,
         p.prediction_time, p.features
  FROM f JOIN p USING (prediction_id)
  ORDER BY f.timestamp, f.log_offset
) TO '{out}' (FORMAT parquet)
''')
"""

MEASURE = """
import json, resource, sys, time
code = sys.argv[1]
sys.argv = sys.argv[1:]
started = time.perf_counter()
exec(compile(code, "<bench>", "exec"), {"__name__": "__main__"})
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb}))
"""


def run(code: str, folder: Path, out: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, code, str(folder), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=10_000_000)
    parser.add_argument("--feedback", type=int, default=None, help="default: half")
    args = parser.parse_args()
    n_feedback = args.feedback or args.predictions // 2
    with tempfile.TemporaryDirectory(prefix="ct-bench-compile-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        generate(folder, args.predictions, n_feedback)
        print(
            f"generated {args.predictions:,} predictions and {n_feedback:,} feedback "
            f"(+2% duplicate deliveries) in {time.perf_counter() - started:.0f} s"
        )
        bare = run(DUCKDB, folder, folder / "duckdb.parquet")
        ours = run(OURS, folder, folder / "ours.parquet")
    print(f"duckdb query : {bare['seconds']:7.1f} s, peak {bare['peak_mb']:,.0f} MB")
    print(f"ct_assets    : {ours['seconds']:7.1f} s, peak {ours['peak_mb']:,.0f} MB")
    ratio = ours["seconds"] / bare["seconds"]
    print(
        f"ratio {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'}); "
        f"memory target < 2,500 MB: {'met' if ours['peak_mb'] < 2500 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

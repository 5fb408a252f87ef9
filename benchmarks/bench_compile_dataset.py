"""Compiling a training dataset from logged predictions and validated feedback, against a
single hand-written DuckDB query doing the same join, dedup and write.

Inputs are per-date Parquet tables shaped like the ones the pipeline keeps
(``tables/raw_predictions``, ``tables/validated_feedback``): predictions with a
20-feature struct, feedback with a status (3% quarantined). Each side runs in its
own child process (so peak memory is its own), one after the other in this run:

* ``ct_assets``: :func:`ct_assets.data.compile.compile_from_tables`, what the
  ``training_dataset`` asset runs: accepted feedback labeled by the label policy,
  cut to the window, joined to the first logged prediction of each, split by time,
  written as a content-addressed Parquet file with its manifest.
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


def generate(
    root: Path, n_predictions: int, n_feedback: int, seed: int = 7, per_day: int = 86_400
) -> None:
    """Per-date tables shaped like the pipeline's (the columns of ``tables/raw_predictions``
    and ``tables/validated_feedback``): one prediction a second, feedback a minute after
    the prediction it refers to, 3% of it quarantined."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    predictions, feedback = root / "raw_predictions", root / "validated_feedback"
    predictions.mkdir(parents=True)
    feedback.mkdir(parents=True)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    days = (n_predictions + per_day - 1) // per_day
    feedback_per_day = n_feedback // days
    names = [f"f{i:02d}" for i in range(N_FEATURES)]
    utc = pl.col("timestamp", "received_at").dt.replace_time_zone("UTC")
    first_feedback = 0
    for d in range(days):
        first = d * per_day
        n = min(per_day, n_predictions - first)
        ids = np.arange(first, first + n)
        ts = start + ids.astype("timedelta64[s]")
        features = {name: rng.normal(size=n) for name in names}
        score = 1 / (1 + np.exp(-features["f00"]))
        day = str(ts[0].astype("datetime64[D]"))
        pl.DataFrame(
            {
                "log_offset": ids * 2,
                "event_id": [f"pe-{i}" for i in ids],
                "kind": "prediction",
                "timestamp": ts,
                "received_at": ts,
                "prediction_id": [f"p-{i}" for i in ids],
                "model_name": "ct",
                "model_version": "3",
                "arm": "champion",
                "prediction": (score > 0.5).astype(np.int64).astype(str),
                **features,
                "s0": 1 - score,
                "s1": score,
            }
        ).with_columns(utc).select(
            pl.exclude([*names, "s0", "s1"]),
            pl.struct(names).alias("features"),
            pl.struct(pl.col("s0").alias("0"), pl.col("s1").alias("1")).alias("scores"),
        ).write_parquet(predictions / f"date={day}.parquet")
        m = feedback_per_day if d < days - 1 else n_feedback - first_feedback
        fids = np.arange(first_feedback, first_feedback + m)
        first_feedback += m
        refers = np.sort(rng.integers(first, first + max(1, n - 60), size=m))
        fts = start + (refers + 60).astype("timedelta64[s]")
        pl.DataFrame(
            {
                "log_offset": fids * 2 + 1,
                "event_id": [f"fb-{i}" for i in fids],
                "kind": "feedback",
                "timestamp": fts,
                "received_at": fts,
                "feedback_type": "explicit",
                "prediction_id": [f"p-{i}" for i in refers],
                "user_id": [f"u-{i % 5000}" for i in fids],
                "source": "bench",
                "signal": pl.Series([None] * m, dtype=pl.String),
                "value": pl.Series([None] * m, dtype=pl.Float64),
                "label": rng.integers(0, 2, size=m).astype(str),
                "status": np.where(rng.random(m) < 0.97, "accepted", "quarantined"),
            }
        ).with_columns(utc).write_parquet(feedback / f"date={day}.parquet")


OURS = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.compile import CompileSpec, compile_from_tables
from ct_assets.data.windows import WindowSpec
folder, out = Path(sys.argv[1]), Path(sys.argv[2])
spec = CompileSpec(WindowSpec(mode="all"), datetime(2100, 1, 1, tzinfo=UTC), 2**62, 0.2)
info = compile_from_tables(
    sorted((folder / "validated_feedback").glob("*.parquet")),
    sorted((folder / "raw_predictions").glob("*.parquet")),
    LabelPolicy(),
    spec,
    out,
)
print(info.rows, file=sys.stderr)
"""

DUCKDB = """
import duckdb, sys
folder, out = sys.argv[1], sys.argv[2]
duckdb.sql(f'''
COPY (
  WITH p AS (
    SELECT prediction_id, model_version, arm, features, timestamp AS prediction_time
    FROM read_parquet('{folder}/raw_predictions/*.parquet')
    QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY log_offset) = 1
  ), f AS (
    SELECT event_id, prediction_id, timestamp, log_offset, label
    FROM read_parquet('{folder}/validated_feedback/*.parquet')
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
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"benchmark child failed:\n{done.stderr}")
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
            f"in {time.perf_counter() - started:.0f} s"
        )
        bare = run(DUCKDB, folder, folder / "duckdb.parquet")
        ours = run(OURS, folder, folder / "datasets")
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

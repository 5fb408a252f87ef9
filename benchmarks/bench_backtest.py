"""Backtest speed, and the sensors' policy against the best fixed-period retrain schedule.

1. Speed: ``ct-assets backtest`` on a 50,000-row simulated stream (sudden concept drift
   half-way) with ``--batch-rows 48``; the issue's target is under 5 minutes here.
2. Quality: on simulated sudden, gradual and recurring concept-drift streams, the
   prequential accuracy of the code location's sensors (volume, drift, performance)
   against fixed-period full retrains every N rows, N from a grid; the target is the
   sensors within 2 points of the best N. Both are reported.

Each backtest runs the real pipeline in this process (assets, gate, MLflow registry on a
temporary CT_HOME). Usage: python benchmarks/bench_backtest.py [--rows N] [--quality-rows N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

GRID = (500, 1000, 2000, 4000)
DRIFTS = ("sudden", "gradual", "recurring")


def simulate(folder: Path, rows: int, drift: str, seed: int) -> Path:
    from ct_assets.simulate import SimulationSpec, simulate_frame, write_csv

    out = folder / f"{drift}-{rows}.csv"
    spec = SimulationSpec(rows=rows, seed=seed, drift=drift, drift_at=0.4, period_rows=rows // 5)  # type: ignore[arg-type]
    write_csv(simulate_frame(spec), out)
    return out


def backtest(data: Path, out: Path, batch_rows: int, every: int | None = None) -> dict:  # type: ignore[type-arg]
    from ct_assets.backtest import BacktestSpec, run_backtest
    from ct_assets.settings import Settings

    spec = BacktestSpec(
        data=data,
        target="label",
        out=out,
        time_col="timestamp",
        batch_rows=batch_rows,
        warmup_rows=2000,
        retrain_every=every,
    )
    return run_backtest(spec, Settings.from_env(), dict(os.environ))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--quality-rows", type=int, default=10_000)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-bench-backtest-") as tmp:
        folder = Path(tmp)
        data = simulate(folder, args.rows, "sudden", seed=5)
        started = time.perf_counter()
        report = backtest(data, folder / "speed", batch_rows=48)
        seconds = time.perf_counter() - started
        print(
            f"speed: {args.rows:,} rows, --batch-rows 48: {seconds:.0f} s "
            f"(target < 300 s: {'met' if seconds < 300 else 'NOT met'}); "
            f"{report['retrains']} retrains ({report['triggers']}), accuracy "
            f"{report['accuracy']:.4f} vs never retrained {report['static_accuracy']:.4f}"
        )
        if args.skip_quality:
            return 0
        print(f"quality on {args.quality_rows:,}-row streams (drift at 40%), batch 100:")
        for drift in DRIFTS:
            stream = simulate(folder, args.quality_rows, drift, seed=7)
            ours = backtest(stream, folder / f"{drift}-sensors", batch_rows=100)
            fixed = {
                every: backtest(stream, folder / f"{drift}-{every}", 100, every)["accuracy"]
                for every in GRID
            }
            best = max(fixed, key=lambda every: fixed[every])
            gap = (fixed[best] - ours["accuracy"]) * 100
            grid = ", ".join(f"every {k}: {v:.4f}" for k, v in fixed.items())
            print(
                f"  {drift:9s} sensors {ours['accuracy']:.4f} ({ours['retrains']} retrains, "
                f"{ours['triggers']}); fixed {grid}; best every {best}; gap {gap:+.1f} points "
                f"(target <= 2: {'met' if gap <= 2 else 'NOT met'}); never retrained "
                f"{ours['static_accuracy']:.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Commands that measure the loop on data: backtest (a replayed stream) and calibrate
(the gate's and canary's error rates on the champion's dataset)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ct_assets.settings import Settings


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from tqdm import tqdm

    from ct_assets.backtest import (
        BacktestError,
        BacktestSpec,
        batches,
        load_stream,
        run_backtest,
        summary_table,
    )

    spec = BacktestSpec(
        data=Path(args.data),
        target=args.target,
        out=Path(args.out),
        time_col=args.time_col,
        batch_rows=args.batch_rows,
        warmup_rows=args.warmup_rows,
        retrain_every=args.retrain_every,
    )
    try:
        total = sum(batch.height for _, batch in batches(load_stream(spec), spec))
        with tqdm(total=total, unit="row", desc="backtest", disable=args.quiet) as bar:
            report = run_backtest(spec, settings, dict(os.environ), progress=bar.update)
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(report))
    print(f"report: {spec.out / 'report.json'}; plot: {spec.out / 'accuracy.png'}")
    return 0


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    import polars as pl

    from ct_assets.calibration import CalibrationError, CalibrationSpec, calibrate
    from ct_assets.monitoring.canary import CanaryConfig
    from ct_assets.registry import CHAMPION, Registry
    from ct_assets.training.evaluation import gate_config
    from ct_assets.training.train import TrainParams

    champion = Registry.from_settings(settings).alias(CHAMPION)
    if champion is None or not champion.dataset_version:
        print("error: no champion to calibrate on: train one first (make demo)", file=sys.stderr)
        return 1
    from ct_assets.data.dataset_objects import dataset_file
    from ct_assets.storage import store_from_settings

    store = store_from_settings(settings)
    path = dataset_file(store, settings.datasets_dir, champion.dataset_version)
    if not path.exists():
        print(f"error: the champion's dataset {path} is missing", file=sys.stderr)
        return 1
    spec = CalibrationSpec(
        runs=args.runs,
        seed=args.seed,
        gate=replace(gate_config(settings), seed=args.seed),
        params=TrainParams(
            num_boost_round=settings.num_boost_round,
            learning_rate=settings.learning_rate,
            num_leaves=settings.num_leaves,
            seed=settings.seed,
            early_stopping_min_rows=settings.early_stopping_min_rows,
            balance_classes=settings.balance_classes,
        ),
        canary=CanaryConfig(
            min_samples=settings.canary_min_samples,
            margin=settings.canary_margin,
            alpha=settings.canary_alpha,
        ),
    )

    def progress(done: int, total: int) -> None:
        filled = 30 * done // total
        end = "\n" if done == total else ""
        print(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} runs",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    try:
        result = calibrate(pl.read_parquet(path), spec, progress)
    except CalibrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["champion_version"] = champion.version
    result["dataset_version"] = champion.dataset_version
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(calibration_text(result, args.runs))
    return 0


def calibration_text(result: dict[str, Any], runs: int) -> str:
    gate, canary = result["gate"], result["canary"]
    worse, forgot = gate["false_promotion"], gate["forgetting_caught"]
    return "\n".join(
        [
            f"gate (tolerance {gate['tolerance']:g}, {gate['confidence']:.0%} intervals, "
            f"{gate['holdout_rows']} holdout rows of v{result['champion_version']}'s dataset):",
            f"  equivalent candidate not promoted: {gate['false_rejection']['rate']:.1%}",
            f"  candidate {worse['auc_drop_measured']:.3f} AUC worse promoted: {worse['rate']:.1%}",
            f"  {forgot['auc_drop_searched']:.3f} AUC forgotten on {forgot['slice']} caught: "
            f"{forgot['rate']:.1%}",
            f"canary (margin {canary['margin']:g}, alpha {canary['alpha']:g}, fraction "
            f"{canary['fraction']:g}, champion accuracy {canary['champion_accuracy']:.3f}):",
            f"  equivalent challenger rolled back: {canary['false_rollback']['rate']:.1%}",
            f"  challenger {canary['margin']:g} worse promoted: "
            f"{canary['false_promotion']['rate']:.1%}",
            f"  median labeled requests to a decision: {canary['median_samples']:.0f}",
            f"each over {runs} runs",
        ]
    )

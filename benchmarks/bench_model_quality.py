"""Every model the pipeline trains against plain LightGBM fitted on the same rows.

A stream is replayed through ``ct-assets backtest`` (the real assets, sensors, gate and
MLflow registry), keeping its CT_HOME. Then, for every registered version:

* the rows it learned from: its dataset's train rows in the candidate window that won
  (every train row, or the newest half), or for an incremental version the rows after
  the offset it continued from;
* ``lightgbm.LGBMClassifier`` with the same parameters, fitted plainly on those rows (for
  an incremental version: continued from the model it started from, with ``init_model``);
* both scored on the ``--eval-rows`` rows of the stream that follow the version's dataset.

Target: every version within 0.5 points of plain LightGBM. The backtest's never-retrained
reference (the first champion) is also replayed as plain LightGBM fitted on the first
champion's train rows and scored on the same rows: the accuracies must be equal.

Streams: our simulator's sudden and gradual drift, and a stationary stream with 10%
label noise. Usage: python benchmarks/bench_model_quality.py [--rows N] [--eval-rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

TARGET_POINTS = 0.5


def noisy_stationary(path: Path, rows: int, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    logit = 1.5 * x[:, 0] - x[:, 1] + x[:, 2] * x[:, 3] + 0.5 * np.sin(3 * x[:, 4])
    y = (logit > 0).astype(int)
    y = np.where(rng.random(rows) < 0.1, 1 - y, y)
    frame = pl.DataFrame({**{f"x{j}": x[:, j] for j in range(8)}, "label": y})
    frame.write_csv(path)
    return path


def simulated(path: Path, rows: int, drift: str, seed: int = 5) -> Path:
    from ct_assets.simulate import SimulationSpec, simulate_frame, write_csv

    spec = SimulationSpec(rows=rows, seed=seed, drift=drift, drift_at=0.4, period_rows=rows // 5)  # type: ignore[arg-type]
    write_csv(simulate_frame(spec), path)
    return path


def stream_row(event_id: str) -> int:
    """The stream row a backtest event id refers to (bt-warm-12, bt-fb-12 -> 12)."""
    return int(event_id.rsplit("-", 1)[1])


def plain_model(
    params: dict[str, Any], x: np.ndarray, y: np.ndarray, categorical: list[int], init: Any
) -> Any:  # type: ignore[type-arg]
    import lightgbm

    model = lightgbm.LGBMClassifier(
        n_estimators=int(params["num_boost_round"]),
        learning_rate=float(params["learning_rate"]),
        num_leaves=int(params["num_leaves"]),
        random_state=int(params["seed"]),
        verbose=-1,
    )
    return model.fit(x, y, categorical_feature=categorical or "auto", init_model=init)


def learned_rows(registry: Any, info: Any, dataset: pl.DataFrame) -> tuple[pl.DataFrame, Any]:
    """The rows a version learned from (its chosen candidate window: the train rows, and
    the holdout too when it was refit with it), and the booster it continued (None for a
    full training)."""
    from ct_assets.registry import (
        TAG_CANDIDATES,
        TAG_INIT_VERSION,
        TAG_NEW_AFTER_OFFSET,
        TAG_VALIDATED_MODEL,
    )
    from ct_assets.training.candidates import recorded_candidates

    learned = (
        dataset
        if info.tags.get(TAG_VALIDATED_MODEL)
        else dataset.filter(pl.col("split") == "train")
    )
    train = learned.with_columns(pl.lit("train").alias("split")).sort(["timestamp", "log_offset"])
    if TAG_INIT_VERSION in info.tags:
        offset = int(info.tags[TAG_NEW_AFTER_OFFSET])
        init = registry.load_model(info.tags[TAG_INIT_VERSION]).booster
        return train.filter(pl.col("log_offset") > offset), init
    recorded = recorded_candidates(info.tags.get(TAG_CANDIDATES, ""))
    chosen = [c for c in recorded if c.get("chosen")]
    if chosen and chosen[0].get("after_offset") is not None:
        train = train.filter(pl.col("log_offset") > int(chosen[0]["after_offset"]))
    return train, None


def judge_versions(home: Path, stream: pl.DataFrame, eval_rows: int) -> list[dict[str, Any]]:
    from ct_assets.registry import TAG_CANDIDATE_WINDOW, TAG_TRAIN_PARAMS, Registry
    from ct_assets.settings import Settings

    settings = Settings.from_env().with_home(home)
    registry = Registry.from_settings(settings)
    versions = sorted(
        (
            str(v.version)
            for v in registry.client.search_model_versions(f"name='{settings.model_name}'")
        ),
        key=int,
    )
    results = []
    for version in versions:
        info = registry.version(version)
        model = registry.load_model(version)
        dataset = pl.read_parquet(settings.datasets_dir / f"{info.dataset_version}.parquet")
        window = info.tags.get(TAG_CANDIDATE_WINDOW, "window")
        train, init = learned_rows(registry, info, dataset)
        last = max(stream_row(e) for e in dataset["event_id"].to_list())
        after = stream.filter(pl.col("row") > last).head(eval_rows)
        if after.height == 0:
            continue
        spec = model.spec
        y_train = spec.label_indices(train["label"])
        params = json.loads(info.tags[TAG_TRAIN_PARAMS])
        plain = plain_model(params, spec.matrix(train), y_train, spec.categorical_indices, init)
        truth = np.asarray(spec.label_indices(after["label"].cast(pl.String)))
        ours = float(np.mean(model.predict_proba(after).argmax(axis=1) == truth))
        theirs = float(np.mean(plain.predict_proba(spec.matrix(after)).argmax(axis=1) == truth))
        results.append(
            {
                "version": version,
                "window": window,
                "mode": info.tags.get("ct.mode", ""),
                "train_rows": train.height,
                "eval_rows": after.height,
                "pipeline": ours,
                "plain": theirs,
                "gap_points": 100 * (theirs - ours),
            }
        )
    return results


def static_check(
    home: Path, stream: pl.DataFrame, report: dict[str, Any], warmup: int
) -> tuple[float, float]:
    """The backtest's never-retrained accuracy, and plain LightGBM's on the same rows."""
    from ct_assets.registry import TAG_TRAIN_PARAMS, Registry
    from ct_assets.settings import Settings

    settings = Settings.from_env().with_home(home)
    registry = Registry.from_settings(settings)
    first = registry.version("1")
    spec = registry.load_model("1").spec
    dataset = pl.read_parquet(settings.datasets_dir / f"{first.dataset_version}.parquet")
    train, _ = learned_rows(registry, first, dataset)
    params = json.loads(first.tags[TAG_TRAIN_PARAMS])
    plain = plain_model(
        params,
        spec.matrix(train),
        spec.label_indices(train["label"]),
        spec.categorical_indices,
        None,
    )
    scored = stream.slice(warmup, report["rows_scored"])
    truth = np.asarray(spec.label_indices(scored["label"].cast(pl.String)))
    accuracy = float(np.mean(plain.predict_proba(spec.matrix(scored)).argmax(axis=1) == truth))
    return float(report["static_accuracy"]), accuracy


def run(name: str, data: Path, folder: Path, eval_rows: int, time_col: str | None) -> bool:
    from ct_assets.backtest import BacktestSpec, load_stream, run_backtest
    from ct_assets.settings import Settings

    spec = BacktestSpec(data=data, target="label", out=folder / f"{name}-out", time_col=time_col)
    home = folder / f"{name}-home"
    report = run_backtest(spec, Settings.from_env(), dict(os.environ), home=home)
    stream = load_stream(spec).frame
    results = judge_versions(home, stream, eval_rows)
    print(
        f"\n{name}: {report['rows_scored']} rows scored, accuracy {report['accuracy']:.4f}, "
        f"{report['retrains']} retrains ({report['promotions']} promoted), "
        f"{report['wall_seconds']:.0f} s"
    )
    print(
        f"{'version':>7} {'window':>11} {'mode':>11} {'train':>6} {'eval':>5} "
        f"{'pipeline':>9} {'plain':>7} {'gap (pt)':>8}"
    )
    for r in results:
        print(
            f"{r['version']:>7} {r['window']:>11} {r['mode']:>11} {r['train_rows']:>6} "
            f"{r['eval_rows']:>5} "
            f"{r['pipeline']:>9.4f} {r['plain']:>7.4f} {r['gap_points']:>8.2f}"
        )
    worst = max((r["gap_points"] for r in results), default=0.0)
    static, plain = static_check(home, stream, report, spec.warmup_rows)
    print(
        f"worst gap {worst:.2f} points (target <= {TARGET_POINTS}); never retrained {static:.4f} "
        f"vs plain LightGBM on the same rows {plain:.4f}"
    )
    return worst <= TARGET_POINTS and abs(static - plain) < 1e-9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--eval-rows", type=int, default=2000)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="ct-bench-quality-") as tmp:
        folder = Path(tmp)
        streams = {
            "stationary-noisy": (noisy_stationary(folder / "noisy.csv", args.rows), None),
            "sudden": (simulated(folder / "sudden.csv", args.rows, "sudden"), "timestamp"),
            "gradual": (simulated(folder / "gradual.csv", args.rows, "gradual"), "timestamp"),
        }
        for name, (data, time_col) in streams.items():
            ok = run(name, data, folder, args.eval_rows, time_col) and ok
    print("\nall within target" if ok else "\nSOME MODEL BELOW TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

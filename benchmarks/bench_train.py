"""The candidate_model materialization against a bare ``lightgbm.train``, side by side.

Both train on the same dataset file (``--rows`` x 20 numeric features, binary label,
the pipeline's dataset layout) with the same LightGBM parameters, the same
time-ordered early-stopping split, the same number of rounds and the same refit of the
kept rounds on every train row; the pipeline trains one candidate window
(``CT_CANDIDATE_WINDOWS=window``), as the bare side does:

* ``bare``: read the Parquet file, build the matrices, ``lightgbm.train``;
* ``ct_assets``: materialize ``candidate_model`` on a real Dagster instance: it reads
  the dataset, trains (with checkpoints), scores the holdout and logs the run, the
  model (signature, input example, requirements), the environment and the dataset
  input to MLflow, and registers the version as ``challenger``.

mlflow and lightgbm are imported before either is timed (a daemon's run worker pays
those imports once per run either way). Then an incremental run (continue boosting a
champion trained on the oldest 70% of the rows, on the 10% after them that the full
dataset's train split adds) is timed against the full one. The MLflow store is created
before timing (a running system has one). Prints
seconds and ratios; the issue's target is ours <= 1.3x bare on 1,000,000 rows.
Usage: python benchmarks/bench_train.py [--rows N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

N_FEATURES = 20


def make_dataset(folder: Path, rows: int, seed: int = 3) -> tuple[str, Path]:
    import numpy as np
    import polars as pl

    from ct_assets.data.compile import describe_file

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    logit = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(scale=0.5, size=rows)
    start = np.datetime64("2026-01-01T00:00:00", "us")
    n_holdout = rows // 5
    frame = pl.DataFrame(
        {
            "event_id": [f"fb-{i}" for i in range(rows)],
            "log_offset": np.arange(rows),
            "timestamp": start + np.arange(rows).astype("timedelta64[s]"),
            "label": (logit > 0).astype(np.int64).astype(str),
            "split": ["train"] * (rows - n_holdout) + ["holdout"] * n_holdout,
            "window_part": "recent",
            "label_source": "explicit",
            "model_version": "1",
            "arm": "champion",
            **{f"f{i:02d}": x[:, i] for i in range(N_FEATURES)},
        }
    ).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))
    version = f"bench{rows}"
    path = folder / f"{version}.parquet"
    frame.write_parquet(path)
    info = describe_file(path, version, rows)
    (folder / f"{version}.json").write_text(info.to_json())
    # the base a champion was trained on: the oldest 70% of the rows (the full dataset's
    # train split is the oldest 80%, so 10% of the rows are new to the champion)
    base_rows = rows * 7 // 10
    base = frame.head(base_rows).with_columns(
        pl.Series(
            "split", ["train"] * (base_rows - base_rows // 5) + ["holdout"] * (base_rows // 5)
        )
    )
    base_path = folder / f"{version}base.parquet"
    base.write_parquet(base_path)
    base_info = describe_file(base_path, f"{version}base", base_rows)
    (folder / f"{version}base.json").write_text(base_info.to_json())
    return version, path


def bare_train(path: Path, num_boost_round: int) -> float:
    import lightgbm
    import numpy as np
    import polars as pl

    from ct_assets.training.train import TrainParams

    started = time.perf_counter()
    frame = pl.read_parquet(path)
    train = frame.filter(pl.col("split") == "train")
    features = [c for c in frame.columns if c.startswith("f") and c[1:].isdigit()]
    params = TrainParams(num_boost_round=num_boost_round)
    n_valid = max(1, int(train.height * params.validation_fraction))
    fit, valid = train.head(train.height - n_valid), train.tail(n_valid)

    def matrix(part: pl.DataFrame) -> np.ndarray:  # type: ignore[type-arg]
        return part.select(features).to_numpy()

    fit_set = lightgbm.Dataset(
        matrix(fit), label=fit["label"].cast(pl.Int64).to_numpy(), feature_name=features
    )
    valid_set = lightgbm.Dataset(
        matrix(valid), label=valid["label"].cast(pl.Int64).to_numpy(), reference=fit_set
    )
    lgb_params = params.lightgbm_params(2)
    stopped = lightgbm.train(
        lgb_params,
        fit_set,
        num_boost_round=params.num_boost_round,
        valid_sets=[valid_set],
        callbacks=[
            lightgbm.early_stopping(
                params.early_stopping_rounds, first_metric_only=True, verbose=False
            )
        ],
    )
    all_set = lightgbm.Dataset(
        matrix(train), label=train["label"].cast(pl.Int64).to_numpy(), feature_name=features
    )
    lightgbm.train(lgb_params, all_set, num_boost_round=stopped.best_iteration)
    return time.perf_counter() - started


def materialize_candidate(home: Path, version: str, mode: str) -> tuple[float, dict[str, object]]:
    import dagster as dg

    from ct_assets import keys
    from ct_assets.defs import build_definitions
    from ct_assets.defs.handoffs import DatasetHandoff, HandoffIOManager
    from ct_assets.settings import Settings

    settings = Settings.from_env().with_home(home)
    defs = build_definitions(settings)
    job = dg.define_asset_job("bench_candidate", selection=[keys.CANDIDATE_MODEL]).resolve(
        asset_graph=defs.resolve_asset_graph()
    )
    instance = dg.DagsterInstance.get()
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            keys.TRAINING_DATASET, metadata={keys.META_DATASET_VERSION: version}
        )
    )
    # candidate_model's input: the dataset to train on, as training_dataset hands it off
    HandoffIOManager(root=str(settings.handoffs_dir)).store(
        keys.TRAINING_DATASET,
        DatasetHandoff(
            version=version,
            path=str(settings.datasets_dir / f"{version}.parquet"),
            log_position=0,
            window_start="",
            rows=0,
        ),
    )
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, resources=defs.resources, tags={keys.RUN_TAG_MODE: mode}
    )
    seconds = time.perf_counter() - started
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    return seconds, meta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-bench-train-") as tmp:
        home = Path(tmp) / "ct"
        os.environ["CT_HOME"] = str(home)
        os.environ["CT_CANDIDATE_WINDOWS"] = "window"
        os.environ["DAGSTER_HOME"] = str(Path(tmp) / "dagster")
        Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True)
        datasets = home / "datasets"
        datasets.mkdir(parents=True)
        version, path = make_dataset(datasets, args.rows)
        import lightgbm  # noqa: F401
        import mlflow  # noqa: F401

        from ct_assets.registry import Registry
        from ct_assets.settings import Settings

        (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").write_text("{}\n")
        Registry.from_settings(Settings.from_env()).experiment_id()  # creates the store
        rounds = Settings.from_env().num_boost_round
        bare = bare_train(path, rounds)
        ours, meta = materialize_candidate(home, version, "full")
        # incremental: a champion trained on the oldest 70%, continued on the next 10%
        _, base_meta = materialize_candidate(home, f"{version}base", "full")
        registry = Registry.from_settings(Settings.from_env())
        registry.promote(str(base_meta["ct/model_version"]), "bench")
        incremental, inc_meta = materialize_candidate(home, version, "incremental")
    print(f"{args.rows:,} rows x {N_FEATURES} features, up to {rounds} rounds (early stopping)")
    print(f"bare lightgbm.train     : {bare:6.2f} s")
    print(f"candidate_model (full)  : {ours:6.2f} s  best iteration {meta['best_iteration']}")
    print(f"candidate_model (incr.) : {incremental:6.2f} s  mode {inc_meta['ct/mode']}")
    ratio = ours / bare
    print(f"ratio {ratio:.2f} (target <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'})")
    print(json.dumps({"bare": bare, "full": ours, "incremental": incremental}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

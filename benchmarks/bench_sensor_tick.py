"""A drift/performance sensor tick against a bare alibi-detect ``TabularDrift.predict``.

A champion is trained (untimed) on a dataset in the pipeline's layout (``--train-rows``
rows x 20 numeric features, binary label). The window is ``--rows`` logged predictions
(features + the champion's scores), shifted on one feature. Timed, in one process:

* ``import alibi_detect.cd`` (cold; a sensor process pays it once);
* the reference build (cold): sample the train split, encode, score the holdout;
  then its save, and the first detector construction;
* ``check_drift`` with the reference cached: sample the window, encode, the detector's
  predict, the score KS test, the decision;
* ``bare``: ``TabularDrift(x_ref).predict(x)`` on the same already-prepared arrays (the
  encoded sample), the detector built beforehand;
* ``check_performance`` on ``--rows`` labeled events (the default last-1000 window and
  all of them).

Prints medians of ``--repeat`` runs and the check_drift / bare ratio; target: a tick
(check_drift + check_performance) under 1 s.
Usage: python benchmarks/bench_sensor_tick.py [--rows N] [--train-rows N] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

N_FEATURES = 20


def frame_of(x: Any, label: Any | None = None, split: list[str] | None = None) -> Any:
    import numpy as np
    import polars as pl

    rows = x.shape[0]
    columns: dict[str, Any] = {}
    if label is not None and split is not None:
        start = np.datetime64("2026-01-01T00:00:00", "us")
        columns = {
            "event_id": [f"fb-{i}" for i in range(rows)],
            "log_offset": np.arange(rows),
            "timestamp": start + np.arange(rows).astype("timedelta64[s]"),
            "label": label.astype(np.int64).astype(str),
            "split": split,
            "window_part": "recent",
            "label_source": "explicit",
            "model_version": "1",
            "arm": "champion",
        }
    columns.update({f"f{i:02d}": x[:, i] for i in range(N_FEATURES)})
    return pl.DataFrame(columns)


def draw(rows: int, seed: int, shift: float = 0.0) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    x[:, 0] += shift
    logit = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(scale=0.5, size=rows)
    return x, (logit > 0).astype(np.int64)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` runs and the last result."""
    seconds, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    import alibi_detect.cd  # noqa: F401

    import_seconds = time.perf_counter() - started

    import numpy as np
    import polars as pl

    from ct_assets.training.train import TrainParams, train_model
    from ct_assets.triggers import drift
    from ct_assets.triggers.drift import DriftConfig, build_reference, check_drift
    from ct_assets.triggers.performance import PerformanceConfig, check_performance

    n_holdout = args.train_rows // 5
    x, y = draw(args.train_rows, seed=1)
    dataset = frame_of(x, y, ["train"] * (args.train_rows - n_holdout) + ["holdout"] * n_holdout)
    model = train_model(dataset, TrainParams(num_boost_round=100, learning_rate=0.1)).model

    x_win, y_win = draw(args.rows, seed=2, shift=0.2)
    window = frame_of(x_win)
    scores = model.predict_proba(window)  # what the prediction events logged
    logged = window.select(pl.struct(window.columns).alias("features"))
    config = DriftConfig()

    build_seconds, reference = timed(lambda: build_reference("1", dataset, model), 1)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        drift.get_or_build(Path(tmp), "1", lambda: reference)
        save_seconds = time.perf_counter() - started
        drift.clear_cache()
        started = time.perf_counter()
        drift.get_or_build(Path(tmp), "1", lambda: reference)
        load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reference.detector(config)
    detector_seconds = time.perf_counter() - started

    ours, decision = timed(lambda: check_drift(reference, window, scores, config), args.repeat)
    ours_struct, _ = timed(lambda: check_drift(reference, logged, scores, config), args.repeat)

    from alibi_detect.cd import TabularDrift

    index = drift.sample_indices(window.height, config.max_window, config.seed)
    prepared = reference.encode(window[index])
    bare_detector = TabularDrift(
        reference.x_ref, p_val=config.p_val, categories_per_feature={}, correction="bonferroni"
    )
    bare, raw = timed(
        lambda: bare_detector.predict(
            prepared, drift_type="batch", return_p_val=True, return_distance=True
        ),
        args.repeat,
    )
    assert np.allclose(raw["data"]["p_val"], list(decision.feature_p_values.values()))

    perf_window, perf = timed(lambda: check_performance(y_win, scores, 0.8), args.repeat)
    every = PerformanceConfig(window=None)
    perf_all, _ = timed(lambda: check_performance(y_win, scores, 0.8, every), args.repeat)

    print(f"window: {args.rows:,} logged predictions x {N_FEATURES} numeric features")
    print(f"reference: {reference.size:,} rows (train split of {args.train_rows:,})")
    print(f"import alibi_detect.cd (cold):   {import_seconds:8.3f} s")
    print(f"reference build (cold):          {build_seconds * 1000:8.1f} ms")
    print(f"reference save:                  {save_seconds * 1000:8.1f} ms")
    print(f"reference load:                  {load_seconds * 1000:8.1f} ms")
    print(f"detector construction (once):    {detector_seconds * 1000:8.1f} ms")
    print(f"check_drift (reference cached):  {ours * 1000:8.1f} ms")
    print(f"  features as a struct column:   {ours_struct * 1000:8.1f} ms")
    print(f"bare TabularDrift.predict:       {bare * 1000:8.1f} ms")
    print(f"ratio check_drift / bare:        {ours / bare:8.2f}x")
    print(f"check_performance (last 1000):   {perf_window * 1000:8.1f} ms")
    print(f"check_performance (all {args.rows:,}): {perf_all * 1000:8.1f} ms")
    tick = ours + perf_window
    print(f"tick (drift + performance):      {tick * 1000:8.1f} ms  (target < 1000 ms)")
    print(f"drift: {decision.reason()}")
    print(f"performance: {perf.reason()}")
    return 0 if tick < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())

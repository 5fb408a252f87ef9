"""A backtest from start to end: its settings (the backtest defaults where the
environment sets nothing) and the replay on a temporary CT_HOME and Dagster instance."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ct_assets.backtest.replay import Replay
from ct_assets.backtest.report import accuracy_png, build_report
from ct_assets.backtest.stream import BacktestSpec, batches, load_stream
from ct_assets.settings import Settings, names_set_in

#: Backtest defaults where the environment sets nothing: retrain on a recent window of
#: 3,000 rows (the replay's time is compressed) once a quarter of it is new, every 750
#: labeled events. On river's drifting streams every 1,000 events left the sensors 0.2
#: points below a fixed retrain every 500 rows on SEA; every 500 retrained more often
#: than that fixed schedule on Agrawal, Sine and Mixed (README, bench_drift_policies).
BACKTEST_DEFAULTS: dict[str, Any] = {
    "volume_threshold": 750,
    "training_window": 3000,
    "window_mode": "all",
    "num_boost_round": 100,
    "gate_bootstrap_resamples": 200,
    "checkpoint_every": 0,
    # the gate's PNGs are for people reading one report; a replay's decisions never use
    # them (its own accuracy.png is drawn regardless)
    "report_plots": False,
}


def backtest_settings(base: Settings, home: Path, environ: dict[str, str]) -> Settings:
    """``base`` on ``home``, with the backtest defaults where the environment sets nothing."""
    set_by_environment = names_set_in(environ)
    overrides = {
        name: value for name, value in BACKTEST_DEFAULTS.items() if name not in set_by_environment
    }
    return replace(base, **overrides).with_home(home)


def run_backtest(
    spec: BacktestSpec,
    base: Settings,
    environ: dict[str, str],
    progress: Callable[[int], None] | None = None,
    home: Path | None = None,
) -> dict[str, Any]:
    """Replay the stream; write ``report.json`` and ``accuracy.png`` to ``spec.out``.
    ``home``: keep the replay's CT_HOME (event log, datasets, registry) there instead of
    in a temporary folder, for inspection."""
    import dagster as dg

    started = time.perf_counter()
    stream = load_stream(spec)
    spec.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ct-backtest-") as tmp:
        settings = backtest_settings(base, home or Path(tmp) / "ct", environ)
        dagster_home = Path(tmp) / "dagster"
        dagster_home.mkdir()
        quiet = {"telemetry": {"enabled": False}}
        # the replay's Dagster instance lives as long as the replay: runs and events in
        # memory (Dagster's in-memory SQLite storages), not fsynced to files thrown away
        with dg.DagsterInstance.ephemeral(tempdir=str(dagster_home), settings=quiet) as instance:
            replay = Replay(settings, stream, instance)
            try:
                replay.warm_up(stream.frame.head(spec.warmup_rows))
                for start, batch in batches(stream, spec):
                    replay.score(batch)
                    replay.last_batch = batch.height
                    if spec.retrain_every is None:
                        replay.tick(at_row=start + batch.height)
                    else:
                        replay.periodic(start + batch.height, spec.retrain_every, spec.warmup_rows)
                    if progress is not None:
                        progress(batch.height)
            finally:
                replay.close()
    outcome = replay.outcome
    report = build_report(outcome, stream, spec, settings, time.perf_counter() - started)
    (spec.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (spec.out / "accuracy.png").write_bytes(accuracy_png(outcome, spec))
    return report

"""``ct-assets backtest``: replay a labeled stream through the real pipeline.

The stream (a CSV with numeric and categorical columns and a target) is replayed in
batches on a temporary ``CT_HOME`` with the code location's own definitions:

1. the first ``warmup_rows`` rows are ingested as labeled feedback carrying their
   features, and the ``retrain`` job trains the first champion (it is also the
   never-retrained model the report compares with);
2. each batch is scored by the champion of that moment and logged as prediction
   events (what the API's ``/v1/predict`` would log); the prequential accuracy counts
   those predictions against the batch's labels;
3. the labels arrive as explicit feedback attributed to those predictions;
4. every retrain sensor of the code location is evaluated in-process, with its own
   cursor, as the daemon would; each run request executes the ``retrain`` job with the
   request's tags (dataset, candidate, gate, champion), so promotions and rejections
   are the gate's.

Times come from ``time_col`` when given (rebased so the last row is a minute ago),
else one row per ``row_interval_seconds`` ending a minute ago: the event log refuses
future timestamps, and the daily partitions need dates. The report (``report.json``)
and ``accuracy.png`` (rolling prequential accuracy, retrains and promotions marked)
are written to ``out``.

``stream.py`` reads the CSV into the stream and its batches, ``replay.py`` drives the
pipeline and counts what it measured, ``report.py`` renders the report and the plot, and
``run.py`` holds the backtest defaults and the run from start to end.
"""

from ct_assets.backtest.replay import Outcome, Replay
from ct_assets.backtest.report import (
    ROLLING_ROWS,
    accuracy_png,
    build_report,
    rolling,
    summary_table,
)
from ct_assets.backtest.run import BACKTEST_DEFAULTS, backtest_settings, run_backtest
from ct_assets.backtest.stream import BacktestError, BacktestSpec, Stream, batches, load_stream

__all__ = [
    "BACKTEST_DEFAULTS",
    "ROLLING_ROWS",
    "BacktestError",
    "BacktestSpec",
    "Outcome",
    "Replay",
    "Stream",
    "accuracy_png",
    "backtest_settings",
    "batches",
    "build_report",
    "load_stream",
    "rolling",
    "run_backtest",
    "summary_table",
]

"""What a backtest reports: ``report.json``'s fields, ``accuracy.png`` (rolling
prequential accuracy, retrains and promotions marked) and the summary table."""

from __future__ import annotations

from typing import Any

import numpy as np

from ct_assets.backtest.replay import Outcome
from ct_assets.backtest.stream import BacktestSpec, Stream
from ct_assets.settings import Settings

ROLLING_ROWS = 500


def build_report(
    outcome: Outcome, stream: Stream, spec: BacktestSpec, settings: Settings, seconds: float
) -> dict[str, Any]:
    scored = max(1, outcome.rows_scored)
    return {
        "rows": stream.rows,
        "rows_scored": outcome.rows_scored,
        "warmup_rows": spec.warmup_rows,
        "batch_rows": spec.batch_rows,
        "accuracy": outcome.correct / scored,
        "static_accuracy": outcome.static_correct / scored,
        "retrains": outcome.retrains,
        "promotions": outcome.promotions,
        "rejections": outcome.rejections,
        "failed_runs": outcome.failures,
        "triggers": dict(outcome.triggers),
        "wall_seconds": seconds,
        "features": stream.features,
        "settings": {
            "volume_threshold": settings.volume_threshold,
            "volume_mode": settings.volume_mode,
            "training_window": settings.training_window,
            "window_mode": settings.window_mode,
        },
        "policy": "sensors" if spec.retrain_every is None else f"every {spec.retrain_every} rows",
        "timeline": outcome.events,
    }


def rolling(hits: list[int], window: int = ROLLING_ROWS) -> np.ndarray:  # type: ignore[type-arg]
    values = np.asarray(hits, dtype=float)
    if values.size == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, values.size + 1), window)
    starts = np.maximum(0, np.arange(1, values.size + 1) - window)
    result: np.ndarray = (sums[1:] - sums[starts]) / counts  # type: ignore[type-arg]
    return result


def accuracy_png(outcome: Outcome, spec: BacktestSpec) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    x = spec.warmup_rows + np.arange(len(outcome.hits))
    figure, axes = plt.subplots(figsize=(9, 4), dpi=90)
    axes.plot(x, rolling(outcome.hits), label="continuous training", color="tab:blue")
    axes.plot(x, rolling(outcome.static_hits), label="never retrained", color="tab:gray")
    labeled: set[bool] = set()
    for event in outcome.events:
        if event["row"] <= 0:
            continue
        promoted = event["decision"] == "promote"
        axes.axvline(
            event["row"],
            color="tab:green" if promoted else "tab:red",
            linestyle="-" if promoted else ":",
            linewidth=0.8,
            label=None
            if promoted in labeled
            else ("retrain, promoted" if promoted else "retrain, not promoted"),
        )
        labeled.add(promoted)
    axes.set_xlabel("row")
    axes.set_ylabel(f"accuracy (rolling {ROLLING_ROWS} rows)")
    axes.set_ylim(0, 1)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def summary_table(report: dict[str, Any]) -> str:
    rows = [
        ("rows scored", f"{report['rows_scored']:,}"),
        ("accuracy (continuous training)", f"{report['accuracy']:.4f}"),
        ("accuracy (never retrained)", f"{report['static_accuracy']:.4f}"),
        ("retrains", str(report["retrains"])),
        ("promotions", str(report["promotions"])),
        ("rejections", str(report["rejections"])),
        ("triggers", ", ".join(f"{k}={v}" for k, v in sorted(report["triggers"].items())) or "-"),
        ("wall time", f"{report['wall_seconds']:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)

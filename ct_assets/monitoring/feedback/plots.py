"""The plot of the daily feedback aggregates."""

from __future__ import annotations

import io

import polars as pl

from ct_assets.monitoring.feedback.segments import ALL

#: Days shown on the aggregates plot.
PLOT_DAYS = 30


def daily_plot_png(table: pl.DataFrame, days: int = PLOT_DAYS) -> bytes | None:
    """Daily events (accepted and not) and rates (acceptance, quarantine, coverage, label
    rate) of the last ``days`` days, as a PNG; None without any day."""
    totals = table.filter(pl.col("dimension") == ALL).sort("day").tail(days)
    if totals.height == 0:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 5.0), dpi=80)
    FigureCanvasAgg(figure)
    counts, rates = figure.subplots(2, 1, sharex=True)
    x = totals["day"].to_list()
    accepted = totals["accepted"].to_numpy()
    others = totals["events"].to_numpy() - accepted
    counts.bar(x, accepted, color="tab:green", label="accepted")
    counts.bar(x, others, bottom=accepted, color="tab:red", label="not accepted")
    counts.set(ylabel="feedback events", title=f"Feedback, last {totals.height} day(s)")
    counts.legend(loc="upper left", fontsize="small")
    for name, color in (
        ("acceptance_rate", "tab:green"),
        ("quarantine_rate", "tab:red"),
        ("coverage", "tab:blue"),
        ("label_rate", "tab:purple"),
    ):
        values = totals[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        rates.plot(x, values, marker="o", markersize=3, color=color, label=name)
    rates.set(ylabel="rate", ylim=(-0.02, 1.02))
    rates.legend(loc="upper left", fontsize="small", ncols=2)
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

"""Rules on repeated and excessive feedback: duplicates, rate abuse, a dominant user."""

from __future__ import annotations

import polars as pl

from ct_assets.data.feedback_rules.thresholds import ValidationRules
from ct_assets.data.feedback_rules.work import DETAIL, ROW, WINDOW, window_of, window_start

_DEDUP_KEY = ["prediction_id", "user_id", "feedback_type", "signal"]


def duplicate_details(work: pl.DataFrame) -> pl.DataFrame:
    """(ROW, DETAIL) of rows repeating the (prediction, user, type, signal) of an earlier
    row (``work`` is in log order); feedback without a prediction_id has nothing to repeat."""
    attributed = work.filter(pl.col("prediction_id").is_not_null())
    repeated = pl.struct(_DEDUP_KEY).is_first_distinct().not_()
    marked = attributed.select(ROW, *_DEDUP_KEY, "event_id", "log_offset", repeated.alias("r"))
    originals = marked.filter(~pl.col("r")).select(*_DEDUP_KEY, "event_id", "log_offset")
    return (
        marked.filter(pl.col("r"))
        .select(ROW, *_DEDUP_KEY)
        .join(originals, on=_DEDUP_KEY, how="inner", nulls_equal=True)
        .select(
            ROW,
            pl.format(
                "same prediction_id, user_id, feedback_type and signal as event {} (log offset {})",
                pl.col("event_id"),
                pl.col("log_offset"),
            ).alias(DETAIL),
        )
    )


def rate_details(work: pl.DataFrame, rules: ValidationRules) -> pl.DataFrame:
    """(ROW, DETAIL) of rows in a window where their user or source sent too much."""
    windowed = work.select(ROW, "user_id", "source", window_of(rules.rate_window).alias(WINDOW))
    parts = [_rate_by(windowed, actor, rules) for actor in ("user_id", "source")]
    return (
        pl.concat(parts).group_by(ROW).agg(pl.col(DETAIL).sort().str.join("; ")).select(ROW, DETAIL)
    )


def _rate_by(windowed: pl.DataFrame, actor: str, rules: ValidationRules) -> pl.DataFrame:
    rows = windowed.filter(pl.col(actor).is_not_null())
    counts = rows.group_by(actor, WINDOW).agg(pl.len().alias("n"))
    population = counts.get_column("n").median()
    population_median = float(population) if isinstance(population, int | float) else 0.0
    # Only actors with a window of at least rate_min_events can be flagged: the history
    # (rolling medians) is computed for them alone.
    suspects = counts.filter(pl.col("n") >= rules.rate_min_events).select(actor).unique()
    counts = counts.join(suspects, on=actor, how="semi").sort(actor, WINDOW)
    history = pl.int_range(pl.len()).over(actor)
    own = (
        pl.col("n")
        .rolling_median(rules.rate_history, min_samples=1)
        .shift(1)
        .over(actor)
        .cast(pl.Float64)
    )
    own_basis = pl.format(
        "its median over {} earlier windows", pl.min_horizontal(history, pl.lit(rules.rate_history))
    )
    trusted = history >= rules.rate_min_history
    usual = pl.when(trusted).then(own).otherwise(pl.lit(population_median))
    basis = pl.when(trusted).then(own_basis).otherwise(pl.lit("the population median"))
    flagged = counts.with_columns(usual.alias("usual"), basis.alias("basis")).filter(
        (pl.col("n") >= rules.rate_min_events) & (pl.col("n") > rules.rate_factor * pl.col("usual"))
    )
    label = actor.removesuffix("_id")
    described = flagged.select(
        actor,
        WINDOW,
        pl.format(
            "{} {} sent {} feedback events in the {} window from {}, more than {}x its usual {}"
            " ({})",
            pl.lit(label),
            pl.col(actor),
            pl.col("n"),
            pl.lit(str(rules.rate_window)),
            window_start(rules.rate_window),
            pl.lit(rules.rate_factor),
            pl.col("usual").round(2),
            pl.col("basis"),
        ).alias(DETAIL),
    )
    return rows.join(described, on=[actor, WINDOW], how="inner").select(ROW, DETAIL)


def dominance_details(labels: pl.DataFrame, rules: ValidationRules) -> pl.DataFrame:
    """(ROW, DETAIL) of the labels of a user who supplied too large a share of a window's."""
    windowed = labels.select(ROW, "user_id", window_of(rules.dominance_window).alias(WINDOW))
    totals = windowed.group_by(WINDOW).agg(pl.len().alias("total"))
    shares = (
        windowed.filter(pl.col("user_id").is_not_null())
        .group_by("user_id", WINDOW)
        .agg(pl.len().alias("n"))
        .join(totals, on=WINDOW)
        .with_columns((pl.col("n") / pl.col("total")).alias("share"))
        .filter(
            (pl.col("total") >= rules.dominance_min_labels)
            & (pl.col("share") > rules.dominance_share)
        )
        .select(
            "user_id",
            WINDOW,
            pl.format(
                "user {} supplied {} of the {} labels of the {} window from {} ({}% > {}%)",
                pl.col("user_id"),
                pl.col("n"),
                pl.col("total"),
                pl.lit(str(rules.dominance_window)),
                window_start(rules.dominance_window),
                (pl.col("share") * 100).round(1),
                pl.lit(round(rules.dominance_share * 100, 1)),
            ).alias(DETAIL),
        )
    )
    return windowed.join(shares, on=["user_id", WINDOW], how="inner").select(ROW, DETAIL)

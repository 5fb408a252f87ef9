"""Figures of the feedback stream itself: daily aggregates, and bias in what gets feedback.

Computed with DuckDB over the per-date tables (see :mod:`.sql`); DuckDB and matplotlib are
imported only when a figure is computed.
"""

from ct_assets.monitoring.feedback.aggregates import (
    AGGREGATE_COLUMN_DOCS,
    AGGREGATE_COUNTS,
    AGGREGATE_SCHEMA,
    LATEST_FIGURES,
    FeedbackAggregates,
    empty_aggregates,
    feedback_aggregates,
    latest_day_totals,
)
from ct_assets.monitoring.feedback.bias import (
    BIAS_WINDOW_DAYS,
    DECILES,
    MIN_PREDICTIONS_PER_DECILE,
    TOP_USERS_FRACTION,
    BiasReport,
    Concentration,
    DecileRow,
    RateRow,
    SelectionBias,
    empty_bias_report,
    feedback_bias,
    recent_days,
)
from ct_assets.monitoring.feedback.judge import (
    CONCENTRATION_CHECK,
    LABEL_SHIFT_CHECK,
    SELECTION_CHECK,
    BiasThresholds,
    BiasVerdict,
    bias_summary_markdown,
    judge_bias,
)
from ct_assets.monitoring.feedback.plots import PLOT_DAYS, daily_plot_png
from ct_assets.monitoring.feedback.policy_sql import policy_flags_sql
from ct_assets.monitoring.feedback.position import MAX_POSITION_ROWS, PositionEffects, PositionRow
from ct_assets.monitoring.feedback.predictions import POSITION_FIELD
from ct_assets.monitoring.feedback.segments import (
    ALL,
    NO_VALUE,
    SEGMENT_PREFIX,
    Segments,
    choose_segments,
)
from ct_assets.monitoring.feedback.shift import (
    MIN_SEGMENT_LABELS,
    LabelShift,
    ShiftRow,
    label_shift,
    reference_label_counts,
)

__all__ = [
    "AGGREGATE_COLUMN_DOCS",
    "AGGREGATE_COUNTS",
    "AGGREGATE_SCHEMA",
    "ALL",
    "BIAS_WINDOW_DAYS",
    "CONCENTRATION_CHECK",
    "DECILES",
    "LABEL_SHIFT_CHECK",
    "LATEST_FIGURES",
    "MAX_POSITION_ROWS",
    "MIN_PREDICTIONS_PER_DECILE",
    "MIN_SEGMENT_LABELS",
    "NO_VALUE",
    "PLOT_DAYS",
    "POSITION_FIELD",
    "SEGMENT_PREFIX",
    "SELECTION_CHECK",
    "TOP_USERS_FRACTION",
    "BiasReport",
    "BiasThresholds",
    "BiasVerdict",
    "Concentration",
    "DecileRow",
    "FeedbackAggregates",
    "LabelShift",
    "PositionEffects",
    "PositionRow",
    "RateRow",
    "Segments",
    "SelectionBias",
    "ShiftRow",
    "bias_summary_markdown",
    "choose_segments",
    "daily_plot_png",
    "empty_aggregates",
    "empty_bias_report",
    "feedback_aggregates",
    "feedback_bias",
    "judge_bias",
    "label_shift",
    "latest_day_totals",
    "policy_flags_sql",
    "recent_days",
    "reference_label_counts",
]

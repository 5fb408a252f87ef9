"""The label policy as SQL: what it makes of a feedback row, computed inside DuckDB."""

from __future__ import annotations

from collections.abc import Iterable

from ct_assets.data.attribution import EXPLICIT, IMPLICIT, LabelPolicy
from ct_assets.data.duckdb_work import quote


def _in_list(column: str, values: Iterable[str]) -> str:
    listed = sorted(values)
    if not listed:
        return "false"
    return f"{column} IN ({', '.join(quote(v) for v in listed)})"


def policy_flags_sql(policy: LabelPolicy) -> dict[str, str]:
    """SQL over the feedback columns (``feedback_type``, ``label``, ``signal``, ``value``)
    saying what the label policy makes of a row, as
    :func:`~ct_assets.data.attribution.labeled_feedback` does: booleans ``explicit_label``,
    ``explicit_positive``, ``implicit``, ``implicit_labeled``, ``implicit_positive`` and
    the implicit signal's finite ``implicit_value``."""
    explicit = f"feedback_type = {quote(EXPLICIT)}"
    implicit = f"feedback_type = {quote(IMPLICIT)}"
    positive = _in_list("signal", policy.positive_signals)
    negative = _in_list("signal", policy.negative_signals)
    finite = "(value IS NOT NULL AND NOT isnan(value))"
    if policy.dwell_signal is not None:
        dwell = f"(signal = {quote(policy.dwell_signal)} AND {finite})"
        threshold = repr(float(policy.dwell_threshold_seconds))
        dwell_positive = f"({dwell} AND value >= {threshold})"
    else:
        dwell = dwell_positive = "false"
    return {
        "explicit_label": f"coalesce({explicit} AND label IS NOT NULL, false)",
        "explicit_positive": f"coalesce({explicit} AND label = {quote(policy.positive_label)}, "
        "false)",
        "implicit": f"coalesce({implicit}, false)",
        "implicit_labeled": f"coalesce({implicit} AND ({positive} OR {negative} OR {dwell}), "
        "false)",
        "implicit_positive": f"coalesce({implicit} AND ({positive} OR {dwell_positive}), false)",
        "implicit_value": f"CASE WHEN {implicit} AND {finite} THEN value END",
    }

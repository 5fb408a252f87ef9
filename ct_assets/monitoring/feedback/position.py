"""Position effects in the feedback: how exposure and implicit labels vary with the
``position`` feature (where a prediction was shown), for the feedback bias report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ct_assets.data.attribution import IMPLICIT_PREFIX
from ct_assets.data.duckdb_work import quote
from ct_assets.monitoring.feedback.predictions import POSITION_FIELD

if TYPE_CHECKING:
    import duckdb

#: Positions listed at the most (numeric positions first, in order).
MAX_POSITION_ROWS = 50


@dataclass(frozen=True)
class PositionRow:
    position: str
    predictions: int
    with_feedback: int
    feedback_rate: float | None
    implicit_labels: int
    implicit_positive_rate: float | None


@dataclass(frozen=True)
class PositionEffects:
    """Exposure and implicit-feedback rates by the ``position`` feature, when there is one."""

    rows: list[PositionRow] = field(default_factory=list)
    reason: str | None = None


def position_effects(con: duckdb.DuckDBPyConnection, positive_label: str) -> PositionEffects:
    """Exposure (share of predictions with feedback) and the positive rate of implicit
    labels per ``position`` value, from the temp tables ``sel`` and ``ex`` of the window."""
    exposure = {
        str(pos): (int(n), int(fed))
        for pos, n, fed in con.execute(
            "SELECT position, count(*), count_if(has_feedback) FROM sel "
            "WHERE position IS NOT NULL GROUP BY position"
        ).fetchall()
    }
    implicit = {
        str(pos): (int(n), int(positive))
        for pos, n, positive in con.execute(
            f"SELECT position, count(*), count_if(label = {quote(positive_label)}) FROM ex "
            f"WHERE position IS NOT NULL AND starts_with(label_source, {quote(IMPLICIT_PREFIX)}) "
            "GROUP BY position"
        ).fetchall()
    }
    positions = sorted(set(exposure) | set(implicit), key=_position_order)[:MAX_POSITION_ROWS]
    if not positions:
        return PositionEffects(
            reason=f"no prediction or example of the window has a {POSITION_FIELD}"
        )
    rows = []
    for pos in positions:
        shown, fed = exposure.get(pos, (0, 0))
        labels, positive = implicit.get(pos, (0, 0))
        rows.append(
            PositionRow(
                position=pos,
                predictions=shown,
                with_feedback=fed,
                feedback_rate=fed / shown if shown else None,
                implicit_labels=labels,
                implicit_positive_rate=positive / labels if labels else None,
            )
        )
    return PositionEffects(rows)


def _position_order(position: str) -> tuple[int, float, str]:
    try:
        return (0, float(position), position)
    except ValueError:
        return (1, 0.0, position)

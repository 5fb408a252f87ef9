"""The performance trigger's decision on a champion's outcomes: a binomial decay test on
the newest ones, or a change point in its error stream; and where a retrain's training
window should start when it fires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ct_assets.triggers.change import ChangeConfig, ChangePoint, detect_change
from ct_assets.triggers.performance import (
    Outcomes,
    PerformanceConfig,
    PerformanceDecision,
    check_performance,
)


@dataclass(frozen=True)
class DecayDecision:
    performance: PerformanceDecision
    change: ChangePoint
    #: Where the retrain's dataset should start (ISO time), or None: the usual window.
    window_start: str | None
    reason: str

    @property
    def fire(self) -> bool:
        return self.performance.fire or self.change.found

    def to_dict(self) -> dict[str, Any]:
        return {**self.performance.to_dict(), "change": self.change.to_dict()}


def decide_decay(
    outcomes: Outcomes,
    baseline: float,
    config: PerformanceConfig,
    change_config: ChangeConfig,
    classes: list[str],
) -> DecayDecision:
    """Test the newest ``config.window`` outcomes against ``baseline`` and look for a
    change point in the error stream. After a change the window starts at the change
    point; below the baseline with no cut, the concept changed before (or as) this
    champion began serving, so the window starts at its first outcome."""
    window = config.window or 1000
    y, proba = outcomes.y[-window:], outcomes.proba[-window:]
    decision = check_performance(y, proba, baseline, config, classes=classes)
    change = detect_change(outcomes.errors, change_config)
    reason = decision.reason()
    start = outcomes.timestamps[-change.rows_since] if change.found else None
    window_start: str | None = None
    if start is not None:
        window_start = start.isoformat()
        reason = f"change point at {window_start}: {change.reason()}; {reason}"
    elif change.found:
        reason = f"{change.reason()}; {reason}"
    elif decision.fire and outcomes.timestamps and outcomes.timestamps[0] is not None:
        first = outcomes.timestamps[0]
        window_start = first.isoformat()
        reason = (
            f"no change point within its {len(outcomes.timestamps)} outcomes: the window "
            f"starts at its first, {window_start}; {reason}"
        )
    return DecayDecision(decision, change, window_start, reason)

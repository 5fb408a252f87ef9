"""The promotion gate: a candidate replaces the champion only when it is not worse.

``decide`` here compares two metric dicts on the primary metric (floor and tolerance).
The full gate -- paired bootstrap, calibration, forgetting and slice checks -- is
``ct_assets.training.evaluation.evaluate_gate`` / ``evaluation.decide``; both return a
``GateDecision`` and word the floor and tolerance checks the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ct_assets.training.metrics import PRIMARY_METRIC

#: Slack for float noise when comparing a metric against a threshold.
EPSILON = 1e-12


@dataclass(frozen=True)
class GateDecision:
    """Promote or not, with one line per criterion; ``failed`` repeats the failing lines."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "promote" if self.promote else "reject"


class Checks:
    """Collects criterion lines: each passed or failed, in order."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.failed: list[str] = []

    def add(self, passed: bool, reason: str) -> bool:
        self.reasons.append(reason)
        if not passed:
            self.failed.append(reason)
        return passed

    def note(self, reason: str) -> None:
        """A line that is neither pass nor fail (e.g. a comparison that was skipped)."""
        self.reasons.append(reason)

    def decision(self) -> GateDecision:
        return GateDecision(not self.failed, list(self.reasons), list(self.failed))


def is_missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def check_floor(
    checks: Checks, value: float, min_metric: float, metric: str = PRIMARY_METRIC
) -> bool:
    passed = value + EPSILON >= min_metric
    sign = ">=" if passed else "<"
    return checks.add(passed, f"candidate {metric} {value:.4f} {sign} floor {min_metric:.4f}")


def check_tolerance(
    checks: Checks, value: float, base: float, tolerance: float, metric: str = PRIMARY_METRIC
) -> bool:
    passed = value + EPSILON >= base - tolerance
    sign = ">=" if passed else "<"
    drop = f" (drop {base - value:.4f} > tolerance)" if not passed else ""
    return checks.add(
        passed,
        f"candidate {metric} {value:.4f} {sign} champion {base:.4f} - tolerance "
        f"{tolerance:.4f}{drop}",
    )


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    tolerance: float,
    min_metric: float,
) -> GateDecision:
    """Compare on the primary metric; a missing or NaN metric rejects; equality passes.

    Passes when ``candidate >= min_metric`` and ``candidate >= champion - tolerance``.
    """
    value = candidate.get(PRIMARY_METRIC)
    if value is None or math.isnan(value):
        reason = f"candidate has no {PRIMARY_METRIC} on the holdout"
        return GateDecision(False, [reason], [reason])
    checks = Checks()
    check_floor(checks, value, min_metric)
    if champion is None:
        checks.note("no champion yet")
        return checks.decision()
    base = champion.get(PRIMARY_METRIC)
    if base is None or math.isnan(base):
        checks.note(f"champion has no {PRIMARY_METRIC} on this holdout; not compared")
        return checks.decision()
    check_tolerance(checks, value, base, tolerance)
    return checks.decision()

"""The promotion gate: a candidate replaces the champion only when it is not worse."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ct_assets.training.metrics import PRIMARY_METRIC


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "promote" if self.promote else "reject"


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    tolerance: float,
    min_metric: float,
) -> GateDecision:
    """Compare on the primary metric; a missing or NaN metric rejects; equality passes.

    Passes when ``candidate >= min_metric`` and ``candidate >= champion - tolerance``.
    """
    reasons: list[str] = []
    value = candidate.get(PRIMARY_METRIC)
    if value is None or math.isnan(value):
        return GateDecision(False, [f"candidate has no {PRIMARY_METRIC} on the holdout"])
    ok = True
    if value < min_metric:
        ok = False
        reasons.append(f"candidate {PRIMARY_METRIC} {value:.4f} < floor {min_metric:.4f}")
    else:
        reasons.append(f"candidate {PRIMARY_METRIC} {value:.4f} >= floor {min_metric:.4f}")
    if champion is None:
        reasons.append("no champion yet")
        return GateDecision(ok, reasons)
    base = champion.get(PRIMARY_METRIC)
    if base is None or math.isnan(base):
        reasons.append(f"champion has no {PRIMARY_METRIC} on this holdout; not compared")
        return GateDecision(ok, reasons)
    passed = value + 1e-12 >= base - tolerance
    ok = ok and passed
    reasons.append(
        f"candidate {PRIMARY_METRIC} {value:.4f} {'>=' if passed else '<'} "
        f"champion {base:.4f} - tolerance {tolerance:.4f}"
    )
    return GateDecision(ok, reasons)

"""The promotion gate's decision: a candidate replaces the champion only on evidence.

``ct_assets.training.evaluation.evaluate_gate`` measures (both models on the holdout, its
slices and older frames, with paired bootstrap intervals); :func:`decide` decides from
that report, one reason line per criterion, passed or failed:

* **Primary metric, non-inferiority.** The candidate passes when the lower bound of the
  paired bootstrap interval of ``candidate - champion`` is above ``-tolerance``: a
  candidate worse by the tolerance or more passes with probability at most
  ``(1 - confidence) / 2`` (5% at the default 90% interval). When the upper bound is
  below ``-tolerance`` it is worse. When the interval holds ``-tolerance`` the holdout
  cannot tell: the decision is *inconclusive* (not promoted; the champion stays) and says
  how many holdout rows would settle a difference of that size.
* **Forgetting and slices.** A drop beyond ``forgetting_tolerance`` (an older frame) or
  ``slice_tolerance`` (a slice of the holdout) fails the candidate only when it is also
  significant: its one-sided bootstrap p-value passes Holm's step-down test across every
  frame and slice compared, at ``(1 - confidence) / 2``. Many small noisy slices no
  longer reject equally good candidates, and the family's false alarm rate is bounded.
* Floor, calibration and the concept-change exemption as before.

:func:`decide_on_metrics` compares two metric dicts (floor and point-estimate tolerance)
where no report exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from ct_assets.training.metrics import PRIMARY_METRIC

if TYPE_CHECKING:
    from ct_assets.training.bootstrap import BootstrapResult
    from ct_assets.training.evaluation import GateConfig, GateReport, HistoryMetrics

#: The history frame of examples kept in the training window on purpose (always checked).
RESERVOIR_FRAME = "reservoir"

#: Slack for float noise when comparing a metric against a threshold.
EPSILON = 1e-12


@dataclass(frozen=True)
class GateDecision:
    """Promote or not, with one line per criterion; ``failed`` repeats the failing lines."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: Not promoted because the holdout could not tell (not because it showed worse).
    inconclusive: bool = False

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

    def decision(self, inconclusive: bool = False) -> GateDecision:
        promote = not self.failed
        return GateDecision(
            promote, list(self.reasons), list(self.failed), inconclusive and not promote
        )


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


def decide_on_metrics(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    tolerance: float,
    min_metric: float,
) -> GateDecision:
    """Compare two metric dicts on the primary metric; a missing or NaN metric rejects;
    equality passes: ``candidate >= min_metric`` and ``candidate >= champion - tolerance``."""
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


def decide(report: GateReport, config: GateConfig | None = None) -> GateDecision:
    """The promotion decision from a gate report (see the module docstring); ``config``
    replaces the report's thresholds."""
    if config is not None:
        report = replace(report, config=config)
    config = report.config
    m = report.primary_metric
    checks = Checks()
    value = report.candidate.get(m)
    if value is None or math.isnan(value):
        checks.add(False, f"candidate has no {m} on the holdout")
        return checks.decision()
    check_floor(checks, value, config.min_metric, m)
    _check_calibration(checks, report)
    if report.champion is None:
        checks.note("no champion yet: floor only")
        return checks.decision()
    inconclusive = _check_primary(checks, report)
    _check_secondary(checks, report)
    return checks.decision(inconclusive)


def one_sided_alpha(confidence: float) -> float:
    """The error rate of one side of a two-sided ``confidence`` interval."""
    return (1.0 - confidence) / 2.0


def _check_primary(checks: Checks, report: GateReport) -> bool:
    """Non-inferiority on the bootstrap interval; True when inconclusive."""
    config, m, b = report.config, report.primary_metric, report.bootstrap
    champion = report.champion or {}
    value, base = report.candidate.get(m, math.nan), champion.get(m, math.nan)
    if b is None or b.n_resamples == 0 or math.isnan(b.low) or math.isnan(b.high):
        why = "no paired bootstrap" if b is None else f"paired bootstrap of {b.metric} undefined"
        checks.note(f"{why}: the point estimate decides")
        if is_missing(base):
            checks.note(f"champion has no {m} on this holdout; not compared")
        else:
            check_tolerance(checks, value, base, config.tolerance, m)
        return False
    bound = -config.tolerance
    interval = (
        f"{b.confidence:.0%} paired bootstrap interval of {m} delta (candidate - champion) "
        f"[{b.low:+.4f}, {b.high:+.4f}], delta {b.delta:+.4f} ({b.n_resamples} resamples)"
    )
    if b.low > bound + EPSILON:
        checks.add(True, f"not worse: {interval} lies above -tolerance {bound:+.4f}")
        return False
    if b.high < bound - EPSILON:
        checks.add(False, f"worse: {interval} lies below -tolerance {bound:+.4f}")
        return False
    rows = int(champion.get("rows", report.candidate.get("rows", 0)) or 0)
    checks.add(
        False,
        f"inconclusive: {interval} holds -tolerance {bound:+.4f}; "
        f"{_rows_to_decide(b, bound, rows)}",
    )
    return True


def _rows_to_decide(b: BootstrapResult, bound: float, rows: int) -> str:
    """About how many holdout rows would put the interval on one side of ``bound``, if the
    difference stayed what it is (the interval narrows as one over the root of the rows)."""
    half_width = (b.high - b.low) / 2
    distance = abs(b.delta - bound)
    if rows <= 0 or half_width <= 0:
        return "more holdout rows would decide it"
    if distance < 1e-3:
        return (
            f"the difference is at the tolerance itself: no holdout of practical size "
            f"decides it (now {rows} rows)"
        )
    needed = math.ceil(rows * (half_width / distance) ** 2)
    return f"about {needed} holdout rows would decide a difference of this size (now {rows})"


@dataclass(frozen=True)
class _Unit:
    """One older frame or slice whose drop exceeds its tolerance: fails if significant."""

    name: str
    text: str
    p_worse: float


def _check_secondary(checks: Checks, report: GateReport) -> None:
    """Forgetting and slices: drops beyond tolerance, failed when Holm-significant."""
    config, m = report.config, report.primary_metric
    changed = _concept_changed(report.bootstrap)
    units: list[_Unit] = []
    compared = 0
    for old in report.forgetting:
        if changed and old.name != RESERVOIR_FRAME and old.rows >= config.min_slice_rows:
            _note_changed_concept(checks, old, m, report.bootstrap)
            continue
        compared += _history_unit(checks, old, m, config, units)
    compared += _slice_units(checks, report, units)
    alpha = one_sided_alpha(config.confidence)
    significant = holm([u.p_worse for u in units], alpha, family=max(compared, len(units)))
    family = max(compared, len(units))
    for unit, reject in zip(units, significant, strict=True):
        test = f"one-sided p {unit.p_worse:.4f} by Holm over {family} compared at {alpha:g}"
        if reject:
            checks.add(False, f"{unit.text}; significant: {test}")
        else:
            checks.add(True, f"within noise: {unit.text}; not significant: {test}")


def holm(p_values: Sequence[float], alpha: float, family: int | None = None) -> list[bool]:
    """Holm's step-down test: which hypotheses are rejected at family-wise level ``alpha``.
    ``family``: the number of hypotheses tested (at least ``len(p_values)``; the others,
    not listed, could not be rejected and count as p = 1)."""
    m = max(family or 0, len(p_values))
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def _history_unit(
    checks: Checks, old: HistoryMetrics, m: str, config: GateConfig, units: list[_Unit]
) -> int:
    cand, champ = old.candidate.get(m), (old.champion or {}).get(m)
    if old.rows < config.min_slice_rows:
        checks.note(f"{old.name}: {old.rows} rows < {config.min_slice_rows}, not compared")
        return 0
    if cand is None or champ is None or is_missing(cand) or is_missing(champ):
        checks.note(f"{old.name}: {m} undefined on {old.rows} rows, not compared")
        return 0
    tolerance = config.forgetting_tolerance
    if cand + EPSILON >= champ - tolerance:
        checks.add(
            True,
            f"remembers {old.name}: candidate {m} {cand:.4f} >= champion {champ:.4f} - "
            f"{tolerance:.4f} on {old.rows} rows",
        )
        return 1
    text = (
        f"forgets {old.name}: candidate {m} {cand:.4f} < champion {champ:.4f} - "
        f"{tolerance:.4f} on {old.rows} rows"
    )
    units.append(_Unit(old.name, text, _p_worse(old.bootstrap)))
    return 1


def _slice_units(checks: Checks, report: GateReport, units: list[_Unit]) -> int:
    config, m = report.config, report.primary_metric
    by_column: dict[str, list[tuple[str, int, float, float, BootstrapResult | None]]] = {}
    skipped: dict[str, list[int]] = {}
    for s in report.slices:
        counts = skipped.setdefault(s.column, [0, 0])
        by_column.setdefault(s.column, [])
        cand, champ = s.candidate.get(m), (s.champion or {}).get(m)
        if s.rows < config.min_slice_rows:
            counts[0] += 1
        elif cand is None or champ is None or is_missing(cand) or is_missing(champ):
            counts[1] += 1
        else:
            by_column[s.column].append((s.value, s.rows, cand, champ, s.bootstrap))
    compared = 0
    for column, group in by_column.items():
        small, undefined = skipped[column]
        tail = f"; {small} with < {config.min_slice_rows} rows" if small else ""
        tail += f"; {undefined} with {m} undefined" if undefined else ""
        if not group:
            checks.note(f"slices of {column}: none compared{tail}")
            continue
        compared += len(group)
        worst = min(group, key=lambda g: g[2] - g[3])
        beyond = [g for g in group if g[2] + EPSILON < g[3] - config.slice_tolerance]
        checks.note(
            f"slices of {column}: {len(group)} compared, {len(beyond)} below champion - "
            f"{config.slice_tolerance:.4f} (lowest delta {worst[2] - worst[3]:+.4f} at "
            f"{worst[0]}){tail}"
        )
        for value, rows, cand, champ, b in beyond:
            text = (
                f"worse on slice {column}={value} ({rows} rows): candidate {m} {cand:.4f} < "
                f"champion {champ:.4f} - {config.slice_tolerance:.4f}"
            )
            units.append(_Unit(f"{column}={value}", text, _p_worse(b)))
    return compared


def _p_worse(b: BootstrapResult | None) -> float:
    """The drop's one-sided p-value; without a bootstrap, 0 (the drop alone decides)."""
    if b is None or b.n_resamples == 0:
        return 0.0
    return b.p_worse


def _concept_changed(b: BootstrapResult | None) -> bool:
    """The candidate is clearly better than the champion on the current holdout: the
    champion's older data describes a concept that no longer holds."""
    return b is not None and b.n_resamples > 0 and not math.isnan(b.low) and b.low > 0


def _note_changed_concept(
    checks: Checks, old: HistoryMetrics, m: str, b: BootstrapResult | None
) -> None:
    cand, champ = old.candidate.get(m), (old.champion or {}).get(m)
    assert b is not None
    checks.note(
        f"{old.name} not held against the candidate: it is clearly better on the current "
        f"holdout (interval [{b.low:+.4f}, {b.high:+.4f}]), so that older data follows a "
        f"concept that changed (candidate {m} {_fmt(cand)}, champion {_fmt(champ)} on "
        f"{old.rows} rows)"
    )


def _check_calibration(checks: Checks, report: GateReport) -> None:
    config = report.config
    ece = report.candidate.get("ece")
    if ece is None or math.isnan(ece):
        checks.note("candidate ece unknown: calibration not checked")
        return
    if ece <= config.max_ece + EPSILON:
        checks.add(True, f"candidate ece {ece:.4f} <= max {config.max_ece:.4f}")
        return
    if report.champion is None:
        # Rejecting the first model would leave nothing to serve: a model that is worse
        # calibrated than the ceiling is still better than no model, and a later candidate
        # is held to it against this one.
        checks.note(
            f"candidate ece {ece:.4f} > max {config.max_ece:.4f}: not held against a first "
            "model (no champion to keep instead)"
        )
        return
    base = report.champion.get("ece")
    if base is None or math.isnan(base):
        checks.add(False, f"poorly calibrated: candidate ece {ece:.4f} > max {config.max_ece:.4f}")
        return
    worse = ece > base + config.ece_margin + EPSILON
    checks.add(
        not worse,
        f"{'poorly calibrated: ' if worse else ''}candidate ece {ece:.4f} > max "
        f"{config.max_ece:.4f} and {'>' if worse else '<='} champion {base:.4f} + "
        f"{config.ece_margin:.4f}",
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"

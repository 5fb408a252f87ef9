"""The bias checks: the bias report judged against thresholds, and its summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ct_assets.monitoring.feedback.bias import BiasReport

SELECTION_CHECK = "selection_bias"
LABEL_SHIFT_CHECK = "label_shift"
CONCENTRATION_CHECK = "concentration"


@dataclass(frozen=True)
class BiasThresholds:
    max_selection_ratio: float = 3.0
    max_label_shift: float = 0.15
    max_top_users_share: float = 0.25
    max_hhi: float = 0.05


@dataclass(frozen=True)
class BiasVerdict:
    """One bias check: passed (or not evaluated, which passes), the figures behind it."""

    check: str
    passed: bool
    evaluated: bool
    description: str
    figures: dict[str, float] = field(default_factory=dict)


def judge_bias(report: BiasReport, thresholds: BiasThresholds) -> list[BiasVerdict]:
    """The three bias checks against ``thresholds``. A figure that could not be computed
    (no data, no champion) is not evaluated, and passes, with the reason."""
    selection = report.selection
    if selection.ratio is None:
        selection_verdict = BiasVerdict(
            SELECTION_CHECK, True, False, f"not evaluated: {selection.reason}"
        )
    else:
        rates = [row.rate for row in selection.by_decile]
        selection_verdict = BiasVerdict(
            SELECTION_CHECK,
            selection.ratio <= thresholds.max_selection_ratio,
            True,
            f"highest feedback rate of a score decile over the lowest: {selection.ratio:.3g} "
            f"(max {thresholds.max_selection_ratio:g})",
            {
                "ratio": selection.ratio,
                "threshold": thresholds.max_selection_ratio,
                "max_decile_rate": max(rates),
                "min_decile_rate": min(rates),
            },
        )
    shift = report.label_shift
    if shift.max_shift is None:
        shift_verdict = BiasVerdict(
            LABEL_SHIFT_CHECK, True, False, f"not evaluated: {shift.reason}"
        )
    else:
        shift_verdict = BiasVerdict(
            LABEL_SHIFT_CHECK,
            shift.max_shift <= thresholds.max_label_shift,
            True,
            f"largest change of a class's label share vs the champion's training data: "
            f"{shift.max_shift:.3f} at {shift.worst} (max {thresholds.max_label_shift:g})",
            {"max_shift": shift.max_shift, "threshold": thresholds.max_label_shift},
        )
    users = report.concentration
    if users.top_share is None or users.hhi is None:
        users_verdict = BiasVerdict(
            CONCENTRATION_CHECK, True, False, f"not evaluated: {users.reason}"
        )
    else:
        users_verdict = BiasVerdict(
            CONCENTRATION_CHECK,
            users.top_share <= thresholds.max_top_users_share and users.hhi <= thresholds.max_hhi,
            True,
            f"top {users.top_users} of {users.users} users give {users.top_share:.1%} of the "
            f"labels (max {thresholds.max_top_users_share:.0%}); HHI {users.hhi:.4f} "
            f"(max {thresholds.max_hhi:g})",
            {
                "top_users_share": users.top_share,
                "hhi": users.hhi,
                "max_top_users_share": thresholds.max_top_users_share,
                "max_hhi": thresholds.max_hhi,
            },
        )
    return [selection_verdict, shift_verdict, users_verdict]


def bias_summary_markdown(report: BiasReport, verdicts: Sequence[BiasVerdict]) -> str:
    """What is flagged, then each figure: deciles, the most shifted segments, positions."""
    window = f"{report.window_start} .. {report.window_end}" if report.window_start else "(no data)"
    flagged = [v for v in verdicts if not v.passed]
    lines = [
        f"**Window** {window}: {report.predictions} predictions, {report.examples} examples.",
        "",
        f"**Flagged**: {', '.join(v.check for v in flagged)}" if flagged else "**Flagged**: none",
        "",
    ]
    for verdict in verdicts:
        state = "FLAGGED" if not verdict.passed else "ok" if verdict.evaluated else "n/a"
        lines.append(f"- `{verdict.check}` **{state}**: {verdict.description}")
    deciles = report.selection.by_decile
    if deciles:
        lines += ["", f"Feedback rate by decile of the {report.selection.score}:", ""]
        lines += [
            "| decile | scores | predictions | with feedback | rate |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.decile} | {r.min_score:.3g}-{r.max_score:.3g} | {r.predictions} | "
            f"{r.with_feedback} | {r.rate:.3f} |"
            for r in deciles
        ]
    shifted = sorted(
        (r for r in report.label_shift.rows if r.shift is not None),
        key=lambda r: r.shift or 0.0,
        reverse=True,
    )[:10]
    if shifted:
        lines += ["", "Label shift (largest first):", ""]
        lines += [
            "| segment | value | reference labels | window labels | reference rate | "
            "window rate | shift | judged |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.segment} | {r.value} | {r.reference_labels} | {r.current_labels} | "
            f"{_rate(r.reference_positive_rate)} | {_rate(r.current_positive_rate)} | "
            f"{r.shift:.3f} | {'yes' if r.judged else 'too few labels'} |"
            for r in shifted
        ]
    lines += ["", f"Position effects: {report.position.reason or ''}".rstrip()]
    if report.position.rows:
        lines += [
            "",
            "| position | predictions | feedback rate | implicit labels | positive rate |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.position} | {r.predictions} | {_rate(r.feedback_rate)} | "
            f"{r.implicit_labels} | {_rate(r.implicit_positive_rate)} |"
            for r in report.position.rows
        ]
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

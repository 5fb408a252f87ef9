"""The checks of ``feedback_bias_report``: their thresholds from settings, their specs
(warnings, or blocking with ``CT_BIAS_BLOCK_TRAINING``), how blocking puts the report first
in the retrain job, and the report's metadata and JSON document."""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from ct_assets import keys
from ct_assets.monitoring.feedback import (
    CONCENTRATION_CHECK,
    LABEL_SHIFT_CHECK,
    SELECTION_CHECK,
    BiasReport,
    BiasThresholds,
    BiasVerdict,
    bias_summary_markdown,
)
from ct_assets.settings import Settings

BIAS_CHECKS = (SELECTION_CHECK, LABEL_SHIFT_CHECK, CONCENTRATION_CHECK)
BIAS_CHECK_DESCRIPTIONS = {
    SELECTION_CHECK: "the highest feedback rate of a score decile over the lowest, at most "
    "CT_BIAS_MAX_SELECTION_RATIO",
    LABEL_SHIFT_CHECK: "largest change of a class's label share in any segment against the "
    "champion's training data, at most CT_BIAS_MAX_LABEL_SHIFT",
    CONCENTRATION_CHECK: "share of labels from the top 1% of users at most "
    "CT_BIAS_MAX_TOP_USERS_SHARE, and the HHI over users at most CT_BIAS_MAX_HHI",
}


def bias_thresholds(settings: Settings) -> BiasThresholds:
    return BiasThresholds(
        max_selection_ratio=settings.bias_max_selection_ratio,
        max_label_shift=settings.bias_max_label_shift,
        max_top_users_share=settings.bias_max_top_users_share,
        max_hhi=settings.bias_max_hhi,
    )


def bias_check_specs(settings: Settings) -> list[dg.AssetCheckSpec]:
    """The bias checks: warnings, or blocking when ``CT_BIAS_BLOCK_TRAINING`` is on."""
    return [
        dg.AssetCheckSpec(
            name,
            asset=keys.FEEDBACK_BIAS_REPORT,
            blocking=settings.bias_block_training,
            description=BIAS_CHECK_DESCRIPTIONS[name],
        )
        for name in BIAS_CHECKS
    ]


def retrain_assets(settings: Settings, assets: Sequence[str]) -> list[str]:
    """The assets of the retrain job (``assets``, e.g. ``jobs.RETRAIN_ASSETS``) for
    ``settings``: unchanged, or with ``CT_BIAS_BLOCK_TRAINING`` on, ``feedback_bias_report``
    first. Its checks are then blocking, and ``training_dataset`` depends on it
    (``defs.dataset.build_training_dataset``), so a flagged bias skips the dataset, the
    candidate and the promotion of that run.
    """
    if not settings.bias_block_training:
        return list(assets)
    return [keys.FEEDBACK_BIAS_REPORT, *(a for a in assets if a != keys.FEEDBACK_BIAS_REPORT)]


def bias_metadata(report: BiasReport, verdicts: list[BiasVerdict], path: Path) -> dict[str, Any]:
    selection, shift, users = report.selection, report.label_shift, report.concentration
    metadata: dict[str, Any] = {
        "predictions": report.predictions,
        "examples": report.examples,
        "window": f"{report.window_start} .. {report.window_end}"
        if report.window_start
        else "(no data)",
        "flagged": sum(1 for v in verdicts if not v.passed),
        "labels": users.labels,
        "labelers": users.users,
        "labels_without_user": users.labels_without_user,
        "segments": ", ".join(report.segments.names) or "(none)",
        "summary": dg.MetadataValue.md(bias_summary_markdown(report, verdicts)),
        "path": dg.MetadataValue.path(str(path)),
    }
    if selection.ratio is not None:
        rates = [row.rate for row in selection.by_decile]
        metadata |= {
            "selection_ratio": selection.ratio,
            "max_decile_rate": max(rates),
            "min_decile_rate": min(rates),
        }
    if shift.max_shift is not None:
        metadata |= {"max_label_shift": shift.max_shift, "most_shifted": shift.worst or ""}
    if users.top_share is not None and users.hhi is not None:
        metadata |= {"top_users_share": users.top_share, "hhi": users.hhi}
    reasons = {
        "selection": selection.reason,
        "label_shift": shift.reason,
        "concentration": users.reason,
        "position": report.position.reason,
    }
    metadata["not_available"] = dg.MetadataValue.json({k: v for k, v in reasons.items() if v})
    return metadata


def finite_json(value: Any) -> Any:
    """Infinite ratios as the string "inf": strict JSON has no Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value

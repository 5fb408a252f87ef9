"""Counts of examples and of the feedback left out, JSON-ready for asset metadata."""

from __future__ import annotations

from typing import Any

import polars as pl

from ct_assets.data.attribution.labels import UNKNOWN_SIGNAL

#: Key under which :func:`attribution_summary` counts rows whose value is null.
NO_VALUE = "(none)"


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if column not in frame.columns or frame.height == 0:
        return {}
    counted = frame.group_by(pl.col(column).cast(pl.String).fill_null(NO_VALUE)).len()
    return {str(k): int(n) for k, n in sorted(counted.iter_rows(), key=lambda r: str(r[0]))}


def attribution_summary(
    examples: pl.DataFrame,
    *,
    unlabeled_rows: pl.DataFrame | None = None,
    unattributed_rows: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Counts of examples by ``label_source``, ``model_version``, ``arm`` and ``label``
    (nulls under ``"(none)"``, keys sorted): JSON-ready for asset metadata.

    Given the outputs of :func:`unlabeled` / :func:`unattributed`, also how many
    feedback rows were left out and why.
    """
    summary: dict[str, Any] = {
        "examples": examples.height,
        "by_label_source": _counts(examples, "label_source"),
        "by_model_version": _counts(examples, "model_version"),
        "by_arm": _counts(examples, "arm"),
        "by_label": _counts(examples, "label"),
    }
    if unlabeled_rows is not None:
        summary["unlabeled"] = unlabeled_rows.height
        summary["unlabeled_by_reason"] = _counts(unlabeled_rows, "unlabeled_reason")
        unknown = (
            unlabeled_rows.filter(pl.col("unlabeled_reason") == UNKNOWN_SIGNAL)
            if "unlabeled_reason" in unlabeled_rows.columns
            else unlabeled_rows.clear()
        )
        summary["unknown_signals"] = _counts(unknown, "signal")
    if unattributed_rows is not None:
        summary["unattributed"] = unattributed_rows.height
    return summary

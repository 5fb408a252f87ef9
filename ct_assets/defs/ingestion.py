"""Ingestion: the event log as seen by Dagster (raw feedback and raw predictions)."""

from typing import Any

import dagster as dg
import polars as pl

from ct_assets import keys
from ct_assets.defs.resources import EventLogResource
from ct_assets.defs.tables import column_schema


def _raw_result(frame: pl.DataFrame, position: int) -> dg.MaterializeResult:  # type: ignore[type-arg]
    metadata: dict[str, Any] = {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame),
        keys.META_LOG_POSITION: position,
    }
    if frame.height:
        metadata["first_event_time"] = str(frame["timestamp"].min())
        metadata["last_event_time"] = str(frame["timestamp"].max())
        metadata["last_event_id"] = str(frame["event_id"][-1])
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(str(position)))


@dg.asset(
    name=keys.RAW_FEEDBACK,
    group_name=keys.INGESTION,
    kinds={"polars"},
    description=(
        "Every feedback event (explicit labels, implicit signals) durable in the event log, "
        "in append order. `ct/log_position` is the number of feedback events seen: "
        "downstream datasets are cut at it."
    ),
)
def raw_feedback(event_log: EventLogResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    frame = event_log.log().read("feedback")
    return _raw_result(frame, frame.height)


@dg.asset(
    name=keys.RAW_PREDICTIONS,
    group_name=keys.INGESTION,
    kinds={"polars"},
    description=(
        "Every logged prediction (features, model version, arm) durable in the event log; "
        "feedback refers to them by `prediction_id`."
    ),
)
def raw_predictions(event_log: EventLogResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    frame = event_log.log().read("prediction")
    return _raw_result(frame, frame.height)

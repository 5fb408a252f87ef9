"""Ingestion: the event log as seen by Dagster, one daily partition per event date (UTC)."""

import hashlib
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from ct_assets.data.dataset import value_counts
from ct_assets.data.tables import TableStore
from ct_assets.defs.tables import column_schema
from ct_assets.eventlog import EventLog
from ct_assets.schema import EventKind


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """One partition per UTC event date, today's included (it fills as events arrive)."""
    return dg.DailyPartitionsDefinition(start_date=start_date, end_offset=1)


def partition_version(fingerprint: str) -> str:
    """The data version of a date whose committed segments have ``fingerprint``
    (:meth:`EventLog.partition_fingerprints`): it changes exactly when events of that
    date are committed."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]


def raw_materialization(
    asset_key: dg.AssetKey,
    log: EventLog,
    kind: EventKind,
    day: str,
    fingerprint: str,
    store: TableStore,
) -> dg.AssetMaterialization:
    """One date of a raw asset: its events as a columnar table, its figures as metadata."""
    frame: pl.DataFrame = log.read(kind, dates=[day])
    path = store.write(asset_key.to_user_string(), day, frame, source=fingerprint)
    metadata: dict[str, Any] = {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame),
        "segments": fingerprint or "(none)",
        "path": dg.MetadataValue.path(str(path)),
    }
    if frame.height:
        metadata["first_event_time"] = str(frame["timestamp"].min())
        metadata["last_event_time"] = str(frame["timestamp"].max())
        offsets = frame["log_offset"].to_list()
        metadata["log_offset_range"] = f"{offsets[0]} .. {offsets[-1]}"
        if kind == "feedback":
            metadata["labeled"] = int(frame["label"].is_not_null().sum())
            metadata["by_feedback_type"] = dg.MetadataValue.json(
                value_counts(frame, "feedback_type")
            )
        else:
            metadata["by_model_version"] = dg.MetadataValue.json(
                value_counts(frame, "model_version")
            )
    return dg.AssetMaterialization(
        asset_key=asset_key,
        partition=day,
        metadata=metadata,
        tags={DATA_VERSION_TAG: partition_version(fingerprint)},
    )


RAW_FEEDBACK_DESCRIPTION = (
    "Feedback events (explicit labels, implicit signals) durable in the event log, one "
    "partition per event date (UTC); each partition reads only its own segment files and "
    "is kept as a columnar table, CT_HOME/tables/raw_feedback/date=<day>.parquet. The "
    "data version changes exactly when events of that date are committed, so late "
    "arrivals show the partition as stale."
)
RAW_PREDICTIONS_DESCRIPTION = (
    "Logged predictions (features, scores, model version, arm) durable in the event log, "
    "one partition per event date (UTC), kept as CT_HOME/tables/raw_predictions/"
    "date=<day>.parquet; feedback refers to them by `prediction_id`."
)

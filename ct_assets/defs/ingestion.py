"""Ingestion: the event log as seen by Dagster, one daily partition per event date (UTC)."""

import hashlib
import warnings
from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from ct_assets import keys
from ct_assets.defs.resources import EventLogResource
from ct_assets.defs.tables import column_schema
from ct_assets.eventlog import EventLog
from ct_assets.schema import EventKind


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """One partition per UTC event date, today's included (it fills as events arrive)."""
    return dg.DailyPartitionsDefinition(start_date=start_date, end_offset=1)


def partition_version(log: EventLog, day: str) -> str:
    """Changes exactly when events of ``day`` are committed: the partition's data version."""
    return hashlib.sha256(log.partition_fingerprint(day).encode()).hexdigest()[:16]


def _raw_materializations(
    context: dg.AssetExecutionContext, log: EventLog, kind: EventKind
) -> Iterator[dg.AssetMaterialization]:
    """One materialization per event date of the run (a single date, or a range in one run)."""
    for day in context.partition_keys:
        yield _raw_materialization(context.asset_key, log, kind, day)


def _raw_materialization(
    asset_key: dg.AssetKey, log: EventLog, kind: EventKind, day: str
) -> dg.AssetMaterialization:
    frame: pl.DataFrame = log.read(kind, dates=[day])
    version = partition_version(log, day)
    metadata: dict[str, Any] = {
        "dagster/row_count": frame.height,
        "dagster/column_schema": column_schema(frame),
        "segments": log.partition_fingerprint(day) or "(none)",
    }
    if frame.height:
        metadata["first_event_time"] = str(frame["timestamp"].min())
        metadata["last_event_time"] = str(frame["timestamp"].max())
        offsets = frame["log_offset"].to_list()
        metadata["log_offset_range"] = f"{offsets[0]} .. {offsets[-1]}"
        if kind == "feedback":
            metadata["labeled"] = int(frame["label"].is_not_null().sum())
            metadata["by_feedback_type"] = dg.MetadataValue.json(
                {
                    r["feedback_type"]: r["len"]
                    for r in frame.group_by("feedback_type").len().to_dicts()
                }
            )
        else:
            metadata["by_model_version"] = dg.MetadataValue.json(
                {
                    str(r["model_version"]): r["len"]
                    for r in frame.group_by("model_version").len().to_dicts()
                }
            )
    return dg.AssetMaterialization(
        asset_key=asset_key,
        partition=day,
        metadata=metadata,
        tags={DATA_VERSION_TAG: version},
    )


def build_raw_assets(start_date: str) -> list[dg.AssetsDefinition]:
    with warnings.catch_warnings():  # backfill_policy is beta in Dagster 1.13; we rely on it
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _build_raw_assets(daily_partitions(start_date))


def _build_raw_assets(partitions: dg.DailyPartitionsDefinition) -> list[dg.AssetsDefinition]:

    @dg.asset(
        name=keys.RAW_FEEDBACK,
        group_name=keys.INGESTION,
        kinds={"polars"},
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
        description=(
            "Feedback events (explicit labels, implicit signals) durable in the event log, "
            "one partition per event date (UTC); each partition reads only its own segment "
            "files. The data version changes exactly when events of that date are committed, "
            "so late arrivals show the partition as stale. A range of dates is materialized "
            "in one run."
        ),
    )
    def raw_feedback(
        context: dg.AssetExecutionContext, event_log: EventLogResource
    ) -> Iterator[dg.AssetMaterialization]:
        yield from _raw_materializations(context, event_log.log(), "feedback")

    @dg.asset(
        name=keys.RAW_PREDICTIONS,
        group_name=keys.INGESTION,
        kinds={"polars"},
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        output_required=False,
        description=(
            "Logged predictions (features, model version, arm) durable in the event log, "
            "one partition per event date (UTC); feedback refers to them by `prediction_id`."
        ),
    )
    def raw_predictions(
        context: dg.AssetExecutionContext, event_log: EventLogResource
    ) -> Iterator[dg.AssetMaterialization]:
        yield from _raw_materializations(context, event_log.log(), "prediction")

    return [raw_feedback, raw_predictions]

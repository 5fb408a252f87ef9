"""Curation: labeled feedback compiled into an immutable, content-addressed training dataset."""

import dagster as dg

from ct_assets import keys
from ct_assets.data.dataset import (
    EmptyDatasetError,
    compile_dataset,
    labeled_examples,
    preview_markdown,
    write_dataset,
)
from ct_assets.defs.resources import DatasetStoreResource, EventLogResource, TrainingConfigResource
from ct_assets.defs.tables import column_schema

DATASET_CODE_VERSION = "dataset-v1"


@dg.asset(
    name=keys.TRAINING_DATASET,
    group_name=keys.CURATION,
    deps=[keys.RAW_FEEDBACK, keys.RAW_PREDICTIONS],
    kinds={"polars", "parquet"},
    code_version=DATASET_CODE_VERSION,
    description=(
        "The most recent labeled examples up to the log position at materialization (explicit "
        "feedback with its own features or the features of the prediction it refers to), "
        "split train/holdout by time. Written once as `<version>.parquet`; the version is "
        "a hash of the content and also the asset's data version."
    ),
)
def training_dataset(
    context: dg.AssetExecutionContext,
    event_log: EventLogResource,
    dataset_store: DatasetStoreResource,
    training_config: TrainingConfigResource,
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    log = event_log.log()
    position = log.counts().feedback  # the cut: every feedback event committed by now
    feedback = log.read("feedback", limit=position)
    predictions = log.read("prediction")
    examples = labeled_examples(feedback, predictions)
    try:
        frame = compile_dataset(
            examples, training_config.training_window, training_config.holdout_fraction
        )
    except EmptyDatasetError as exc:
        raise dg.Failure(str(exc)) from exc
    info = write_dataset(frame, dataset_store.datasets, position)
    label_counts = frame.group_by("label").len().sort("label")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "dagster/column_schema": column_schema(frame),
            keys.META_DATASET_VERSION: info.version,
            keys.META_DATASET_PATH: dg.MetadataValue.path(info.path),
            keys.META_LOG_POSITION: position,
            "train_rows": info.train_rows,
            "holdout_rows": info.holdout_rows,
            "event_id_range": f"{info.first_event_id} .. {info.last_event_id}",
            "log_offset_range": f"{info.first_log_offset} .. {info.last_log_offset}",
            "time_range": f"{info.start_time} .. {info.end_time}",
            "features": ", ".join(info.feature_names),
            "label_counts": dg.MetadataValue.md(
                "\n".join(
                    f"- `{row['label']}`: {row['len']}"
                    for row in label_counts.iter_rows(named=True)
                )
            ),
            "preview": dg.MetadataValue.md(preview_markdown(frame.drop("timestamp"))),
        },
        data_version=dg.DataVersion(info.version),
    )

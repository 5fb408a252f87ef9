"""The training dataset: a window of attributed examples compiled into an immutable,
content-hashed version, with its blocking checks; and the reference schema inferred from it,
which the next curation validates feedback against."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from ct_assets import keys
from ct_assets.data.dataset import EmptyDatasetError, preview_markdown
from ct_assets.defs.dataset_store import DatasetStoreResource
from ct_assets.defs.handoffs import HANDOFF_IO_MANAGER, DatasetHandoff, handoff_output
from ct_assets.defs.metadata import latest_metadata
from ct_assets.defs.resources import (
    CurationResource,
    EventLogResource,
    TrainingConfigResource,
)
from ct_assets.defs.tables import column_schema
from ct_assets.pipeline.dataset_build import DatasetBuild, DatasetBuildError, build_dataset
from ct_assets.settings import Settings

DATASET_CODE_VERSION = "dataset-v3"
EXAMPLES = keys.ATTRIBUTED_EXAMPLES


def _json(value: Any) -> dg.MetadataValue:  # type: ignore[type-arg]
    return dg.MetadataValue.json(value)


REFERENCE_SCHEMA_SPEC = dg.AssetSpec(
    keys.REFERENCE_SCHEMA,
    group_name=keys.CURATION,
    kinds={"json"},
    description=(
        "What valid feedback looks like: per feature its kind, range or categories and "
        "missing share, and the labels seen, inferred from the train split of each "
        "training dataset and recorded by training_dataset's step (`<version>.reference.json` "
        "beside the dataset, and CT_HOME/reference/latest.json, corrected by "
        "reference/overrides.json where present). Curation validates each date against the "
        "latest. The graph draws no edge from training_dataset, which is built from that "
        "curation (it would close a cycle): each materialization names its dataset version."
    ),
)


def build_training_dataset(settings: Settings) -> dg.AssetsDefinition:
    """``training_dataset``; with ``CT_BIAS_BLOCK_TRAINING`` on it also depends on
    ``feedback_bias_report``, so that the report's blocking checks stop it in a run."""
    deps = [EXAMPLES, keys.FEEDBACK_BIAS_REPORT] if settings.bias_block_training else [EXAMPLES]
    return dg.asset(
        name=keys.TRAINING_DATASET,
        group_name=keys.CURATION,
        deps=deps,
        kinds={"polars", "parquet"},
        code_version=DATASET_CODE_VERSION,
        io_manager_key=HANDOFF_IO_MANAGER,  # candidate_model's input: a DatasetHandoff
        pool=keys.TABLES_POOL,  # refreshes stale per-date tables (see keys.TABLES_POOL)
        check_specs=[
            dg.AssetCheckSpec("not_empty", asset=keys.TRAINING_DATASET, blocking=True),
            dg.AssetCheckSpec("class_balance", asset=keys.TRAINING_DATASET, blocking=True),
            dg.AssetCheckSpec("quarantine_rate", asset=keys.TRAINING_DATASET, blocking=True),
            dg.AssetCheckSpec("null_rates", asset=keys.TRAINING_DATASET, blocking=False),
            dg.AssetCheckSpec("schema_vs_reference", asset=keys.TRAINING_DATASET, blocking=False),
        ],
        description=(
            "Attributed examples of a window of event dates (sliding, all, or sliding plus a "
            "reservoir of older examples: CT_WINDOW_MODE) up to the log position at "
            "materialization, split train/holdout by time. Written once as "
            "`<version>.parquet`; the version is a hash of the content and also the asset's "
            "data version. Blocking checks: not empty, both classes present, quarantine rate "
            "of the window under CT_MAX_QUARANTINE_RATE"
            + (
                "; and the blocking bias checks of feedback_bias_report (CT_BIAS_BLOCK_TRAINING)."
                if settings.bias_block_training
                else "."
            )
        ),
    )(training_dataset)


def training_dataset(
    context: dg.AssetExecutionContext,
    event_log: EventLogResource,
    dataset_store: DatasetStoreResource,
    training_config: TrainingConfigResource,
    curation: CurationResource,
) -> Iterator[dg.Output[DatasetHandoff] | dg.AssetMaterialization | dg.AssetCheckResult]:
    try:
        build = build_dataset(
            event_log.log(),
            store=curation.store(),
            rules=curation.rules(),
            policy=curation.policy(),
            reference_folder=curation.rules_folder(),
            window=curation.window,
            datasets_dir=dataset_store.datasets,
            objects=dataset_store.objects(),
            holdout_fraction=training_config.holdout_fraction,
            memory_mb=curation.compile_memory_mb,
            run_tags=dict(context.run.tags),
            champion=latest_metadata(context.instance, keys.CHAMPION_MODEL) or {},
            note=context.log.info,
        )
    except EmptyDatasetError as exc:
        yield dg.AssetCheckResult(check_name="not_empty", passed=False, description=str(exc))
        raise dg.Failure(str(exc)) from exc
    except DatasetBuildError as exc:
        raise dg.Failure(str(exc)) from exc
    yield handoff_output(dataset_handoff(build), dataset_metadata(build), build.info.version)
    yield dg.AssetMaterialization(keys.REFERENCE_SCHEMA, metadata=reference_metadata(build))
    yield from dataset_checks(build, curation.max_quarantine_rate)


def dataset_handoff(build: DatasetBuild) -> DatasetHandoff:
    """What ``candidate_model`` trains on: this dataset version and its window."""
    return DatasetHandoff(
        version=build.info.version,
        path=str(build.info.path),
        log_position=int(build.position),
        window_start=build.since.isoformat() if build.since is not None else "",
        rows=int(build.info.rows),
    )


def dataset_metadata(build: DatasetBuild) -> dict[str, Any]:
    """``training_dataset``'s metadata: the dataset, its window and sources, its figures."""
    info, dates = build.info, build.dates
    return {
        "dagster/row_count": info.rows,
        "dagster/column_schema": column_schema(build.head),
        keys.META_DATASET_VERSION: info.version,
        keys.META_DATASET_PATH: dg.MetadataValue.path(info.path),
        keys.META_LOG_POSITION: build.position,
        "train_rows": info.train_rows,
        "holdout_rows": info.holdout_rows,
        "window": build.window.describe(),
        keys.META_WINDOW_START: build.since.isoformat() if build.since is not None else "",
        "by_window_part": _json(build.by_window_part),
        "source_partitions": ", ".join([*dates[:3], "…", *dates[-3:]])
        if len(dates) > 6
        else ", ".join(dates),
        "source_partition_count": len(dates),
        "refreshed_partitions": ", ".join(build.refreshed) if build.refreshed else "(none)",
        "event_id_range": f"{info.first_event_id} .. {info.last_event_id}",
        "log_offset_range": f"{info.first_log_offset} .. {info.last_log_offset}",
        "time_range": f"{info.start_time} .. {info.end_time}",
        "features": ", ".join(info.feature_names),
        "feedback_status": _json(build.statuses),
        "quarantine_rate": build.quarantine_rate,
        "reference_version": build.reference_version,
        "label_counts": dg.MetadataValue.md(
            "\n".join(f"- `{label}`: {count}" for label, count in build.label_counts)
        ),
        "preview": dg.MetadataValue.md(preview_markdown(build.head.drop("timestamp"))),
    }


def reference_metadata(build: DatasetBuild) -> dict[str, Any]:
    """``reference_schema``'s metadata: its version, files and size, and its dataset."""
    reference = build.reference
    return {
        "reference_version": reference.version,
        keys.META_DATASET_VERSION: build.info.version,
        "path": dg.MetadataValue.path(str(build.reference_path)),
        "dataset_copy": dg.MetadataValue.path(str(build.reference_copy)),
        "features": len(reference.features),
        "checked_features": len(reference.checked_features()),
        "labels": len(reference.labels) if reference.labels is not None else 0,
    }


def dataset_checks(
    build: DatasetBuild, max_quarantine_rate: float
) -> Iterator[dg.AssetCheckResult]:
    """``training_dataset``'s checks: the blocking ones stop training."""
    rows = build.info.rows
    yield dg.AssetCheckResult(check_name="not_empty", passed=rows > 0, metadata={"rows": rows})
    yield dg.AssetCheckResult(
        check_name="class_balance",
        passed=build.has_two_classes,
        metadata={
            "classes": build.classes,
            "train_classes": build.train_classes,
            "minority_share": build.minority_share,
        },
        description="training needs at least two classes in the train split",
    )
    yield dg.AssetCheckResult(
        check_name="quarantine_rate",
        passed=build.quarantine_rate <= max_quarantine_rate,
        metadata={"rate": build.quarantine_rate, "threshold": max_quarantine_rate},
        description="a flood of quarantined feedback means the stream is under attack or broken",
    )
    yield dg.AssetCheckResult(
        check_name="null_rates",
        passed=build.nulls_within_limit,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"null_rates": _json(build.null_rates)},
    )
    yield dg.AssetCheckResult(
        check_name="schema_vs_reference",
        passed=not build.schema_changes,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"changes": _json(build.schema_changes)},
        description="features added or removed since the reference schema",
    )

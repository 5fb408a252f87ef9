"""Curation: validated feedback, its quarantine, attributed examples, the training dataset
and the labeling queue."""

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import msgspec
import polars as pl

from ct_assets import keys
from ct_assets.curation import (
    Curated,
    CurationInputs,
    curate,
    day_end,
    load_reference,
    log_as_of,
)
from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.dataset import (
    EmptyDatasetError,
    compile_dataset,
    preview_markdown,
    value_counts,
    write_dataset,
)
from ct_assets.data.reference import infer_reference
from ct_assets.data.tables import TableStore, write_bytes_atomically
from ct_assets.data.uncertainty import labeling_queue as rank_queue
from ct_assets.data.validation import validation_summary
from ct_assets.data.windows import partitions_for, select_window
from ct_assets.defs.ingestion import (
    RAW_FEEDBACK_DESCRIPTION,
    RAW_PREDICTIONS_DESCRIPTION,
    daily_partitions,
    raw_materialization,
)
from ct_assets.defs.resources import (
    CurationResource,
    DatasetStoreResource,
    EventLogResource,
    TrainingConfigResource,
)
from ct_assets.defs.tables import column_schema

DATASET_CODE_VERSION = "dataset-v2"
VALIDATED = keys.VALIDATED_FEEDBACK
QUARANTINE = keys.FEEDBACK_QUARANTINE
EXAMPLES = keys.ATTRIBUTED_EXAMPLES


def _json(value: Any) -> dg.MetadataValue:  # type: ignore[type-arg]
    return dg.MetadataValue.json(value)


VALIDATED_DESCRIPTION = (
    "The feedback validation service, per event date: every raw feedback event ends in "
    "exactly one of accepted, quarantined (with a reason code), pending (its prediction "
    "has not arrived yet) or expired (it never did). Rules: duplicates, timestamps out of "
    "bounds, ranges and categories against the reference schema inferred from the latest "
    "training dataset, and abuse (rate floods, one user dominating a window, label "
    "flipping). Table: CT_HOME/tables/validated_feedback/date=<day>.parquet."
)
QUARANTINE_DESCRIPTION = (
    "The quarantined feedback of each event date with its reason code and the numbers "
    "behind it (reason_detail); counts per reason in the metadata."
)
EXAMPLES_DESCRIPTION = (
    "Feedback attribution, per event date: accepted feedback joined to the logged "
    "prediction it refers to (features, the model version that served it, the serving "
    "arm), plus labeled feedback carrying its own features. Implicit signals become labels "
    "through the label policy (metadata). Each example knows which model version saw it."
)


def curation_materializations(
    day: str, curated: Curated, store: TableStore, policy: LabelPolicy
) -> list[dg.AssetMaterialization]:
    """validated_feedback, feedback_quarantine and attributed_examples of one date: their
    tables written, their figures as metadata."""
    validated = curated.validated
    rows = validated.height
    statuses = curated.status_counts()
    reasons = curated.reason_counts()
    quarantined = validated.filter(pl.col("status") == "quarantined")
    examples = curated.examples
    validated_path = store.write(VALIDATED, day, validated)
    quarantine_path = store.write(QUARANTINE, day, quarantined)
    examples_path = store.write(EXAMPLES, day, examples)
    columns = ("event_id", "user_id", "source", "reason", "reason_detail")
    preview = quarantined.select([c for c in columns if c in quarantined.columns])
    return [
        dg.AssetMaterialization(
            asset_key=VALIDATED,
            partition=day,
            metadata={
                "dagster/row_count": rows,
                **{f"status/{k}": v for k, v in statuses.items()},
                **{f"reason/{k}": v for k, v in reasons.items()},
                "quarantine_rate": statuses.get("quarantined", 0) / rows if rows else 0.0,
                "summary": _json(validation_summary(validated)),
                "as_of": curated.as_of.isoformat(),
                "path": dg.MetadataValue.path(str(validated_path)),
            },
        ),
        dg.AssetMaterialization(
            asset_key=QUARANTINE,
            partition=day,
            metadata={
                "dagster/row_count": quarantined.height,
                **{f"reason/{k}": v for k, v in reasons.items()},
                "preview": dg.MetadataValue.md(
                    preview_markdown(preview, 10) if preview.height else "(none)"
                ),
                "path": dg.MetadataValue.path(str(quarantine_path)),
            },
        ),
        dg.AssetMaterialization(
            asset_key=EXAMPLES,
            partition=day,
            metadata={
                "dagster/row_count": examples.height,
                "by_label_source": _json(value_counts(examples, "label_source")),
                "by_model_version": _json(value_counts(examples, "model_version")),
                "by_arm": _json(value_counts(examples, "arm")),
                "label_policy": dg.MetadataValue.md(policy.describe()),
                "path": dg.MetadataValue.path(str(examples_path)),
            },
        ),
    ]


def build_daily_assets(start_date: str) -> dg.AssetsDefinition:
    """The per-date assets as one step: raw events, validated feedback, its quarantine and
    the attributed examples of each date of the run (one date, or a range in one run)."""
    partitions = daily_partitions(start_date)

    def spec(key: str, group: str, description: str, deps: list[str]) -> dg.AssetSpec:
        return dg.AssetSpec(
            key,
            group_name=group,
            kinds={"polars", "parquet"},
            description=description,
            partitions_def=partitions,
            deps=deps,
            skippable=True,
        )

    raw = [keys.RAW_FEEDBACK, keys.RAW_PREDICTIONS]
    specs = [
        spec(keys.RAW_FEEDBACK, keys.INGESTION, RAW_FEEDBACK_DESCRIPTION, []),
        spec(keys.RAW_PREDICTIONS, keys.INGESTION, RAW_PREDICTIONS_DESCRIPTION, []),
        spec(VALIDATED, keys.CURATION, VALIDATED_DESCRIPTION, raw),
        spec(QUARANTINE, keys.CURATION, QUARANTINE_DESCRIPTION, [VALIDATED]),
        spec(EXAMPLES, keys.CURATION, EXAMPLES_DESCRIPTION, [VALIDATED]),
    ]
    with warnings.catch_warnings():  # backfill_policy is beta in Dagster 1.13; we rely on it
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.multi_asset(
            name="daily_events",
            specs=specs,
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            can_subset=False,
        )
        def daily_events(
            context: dg.AssetExecutionContext,
            event_log: EventLogResource,
            curation: CurationResource,
        ) -> Iterator[dg.AssetMaterialization]:
            log = event_log.log()
            store = curation.store()
            policy = curation.policy()
            rules = curation.rules()
            reference = load_reference(curation.rules_folder())
            as_of = log_as_of(log)
            days = list(context.partition_keys)
            fingerprints = log.partition_fingerprints()
            # every date of the range is curated on its own (with its neighbours), from
            # events read once for the whole range
            inputs = CurationInputs.read(log, days, rules)
            for day in days:
                fingerprint = fingerprints.get(day, "")
                for key, kind in (
                    (keys.RAW_FEEDBACK, "feedback"),
                    (keys.RAW_PREDICTIONS, "prediction"),
                ):
                    yield raw_materialization(
                        dg.AssetKey(key),
                        log,
                        kind,  # type: ignore[arg-type]
                        day,
                        fingerprint,
                        store,
                    )
                curated = curate(log, [day], rules, policy, reference, as_of, inputs=inputs)
                yield from curation_materializations(day, curated, store, policy)

    return daily_events


@dg.asset(
    name=keys.TRAINING_DATASET,
    group_name=keys.CURATION,
    deps=[EXAMPLES],
    kinds={"polars", "parquet"},
    code_version=DATASET_CODE_VERSION,
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
        "of the window under CT_MAX_QUARANTINE_RATE."
    ),
)
def training_dataset(
    context: dg.AssetExecutionContext,
    event_log: EventLogResource,
    dataset_store: DatasetStoreResource,
    training_config: TrainingConfigResource,
    curation: CurationResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:  # type: ignore[type-arg]
    log = event_log.log()
    position = log.counts().feedback  # the cut: every feedback event committed by now
    days = list(log.counts_by_date())
    if not days:
        raise dg.Failure("the event log is empty: nothing to train on")
    as_of = day_end(days[-1])
    spec = curation.window()
    dates = partitions_for(spec, as_of, datetime.fromisoformat(days[0]).date(), lookback_days=0)
    with_events = set(days)
    dates = [d for d in dates if d in with_events]
    reference_before = load_reference(curation.rules_folder())
    curated = curate(log, dates, curation.rules(), curation.policy(), reference_before, as_of)
    examples = curated.examples.filter(pl.col("log_offset") < position)
    selected = select_window(examples, spec, as_of)
    try:
        frame = compile_dataset(selected, max(selected.height, 1), training_config.holdout_fraction)
    except EmptyDatasetError as exc:
        yield dg.AssetCheckResult(check_name="not_empty", passed=False, description=str(exc))
        raise dg.Failure(str(exc)) from exc
    info = write_dataset(frame, dataset_store.datasets, position)
    train = frame.filter(pl.col("split") == "train")
    reference = infer_reference(
        selected.filter(pl.col("event_id").is_in(train["event_id"].implode()))
    )
    reference.save(dataset_store.datasets / f"{info.version}.reference.json")
    reference.save(curation.rules_folder() / "latest.json")
    label_counts = frame.group_by("label").len().sort("label")
    statuses = curated.status_counts()
    total = sum(statuses.values())
    quarantine_rate = statuses.get("quarantined", 0) / total if total else 0.0
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "dagster/column_schema": column_schema(frame),
            keys.META_DATASET_VERSION: info.version,
            keys.META_DATASET_PATH: dg.MetadataValue.path(info.path),
            keys.META_LOG_POSITION: position,
            "train_rows": info.train_rows,
            "holdout_rows": info.holdout_rows,
            "window": spec.describe(),
            "source_partitions": ", ".join([*dates[:3], "…", *dates[-3:]])
            if len(dates) > 6
            else ", ".join(dates),
            "source_partition_count": len(dates),
            "event_id_range": f"{info.first_event_id} .. {info.last_event_id}",
            "log_offset_range": f"{info.first_log_offset} .. {info.last_log_offset}",
            "time_range": f"{info.start_time} .. {info.end_time}",
            "features": ", ".join(info.feature_names),
            "feedback_status": _json(statuses),
            "quarantine_rate": quarantine_rate,
            "reference_version": reference.version,
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
    yield dg.AssetCheckResult(
        check_name="not_empty", passed=frame.height > 0, metadata={"rows": frame.height}
    )
    classes = frame["label"].n_unique()
    train_classes = train["label"].n_unique()
    yield dg.AssetCheckResult(
        check_name="class_balance",
        passed=classes >= 2 and train_classes >= 2,
        metadata={
            "classes": classes,
            "train_classes": train_classes,
            "minority_share": int(label_counts["len"].min() or 0) / frame.height,  # type: ignore[arg-type]
        },
        description="training needs at least two classes in the train split",
    )
    yield dg.AssetCheckResult(
        check_name="quarantine_rate",
        passed=quarantine_rate <= curation.max_quarantine_rate,
        metadata={"rate": quarantine_rate, "threshold": curation.max_quarantine_rate},
        description="a flood of quarantined feedback means the stream is under attack or broken",
    )
    nulls = {
        c: float(frame[c].null_count() / frame.height)
        for c in info.feature_names
        if frame[c].null_count()
    }
    yield dg.AssetCheckResult(
        check_name="null_rates",
        passed=all(rate <= 0.5 for rate in nulls.values()),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"null_rates": _json(nulls)},
    )
    drift = _schema_drift(reference_before, info.feature_names)
    yield dg.AssetCheckResult(
        check_name="schema_vs_reference",
        passed=not drift,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"changes": _json(drift)},
        description="features added or removed since the reference schema",
    )


def _schema_drift(reference: Any, features: list[str]) -> dict[str, list[str]]:
    if reference is None:
        return {}
    known = set(reference.features)
    now = set(features)
    changes = {"added": sorted(now - known), "removed": sorted(known - now)}
    return {k: v for k, v in changes.items() if v}


@dg.asset(
    name=keys.LABELING_QUEUE,
    group_name=keys.CURATION,
    deps=[keys.RAW_PREDICTIONS, keys.RAW_FEEDBACK],
    kinds={"polars"},
    description=(
        "Active learning: the most uncertain recent predictions (margin or entropy of "
        "their scores: CT_LABELING_METHOD) that have no feedback yet, at most "
        "CT_LABELING_BUDGET, from the last CT_LABELING_LOOKBACK_DAYS. Served by "
        "GET /v1/labeling-queue; labels posted back to /v1/feedback as explicit "
        "feedback with the item's prediction_id close the loop."
    ),
)
def labeling_queue(event_log: EventLogResource, curation: CurationResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
    log = event_log.log()
    days = list(log.counts_by_date())
    as_of = day_end(days[-1]) if days else datetime.now(UTC)
    since = as_of - timedelta(days=curation.labeling_lookback_days)
    recent = [d for d in days if day_end(d) > since]
    predictions = log.read("prediction", dates=recent)
    feedback = log.read("feedback", dates=recent)
    queue = rank_queue(
        predictions,
        feedback,
        curation.labeling_method,  # type: ignore[arg-type]
        curation.labeling_budget,
        since,
    )
    path = curation.store().write_latest(keys.LABELING_QUEUE, queue)
    items = queue.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")).to_dicts()
    document = {
        "items": items,
        "generated_at": datetime.now(UTC).isoformat(),
        "method": curation.labeling_method,
        "budget": curation.labeling_budget,
    }
    write_bytes_atomically(Path(curation.labeling_queue_path), msgspec.json.encode(document))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": queue.height,
            "method": curation.labeling_method,
            "candidates": predictions.height,
            "median_uncertainty": float(queue["uncertainty"].median() or 0.0)  # type: ignore[arg-type]
            if queue.height
            else 0.0,
            "preview": dg.MetadataValue.md(
                preview_markdown(
                    queue.drop("features") if "features" in queue.columns else queue, 10
                )
            )
            if queue.height
            else dg.MetadataValue.md("(empty)"),
            "path": dg.MetadataValue.path(str(path)),
        }
    )

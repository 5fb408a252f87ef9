"""Curation: validated feedback, its quarantine, attributed examples and the labeling queue
(the training dataset: ``defs.dataset``)."""

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import msgspec
import polars as pl

from ct_assets import keys
from ct_assets.data.attribution import LabelPolicy
from ct_assets.data.dataset import (
    preview_markdown,
    value_counts,
)
from ct_assets.data.feedback_rules import validation_summary
from ct_assets.data.tables import TableStore, write_bytes_atomically
from ct_assets.data.uncertainty import labeling_queue as rank_queue
from ct_assets.defs.ingestion import (
    RAW_FEEDBACK_DESCRIPTION,
    RAW_PREDICTIONS_DESCRIPTION,
    daily_partitions,
    raw_materialization,
)
from ct_assets.defs.resources import CurationResource, EventLogResource
from ct_assets.pipeline.curation import (
    REFRESH_BLOCK_DAYS,
    Curated,
    CurationInputs,
    curate,
    curated_source,
    curation_key,
    day_end,
    load_reference,
    log_as_of,
    write_curated,
)
from ct_assets.pipeline.dataset_build import MAX_NULL_RATE, schema_drift
from ct_assets.pipeline.event_tables import read_via_tables, refresh_raw_tables

VALIDATED = keys.VALIDATED_FEEDBACK
QUARANTINE = keys.FEEDBACK_QUARANTINE
EXAMPLES = keys.ATTRIBUTED_EXAMPLES


def _json(value: Any) -> dg.MetadataValue:  # type: ignore[type-arg]
    return dg.MetadataValue.json(value)


VALIDATED_DESCRIPTION = (
    "The feedback validation service, per event date: every raw feedback event ends in "
    "exactly one of accepted, quarantined (with a reason code) or pending (its prediction "
    "has not arrived yet; once it is overdue, the cited id was never served: quarantined "
    "as unknown_prediction). Rules: duplicates, timestamps out of "
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
    day: str, curated: Curated, store: TableStore, policy: LabelPolicy, source: str
) -> list[dg.AssetMaterialization]:
    """validated_feedback, feedback_quarantine and attributed_examples of one date: their
    tables written (with ``source``), their figures as metadata."""
    validated = curated.validated
    rows = validated.height
    statuses = curated.status_counts()
    reasons = curated.reason_counts()
    quarantined = validated.filter(pl.col("status") == "quarantined")
    examples = curated.examples
    paths = write_curated(store, day, curated, source)
    validated_path = paths[VALIDATED]
    quarantine_path = paths[QUARANTINE]
    examples_path = paths[EXAMPLES]
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


DAILY_CHECKS = [
    dg.AssetCheckSpec(
        "quarantine_rate",
        asset=VALIDATED,
        description="share of each date's feedback quarantined, under CT_MAX_QUARANTINE_RATE",
    ),
    dg.AssetCheckSpec(
        "null_rates",
        asset=EXAMPLES,
        description="share of missing values per feature in each date's examples, at most 50%",
    ),
    dg.AssetCheckSpec(
        "schema_vs_reference",
        asset=EXAMPLES,
        description="features added or removed against the reference schema",
    ),
]


class DailyChecks:
    """The daily assets' checks over the dates of one run (a date or a range): warnings an
    analyst sees on the asset; training is stopped by the dataset's blocking checks."""

    def __init__(self, max_quarantine_rate: float, reference: Any) -> None:
        self.max_quarantine_rate = max_quarantine_rate
        self.reference = reference
        self.quarantine: dict[str, float] = {}
        self.nulls: dict[str, dict[str, float]] = {}
        self.features: set[str] = set()

    def add(self, day: str, curated: Curated) -> None:
        statuses = curated.status_counts()
        rows = sum(statuses.values())
        self.quarantine[day] = statuses.get("quarantined", 0) / rows if rows else 0.0
        examples = curated.examples
        dtype = examples.schema.get("features")
        if examples.height and isinstance(dtype, pl.Struct) and dtype.fields:
            counts = examples.select(pl.col("features").struct.unnest()).null_count().row(0)
            names = [f.name for f in dtype.fields]
            self.features.update(names)
            rates = {n: c / examples.height for n, c in zip(names, counts, strict=True) if c}
            if rates:
                self.nulls[day] = rates

    def results(self) -> Iterator[dg.AssetCheckResult]:
        worst = max(self.quarantine.items(), key=lambda item: item[1], default=("", 0.0))
        over = {d: r for d, r in self.quarantine.items() if r > self.max_quarantine_rate}
        yield dg.AssetCheckResult(
            asset_key=VALIDATED,
            check_name="quarantine_rate",
            passed=not over,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "threshold": self.max_quarantine_rate,
                "worst_date": worst[0],
                "worst_rate": worst[1],
                "dates_over": _json(over),
            },
        )
        high = {
            day: {n: r for n, r in rates.items() if r > MAX_NULL_RATE}
            for day, rates in self.nulls.items()
        }
        high = {day: rates for day, rates in high.items() if rates}
        yield dg.AssetCheckResult(
            asset_key=EXAMPLES,
            check_name="null_rates",
            passed=not high,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "max_rate": MAX_NULL_RATE,
                "over": _json(high),
                "null_rates": _json(self.nulls),
            },
        )
        drift = schema_drift(self.reference, sorted(self.features)) if self.features else {}
        yield dg.AssetCheckResult(
            asset_key=EXAMPLES,
            check_name="schema_vs_reference",
            passed=not drift,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"changes": _json(drift)},
        )


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
        spec(VALIDATED, keys.CURATION, VALIDATED_DESCRIPTION, [*raw, keys.REFERENCE_SCHEMA]),
        spec(QUARANTINE, keys.CURATION, QUARANTINE_DESCRIPTION, [VALIDATED]),
        spec(EXAMPLES, keys.CURATION, EXAMPLES_DESCRIPTION, [VALIDATED]),
    ]
    with warnings.catch_warnings():  # backfill_policy is beta in Dagster 1.13; we rely on it
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.multi_asset(
            name="daily_events",
            specs=specs,
            check_specs=DAILY_CHECKS,
            partitions_def=partitions,
            backfill_policy=dg.BackfillPolicy.single_run(),
            can_subset=False,
            pool=keys.TABLES_POOL,  # writes per-date tables (see keys.TABLES_POOL)
        )
        def daily_events(
            context: dg.AssetExecutionContext,
            event_log: EventLogResource,
            curation: CurationResource,
        ) -> Iterator[dg.AssetMaterialization | dg.AssetCheckResult]:
            log = event_log.log()
            store = curation.store()
            policy = curation.policy()
            rules = curation.rules()
            reference = load_reference(curation.rules_folder())
            as_of = log_as_of(log)
            days = list(context.partition_keys)
            fingerprints = log.partition_fingerprints()
            checks = DailyChecks(curation.max_quarantine_rate, reference)
            # every date of the range is curated on its own (with its neighbours), from
            # events read once per block of dates
            inputs: CurationInputs | None = None
            for index, day in enumerate(days):
                if inputs is None or index % REFRESH_BLOCK_DAYS == 0:
                    block = days[index : index + REFRESH_BLOCK_DAYS]
                    # the block's raw tables first: its inputs are then read from them
                    refresh_raw_tables(log, store, block, fingerprints)
                    inputs = CurationInputs.read(log, block, rules, tables=(store, fingerprints))
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
                key = curation_key(day, fingerprints, rules, policy)
                source = curated_source(key, curated)
                yield from curation_materializations(day, curated, store, policy, source)
                checks.add(day, curated)
            yield from checks.results()

    return daily_events


@dg.asset(
    name=keys.LABELING_QUEUE,
    group_name=keys.CURATION,
    deps=[keys.RAW_PREDICTIONS, keys.RAW_FEEDBACK],
    kinds={"polars"},
    description=(
        "Active learning: the most uncertain recent predictions (margin or entropy of "
        "their scores: CT_LABELING_METHOD) that have no feedback yet, at most "
        "CT_LABELING_BUDGET, from the last CT_LABELING_LOOKBACK_DAYS (read from the "
        "current raw tables of those dates, the log for the others). Served by "
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
    store, fingerprints = curation.store(), log.partition_fingerprints()
    predictions = read_via_tables(log, store, "prediction", recent, fingerprints)
    feedback = read_via_tables(log, store, "feedback", recent, fingerprints)
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

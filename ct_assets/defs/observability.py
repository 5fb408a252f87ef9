"""Monitoring of the feedback loop itself (group ``monitoring``): daily feedback aggregates,
the feedback-loop latency of promoted models, and a bias report with its checks.

The figures come from :mod:`ct_assets.monitoring.feedback` and
:mod:`ct_assets.monitoring.latency`; this module wires them as assets and attaches their
metadata (the bias report's checks and metadata: :mod:`ct_assets.defs.bias_checks`).
mlflow (through the registry), DuckDB and matplotlib are imported only when an asset runs.
"""

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import dagster as dg

from ct_assets import keys
from ct_assets.data.dataset_objects import dataset_file
from ct_assets.data.tables import write_bytes_atomically
from ct_assets.defs.bias_checks import (
    bias_check_specs,
    bias_metadata,
    bias_thresholds,
    finite_json,
)
from ct_assets.defs.dataset_store import DatasetStoreResource
from ct_assets.defs.resources import CurationResource, RegistryResource
from ct_assets.monitoring.feedback import (
    AGGREGATE_COLUMN_DOCS,
    AGGREGATE_SCHEMA,
    BIAS_WINDOW_DAYS,
    PLOT_DAYS,
    daily_plot_png,
    feedback_bias,
    judge_bias,
    latest_day_totals,
)
from ct_assets.monitoring.feedback.incremental import incremental_feedback_aggregates
from ct_assets.monitoring.latency import (
    LATENCY_HISTORY,
    VersionLatency,
    latency_document,
    promoted_versions,
    version_latency,
    write_latency_exports,
)
from ct_assets.registry import CHAMPION
from ct_assets.settings import Settings
from ct_assets.training.plots import png_markdown

MONITORING_CODE_VERSION = "feedback-monitoring-v1"
#: Versions listed in the latency asset's table metadata, newest last.
LATENCY_TABLE_ROWS = 10


def build_monitoring_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    """The three assets of this module."""
    return [
        build_feedback_aggregates(settings),
        build_feedback_loop_latency(settings),
        build_feedback_bias_report(settings),
    ]


# --- feedback_aggregates ------------------------------------------------------------------

AGGREGATES_DESCRIPTION = (
    "Daily figures of the feedback stream, per day and per feedback_type, signal, source, "
    "explicit label class and segment (CT_MONITORING_SEGMENTS; default: the categorical "
    "features). They are: events per validation status with acceptance and quarantine "
    "rates; the label rate of explicit feedback (share of the policy's positive label); "
    "the reward rate of implicit feedback (share of signals the label policy labels "
    "positive) and its mean value; and coverage, the share of the day's logged predictions "
    "that ever received feedback (any event referring to them, any day). Recent days' "
    "coverage rises as late feedback arrives. Computed with DuckDB, under "
    "CT_COMPILE_MEMORY_MB, once per changed date: a date's figures are kept under "
    "CT_HOME/monitoring/feedback_aggregates and computed again only when its tables, or "
    "the feedback of a later date answering its predictions, changed. Table: "
    "CT_HOME/tables/feedback_aggregates/latest.parquet. Metadata: the newest day's totals "
    "and a plot of the last 30 days."
)


def aggregates_column_schema() -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(dtype), description=AGGREGATE_COLUMN_DOCS.get(name))
            for name, dtype in AGGREGATE_SCHEMA.items()
        ]
    )


def build_feedback_aggregates(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=keys.FEEDBACK_AGGREGATES,
        group_name=keys.MONITORING,
        owners=keys.OWNERS,
        kinds={"duckdb", "parquet"},
        deps=[keys.VALIDATED_FEEDBACK, keys.RAW_PREDICTIONS],
        code_version=MONITORING_CODE_VERSION,
        description=AGGREGATES_DESCRIPTION,
    )
    def feedback_aggregates_asset(curation: CurationResource) -> dg.MaterializeResult:  # type: ignore[type-arg]
        store = curation.store()
        refreshed = incremental_feedback_aggregates(
            store,
            curation.policy(),
            settings.monitoring_dir / keys.FEEDBACK_AGGREGATES,
            settings.monitoring_segments,
            curation.compile_memory_mb,
            curation.max_feedback_delay_days,
        )
        result = refreshed.result
        table = result.table
        path = store.write_latest(keys.FEEDBACK_AGGREGATES, table)
        day, totals = latest_day_totals(table)
        png = daily_plot_png(table, PLOT_DAYS)
        metadata: dict[str, Any] = {
            "dagster/row_count": table.height,
            "dagster/column_schema": aggregates_column_schema(),
            "days": table["day"].n_unique(),
            "days_computed": len(refreshed.days_computed),
            "events": 0.0,
            **totals,
            "latest_day": day or "(none)",
            "segments": ", ".join(result.segments.names) or "(none)",
            "plot": dg.MetadataValue.md(
                png_markdown(png, f"feedback, last {PLOT_DAYS} days") if png else "(no data)"
            ),
            "path": dg.MetadataValue.path(str(path)),
        }
        if result.segments.skipped:
            metadata["skipped_segments"] = dg.MetadataValue.json(result.segments.skipped)
        if result.reason:
            metadata["reason"] = result.reason
        return dg.MaterializeResult(metadata=metadata)

    return feedback_aggregates_asset


# --- feedback_loop_latency ----------------------------------------------------------------

LATENCY_DESCRIPTION = (
    "How long feedback waits until a model that learned from it serves. For each promoted "
    f"version (the last {LATENCY_HISTORY}; promotion time from the registry's audit trail, "
    "else ct.promoted_at): p50, p95 and max seconds from the events it learned from "
    "(its dataset's train split; for an incremental version only the rows after "
    "ct.new_after_offset) to its promotion. Also trigger to promotion: seconds from the "
    "creation of the Dagster run that trained it (ct.dagster_run_id), which is when its "
    "trigger fired, to the promotion. The newest event behind a trigger is not recorded, "
    "so the run's creation stands for it. Metadata charts the current champion's figures. "
    "Exported to CT_HOME/monitoring/feedback_loop_latency.json (every version listed) and "
    "CT_HOME/metrics/feedback_loop_latency.prom (Prometheus textfile, the current champion "
    "only). Refreshed by the retrain and canary jobs after a promotion can happen, and by "
    "monitoring_job."
)
LATENCY_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("version", "string"),
        dg.TableColumn("promoted_at", "string"),
        dg.TableColumn("trigger", "string"),
        dg.TableColumn("events", "int"),
        dg.TableColumn("p50_seconds", "float"),
        dg.TableColumn("p95_seconds", "float"),
        dg.TableColumn("max_seconds", "float"),
        dg.TableColumn("trigger_to_promotion_seconds", "float"),
    ]
)


def latency_table(latencies: list[VersionLatency]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({k: v for k, v in entry.as_dict().items() if v is not None})
            for entry in latencies[-LATENCY_TABLE_ROWS:]
        ],
        schema=LATENCY_TABLE_SCHEMA,
    )


def build_feedback_loop_latency(settings: Settings) -> dg.AssetsDefinition:
    json_path, prom_path = settings.loop_latency_path, settings.loop_latency_metrics_path

    @dg.asset(
        name=keys.FEEDBACK_LOOP_LATENCY,
        group_name=keys.MONITORING,
        owners=keys.OWNERS,
        kinds={"mlflow", "polars"},
        deps=[keys.CHAMPION_MODEL, keys.CANARY_ANALYSIS],
        code_version=MONITORING_CODE_VERSION,
        description=LATENCY_DESCRIPTION,
    )
    def feedback_loop_latency(
        context: dg.AssetExecutionContext,
        registry: RegistryResource,
        dataset_store: DatasetStoreResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        instance = context.instance

        def run_created_at(run_id: str) -> datetime | None:
            record = instance.get_run_record_by_id(run_id)
            return record.create_timestamp if record is not None else None

        versions, champion = promoted_versions(
            registry.registry(), dataset_store.datasets, run_created_at
        )
        latencies = [version_latency(v) for v in versions]
        document = latency_document(latencies, champion)
        write_latency_exports(document, json_path, prom_path)
        current = document["champion"] or {}
        figures = {
            name: float(current[name])
            for name in (
                "p50_seconds",
                "p95_seconds",
                "max_seconds",
                "trigger_to_promotion_seconds",
            )
            if current.get(name) is not None
        }
        metadata: dict[str, Any] = {
            "dagster/row_count": len(latencies),
            "champion_version": champion or "(none)",
            "champion_events": int(current.get("events", 0)),
            **figures,
            "versions": latency_table(latencies),
            "json_path": dg.MetadataValue.path(str(json_path)),
            "prometheus_path": dg.MetadataValue.path(str(prom_path)),
        }
        if champion is None:
            metadata["reason"] = "no champion yet: nothing has been promoted"
        elif not current:
            metadata["reason"] = f"champion v{champion} has no promotion record"
        return dg.MaterializeResult(metadata=metadata)

    return feedback_loop_latency


# --- feedback_bias_report -----------------------------------------------------------------

BIAS_DESCRIPTION = (
    f"Bias in the feedback of the last {BIAS_WINDOW_DAYS} event dates (ending at the newest "
    "table). Selection: the share of the logged predictions that became training examples "
    "(accepted, labeled feedback), by predicted class and by score decile, and the ratio of "
    "the highest decile rate to the lowest. Label shift: per segment value "
    "(CT_MONITORING_SEGMENTS; default: the categorical features), the largest change of a "
    "class's share of the labels against the current champion's training data (its "
    "dataset's train split); values with fewer than 30 labels on either side are shown, "
    "not judged. Concentration: the share of the labels from the top 1% of users and the "
    "HHI over users. Position effects for implicit feedback when a `position` feature "
    "exists. Checks selection_bias, label_shift and concentration compare with the "
    "CT_BIAS_* thresholds. They warn; with CT_BIAS_BLOCK_TRAINING on they are blocking "
    "(severity ERROR) and a flagged bias stops what depends on this report in the same run. "
    "A figure without data is reported with its reason and "
    "its check passes as not evaluated. Full report: "
    "CT_HOME/monitoring/feedback_bias_report.json."
)


def build_feedback_bias_report(settings: Settings) -> dg.AssetsDefinition:
    blocking = settings.bias_block_training
    severity = dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN
    thresholds = bias_thresholds(settings)
    path = settings.bias_report_path

    @dg.asset(
        name=keys.FEEDBACK_BIAS_REPORT,
        group_name=keys.MONITORING,
        owners=keys.OWNERS,
        kinds={"duckdb", "parquet"},
        deps=[keys.ATTRIBUTED_EXAMPLES, keys.RAW_PREDICTIONS],
        code_version=MONITORING_CODE_VERSION,
        check_specs=bias_check_specs(settings),
        description=BIAS_DESCRIPTION,
    )
    def feedback_bias_report(
        curation: CurationResource,
        registry: RegistryResource,
        dataset_store: DatasetStoreResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:  # type: ignore[type-arg]
        champion = registry.registry().alias(CHAMPION)
        reference = (
            dataset_file(dataset_store.objects(), dataset_store.datasets, champion.dataset_version)
            if champion is not None and champion.dataset_version
            else None
        )
        report = feedback_bias(
            curation.store(),
            curation.policy(),
            reference,
            settings.monitoring_segments,
            BIAS_WINDOW_DAYS,
            curation.compile_memory_mb,
        )
        verdicts = judge_bias(report, thresholds)
        document = {
            "report": report.as_dict(),
            "checks": [v.__dict__ for v in verdicts],
            "champion": champion.version if champion else None,
        }
        write_bytes_atomically(path, json.dumps(finite_json(document), indent=2).encode())
        yield dg.MaterializeResult(metadata=bias_metadata(report, verdicts, path))
        for verdict in verdicts:
            yield dg.AssetCheckResult(
                check_name=verdict.check,
                passed=verdict.passed,
                severity=severity,
                description=verdict.description,
                metadata={**verdict.figures, "evaluated": verdict.evaluated, "blocking": blocking},
            )

    return feedback_bias_report

"""``pipeline_health``: how the CT jobs, sensors and the API behave, from the Dagster
instance and the API's Prometheus metrics."""

import json
import math
import time
from pathlib import Path
from typing import Any

import dagster as dg

from ct_assets import keys
from ct_assets.json_values import json_safe
from ct_assets.monitoring.health import (
    ApiScrape,
    RunSample,
    TickSample,
    api_health,
    job_health,
    parse_api_metrics,
    sensor_health,
)
from ct_assets.settings import Settings

HEALTH_DAYS = 7
CT_JOBS = (
    keys.RETRAIN_JOB,
    keys.CANARY_JOB,
    keys.RAW_PARTITIONS_JOB,
    keys.LABELING_QUEUE_JOB,
    keys.ROLLBACK_JOB,
    keys.MONITORING_JOB,
    keys.GC_JOB,
)
MAX_TICKS_PER_SENSOR = 5000
SCRAPE_TIMEOUT_SECONDS = 5.0
JOB_COLUMNS = ["job", "runs", "succeeded", "failed", "failure_rate", "duration_p95_s"]
SENSOR_COLUMNS = ["sensor", "ticks", "fired", "skipped", "failed", "tick_p95_s", "top_skip_reasons"]
API_COLUMNS = [
    "route",
    "requests",
    "requests_per_s",
    "client_error_rate",
    "server_error_rate",
    "latency_p50_ms",
    "latency_p99_ms",
]


def run_samples(instance: dg.DagsterInstance, since: float) -> list[RunSample]:
    samples: list[RunSample] = []
    for job in CT_JOBS:
        records = instance.get_run_records(
            filters=dg.RunsFilter(job_name=job, created_after=_datetime(since))
        )
        samples += [
            RunSample(job, r.dagster_run.status.value, r.start_time, r.end_time) for r in records
        ]
    return samples


def tick_samples(instance: dg.DagsterInstance, since: float) -> list[TickSample]:
    from dagster._core.definitions.run_request import InstigatorType

    samples: list[TickSample] = []
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        ticks = instance.get_ticks(
            state.instigator_origin_id,
            state.selector_id,
            after=since,
            limit=MAX_TICKS_PER_SENSOR,
        )
        samples += [
            TickSample(
                sensor=state.instigator_name,
                status=t.status.value,
                start=t.timestamp,
                end=t.tick_data.end_timestamp,
                skip_reason=t.skip_reason,
                runs_requested=len(t.run_ids),
            )
            for t in ticks
        ]
    return samples


def scrape_api(url: str, previous_path: Path) -> tuple[list[dict[str, Any]], str]:
    """Per-route API figures since the previous scrape (kept in ``previous_path``), and a
    note on where they come from (or why there are none)."""
    if not url:
        return [], "API metrics not configured (set CT_API_METRICS_URL to the API's /metrics)"
    import httpx

    try:
        response = httpx.get(url, timeout=SCRAPE_TIMEOUT_SECONDS)
        response.raise_for_status()
        now = parse_api_metrics(response.text, time.time())
    except (httpx.HTTPError, ValueError) as exc:
        return [], f"API metrics unreachable at {url}: {exc}"
    previous = None
    if previous_path.exists():
        try:
            previous = ApiScrape.from_dict(json.loads(previous_path.read_text()))
        except (ValueError, KeyError, TypeError):
            previous = None
    previous_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = previous_path.with_name(previous_path.name + ".tmp")
    tmp.write_text(json.dumps(now.to_dict()))
    tmp.replace(previous_path)
    since = "the previous materialization" if previous else "the API started"
    return api_health(now, previous), f"API metrics from {url}, since {since}"


def _datetime(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


def _finite(value: float) -> float | None:
    return value if isinstance(value, float) and math.isfinite(value) else None


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if not math.isfinite(value) else f"{value:.3g}"
        if isinstance(value, list):
            return "; ".join(f"{v['reason']} ({v['ticks']})" for v in value) or "-"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _numbers(prefix: str, row: dict[str, Any], names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in names:
        value = _finite(float(row[name]))
        if value is not None:
            out[f"{prefix}/{name}"] = value
    return out


def build_pipeline_health(settings: Settings) -> dg.AssetsDefinition:
    previous_path = settings.api_scrape_path

    @dg.asset(
        name=keys.PIPELINE_HEALTH,
        group_name=keys.MONITORING,
        owners=keys.OWNERS,
        kinds={"dagster", "prometheus"},
        description=(
            f"Health of the CT pipeline over the last {HEALTH_DAYS} days. Runs of the CT jobs "
            "(retrain, canary, raw partitions, labeling queue, rollback, monitoring): counts, "
            "failure rate, p50/p95/max duration. Sensor ticks: how many fired, skipped or "
            "failed, tick durations, and the most frequent kinds of skip reason. The API "
            "(scraped from CT_API_METRICS_URL): requests per route and per second since the "
            "previous materialization, 4xx/5xx rates, p50/p99 latency."
        ),
    )
    def pipeline_health(context: dg.AssetExecutionContext) -> dg.MaterializeResult:  # type: ignore[type-arg]
        since = time.time() - HEALTH_DAYS * 86400
        jobs = job_health(run_samples(context.instance, since))
        sensors = sensor_health(tick_samples(context.instance, since))
        routes, api_note = scrape_api(settings.api_metrics_url, previous_path)
        metadata: dict[str, Any] = {}
        for row in jobs:
            metadata |= _numbers(
                f"job/{row['job']}", row, ["runs", "failure_rate", "duration_p95_s"]
            )
        for row in sensors:
            metadata |= _numbers(
                f"sensor/{row['sensor']}", row, ["ticks", "fired", "skipped", "tick_p95_s"]
            )
        for row in routes:
            metadata |= _numbers(
                f"api{row['route']}",
                row,
                ["requests_per_s", "server_error_rate", "latency_p99_ms"],
            )
        markdown = "\n\n".join(
            [
                "### Jobs\n" + _table(jobs, JOB_COLUMNS),
                "### Sensors\n"
                + _table(
                    sensors,
                    SENSOR_COLUMNS,
                ),
                f"### API\n{api_note}\n\n"
                + _table(
                    routes,
                    API_COLUMNS,
                ),
            ]
        )
        failed_runs = sum(int(r["failed"]) for r in jobs)
        return dg.MaterializeResult(
            metadata={
                "failed_runs": failed_runs,
                "runs": sum(int(r["runs"]) for r in jobs),
                "sensor_ticks": sum(int(r["ticks"]) for r in sensors),
                "api": api_note,
                **metadata,
                "summary": dg.MetadataValue.md(markdown),
                "details": dg.MetadataValue.json(
                    json_safe({"jobs": jobs, "sensors": sensors, "api": routes})
                ),
            }
        )

    return pipeline_health

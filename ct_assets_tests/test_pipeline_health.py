"""Pipeline health figures on inputs with known answers, and the asset on a real instance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import pytest

from ct_assets import keys
from ct_assets.defs import build_definitions
from ct_assets.defs.pipeline_health import build_pipeline_health, scrape_api
from ct_assets.monitoring.health import (
    ApiScrape,
    RunSample,
    TickSample,
    api_health,
    histogram_quantile,
    job_health,
    parse_api_metrics,
    sensor_health,
    skip_reason_kind,
)
from ct_assets.settings import Settings

from .conftest import ingest, simulated_events


def test_job_health_counts_statuses_and_times_finished_runs() -> None:
    runs = [
        RunSample("retrain", "SUCCESS", 0.0, 10.0),
        RunSample("retrain", "SUCCESS", 0.0, 20.0),
        RunSample("retrain", "FAILURE", 5.0, 35.0),
        RunSample("retrain", "CANCELED", 0.0, 40.0),
        RunSample("retrain", "STARTED", 0.0, None),
        RunSample("canary_job", "SUCCESS", 1.0, 2.0),
    ]
    canary, retrain = job_health(runs)
    assert (retrain["runs"], retrain["succeeded"], retrain["failed"]) == (5, 2, 1)
    assert (retrain["canceled"], retrain["in_progress"]) == (1, 1)
    assert retrain["failure_rate"] == pytest.approx(1 / 4)
    assert retrain["duration_p50_s"] == pytest.approx(25.0)  # of 10, 20, 30, 40
    assert retrain["duration_max_s"] == 40.0
    assert canary["job"] == "canary_job" and canary["failure_rate"] == 0.0


def test_sensor_health_groups_skip_reasons_of_one_kind() -> None:
    assert skip_reason_kind("412 feedback events since the last check of v3 < 1000") == (
        "N feedback events since the last check of vN < N"
    )
    ticks = [
        TickSample("volume_sensor", "SKIPPED", 0.0, 0.5, "12 new labeled events < threshold 100"),
        TickSample("volume_sensor", "SKIPPED", 10.0, 10.1, "40 new labeled events < threshold 100"),
        TickSample("volume_sensor", "SKIPPED", 20.0, 20.3, "no champion yet"),
        TickSample("volume_sensor", "SUCCESS", 30.0, 31.0, None, runs_requested=1),
        TickSample("volume_sensor", "FAILURE", 40.0, None),
    ]
    (row,) = sensor_health(ticks)
    assert (row["ticks"], row["fired"], row["skipped"], row["failed"]) == (5, 1, 3, 1)
    assert row["runs_requested"] == 1
    assert row["tick_max_s"] == pytest.approx(1.0)
    assert row["top_skip_reasons"][0] == {
        "reason": "N new labeled events < threshold N",
        "ticks": 2,
    }


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    # 10 observations in (0, 0.1], 10 in (0.1, 0.5], none above
    buckets = {0.1: 10.0, 0.5: 20.0, math.inf: 20.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.99, {0.1: 1.0, math.inf: 4.0}) == 0.1, "+Inf: highest bound"
    assert math.isnan(histogram_quantile(0.5, {math.inf: 0.0}))


METRICS = """\
# HELP ct_api_requests_total HTTP requests by route and status
# TYPE ct_api_requests_total counter
ct_api_requests_total{route="/v1/predict",status="200"} 90.0
ct_api_requests_total{route="/v1/predict",status="422"} 8.0
ct_api_requests_total{route="/v1/predict",status="503"} 2.0
# HELP ct_api_request_duration_seconds Time to answer a request, by route
# TYPE ct_api_request_duration_seconds histogram
ct_api_request_duration_seconds_bucket{le="0.001",route="/v1/predict"} 50.0
ct_api_request_duration_seconds_bucket{le="0.01",route="/v1/predict"} 100.0
ct_api_request_duration_seconds_bucket{le="+Inf",route="/v1/predict"} 100.0
ct_api_request_duration_seconds_count{route="/v1/predict"} 100.0
ct_api_request_duration_seconds_sum{route="/v1/predict"} 0.2
"""


def test_api_health_since_the_api_started_and_between_scrapes() -> None:
    first = parse_api_metrics(METRICS, at=100.0)
    (row,) = api_health(first, None)
    assert row["route"] == "/v1/predict" and row["requests"] == 100
    assert row["client_error_rate"] == pytest.approx(0.08)
    assert row["server_error_rate"] == pytest.approx(0.02)
    assert row["latency_p50_ms"] == pytest.approx(1.0)
    assert math.isnan(row["requests_per_s"]), "a rate needs two scrapes"

    later = ApiScrape.from_dict(json.loads(json.dumps(first.to_dict())))
    later.at = 110.0
    later.requests["/v1/predict"]["200"] += 50
    later.buckets["/v1/predict"] = {k: v + 50 for k, v in later.buckets["/v1/predict"].items()}
    (row,) = api_health(later, first)
    assert row["requests"] == 50 and row["requests_per_s"] == pytest.approx(5.0)
    assert row["server_error_rate"] == 0.0
    assert row["latency_p50_ms"] == pytest.approx(0.5), "the 50 new ones all under 1 ms"

    restarted = parse_api_metrics(METRICS.replace("90.0", "3.0"), at=120.0)
    (row,) = api_health(restarted, later)
    assert row["requests"] == 13, "a counter that went down means a restart: counted anew"


def test_malformed_metrics_are_an_error_with_the_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse_api_metrics('ct_api_requests_total{route="/x" 1\n', at=0.0)
    rows, note = scrape_api("http://127.0.0.1:9/metrics", tmp_path / "last.json")
    assert rows == [] and "unreachable at http://127.0.0.1:9/metrics" in note
    assert not (tmp_path / "last.json").exists()
    rows, note = scrape_api("", tmp_path / "last.json")
    assert rows == [] and "CT_API_METRICS_URL" in note


def test_pipeline_health_reads_runs_from_the_instance(settings: Settings) -> None:
    ingest(settings, simulated_events(2000, drift_at=1.0))
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def(keys.RETRAIN_JOB).execute_in_process(instance=instance).success
        rollback = defs.resolve_job_def(keys.ROLLBACK_JOB).execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"rollback_champion": {"config": {"reason": "test"}}}},
        )
        assert not rollback.success, "no earlier champion to roll back to"
        result = dg.materialize([build_pipeline_health(settings)], instance=instance)
    (event,) = result.get_asset_materialization_events()
    meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    assert meta["runs"] == 2 and meta["failed_runs"] == 1
    assert meta["job/retrain/failure_rate"] == 0.0
    assert meta["job/rollback/failure_rate"] == 1.0
    assert meta["job/retrain/duration_p95_s"] > 0
    assert "not configured" in meta["api"]
    details = meta["details"]
    assert [j["job"] for j in details["jobs"]] == ["retrain", "rollback"]


@pytest.mark.slow  # a server of its own
def test_the_api_serves_exported_gauges_and_pipeline_health_scrapes_it(tmp_path: Path) -> None:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from .api_helpers import feedback_event, start_api

    home = tmp_path / "home"
    exported = Settings().with_home(home).loop_latency_metrics_path
    exported.parent.mkdir(parents=True)
    exported.write_text(
        "# HELP ct_feedback_loop_latency_seconds test\n"
        "# TYPE ct_feedback_loop_latency_seconds gauge\n"
        'ct_feedback_loop_latency_seconds{version="3",quantile="0.5"} 42.5\n'
    )
    api = start_api(home, "health-token")
    try:
        posted = httpx.post(
            api.url("/v1/feedback"), json=feedback_event("fb-health"), headers=api.auth()
        )
        assert posted.status_code == 202, posted.text
        refused = httpx.post(api.url("/v1/feedback"), content=b"{", headers=api.auth())
        assert refused.status_code == 415, refused.text
        text = httpx.get(api.url("/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        (sample,) = families["ct_feedback_loop_latency_seconds"].samples
        assert sample.value == 42.5 and sample.labels["version"] == "3"

        rows, note = scrape_api(api.url("/metrics"), tmp_path / "last.json")
        assert "since the API started" in note
        (feedback,) = [r for r in rows if r["route"] == "/v1/feedback"]
        assert feedback["requests"] == 2 and feedback["client_error_rate"] == 0.5
        assert feedback["latency_p99_ms"] > 0
        rows, note = scrape_api(api.url("/metrics"), tmp_path / "last.json")
        assert "since the previous materialization" in note
        (feedback,) = [r for r in rows if r["route"] == "/v1/feedback"]
        assert feedback["requests"] == 0 and feedback["requests_per_s"] == 0.0
    finally:
        api.stop()

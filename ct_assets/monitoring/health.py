"""Health of the CT pipeline itself: its runs, its sensors' ticks and the API's traffic.

Plain functions over plain records, so the figures can be checked on known inputs; the
``pipeline_health`` asset feeds them from the Dagster instance and the API's ``/metrics``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FAILED = ("FAILURE",)
CANCELED = ("CANCELED", "CANCELING")
FINISHED = ("SUCCESS", *FAILED, *CANCELED)
TOP_SKIP_REASONS = 3


@dataclass(frozen=True)
class RunSample:
    """One run of a CT job: its status name and start/end (epoch seconds, None if unknown)."""

    job: str
    status: str
    start: float | None
    end: float | None


@dataclass(frozen=True)
class TickSample:
    """One sensor tick: status name (SUCCESS = requested runs, SKIPPED, FAILURE, STARTED)."""

    sensor: str
    status: str
    start: float
    end: float | None
    skip_reason: str | None = None
    runs_requested: int = 0


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p95": math.nan, "max": math.nan}
    array = np.asarray(values, dtype=float)
    return {
        "p50": float(np.quantile(array, 0.5)),
        "p95": float(np.quantile(array, 0.95)),
        "max": float(array.max()),
    }


def job_health(runs: Iterable[RunSample]) -> list[dict[str, Any]]:
    """Per job: runs, succeeded, failed, canceled, in progress, failure rate (failed over
    finished) and the p50/p95/max duration (seconds) of finished runs."""
    by_job: dict[str, list[RunSample]] = {}
    for run in runs:
        by_job.setdefault(run.job, []).append(run)
    rows: list[dict[str, Any]] = []
    for job in sorted(by_job):
        samples = by_job[job]
        statuses = Counter(s.status for s in samples)
        finished = sum(statuses[s] for s in FINISHED)
        failed = sum(statuses[s] for s in FAILED)
        durations = [
            s.end - s.start
            for s in samples
            if s.status in FINISHED and s.start is not None and s.end is not None
        ]
        q = _quantiles(durations)
        rows.append(
            {
                "job": job,
                "runs": len(samples),
                "succeeded": statuses["SUCCESS"],
                "failed": failed,
                "canceled": sum(statuses[s] for s in CANCELED),
                "in_progress": len(samples) - finished,
                "failure_rate": failed / finished if finished else math.nan,
                "duration_p50_s": q["p50"],
                "duration_p95_s": q["p95"],
                "duration_max_s": q["max"],
            }
        )
    return rows


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def skip_reason_kind(reason: str) -> str:
    """A skip reason with its numbers and version names replaced, so that reasons of the
    same kind count together: '412 feedback events since … < 1000' → 'N feedback … < N'."""
    text = re.sub(r"\bv\d+\b", "vN", reason)
    return _NUMBER.sub("N", text).strip()


def sensor_health(ticks: Iterable[TickSample]) -> list[dict[str, Any]]:
    """Per sensor: ticks, how many fired (requested runs), skipped and failed, the
    p50/p95/max tick duration (seconds), and the most frequent kinds of skip reason."""
    by_sensor: dict[str, list[TickSample]] = {}
    for tick in ticks:
        by_sensor.setdefault(tick.sensor, []).append(tick)
    rows: list[dict[str, Any]] = []
    for sensor in sorted(by_sensor):
        samples = by_sensor[sensor]
        statuses = Counter(t.status for t in samples)
        durations = [t.end - t.start for t in samples if t.end is not None]
        reasons = Counter(skip_reason_kind(t.skip_reason) for t in samples if t.skip_reason)
        q = _quantiles(durations)
        rows.append(
            {
                "sensor": sensor,
                "ticks": len(samples),
                "fired": statuses["SUCCESS"],
                "runs_requested": sum(t.runs_requested for t in samples),
                "skipped": statuses["SKIPPED"],
                "failed": statuses["FAILURE"],
                "tick_p50_s": q["p50"],
                "tick_p95_s": q["p95"],
                "tick_max_s": q["max"],
                "top_skip_reasons": [
                    {"reason": r, "ticks": n} for r, n in reasons.most_common(TOP_SKIP_REASONS)
                ],
            }
        )
    return rows


@dataclass
class ApiScrape:
    """The API's cumulative request counters and latency histograms at one moment."""

    at: float
    requests: dict[str, dict[str, float]] = field(default_factory=dict)  # route -> status -> n
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # route -> le -> n

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "requests": self.requests,
            "buckets": {r: {str(k): v for k, v in b.items()} for r, b in self.buckets.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApiScrape:
        return cls(
            at=float(data["at"]),
            requests={r: dict(s) for r, s in data.get("requests", {}).items()},
            buckets={
                r: {float(k): float(v) for k, v in b.items()}
                for r, b in data.get("buckets", {}).items()
            },
        )


def parse_api_metrics(text: str, at: float) -> ApiScrape:
    """``ct_api_requests_total{route,status}`` and ``ct_api_request_duration_seconds``
    buckets out of the Prometheus text the API's ``/metrics`` answers; ValueError when
    the text is not Prometheus exposition format."""
    from prometheus_client.parser import text_string_to_metric_families

    scrape = ApiScrape(at=at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if sample.name == "ct_api_requests_total":
                status = sample.labels.get("status", "")
                routes = scrape.requests.setdefault(route, {})
                routes[status] = routes.get(status, 0.0) + sample.value
            elif sample.name == "ct_api_request_duration_seconds_bucket":
                le = float(sample.labels["le"])
                buckets = scrape.buckets.setdefault(route, {})
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return scrape


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket holding
    the q-th observation of cumulative ``buckets`` (upper bound → count); NaN if empty.
    An observation in the +Inf bucket reports the highest finite bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _minus(now: Mapping[Any, float], before: Mapping[Any, float] | None) -> dict[Any, float]:
    """Counter increase; a counter lower than before means the API restarted: count anew."""
    if before is None:
        return dict(now)
    if any(now.get(k, 0.0) < v for k, v in before.items()):
        return dict(now)
    return {k: v - before.get(k, 0.0) for k, v in now.items()}


def api_health(now: ApiScrape, previous: ApiScrape | None) -> list[dict[str, Any]]:
    """Per route since ``previous`` (or since the API started, when None): requests,
    request rate (per second, only with a previous scrape), 4xx and 5xx rates, and
    p50/p99 latency (ms) from the histogram."""
    since = previous if previous is not None and previous.at < now.at else None
    rows: list[dict[str, Any]] = []
    for route in sorted(set(now.requests) | set(now.buckets)):
        counts = _minus(now.requests.get(route, {}), since.requests.get(route) if since else None)
        buckets = _minus(now.buckets.get(route, {}), since.buckets.get(route) if since else None)
        total = sum(counts.values())
        client = sum(v for s, v in counts.items() if s.startswith("4"))
        server = sum(v for s, v in counts.items() if s.startswith("5"))
        rows.append(
            {
                "route": route,
                "requests": total,
                "requests_per_s": total / (now.at - since.at) if since else math.nan,
                "client_error_rate": client / total if total else math.nan,
                "server_error_rate": server / total if total else math.nan,
                "latency_p50_ms": histogram_quantile(0.5, buckets) * 1000,
                "latency_p99_ms": histogram_quantile(0.99, buckets) * 1000,
            }
        )
    return rows

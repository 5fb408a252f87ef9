"""Prometheus metrics of the API, correct with one worker or several.

With several uvicorn workers, each worker is its own process; ``ct-assets api``
then points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory under CT_HOME
before the workers start, every worker writes its samples there, and
``GET /metrics`` on any worker aggregates all of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class ApiMetrics:
    """The API's counters and histograms, on their own registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ct_api_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "ct_api_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.events_accepted = Counter(
            "ct_api_events_accepted", "Events made durable, by kind", ["kind"], registry=r
        )
        self.events_duplicate = Counter(
            "ct_api_events_duplicate",
            "Events acknowledged as duplicates of stored ones, by kind",
            ["kind"],
            registry=r,
        )
        self.events_rejected = Counter(
            "ct_api_events_rejected",
            "Records refused, by kind and reason code (a refused request counts its records)",
            ["kind", "reason"],
            registry=r,
        )
        self.write_seconds = Histogram(
            "ct_eventlog_write_seconds",
            "From handing a batch to the log to its durable acknowledgement (group commit)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.group_batches = Histogram(
            "ct_eventlog_group_commit_batches",
            "Batches committed together by one group commit (one fsync per file)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )

    def render(self) -> bytes:
        directory = os.environ.get(MULTIPROC_ENV)
        if directory and os.path.isdir(directory):
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)


def exported_metrics(directory: Path | None) -> bytes:
    """The Prometheus textfiles (``*.prom``) other parts of ct_assets export into
    ``directory`` (e.g. the feedback_loop_latency asset's gauges), concatenated in name
    order; a file that disappears while being read is left out."""
    if directory is None or not directory.is_dir():
        return b""
    parts: list[bytes] = []
    for path in sorted(directory.glob("*.prom")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        parts.append(data if data.endswith(b"\n") or not data else data + b"\n")
    return b"".join(parts)

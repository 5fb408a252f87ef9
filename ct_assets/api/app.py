"""The HTTP app: ingestion of feedback and logged predictions, health, metrics, OpenAPI.

Each worker process owns one :class:`EventLogWriter` and one
:class:`GroupCommitter`: concurrent requests are committed together (one fsync
per file per group) and each is answered 202 only once its batch is durable.
Several workers share the log safely: writers serialise on the log's lock and
learn each other's event ids before every commit, so a re-sent event_id is a
duplicate whichever worker receives it.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ct_assets.api.bodies import (
    Rejection,
    media_type_of,
    parse_batch,
    request_error,
)
from ct_assets.api.metrics import ApiMetrics
from ct_assets.api.openapi import openapi_document
from ct_assets.eventlog.committer import GroupCommitter, GroupStats
from ct_assets.eventlog.writer import EventLogWriter
from ct_assets.schema import EventKind, ReasonCode
from ct_assets.settings import Settings

INSECURE_ENV = "CT_API_INSECURE_NO_AUTH"
GIL_SWITCH_INTERVAL = 0.0002


@dataclass(frozen=True)
class ApiConfig:
    eventlog_dir: Path
    labeling_queue_path: Path
    segment_max_bytes: int
    max_event_bytes: int
    max_body_bytes: int
    max_skew: timedelta
    # None: no authentication (only ever allowed on a loopback address, see server.py)
    token: str | None

    @classmethod
    def from_settings(cls, settings: Settings, insecure_no_auth: bool = False) -> ApiConfig:
        if not settings.api_token and not insecure_no_auth:
            raise ValueError("CT_API_TOKEN is not set (or start with --insecure-no-auth)")
        return cls(
            eventlog_dir=settings.eventlog_dir,
            labeling_queue_path=settings.labeling_queue_path,
            segment_max_bytes=settings.segment_max_bytes,
            max_event_bytes=settings.max_event_bytes,
            max_body_bytes=settings.api_max_body_bytes,
            max_skew=timedelta(seconds=settings.max_future_skew_seconds),
            token=settings.api_token or None,
        )


class _State:
    def __init__(self, config: ApiConfig, metrics: ApiMetrics) -> None:
        self.writer = EventLogWriter(
            config.eventlog_dir, config.segment_max_bytes, config.max_event_bytes
        )
        self.writer.refresh()
        self.committer = GroupCommitter(self.writer, on_group=self._observe_group)
        self.metrics = metrics

    def _observe_group(self, stats: GroupStats) -> None:
        self.metrics.group_batches.observe(stats.batches)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def create_app(config: ApiConfig) -> Starlette:
    metrics = ApiMetrics()
    token = config.token.encode() if config.token else None
    holder: dict[str, _State] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The commit thread waits on fsync without the GIL; when fsync returns it must get
        # the GIL back from the busy event loop. The default 5 ms switch interval would
        # make every group commit wait that long, so hand the GIL over sooner.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        holder["state"] = _State(config, metrics)
        try:
            yield
        finally:
            holder["state"].committer.close()

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, supplied = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise request_error(400, ReasonCode.MALFORMED, "Content-Length is not a number")
            if int(declared) > config.max_body_bytes:
                raise _too_large(config.max_body_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise _too_large(config.max_body_bytes)
            chunks.append(chunk)
        return b"".join(chunks)

    def ingest_route(kind: EventKind, route: str) -> Callable[[Request], Awaitable[Response]]:
        async def ingest(request: Request) -> Response:
            started = time.perf_counter()
            try:
                if not authorized(request):
                    raise request_error(401, "unauthorized", "missing or wrong bearer token")
                media = media_type_of(request.headers.get("content-type"))
                if media is None:
                    raise request_error(
                        415,
                        "unsupported_media_type",
                        "Content-Type must be application/json or application/x-ndjson",
                    )
                body = await read_body(request)
                batch = parse_batch(body, media, kind, config.max_skew, config.max_event_bytes)
                state = holder["state"]
                written = time.perf_counter()
                result = await asyncio.wrap_future(state.committer.submit(batch))
                metrics.write_seconds.observe(time.perf_counter() - written)
                metrics.events_accepted.labels(kind).inc(result.accepted)
                metrics.events_duplicate.labels(kind).inc(result.duplicates)
                response = _json(
                    202, {"accepted": result.accepted, "duplicates": result.duplicates}
                )
            except Rejection as rejection:
                _count_rejected(metrics, kind, rejection)
                headers = {"WWW-Authenticate": "Bearer"} if rejection.status == 401 else None
                response = _json(rejection.status, rejection.body(), headers)
            metrics.requests.labels(route, str(response.status_code)).inc()
            metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
            return response

        return ingest

    async def labeling_queue(request: Request) -> Response:
        """The active-learning queue: the most uncertain recent predictions without feedback.

        Written by the ``labeling_queue`` asset; post labels back to /v1/feedback as
        explicit feedback with the item's prediction_id."""
        started = time.perf_counter()
        try:
            if not authorized(request):
                raise request_error(401, "unauthorized", "missing or wrong bearer token")
            raw_limit = request.query_params.get("limit", "100")
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 10_000:
                raise request_error(422, ReasonCode.SCHEMA, "limit must be an integer 1..10000")
            queue = read_labeling_queue(config.labeling_queue_path)
            items = queue["items"][: int(raw_limit)]
            response = _json(200, {**queue, "items": items, "count": len(items)})
        except Rejection as rejection:
            headers = {"WWW-Authenticate": "Bearer"} if rejection.status == 401 else None
            response = _json(rejection.status, rejection.body(), headers)
        metrics.requests.labels("/v1/labeling-queue", str(response.status_code)).inc()
        metrics.request_seconds.labels("/v1/labeling-queue").observe(time.perf_counter() - started)
        return response

    async def healthz(request: Request) -> Response:
        state = holder.get("state")
        alive = state is not None and state.committer.alive
        return _json(
            200 if alive else 503, {"status": "ok" if alive else "down", "pid": os.getpid()}
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    document = msgspec.json.encode(openapi_document(config.max_body_bytes))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/feedback", ingest_route("feedback", "/v1/feedback"), methods=["POST"]),
            Route(
                "/v1/predictions", ingest_route("prediction", "/v1/predictions"), methods=["POST"]
            ),
            Route("/v1/labeling-queue", labeling_queue, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def read_labeling_queue(path: Path) -> dict[str, Any]:
    """The queue the labeling_queue asset wrote last; empty before its first materialization."""
    try:
        queue: dict[str, Any] = msgspec.json.decode(path.read_bytes())
    except FileNotFoundError:
        return {"items": [], "generated_at": None, "method": None}
    return queue


def _too_large(limit: int) -> Rejection:
    return request_error(413, "body_too_large", f"the body is over the limit of {limit} bytes")


def _count_rejected(metrics: ApiMetrics, kind: EventKind, rejection: Rejection) -> None:
    """One count per refused record, under the reason of its first error."""
    first: dict[int, str] = {}
    for error in rejection.errors:
        first.setdefault(error.index, error.reason)
    for reason in first.values():
        metrics.events_rejected.labels(kind, reason).inc()


def create_app_from_env() -> Starlette:
    """The uvicorn factory used by ``ct-assets api`` workers: settings from the environment."""
    insecure = os.environ.get(INSECURE_ENV) == "1"
    return create_app(ApiConfig.from_settings(Settings.from_env(), insecure_no_auth=insecure))

"""The HTTP app: ingestion of feedback and logged predictions, online predictions
(``POST /v1/predict``, see :mod:`ct_assets.serving`), health, metrics, OpenAPI.

Each worker process owns one :class:`~ct_assets.api.state.ApiState`: with the
embedded event store, a log writer and a group committer (concurrent requests are
committed together, one fsync per file per group, and each is answered 202 only once
its batch is durable); with an event stream, a publisher (202 only once the stream
acknowledged every event; 503 ``stream_unavailable`` when it did not).
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ct_assets.api.bodies import (
    JSON,
    Rejection,
    media_type_of,
    parse_batch,
    request_error,
)
from ct_assets.api.body_limit import read_body
from ct_assets.api.metrics import ApiMetrics, exported_metrics
from ct_assets.api.openapi import openapi_document
from ct_assets.api.state import ApiState
from ct_assets.eventstream import StreamUnavailableError, open_stream
from ct_assets.schema import EventKind, ReasonCode
from ct_assets.serving import ServingConfig
from ct_assets.serving.bodies import PredictError, parse_request
from ct_assets.serving.inference_log import InferenceLogClosedError, LogFullError
from ct_assets.serving.predict import (
    DUPLICATE,
    LOG_FULL,
    NO_MODEL,
    SHUTTING_DOWN,
    check_features,
    reused_ids,
    serve,
)
from ct_assets.settings import Settings

GIL_SWITCH_INTERVAL = 0.0002
# How long startup waits for the first registry poll (loading the champion) before it
# serves anyway: /v1/predict answers 503 no_model until the champion is loaded.
MODEL_STARTUP_WAIT_SECONDS = 60.0
STREAM_UNAVAILABLE = "stream_unavailable"


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
    # The model registry /v1/predict serves from ("": no registry, /v1/predict answers 503).
    tracking_uri: str = ""
    model_name: str = "ct_model"
    artifact_root: str = ""
    serving: ServingConfig = field(default_factory=ServingConfig)
    # Prometheus textfiles appended to /metrics (None: none).
    exports_dir: Path | None = None
    # Accepted events go to this stream (CT_EVENT_STORE=nats) instead of the log (None).
    stream_settings: Settings | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        insecure_no_auth: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> ApiConfig:
        """The API's configuration; the ``CT_SERVING_*`` variables come from ``environ``
        (default ``os.environ``)."""
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
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            artifact_root=settings.artifact_root,
            serving=ServingConfig.from_env(environ),
            exports_dir=settings.metrics_dir,
            stream_settings=settings if settings.event_store != "embedded" else None,
        )


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
    holder: dict[str, ApiState] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The commit thread waits on fsync without the GIL; when fsync returns it must get
        # the GIL back from the busy event loop. The default 5 ms switch interval would
        # make every group commit wait that long, so hand the GIL over sooner.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        stream = None
        if config.stream_settings is not None:
            stream = await open_stream(config.stream_settings)
        state = ApiState(config, metrics, stream)
        holder["state"] = state
        if config.tracking_uri:
            state.models.start()
            await asyncio.to_thread(state.models.wait_ready, MODEL_STARTUP_WAIT_SECONDS)
        try:
            yield
        finally:
            await asyncio.to_thread(state.close)
            if stream is not None:
                await stream.close()

    def authorized(request: Request) -> bool:
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, supplied = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token)

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
                body = await read_body(request, config.max_body_bytes)
                batch = parse_batch(body, media, kind, config.max_skew, config.max_event_bytes)
                state = holder["state"]
                written = time.perf_counter()
                try:
                    result = await state.store(batch)
                except StreamUnavailableError as exc:
                    raise request_error(503, STREAM_UNAVAILABLE, str(exc)) from None
                metrics.write_seconds.observe(time.perf_counter() - written)
                metrics.events_accepted.labels(kind).inc(result.accepted)
                metrics.events_duplicate.labels(kind).inc(result.duplicates)
                response = _json(
                    202, {"accepted": result.accepted, "duplicates": result.duplicates}
                )
            except Rejection as rejection:
                _count_rejected(metrics, kind, rejection)
                response = _json(rejection.status, rejection.body(), _headers(rejection))
            metrics.requests.labels(route, str(response.status_code)).inc()
            metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
            return response

        return ingest

    serving = config.serving

    async def predict(request: Request) -> Response:
        """Score instances with the champion (or the challenger, by the deployment mode)."""
        started = time.perf_counter()
        try:
            if not authorized(request):
                raise request_error(401, "unauthorized", "missing or wrong bearer token")
            if media_type_of(request.headers.get("content-type")) != JSON:
                raise request_error(
                    415, "unsupported_media_type", "Content-Type must be application/json"
                )
            body = await read_body(request, config.max_body_bytes)
            instances = parse_request(body, serving.max_instances)
            state = holder["state"]
            log = state.inference_log
            own_ids = log is not None and any(i.prediction_id is not None for i in instances)
            writer = state.writer
            if own_ids and writer is not None:
                # learn the ids other workers committed (the log's index of event ids, read
                # from the journal's new records only; never waits for the log's lock)
                await asyncio.to_thread(writer.learn_committed)
            # From here to the queue there is no await: requests take their snapshot and
            # queue their records in the same order, so the log shows a swap at one point;
            # and no other request of this worker can queue a reused id in between.
            snapshot = state.models.snapshot()
            if snapshot.champion is None:
                raise PredictError.request(
                    503,
                    NO_MODEL,
                    f"no champion of {config.model_name!r} is loaded yet "
                    "(none is registered, or it is still loading)",
                )
            errors = check_features(instances, snapshot)
            if errors:
                raise PredictError(422, errors, "invalid")
            if own_ids and log is not None:
                # with a stream, ids already consumed into the log are dropped there
                reused = reused_ids(
                    instances,
                    lambda e: log.holds(e) or (writer is not None and writer.knows(e)),
                )
                if reused:
                    raise PredictError(409, reused, DUPLICATE)
            served = serve(
                snapshot,
                instances,
                model_name=config.model_name,
                now=datetime.now(UTC),
                log=log is not None,
                max_event_bytes=config.max_event_bytes,
            )
            if log is not None and served.records:
                if len(served.records) > log.capacity:
                    raise request_error(
                        422,
                        ReasonCode.TOO_LARGE,
                        f"the request makes {len(served.records)} log records; the inference "
                        f"log queue holds {log.capacity} (CT_SERVING_LOG_QUEUE)",
                    )
                if not log.try_put(served.records):
                    await log.put(served.records, serving.log_timeout_seconds)
            response = _json(200, {"predictions": served.predictions})
        except PredictError as exc:
            response = _json(
                exc.status,
                Rejection(exc.status, exc.errors, exc.reason).body(),
                {"Retry-After": "1"} if exc.status == 503 else None,
            )
        except LogFullError as exc:
            refused = request_error(503, LOG_FULL, str(exc))
            response = _json(503, refused.body(), {"Retry-After": "1"})
        except InferenceLogClosedError as exc:
            refused = request_error(503, SHUTTING_DOWN, str(exc))
            response = _json(503, refused.body(), {"Retry-After": "1"})
        except Rejection as rejection:
            headers = {"WWW-Authenticate": "Bearer"} if rejection.status == 401 else None
            response = _json(rejection.status, rejection.body(), headers)
        metrics.requests.labels("/v1/predict", str(response.status_code)).inc()
        metrics.request_seconds.labels("/v1/predict").observe(time.perf_counter() - started)
        return response

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
        """Healthy or not to anyone; the worker's details only with a valid token (or
        when the API runs without authentication)."""
        state = holder.get("state")
        alive = state is not None and state.alive
        body: dict[str, Any] = {"status": "ok" if alive else "down"}
        if authorized(request):
            body["pid"] = os.getpid()
            if state is not None:
                # what /v1/predict serves in this worker (never part of being alive)
                body["serving"] = state.serving_status()
                body["event_store"] = state.event_store_status()
        return _json(200 if alive else 503, body)

    async def metrics_endpoint(request: Request) -> Response:
        body = metrics.render() + exported_metrics(config.exports_dir)
        return Response(body, media_type=metrics.content_type)

    document = msgspec.json.encode(
        openapi_document(config.max_body_bytes, config.serving.max_instances)
    )

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/feedback", ingest_route("feedback", "/v1/feedback"), methods=["POST"]),
            Route(
                "/v1/predictions", ingest_route("prediction", "/v1/predictions"), methods=["POST"]
            ),
            Route("/v1/predict", predict, methods=["POST"]),
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


def _headers(rejection: Rejection) -> dict[str, str] | None:
    if rejection.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    if rejection.status == 503:
        return {"Retry-After": "1"}
    return None


def _count_rejected(metrics: ApiMetrics, kind: EventKind, rejection: Rejection) -> None:
    """One count per refused record, under the reason of its first error."""
    first: dict[int, str] = {}
    for error in rejection.errors:
        first.setdefault(error.index, error.reason)
    for reason in first.values():
        metrics.events_rejected.labels(kind, reason).inc()

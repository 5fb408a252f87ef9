"""The event stream on NATS JetStream (``nats-py``).

One stream (``CT_NATS_STREAM``, default ``CT_EVENTS``) with a subject per kind,
``<stream>.feedback`` and ``<stream>.prediction``; each message is one event's JSON line
with the header ``Nats-Msg-Id: <event_id>``, so a re-sent event inside the stream's
duplicate window is acknowledged and not stored again (past it, the log's event id
index drops it at consumption). The stream is file-backed with work-queue retention:
a message stays until the log's consumer acknowledged it, however long that takes, and
is then removed (the log keeps it for good).

A batch is published message by message, pipelined (``publish_async``), and
acknowledged when every message is. JetStream's atomic batch publish (nats-server
2.12+) is not used: it holds at most 1,000 messages per batch, fewer than one API
request may carry; a batch acknowledged in part is answered 503 and completed by the
client's retry, which the message ids make idempotent.

Durability is the server's: a single server fsyncs every ``sync_interval`` (2 minutes by
default, nats-server#7564), so run R3 streams (``CT_NATS_REPLICAS=3``) in production and
``sync_interval: always`` where one server must not lose an acknowledged event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api

from ct_assets.eventlog.writer import AppendResult, PreparedBatch
from ct_assets.eventstream import Delivery, StreamUnavailableError
from ct_assets.uris import redact_uri

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

    from ct_assets.schema import EventKind
    from ct_assets.settings import Settings

_LOG = logging.getLogger(__name__)
KINDS: tuple[EventKind, ...] = ("feedback", "prediction")
MSG_ID = "Nats-Msg-Id"
#: How long JetStream remembers message ids for dedup (its default).
DUPLICATE_WINDOW_SECONDS = 120.0
#: Deliveries the consumer may hold unacknowledged (bounds one fetch).
MAX_ACK_PENDING = 20_000


def subject(stream: str, kind: EventKind) -> str:
    return f"{stream}.{kind}"


def servers(url: str) -> list[str]:
    """The seed server (one URL, see ``CT_NATS_URL``): the client learns the cluster from it."""
    return [url.strip()]


async def _connect(urls: list[str], timeout: float) -> Client:
    """A client that reconnects for ever once connected; :class:`StreamUnavailableError`
    when no server answers within ``timeout``."""
    client = Client()

    async def quiet(exc: Exception) -> None:  # reconnection attempts: logged, not raised
        _LOG.debug("nats: %s", exc)

    try:
        await asyncio.wait_for(
            client.connect(
                servers=urls,
                connect_timeout=max(1, int(timeout)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                error_cb=quiet,
            ),
            timeout,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await _close_quietly(client)
        shown = ", ".join(redact_uri(u) for u in urls)
        raise StreamUnavailableError(f"no NATS server answered at {shown}: {exc!r}") from None
    return client


async def _close_quietly(client: Client) -> None:
    try:
        await client.close()
    except Exception:  # closing a client that never connected
        _LOG.debug("nats: close failed", exc_info=True)


async def ensure_stream(js: JetStreamContext, name: str, replicas: int) -> None:
    """Create the stream if it does not exist (an existing one is left as configured)."""
    try:
        await js.stream_info(name)
        return
    except nats.js.errors.NotFoundError:
        pass
    config = api.StreamConfig(
        name=name,
        subjects=[subject(name, kind) for kind in KINDS],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.stream_info(name)  # created meanwhile by another process: fine


class NatsEventStream:
    """The API's publisher (one per worker process, on its event loop)."""

    def __init__(self, url: str, stream: str, replicas: int = 1, timeout: float = 5.0) -> None:
        self.urls = servers(url)
        self.stream = stream
        self.replicas = replicas
        self.timeout = timeout
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> NatsEventStream:
        return cls(
            settings.nats_url,
            settings.nats_stream,
            settings.nats_replicas,
            settings.nats_timeout_seconds,
        )

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def _context(self) -> JetStreamContext:
        if self._js is not None and self.connected:
            return self._js
        async with self._lock:
            if self._client is None:
                client = await _connect(self.urls, self.timeout)
                js = client.jetstream(timeout=self.timeout)
                try:
                    await ensure_stream(js, self.stream, self.replicas)
                except (TimeoutError, nats.errors.Error) as exc:
                    await _close_quietly(client)
                    raise StreamUnavailableError(f"stream {self.stream}: {exc!r}") from None
                self._client, self._js = client, js
            if not self.connected or self._js is None:
                # connected once, reconnecting now: fail fast rather than buffer
                raise StreamUnavailableError("the NATS connection is down (reconnecting)")
            return self._js

    async def publish(self, batch: PreparedBatch) -> AppendResult:
        js = await self._context()
        futures: list[asyncio.Future[api.PubAck]] = []
        try:
            async with asyncio.timeout(self.timeout):
                for event_id, line, is_prediction in zip(
                    batch.ids, batch.lines, batch.is_prediction, strict=True
                ):
                    kind: EventKind = "prediction" if is_prediction else "feedback"
                    futures.append(
                        await js.publish_async(
                            subject(self.stream, kind),
                            line,
                            stream=self.stream,
                            headers={MSG_ID: event_id},
                        )
                    )
                acks = await asyncio.gather(*futures)
        except (TimeoutError, nats.errors.Error) as exc:
            acknowledged = sum(
                1 for f in futures if f.done() and not f.cancelled() and f.exception() is None
            )
            for future in futures:
                future.cancel()
            raise StreamUnavailableError(
                f"the stream acknowledged {acknowledged} of {len(batch)} events within "
                f"{self.timeout:g} s ({type(exc).__name__}); nothing is acknowledged"
            ) from None
        duplicates = sum(1 for ack in acks if ack.duplicate)
        return AppendResult(len(batch) - duplicates, duplicates, [])

    async def close(self) -> None:
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.drain(), self.timeout)
            except (TimeoutError, nats.errors.Error):
                await _close_quietly(self._client)
            self._client = self._js = None


class NatsEventSource:
    """The durable pull consumer the log's materializer reads (every kind, in order)."""

    def __init__(self, client: Client, js: JetStreamContext, sub: Any, stream: str) -> None:
        self._client = client
        self._js = js
        self._sub = sub
        self.stream = stream

    @classmethod
    async def connect(cls, settings: Settings, consumer: str) -> NatsEventSource:
        timeout = settings.nats_timeout_seconds
        client = await _connect(servers(settings.nats_url), timeout)
        js = client.jetstream(timeout=timeout)
        stream = settings.nats_stream
        try:
            await ensure_stream(js, stream, settings.nats_replicas)
            sub = await js.pull_subscribe(
                f"{stream}.>",
                durable=consumer,
                stream=stream,
                config=api.ConsumerConfig(
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=settings.nats_ack_wait_seconds,
                    max_ack_pending=MAX_ACK_PENDING,
                    deliver_policy=api.DeliverPolicy.ALL,
                ),
            )
        except (TimeoutError, nats.errors.Error) as exc:
            await _close_quietly(client)
            raise StreamUnavailableError(f"stream {stream}, consumer {consumer}: {exc!r}") from None
        return cls(client, js, sub, stream)

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        try:
            messages: list[Msg] = await self._sub.fetch(
                min(max_messages, MAX_ACK_PENDING), timeout=timeout
            )
        except (TimeoutError, nats.errors.TimeoutError):  # nothing came in time
            return []
        deliveries = []
        for msg in messages:
            kind = msg.subject.rpartition(".")[2]
            if kind not in KINDS:
                await msg.term()
                _LOG.error("dropped a message on %s: not an event subject", msg.subject)
                continue
            deliveries.append(Delivery(kind, msg.data, msg))  # type: ignore[arg-type]
        return deliveries

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            await delivery.handle.ack()
        await self._client.flush()

    async def reject(self, delivery: Delivery, reason: str) -> None:
        _LOG.error("dropped a message on %s: %s", delivery.handle.subject, reason)
        await delivery.handle.term()

    async def pending(self) -> int:
        info = await self._sub.consumer_info()
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def close(self) -> None:
        await _close_quietly(self._client)

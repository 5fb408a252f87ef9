"""The event stream: accepted events on an existing engine instead of the embedded log.

With ``CT_EVENT_STORE=nats`` the API publishes each validated batch to a stream and
answers 202 only after the stream acknowledged every event of it; a durable consumer
(``ct-assets stream-consume``, :mod:`.consumer`) then materializes the stream into the
embedded log, which every asset reads as before.

The seam is two small protocols: :class:`EventStream` (the API's side: publish a
prepared batch, acknowledged or :class:`StreamUnavailableError`) and
:class:`EventSource` (the consumer's side: fetch deliveries, acknowledge them after the
log commit is durable). A backend is one module implementing both (NATS JetStream:
:mod:`.nats`); :func:`open_stream` and :func:`open_source` pick it by ``CT_EVENT_STORE``.

Guarantees, whatever the backend:

* a batch is acknowledged (202) only when every event in it is stored by the stream;
  a batch the stream did not wholly acknowledge gets a 503 and may be partly stored:
  the client's retry completes it, and re-sent event ids are never stored twice
  (the stream's own dedup window, then the log's event id index at consumption);
* a delivery is acknowledged to the stream only after the log commit holding it is
  fsynced: a consumer killed in between gets it again, and the log's event id index
  makes that a no-op, so each event lands in the log exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ct_assets.uris import redact_uri

if TYPE_CHECKING:
    from ct_assets.eventlog.writer import AppendResult, PreparedBatch
    from ct_assets.schema import EventKind
    from ct_assets.settings import Settings

__all__ = [
    "Delivery",
    "EventSource",
    "EventStream",
    "StreamUnavailableError",
    "event_store_backend",
    "open_source",
    "open_stream",
]

#: The durable consumer that materializes the stream into the embedded log.
DEFAULT_CONSUMER = "ct-eventlog"


class StreamUnavailableError(RuntimeError):
    """The stream is unreachable or did not acknowledge in time: nothing is acknowledged."""


@dataclass(frozen=True)
class Delivery:
    """One message taken from the stream: the event's JSON line, its kind, and the
    backend's handle to acknowledge it."""

    kind: EventKind
    data: bytes
    handle: Any


class EventStream(Protocol):
    """The API's side: publish validated batches."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, batch: PreparedBatch) -> AppendResult:
        """Returns once the stream acknowledged every event of ``batch`` (``duplicates``:
        those it already held); :class:`StreamUnavailableError` otherwise."""
        ...

    async def close(self) -> None: ...


class EventSource(Protocol):
    """The consumer's side: a durable subscription to every kind."""

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; an empty list when none came in ``timeout``."""
        ...

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge ``deliveries`` (they are never delivered again once this returns)."""
        ...

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Never deliver ``delivery`` again: it is not an event (logged with ``reason``)."""
        ...

    async def pending(self) -> int:
        """Messages not yet acknowledged by this subscription (delivered or not)."""
        ...

    async def close(self) -> None: ...


def event_store_backend(settings: Settings) -> dict[str, Any]:
    """Where accepted events go (``status --json`` ``backends.event_store``): the kind,
    its location (credentials redacted) and the embedded log every asset reads."""
    log = str(settings.eventlog_dir)
    if settings.event_store == "embedded":
        return {"kind": "embedded", "location": log}
    return {
        "kind": settings.event_store,
        "location": redact_uri(settings.nats_url),
        "stream": settings.nats_stream,
        "log": log,
    }


async def open_stream(settings: Settings) -> EventStream:
    """The configured stream's publishing side (connecting lazily: a stream that is down
    makes publishes fail with :class:`StreamUnavailableError`, not this)."""
    if settings.event_store == "nats":
        from ct_assets.eventstream.nats import NatsEventStream

        return NatsEventStream.from_settings(settings)
    raise ValueError(f"CT_EVENT_STORE={settings.event_store!r} has no stream to publish to")


async def open_source(settings: Settings, consumer: str = DEFAULT_CONSUMER) -> EventSource:
    """The configured stream's durable consumer ``consumer`` (created if missing)."""
    if settings.event_store == "nats":
        from ct_assets.eventstream.nats import NatsEventSource

        return await NatsEventSource.connect(settings, consumer)
    raise ValueError(f"CT_EVENT_STORE={settings.event_store!r} has no stream to consume")

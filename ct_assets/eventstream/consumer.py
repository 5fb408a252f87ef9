"""The stream's durable consumer: deliveries into the embedded log, exactly once.

Each round fetches up to ``batch`` deliveries, decodes them into one prepared batch,
commits it through :meth:`EventLogWriter.commit` (durable, fsynced, and deduplicated
by event id against the log's persistent id index) and only then acknowledges the
deliveries. A consumer killed between the commit and the acknowledgement gets the
same deliveries again; the id index makes their second commit a no-op. So every
event acknowledged by the stream ends up in the log once, and every asset reads it
as if the API had written it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from ct_assets.eventlog.writer import EventLogWriter, PreparedBatch, prepare_batch
from ct_assets.eventstream import DEFAULT_CONSUMER, Delivery, EventSource, open_source
from ct_assets.schema import EVENT_TYPES, Event

if TYPE_CHECKING:
    from ct_assets.settings import Settings

_LOG = logging.getLogger(__name__)
_DECODERS = {kind: msgspec.json.Decoder(cls) for kind, cls in EVENT_TYPES.items()}

#: Deliveries taken per round (one log commit, one fsync per touched file).
DEFAULT_BATCH = 2_000


@dataclass
class ConsumeStats:
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    commits: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def decode(deliveries: list[Delivery], max_event_bytes: int) -> tuple[PreparedBatch, list[int]]:
    """The deliveries that hold events, as one batch (their JSON kept byte for byte), and
    the indexes of those that do not."""
    events: list[Event] = []
    lines: list[bytes] = []
    bad: list[int] = []
    for index, delivery in enumerate(deliveries):
        if len(delivery.data) > max_event_bytes:
            bad.append(index)
            continue
        try:
            event = _DECODERS[delivery.kind].decode(delivery.data)
        except msgspec.DecodeError:
            bad.append(index)
            continue
        events.append(event)
        lines.append(delivery.data)
    return prepare_batch(events, max_event_bytes, lines), bad


async def consume(
    source: EventSource,
    writer: EventLogWriter,
    *,
    batch: int = DEFAULT_BATCH,
    fetch_timeout: float = 1.0,
    until_idle: bool = False,
    stop: asyncio.Event | None = None,
    after_commit: Callable[[int], None] | None = None,
) -> ConsumeStats:
    """Materialize ``source`` into ``writer``'s log until ``stop`` is set (or, with
    ``until_idle``, until the subscription has nothing pending). ``after_commit`` is
    called with the number of deliveries after each durable commit, before their
    acknowledgement."""
    stats = ConsumeStats()
    started = time.perf_counter()
    await asyncio.to_thread(writer.refresh)
    while stop is None or not stop.is_set():
        deliveries = await source.fetch(batch, fetch_timeout)
        if not deliveries:
            if until_idle and await source.pending() == 0:
                break
            continue
        stats.fetched += len(deliveries)
        prepared, bad = decode(deliveries, writer.max_event_bytes)
        for index in bad:
            await source.reject(deliveries[index], "not a valid schema-v1 event")
        stats.rejected += len(bad)
        if len(prepared):
            # durable (fsynced) when it returns; re-delivered ids are acknowledged duplicates
            [result] = await asyncio.to_thread(writer.commit, [prepared])
            stats.stored += result.accepted
            stats.duplicates += result.duplicates
            stats.commits += 1
        if after_commit is not None:
            after_commit(len(deliveries))
        rejected = set(bad)
        await source.ack([d for i, d in enumerate(deliveries) if i not in rejected])
    stats.seconds = time.perf_counter() - started
    return stats


async def run_consumer(
    settings: Settings,
    *,
    consumer: str = DEFAULT_CONSUMER,
    batch: int = DEFAULT_BATCH,
    until_idle: bool = False,
    after_commit: Callable[[int], None] | None = None,
) -> ConsumeStats:
    """``ct-assets stream-consume``: the configured stream into ``CT_HOME``'s log until
    SIGTERM or SIGINT (or, with ``until_idle``, until nothing is pending)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    source = await open_source(settings, consumer)
    writer = EventLogWriter(
        settings.eventlog_dir, settings.segment_max_bytes, settings.max_event_bytes
    )
    try:
        return await consume(
            source, writer, batch=batch, until_idle=until_idle, stop=stop, after_commit=after_commit
        )
    finally:
        await source.close()
        await asyncio.to_thread(writer.close)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

"""Group commit: many concurrent callers, one fsync per group.

Callers hand a prepared batch to :meth:`GroupCommitter.submit` and wait on the
returned future. One thread takes every batch that arrived while the previous
group was being written and commits them together through
:meth:`EventLogWriter.commit`: each caller is acknowledged only when its batch
is durable, but the cost of the fsyncs is shared by the whole group, so
durability does not cost throughput under concurrency.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from ct_assets.eventlog.writer import AppendResult, EventLogWriter, PreparedBatch

# Upper bound of events in one group: keeps a group's frame (and its latency) bounded.
DEFAULT_MAX_GROUP_EVENTS = 50_000


@dataclass(frozen=True)
class GroupStats:
    batches: int
    events: int
    seconds: float


class CommitterClosedError(RuntimeError):
    """The committer was closed; nothing more is accepted."""


_STOP = object()
_LOG = logging.getLogger(__name__)


class GroupCommitter:
    """Commits batches from many threads (or an event loop) in groups, on one thread."""

    def __init__(
        self,
        writer: EventLogWriter,
        max_group_events: int = DEFAULT_MAX_GROUP_EVENTS,
        on_group: Callable[[GroupStats], None] | None = None,
    ) -> None:
        self.writer = writer
        self.max_group_events = max_group_events
        self._on_group = on_group
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ct-group-commit", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return not self._closed and self._thread.is_alive()

    def submit(self, batch: PreparedBatch) -> Future[AppendResult]:
        future: Future[AppendResult] = Future()
        with self._lock:
            if self._closed:
                raise CommitterClosedError("the event log committer is closed")
            self._queue.put((batch, future))
        return future

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit what was submitted, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                return
            group: list[tuple[PreparedBatch, Future[AppendResult]]] = [item]  # type: ignore[list-item]
            events = len(group[0][0])
            while events < self.max_group_events:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                group.append(more)  # type: ignore[arg-type]
                events += len(group[-1][0])
            self._commit(group, events)

    def _commit(self, group: list[tuple[PreparedBatch, Future[AppendResult]]], events: int) -> None:
        live = [(batch, future) for batch, future in group if future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        try:
            results = self.writer.commit([batch for batch, _ in live])
        except BaseException as exc:  # every waiter learns the commit failed
            for _, future in live:
                future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)
        if self._on_group is not None:
            try:
                self._on_group(GroupStats(len(live), events, time.perf_counter() - started))
            except Exception:  # an observer must never stop commits
                _LOG.exception("group commit observer failed")

"""The inference log: every served prediction (and shadow score) as a prediction event.

``POST /v1/predict`` hands the prediction events of a request to :meth:`InferenceLog.put`
and answers; a background thread drains the queue into the event log, one commit per
drained batch (through the API's :class:`~ct_assets.eventlog.committer.GroupCommitter`,
so a drained batch shares its fsync with concurrent ingestion requests), and waits for
each commit before draining the next, so the log holds the records in the order they
were queued. After the first record arrives the writer lingers ``LINGER_SECONDS`` (5 ms)
so that sequential requests share a commit instead of paying one fsync each.

Durability guarantee:

* a prediction is answered **before** its log record is durable: the record is queued in
  memory, and durable (fsynced, committed) shortly after: typically within the 5 ms
  linger plus one fsync, longer while the disk or the log's lock is slow;
* the queue holds at most ``capacity`` records (``CT_SERVING_LOG_QUEUE``, default
  10,000) that are not yet durable, counting those being committed: a crash (SIGKILL,
  power loss) loses at most that many answered predictions' records, never more;
* a request is never answered without its records being queued: when the queue is full
  the request waits (up to ``CT_SERVING_LOG_TIMEOUT_SECONDS``) for room, in arrival
  order, and is answered 503 (``log_full``) if none was made; nothing is dropped
  silently, and a refused request has nothing in the log;
* a commit that fails (a full disk, a damaged log) is retried with backoff, keeping its
  records queued (so requests get 503 rather than being answered unlogged);
* :meth:`InferenceLog.close` (the API's shutdown) writes everything queued before it
  returns; records still unwritten when its timeout expires are reported in the log.

Records of one request are queued together (all or none) and stay together in order:
within one worker the log order is the order in which requests took their model snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from ct_assets.eventlog.writer import AppendResult, PreparedBatch

_LOG = logging.getLogger(__name__)

#: At most this many records in one commit.
MAX_COMMIT_RECORDS = 5_000
#: How long the writer waits after the first queued record before it commits.
LINGER_SECONDS = 0.005
_RETRY_FIRST, _RETRY_MAX = 0.05, 5.0

Submit = Callable[[PreparedBatch], Future[AppendResult]]


@dataclass(frozen=True)
class LogRecord:
    """One prediction event, encoded: its id, its JSON line and its UTC date."""

    event_id: str
    line: bytes
    date: str


class LogFullError(RuntimeError):
    """No room was made in the queue within the timeout: the request must be refused."""


class InferenceLogClosedError(RuntimeError):
    """The log is shutting down; nothing more is accepted."""


@dataclass(eq=False)
class _Waiter:
    records: Sequence[LogRecord]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    admitted: bool = False
    refused: str | None = None


@dataclass
class LogStats:
    queued: int = 0  # records accepted into the queue
    written: int = 0  # records committed
    commits: int = 0
    refused_requests: int = 0
    failed_commits: int = 0


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class InferenceLog:
    """A bounded queue of prediction records, written to the event log by one thread."""

    def __init__(self, submit: Submit, capacity: int, name: str = "ct-inference-log") -> None:
        if capacity < 1:
            raise ValueError("the inference log queue needs room for at least one record")
        self.capacity = capacity
        self._submit = submit
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._items: deque[LogRecord] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._held = 0  # queued + being committed: not yet durable
        self._held_ids: set[str] = set()  # their event ids
        self._closing = False
        self.stats = LogStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- producers (the event loop) --------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records not yet durable (queued or being committed)."""
        return self._held

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    def holds(self, event_id: str) -> bool:
        """Whether a record with this event id is queued, waiting for room, or being
        committed (not yet in the event log's index)."""
        with self._lock:
            return event_id in self._held_ids or any(
                r.event_id == event_id for w in self._waiters for r in w.records
            )

    def try_put(self, records: Sequence[LogRecord]) -> bool:
        """Queue the records now if there is room and nobody is waiting; else False."""
        with self._lock:
            self._check_open(records)
            if self._waiters or self._held + len(records) > self.capacity:
                return False
            self._admit(records)
            return True

    async def put(self, records: Sequence[LogRecord], timeout: float) -> None:
        """Queue the records (all or none), waiting up to ``timeout`` s for room.

        Raises :class:`LogFullError` when no room was made in time,
        :class:`InferenceLogClosedError` when the log is closing."""
        if not records:
            return
        with self._lock:
            self._check_open(records)
            if not self._waiters and self._held + len(records) <= self.capacity:
                self._admit(records)
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(records, loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    self._admit_waiters()
            raise
        with self._lock:
            if waiter.admitted:
                return
            if waiter.refused is not None:
                raise InferenceLogClosedError(waiter.refused)
            self._waiters.remove(waiter)
            self.stats.refused_requests += 1
            self._admit_waiters()  # the next waiter may fit now
            raise LogFullError(
                f"the inference log is full ({self._held} of {self.capacity} records not yet "
                f"written to the event log); no room was made within {timeout:g}s"
            )

    def _check_open(self, records: Sequence[LogRecord]) -> None:
        if self._closing:
            raise InferenceLogClosedError("the inference log is shutting down")
        if len(records) > self.capacity:
            raise ValueError(
                f"{len(records)} records can never fit a queue of {self.capacity} records"
            )

    def _admit(self, records: Sequence[LogRecord]) -> None:
        """With the lock held: queue the records and wake the writer."""
        self._items.extend(records)
        self._held_ids.update(r.event_id for r in records)
        self._held += len(records)
        self.stats.queued += len(records)
        self._ready.notify()

    def _admit_waiters(self) -> None:
        """With the lock held: queue waiting requests, first come first served, while
        they fit; each is woken on its own event loop."""
        while self._waiters and self._held + len(self._waiters[0].records) <= self.capacity:
            waiter = self._waiters.popleft()
            self._admit(waiter.records)
            waiter.admitted = True
            waiter.loop.call_soon_threadsafe(_wake, waiter.future)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._items and not self._closing:
                    self._ready.wait()
                if not self._items:
                    return  # closing, and everything is written
                linger = not self._closing and not self._waiters
            if linger and LINGER_SECONDS > 0:
                # a moment for more records to arrive, so that one commit (one fsync)
                # takes many of them rather than one each; not when requests are waiting
                time.sleep(LINGER_SECONDS)
            with self._lock:
                take = min(len(self._items), MAX_COMMIT_RECORDS)
                batch = [self._items.popleft() for _ in range(take)]
            self._commit(batch)
            with self._lock:
                # committed: the writer's index knows them now
                self._held_ids.difference_update(r.event_id for r in batch)
                self._held -= len(batch)
                self.stats.written += len(batch)
                self.stats.commits += 1
                self._admit_waiters()
                if self._held == 0:
                    self._drained.notify_all()

    def _commit(self, batch: list[LogRecord]) -> None:
        prepared = PreparedBatch(
            ids=[r.event_id for r in batch],
            lines=[r.line for r in batch],
            is_prediction=[True] * len(batch),
            dates=[r.date for r in batch],
        )
        delay = _RETRY_FIRST
        while True:
            try:
                self._submit(prepared).result()
                return
            except Exception:
                # keep the records (and their room in the queue): requests get 503s while
                # the log cannot be written, rather than answers that are never logged
                self.stats.failed_commits += 1
                _LOG.exception("inference log commit of %d records failed; retrying", len(batch))
                if self._closing and delay >= _RETRY_MAX:
                    _LOG.error("inference log: giving up on %d records at shutdown", len(batch))
                    return
                time.sleep(delay)
                delay = min(_RETRY_MAX, delay * 2)

    # -- flushing and shutdown -------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is durable (or ``timeout``); True if it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._held > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._drained.wait(remaining)
            return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Refuse new records, write everything queued, stop the thread."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            while self._waiters:  # requests still waiting for room are refused
                waiter = self._waiters.popleft()
                waiter.refused = "the inference log is shutting down"
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            self._ready.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _LOG.error(
                "inference log: %d records not yet written after %ss at shutdown",
                self._held,
                timeout,
            )

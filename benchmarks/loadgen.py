"""A small HTTP/1.1 load generator: keep-alive connections, pre-built bodies, raw sockets.

Cheap enough per request (no HTTP client library) that on a 2-core machine the
server, not the client, is what a benchmark measures.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    requests: int = 0
    events: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_request(
    path: str, body: bytes, content_type: str, host: str, token: str | None = None
) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{auth}\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str,
    port: int,
    make: Callable[[int], tuple[bytes, int]],
    start: int,
    step: int,
    deadline: float,
    result: LoadResult,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = start
    try:
        while time.perf_counter() < deadline:
            raw, events = make(i)
            i += step
            sent = time.perf_counter()
            writer.write(raw)
            status = await _read_response(reader)
            result.latencies.append(time.perf_counter() - sent)
            result.statuses[status] += 1
            result.requests += 1
            if status == 202:
                result.events += events
    finally:
        writer.close()


def run_load(
    host: str,
    port: int,
    make: Callable[[int], tuple[bytes, int]],
    connections: int,
    seconds: float,
) -> LoadResult:
    """Send ``make(i)`` (raw request bytes, events in it) for i = 0, 1, ... over keep-alive
    connections until ``seconds`` have passed."""

    async def main() -> LoadResult:
        result = LoadResult()
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(
            *(
                _connection(host, port, make, c, connections, deadline, result)
                for c in range(connections)
            )
        )
        result.seconds = time.perf_counter() - started
        return result

    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:
        return asyncio.run(main())

"""Reading a request body under a size limit, so that a refusal reaches the client.

A client that sends its whole body before reading the answer (no ``Expect:
100-continue``; Python's urllib, curl with small bodies, most HTTP libraries) and
asks for ``Connection: close`` would see "connection reset" instead of our 413 if
the server closed the socket with the rest of the body unread: the kernel answers
unread data with a reset, and the reset discards the 413 in the client's receive
buffer. So before answering 413 the rest of the body is read and thrown away, up to
:data:`DRAIN_MAX_BYTES` and :data:`DRAIN_SECONDS`; past either bound the 413 is sent
anyway. A client that announced ``Expect: 100-continue`` has sent nothing yet: it is
answered at once, without inviting the body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from ct_assets.api.bodies import Rejection, request_error
from ct_assets.schema import ReasonCode

# At most this much of an oversized body is read (and discarded) before the 413.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
# ... and for at most this long.
DRAIN_SECONDS = 10.0


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`Rejection` 413 if it is over ``limit`` bytes (by its
    ``Content-Length`` or while streaming)."""
    declared = request.headers.get("content-length")
    chunks = request.stream()
    if declared is not None:
        if not declared.isdigit():
            raise request_error(400, ReasonCode.MALFORMED, "Content-Length is not a number")
        if int(declared) > limit:
            await drain(request, chunks, received=0, declared=int(declared))
            raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            await drain(request, chunks, received=size, declared=None)
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def drain(
    request: Request, chunks: AsyncIterator[bytes], received: int, declared: int | None
) -> None:
    """Read and discard the rest of the body (``received`` bytes are read already),
    within :data:`DRAIN_MAX_BYTES` and :data:`DRAIN_SECONDS`."""
    expects_continue = "100-continue" in request.headers.get("expect", "").lower()
    if received == 0 and expects_continue:
        return  # nothing was sent: reading now would send "100 Continue" and invite it
    if declared is not None and declared > DRAIN_MAX_BYTES:
        return  # more than we will read: the client may see a reset whatever we do
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in chunks:
                received += len(chunk)
                if received > DRAIN_MAX_BYTES:
                    return
    except (TimeoutError, ClientDisconnect):
        return


def too_large(limit: int) -> Rejection:
    return request_error(413, "body_too_large", f"the body is over the limit of {limit} bytes")

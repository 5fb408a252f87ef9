"""The baselines: bare Starlette endpoints under the same uvicorn settings as the API.

``/bare/batch`` only decodes the body with msgspec into the same schema-v1 structs
(what any endpoint must at least do); ``/bare/single`` only reads the body and
answers 202. Neither validates further, writes, or fsyncs.
"""

from __future__ import annotations

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ct_assets.schema import FeedbackEvent

_DECODER = msgspec.json.Decoder(FeedbackEvent)


async def batch(request: Request) -> Response:
    events = _DECODER.decode_lines(await request.body())
    return Response(
        msgspec.json.encode({"accepted": len(events), "duplicates": 0}),
        status_code=202,
        media_type="application/json",
    )


async def single(request: Request) -> Response:
    await request.body()
    return Response(b'{"accepted":1,"duplicates":0}', 202, media_type="application/json")


def create_bare_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/bare/batch", batch, methods=["POST"]),
            Route("/bare/single", single, methods=["POST"]),
        ]
    )

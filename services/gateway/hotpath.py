"""POST /v1/predict as plain ASGI in front of FastAPI: the hot route skips Starlette's
middleware stack, routing, request object and pydantic model (~40 % of the gateway's CPU a
REST predict, measured: docs/BENCHMARKS.md, "The gateway's open-loop tail").

Only a body this path can take exactly as FastAPI would is served here: JSON (no content
type, or application/json) whose stock_ids are JSON integers in int32, max_staleness_ms a
number or null, kelly a boolean, and that passes the shared checks (validation.py). Anything
else (malformed JSON, a string where a number goes, an empty or over-long list, another
content type) is handed to FastAPI with its body, and FastAPI answers as it always has: the
400 naming the field, counted in rtvol_gateway_rejects_total. FastAPI keeps the route's
definition, so the OpenAPI document describes it as before.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from rtvol.errors import InvalidInput
from rtvol.services.gateway.httpserver import replay_body

PATH = "/v1/predict"
INT32 = (-(2**31), 2**31 - 1)
JSON_HEADERS = [(b"content-type", b"application/json")]

# the parsed request: stock ids, max_staleness_ms, kelly, the request's headers (for the trace context)
Answer = Callable[[list[int], float | None, bool, Callable[[], dict[str, str]]], Awaitable[bytes]]


class HotPredict:
    """``app`` with POST /v1/predict answered by ``answer`` (rest.PredictHandler) when the body
    is one FastAPI would accept as it is; FastAPI gets every other request and body."""

    def __init__(self, app: ASGIApp, answer: Answer) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = await _read(receive)
        if body is None:
            return  # the client went away
        request = plain_request(scope["headers"], body)
        if request is not None:
            try:
                content = await self.answer(*request, functools.partial(_headers, scope))
            except InvalidInput:
                pass  # FastAPI answers it: one place words and counts every 400
            else:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*JSON_HEADERS, (b"content-length", b"%d" % len(content))]})
                return await send({"type": "http.response.body", "body": content})
        await self.app(scope, functools.partial(replay_body, body, receive, [False]), send)


Plain = tuple[list[int], float | None, bool]  # stock_ids, max_staleness_ms, kelly


def plain_request(headers: list[tuple[bytes, bytes]], body: bytes) -> Plain | None:
    """(stock_ids, max_staleness_ms, kelly) when pydantic would take the body as it is (extra
    keys ignored, as PredictBody does), else None."""
    for name, value in headers:
        if name == b"content-type" and value.split(b";")[0].strip().lower() != b"application/json":
            return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    ids, staleness, kelly = doc.get("stock_ids"), doc.get("max_staleness_ms"), doc.get("kelly", False)
    if type(ids) is not list or not ids or not all(type(i) is int and INT32[0] <= i <= INT32[1] for i in ids):
        return None
    if not (staleness is None or type(staleness) in (int, float)) or type(kelly) is not bool:
        return None
    return ids, staleness, kelly


async def _read(receive: Receive) -> bytes | None:
    """The whole body (httpserver.BodyLimit has bounded and buffered it), None on a disconnect."""
    body, more = b"", True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

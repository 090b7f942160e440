"""services/gateway/hotpath.py: which POST /v1/predict bodies the plain ASGI path serves, and
that everything else reaches FastAPI with its body intact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from rtvol.errors import InvalidInput
from rtvol.services.gateway.hotpath import HotPredict, plain_request

JSON = [(b"content-type", b"application/json")]


@pytest.mark.parametrize("headers,body,want", [
    (JSON, b'{"stock_ids": [3]}', ([3], None, False)),
    ([], b'{"stock_ids": [1, 2], "max_staleness_ms": 5, "kelly": true}', ([1, 2], 5, True)),
    ([(b"content-type", b"application/json; charset=utf-8")], b'{"stock_ids": [0], "x": 1}',
     ([0], None, False)),
    (JSON, b'{"stock_ids": [0], "max_staleness_ms": 2.5}', ([0], 2.5, False)),
])
def test_plain_bodies_are_served(headers: list[tuple[bytes, bytes]], body: bytes, want: Any) -> None:
    assert plain_request(headers, body) == want


@pytest.mark.parametrize("headers,body", [
    (JSON, b'{"stock_ids": [1,'),  # malformed
    (JSON, b"[1, 2]"),
    (JSON, b'{"stock_ids": []}'),
    (JSON, b'{"stock_ids": ["1"]}'),  # pydantic's StrictInt refuses it: FastAPI words the 400
    (JSON, b'{"stock_ids": [true]}'),
    (JSON, b'{"stock_ids": [1.0]}'),
    (JSON, b'{"stock_ids": [2147483648]}'),
    (JSON, b'{"stock_ids": [18446744073709551616]}'),
    (JSON, b'{"stock_ids": [1], "max_staleness_ms": "5"}'),
    (JSON, b'{"stock_ids": [1], "max_staleness_ms": true}'),
    (JSON, b'{"stock_ids": [1], "kelly": 1}'),
    (JSON, b'{"stock_ids": [1], "max_staleness_ms": NaN}'),
    ([(b"content-type", b"text/plain")], b'{"stock_ids": [1]}'),
])
def test_everything_else_goes_to_fastapi(headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    assert plain_request(headers, body) is None


class Recorder:
    """The ASGI app behind the plain path: what it was called with."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.bodies.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"from fastapi"})


async def _post(app: HotPredict, body: bytes, path: str = "/v1/predict") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body[:5], "more_body": True},
                {"type": "http.request", "body": body[5:], "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": JSON}
    await app(scope, receive, send)
    return sent


def _answer(calls: list[Any], refuse: bool = False) -> Callable[..., Any]:
    async def answer(ids: list[int], staleness: float | None, kelly: bool,
                     headers: Callable[[], Any]) -> bytes:
        calls.append((ids, staleness, kelly, headers()["content-type"]))
        if refuse:
            raise InvalidInput("stock_ids: too many", "too_many_ids")
        return orjson.dumps({"signals": [{"stock_id": i} for i in ids]})
    return answer


async def test_a_plain_body_is_answered_without_fastapi() -> None:
    calls: list[Any] = []
    behind = Recorder()
    sent = await _post(HotPredict(behind, _answer(calls)), b'{"stock_ids": [4, 5]}')
    assert calls == [([4, 5], None, False, "application/json")] and behind.bodies == []
    start, body = sent
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()
    assert orjson.loads(body["body"]) == {"signals": [{"stock_id": 4}, {"stock_id": 5}]}


@pytest.mark.parametrize("body,refuse", [(b'{"stock_ids": ["x"]}', False), (b'{"stock_ids": [1]}', True)])
async def test_fastapi_gets_what_the_plain_path_leaves_with_its_body(body: bytes, refuse: bool) -> None:
    calls: list[Any] = []
    behind = Recorder()
    sent = await _post(HotPredict(behind, _answer(calls, refuse)), body)
    assert behind.bodies == [body] and sent[1]["body"] == b"from fastapi"
    assert len(calls) == (1 if refuse else 0)  # a refused check is worded (and counted) by FastAPI


async def test_other_routes_go_to_fastapi_untouched() -> None:
    calls: list[Any] = []
    behind = Recorder()
    await _post(HotPredict(behind, _answer(calls)), b'{"stock_ids": [1]}', path="/v1/predict/")
    assert behind.bodies == [b'{"sto'] and calls == []  # the first chunk, as the connection sent it

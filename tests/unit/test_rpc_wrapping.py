"""rtvol.rpc.WrappingServer wraps each method's handler once, at registration, and every call
is still judged by its own metadata; status mapping, streams and unknown methods through a
real grpc.aio server on a loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from rtvol import auth
from rtvol.errors import InvalidInput, NotFound
from rtvol.rpc import WrappingServer, wrapping_server

SERVICE = "pkg.Service"
METHOD = f"/{SERVICE}/Method"


class OneKey:
    """A guard that lets the key "good" in and refuses (and counts) every other call."""

    rules = auth.grpc_rules(frozenset({"engine"}))

    def __init__(self) -> None:
        self.refused = 0

    def check(self, method: str, key: str | None) -> auth.Denial | None:
        if key == "good" or self.rules.allowed(method) is auth.OPEN:
            return None
        self.refused += 1
        return auth.Denial(401, grpc.StatusCode.UNAUTHENTICATED, "no")


async def _unary(request: str, context: Any) -> str:
    if request == "missing":
        raise NotFound("stock 'missing': not found")
    if request == "broken":
        raise ValueError("a bug")
    return f"answered {request}"


async def _stream(requests: AsyncIterator[str], context: Any) -> AsyncIterator[str]:
    async for request in requests:
        if request == "bad":
            raise InvalidInput("field 'x': not a number", "x")
        yield f"echo {request}"


def _decode(raw: bytes) -> str:
    if raw.startswith(b"\xff"):
        raise ValueError("not utf-8")  # as a protobuf DecodeError would
    return raw.decode()


# no response serializer: grpc.aio sends a returned str as its UTF-8 bytes
HANDLERS = {
    "Method": grpc.unary_unary_rpc_method_handler(_unary, _decode),
    "Stream": grpc.stream_stream_rpc_method_handler(_stream, _decode)}


def test_a_method_is_wrapped_once_and_never_twice() -> None:
    async def run() -> None:
        server = WrappingServer(grpc.aio.server(), OneKey())  # type: ignore[arg-type]
        handler = HANDLERS["Method"]
        first = server.wrap(METHOD, handler)
        assert first is not None and first is not handler
        assert server.wrap(METHOD, handler) is first  # the generated code registers it twice
        assert server.wrap(METHOD, first) is first  # a wrapped handler is not wrapped again
        assert first.request_deserializer is not None and first.request_deserializer(b"x") == "x"
        assert server.wrap(METHOD, None) is None
    asyncio.run(run())


async def _serve(guard: OneKey | None) -> tuple[WrappingServer, int]:
    server = wrapping_server(guard)  # type: ignore[arg-type]
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, HANDLERS),))
    server.add_registered_method_handlers(SERVICE, HANDLERS)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def _unary_call(channel: grpc.aio.Channel, name: str = "Method") -> Any:
    return channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=lambda b: b,
                               response_deserializer=bytes.decode)


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code()


def test_errors_map_to_status_codes_on_unary_and_streaming_calls() -> None:
    async def run() -> None:
        server, port = await _serve(None)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = _unary_call(channel)
                assert await call(b"x", timeout=5) == "answered x"
                assert await _code(call(b"missing", timeout=5)) == grpc.StatusCode.NOT_FOUND
                assert await _code(call(b"broken", timeout=5)) == grpc.StatusCode.INTERNAL
                assert await _code(call(b"\xff", timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
                stream = channel.stream_stream(f"/{SERVICE}/Stream", request_serializer=lambda b: b,
                                               response_deserializer=bytes.decode)
                answers = [a async for a in stream(iter([b"a", b"b"]), timeout=5)]
                assert answers == ["echo a", "echo b"]
                failed = stream(iter([b"a", b"bad"]), timeout=5)
                assert await failed.read() == "echo a"
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await failed.read()
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "field 'x'" in str(e.value.details())
                undecodable = stream(iter([b"\xff"]), timeout=5)
                assert await _code(undecodable.read()) == grpc.StatusCode.INVALID_ARGUMENT
                unknown = _unary_call(channel, "NoSuchMethod")
                assert await _code(unknown(b"x", timeout=5)) == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await server.stop(None)
    asyncio.run(run())


def test_every_call_is_judged_by_its_own_metadata() -> None:
    async def run() -> None:
        guard = OneKey()
        server, port = await _serve(guard)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = _unary_call(channel)
                assert await call(b"x", metadata=(("x-api-key", "good"),), timeout=5) == "answered x"
                # after a let-in call on the same (cached) handler: still refused, and counted
                assert await _code(call(b"x", metadata=(("x-api-key", "bad"),), timeout=5)) \
                    == grpc.StatusCode.UNAUTHENTICATED
                assert await _code(call(b"x", timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
                # refused before the request is decoded: no key, undecodable body
                assert await _code(call(b"\xff", timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
                stream = channel.stream_stream(f"/{SERVICE}/Stream", request_serializer=lambda b: b,
                                               response_deserializer=bytes.decode)
                assert await _code(stream(iter([b"a"]), timeout=5).read()) == grpc.StatusCode.UNAUTHENTICATED
                good = stream(iter([b"a"]), metadata=(("authorization", "Bearer good"),), timeout=5)
                assert await good.read() == "echo a"
            assert guard.refused == 4
        finally:
            await server.stop(None)
    asyncio.run(run())

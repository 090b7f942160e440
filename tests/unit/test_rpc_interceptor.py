"""rtvol.rpc.ErrorInterceptor wraps each method's handler once and reuses it, and the reuse
never lets a call past the key check: every call is still judged by its own metadata."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from rtvol import auth
from rtvol.rpc import ErrorInterceptor

METHOD = "/pkg.Service/Method"


class Details(grpc.HandlerCallDetails):
    def __init__(self, key: str | None) -> None:
        self.method = METHOD
        self.invocation_metadata = (("x-api-key", key),) if key else ()


class OneKey:
    """A guard that lets the key "good" in and refuses every other call."""

    def check(self, method: str, key: str | None) -> auth.Denial | None:
        return None if key == "good" else auth.Denial(401, grpc.StatusCode.UNAUTHENTICATED, "no")


async def _unary(request: Any, context: Any) -> str:
    return f"answered {request}"


HANDLER = grpc.unary_unary_rpc_method_handler(_unary, request_deserializer=bytes.decode)


async def _intercept(interceptor: ErrorInterceptor, key: str | None) -> grpc.RpcMethodHandler:
    async def continuation(_: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return HANDLER
    call: Callable[..., Awaitable[grpc.RpcMethodHandler]] = interceptor.intercept_service
    return await call(continuation, Details(key))


def test_a_method_is_wrapped_once_and_every_call_is_still_checked() -> None:
    async def run() -> None:
        interceptor = ErrorInterceptor(OneKey())  # type: ignore[arg-type]
        first = await _intercept(interceptor, "good")
        assert await _intercept(interceptor, "good") is first  # reused, not rebuilt
        assert first.request_deserializer is not None and first.request_deserializer(b"x") == "x"
        assert await first.unary_unary("x", None) == "answered x"
        refused = await _intercept(interceptor, "bad")  # after the cached wrap: still refused
        assert refused is not first and refused.unary_unary is not first.unary_unary
        assert await _intercept(interceptor, None) is not first
    asyncio.run(run())

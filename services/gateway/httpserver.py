"""The gateway's HTTP server settings, in one place: the gateway and the bare echo that
`rtvol bench gateway` measures as its floor must run the same server the same way.

Bounds (uvicorn has no read timeout and no connection cap of its own):
- ``max_connections``: connections beyond it are closed as they are accepted, so a flood
  of idle connections cannot take every file descriptor;
- ``limit_concurrency`` (uvicorn): requests in progress beyond it are answered 503;
- ``request_timeout_s``: a request's headers and body must arrive within it (from the
  connection or the request's first byte), else the connection is closed (slowloris);
- ``timeout_keep_alive`` (uvicorn): an idle keep-alive connection is closed after it;
- ``max_body_bytes``: a larger body is answered 413 before the application reads it;
- ``h11_max_incomplete_event_size`` (uvicorn, h11 only): the most header bytes h11 buffers;
  httptools (llhttp) has its own fixed header limit and answers 400 beyond it.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import math
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

# httptools (C) parses a request in a few µs where h11 (pure Python) takes ~100; uvicorn's
# "auto" picks it when installed (a pinned dependency), this names the one in use
PARSER = "httptools" if importlib.util.find_spec("httptools") else "h11"

# churn shows here: after a stall a client opens connections, each one accepted on the loop
OPENED = Counter("rtvol_gateway_http_connections_total", "HTTP connections accepted")
REFUSED = Counter("rtvol_gateway_http_refused_total", "HTTP connections or requests refused by a "
                  "bound (connections, read_timeout, body_size)", ["reason"])


@dataclass(frozen=True)
class Limits:
    max_connections: int = 4096
    limit_concurrency: int = 1024
    request_timeout_s: float = 5.0
    keep_alive_s: int = 5
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 16 << 10


class Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # rpc.Server owns SIGTERM and drains both
        pass


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` with SO_REUSEPORT: the gateway's worker processes
    each bind one and the kernel spreads new connections over them (uvicorn cannot set it)."""
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP
    # (accepted ones inherit it); without it Nagle and delayed ACKs add 40 ms to a reply
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def config(app: ASGIApp, host: str, port: int, drain_seconds: float, limits: Limits = Limits(),
           tls: dict[str, Any] | None = None) -> uvicorn.Config:
    """``tls``: uvicorn's ssl_* arguments (rtvol.tls.ServerTLS.uvicorn), HTTPS only."""
    return uvicorn.Config(BodyLimit(app, limits.max_body_bytes), host=host, port=port,
                          http=_protocol(limits), log_level="warning", access_log=False,
                          limit_concurrency=limits.limit_concurrency, timeout_keep_alive=limits.keep_alive_s,
                          h11_max_incomplete_event_size=limits.max_header_bytes,
                          # keep-alive connections must end within the drain too
                          timeout_graceful_shutdown=math.ceil(drain_seconds), lifespan="off", **(tls or {}))


def _protocol(limits: Limits) -> Any:
    if PARSER == "h11":  # the fallback without httptools: no read timeout or connection cap
        return "h11"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Bounded(HttpToolsProtocol):
        """uvicorn's httptools protocol with a connection cap and a request read timeout."""

        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            OPENED.inc()
            if len(self.connections) > limits.max_connections:
                REFUSED.labels("connections").inc()
                transport.abort()
                return
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._read_timer is None:
                self._arm()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._read_timer = self.loop.call_later(limits.request_timeout_s, self._read_timeout)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timeout(self) -> None:
            self._read_timer = None
            if not self.transport.is_closing():
                REFUSED.labels("read_timeout").inc()
                self.transport.close()

    return Bounded


class BodyLimit:
    """Reads the request body up to ``max_bytes`` before the application sees it; a larger
    one (by Content-Length or as it arrives) is answered 413 and never buffered whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._too_large(send)
        await self.app(scope, functools.partial(replay_body, bytes(body), receive, [False]), send)

    async def _too_large(self, send: Send) -> None:
        REFUSED.labels("body_size").inc()
        content = f'{{"error": "body: larger than {self.max_bytes} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})


async def replay_body(body: bytes, receive: Receive, given: list[bool]) -> dict[str, Any]:
    """The buffered body once, then whatever the connection says next (a disconnect)."""
    if given[0]:
        return dict(await receive())
    given[0] = True
    return {"type": "http.request", "body": body, "more_body": False}

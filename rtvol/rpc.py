"""gRPC server scaffolding shared by every service (docs/ARCHITECTURE.md):

grpc.aio on TCP and optionally a Unix socket, grpc.health.v1, reflection, method handlers
wrapped once at registration to map rtvol.errors to status codes (and check API keys), and a
graceful drain on SIGTERM/SIGINT.
`Server.secured` adds what the security settings ask for: API keys checked by role
(rtvol/auth.py), TLS or mTLS on TCP listeners (rtvol/tls.py), reflection on or off.
"""

from __future__ import annotations

import asyncio
import faulthandler
import inspect
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter

from rtvol import auth, tls
from rtvol.config import SecuritySettings
from rtvol.errors import InvalidInput, NotFound, ResourceExhausted, RtvolError, Unavailable

log = logging.getLogger(__name__)

STATUS: dict[type[RtvolError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# large enough for a batch of 1,024 windows (1,024 x 50 x 12 x 4 bytes = 2.4 MiB) and more
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# the model sidecar's own time for an inference (decode to encode, µs), a response parameter
# its clients read to tell a slow sidecar from time lost on their side of the call
SERVER_TIME_PARAM = "rtvol_server_us"
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
           ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
           ("grpc.so_reuseport", 0)]
UNDECODABLE = Counter("rtvol_grpc_undecodable_total", "Requests whose message could not be decoded "
                      "(answered INVALID_ARGUMENT)", ["method"])
# a process ends at most this long after its drain time, whatever still runs (exit code 3)
EXIT_MARGIN_S = 0.9
FORCED_EXIT_CODE = 3


def status_of(error: RtvolError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


class Undecodable:
    """What a request deserializer returns for bytes that are not the message: grpc would
    log a traceback and answer UNKNOWN; the handler answers INVALID_ARGUMENT instead."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as e:  # DecodeError and its kin: the message, not the server, is broken
            return Undecodable(e)
    return decode


def _decoded(message: Any, method: str) -> Any:
    """The message, or InvalidInput (counted, one log line) when it was undecodable."""
    if isinstance(message, Undecodable):
        UNDECODABLE.labels(method).inc()
        log.warning("undecodable request to %s: %s", method, message.error)
        raise InvalidInput(f"request: not a valid message for {method} ({message.error})", "undecodable")
    return message


async def _decoded_stream(requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    async for message in requests:
        yield _decoded(message, method)


class WrappingServer(grpc.aio.Server):
    """A grpc.aio server whose method handlers are wrapped once, as they are registered: a
    raised RtvolError becomes its status code and message; anything else becomes INTERNAL
    with the error logged, and the server keeps serving. An undecodable request message is
    INVALID_ARGUMENT. Given a ``guard`` (rtvol/auth.py), each call whose metadata carries no
    key of an allowed role is refused before the service's handler runs.

    Why not a grpc.aio ServerInterceptor: it is one more coroutine hop and handler lookup on
    every call (docs/BENCHMARKS.md, task WIN: the sidecar's CPU a call about 6 % lower
    without it); here a call goes straight to its wrapped handler. It is a grpc.aio.Server, so the generated
    ``add_*Servicer_to_server`` functions and grpc_reflection register through it unchanged."""

    def __init__(self, server: grpc.aio.Server, guard: auth.Guard | None = None) -> None:
        self.inner = server
        self.guard = guard
        # method -> (the service's handler, its wrapped form): the generated code registers
        # the same handler twice (generic and registered), it is wrapped once
        self.wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self.made: set[grpc.RpcMethodHandler] = set()  # handlers this server built: never rewrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        """``handler`` with the error mapping and the key check for ``method``, built once."""
        if handler is None or handler in self.made:
            return handler
        cached = self.wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        kind = _kind(handler)
        if kind is None:
            return handler
        guard = None if self.guard is None or self.guard.rules.allowed(method) is auth.OPEN else self.guard
        wrapped = handler._replace(**{kind: _wrap(getattr(handler, kind), method,
                                                  kind.startswith("stream_"), guard)},
                                   request_deserializer=_tolerant(handler.request_deserializer))
        self.wrapped[method] = (handler, wrapped)
        self.made.add(wrapped)
        return wrapped

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.inner.add_generic_rpc_handlers([_WrappedGeneric(h, self) for h in generic_rpc_handlers])

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        # what the generated code registers is looked up before generic handlers, by name
        self.inner.add_registered_method_handlers(service_name, {
            name: self.wrap(f"/{service_name}/{name}", handler) for name, handler in method_handlers.items()})

    def add_insecure_port(self, address: str) -> int:
        return self.inner.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self.inner.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self, grace: float | None) -> None:
        await self.inner.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self.inner.wait_for_termination(timeout)


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler's answers, wrapped (once per method) by ``server``."""

    def __init__(self, inner: grpc.GenericRpcHandler, server: WrappingServer) -> None:
        self.inner, self.server = inner, server

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.server.wrap(handler_call_details.method, self.inner.service(handler_call_details))


def wrapping_server(guard: auth.Guard | None = None,
                    options: Sequence[tuple[str, Any]] = ()) -> WrappingServer:
    """A grpc.aio server (rtvol's OPTIONS, ``options`` winning) with wrapped handlers."""
    return WrappingServer(grpc.aio.server(options=list(dict([*OPTIONS, *options]).items())), guard)


def _kind(handler: grpc.RpcMethodHandler) -> str | None:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        if getattr(handler, kind) is not None:
            return kind
    return None


async def _abort(context: grpc.aio.ServicerContext, error: Exception, method: str) -> None:
    if isinstance(error, RtvolError):
        await context.abort(status_of(error), str(error))
    log.exception("unhandled error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")


async def _refuse_unless_allowed(guard: auth.Guard, method: str, context: grpc.aio.ServicerContext) -> None:
    """Aborts the call (counted by the guard) when its metadata carries no allowed key."""
    denial = guard.check(method, auth.key_from(context.invocation_metadata() or ()))
    if denial is not None:
        await context.abort(denial.code, denial.message)


def _wrap(fn: Callable[..., Any], method: str, streaming_requests: bool,
          guard: auth.Guard | None) -> Callable[..., Any]:
    """``guard``: None where the method is open to all (health) or no keys are set."""
    def decoded(request: Any) -> Any:
        return _decoded_stream(request, method) if streaming_requests else _decoded(request, method)

    if inspect.isasyncgenfunction(fn):
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if guard is not None:
                await _refuse_unless_allowed(guard, method, context)
            try:
                async for item in fn(decoded(request), context):
                    yield item
            except (RtvolError, ValueError) as e:
                await _abort(context, e, method)
        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if guard is not None:
            await _refuse_unless_allowed(guard, method, context)
        try:
            return await fn(decoded(request), context)
        except (RtvolError, ValueError) as e:
            await _abort(context, e, method)
    return unary


class Server:
    """A grpc.aio server with health and reflection; ``serve_forever`` drains on signals."""

    def __init__(self, service_names: Sequence[str], options: Sequence[tuple[str, Any]] = (),
                 guard: auth.Guard | None = None, reflect: bool = True,
                 server_tls: tls.ServerTLS | None = None) -> None:
        self.server = wrapping_server(guard, options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = list(service_names)
        if reflect:
            reflection.enable_server_reflection(
                [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.tls = server_tls
        self.ports: dict[str, int] = {}
        self.health_server: grpc.aio.Server | None = None

    @classmethod
    def secured(cls, service_names: Sequence[str], s: SecuritySettings, service: str, rules: auth.Rules,
                options: Sequence[tuple[str, Any]] = ()) -> Server:
        """A server with the settings' API keys (checked against ``rules``), TLS and reflection."""
        return cls(service_names, options, auth.guard(service, s.api_keys_file, rules), s.grpc_reflection,
                   tls.server(s))

    def listen(self, address: str) -> int:
        """``host:port`` (port 0 picks a free one) or ``unix:/path``; returns the bound port.
        TCP listeners are TLS-only when the server has TLS."""
        if self.tls is not None and not address.startswith("unix:"):
            port = self.server.add_secure_port(address, self.tls.grpc())
        else:
            port = self.server.add_insecure_port(address)
        if not port and not address.startswith("unix:"):
            raise OSError(f"could not bind {address}")
        self.ports[address] = port
        return port

    def listen_health(self, host: str, port: int) -> int:
        """A second, plaintext server on ``host:port`` with only grpc.health.v1 (the same status),
        for probes that cannot speak TLS (kubelet's gRPC probe); port 0: none. It tells no
        more than whether the service is serving."""
        if not port:
            return 0
        self.health_server = grpc.aio.server(options=OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        bound = self.health_server.add_insecure_port(f"{host}:{port}")
        if not bound:
            raise OSError(f"could not bind the health port {host}:{port}")
        return bound

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ["", *self.service_names]:
            result = self.health.set(name, status)
            if inspect.isawaitable(result):
                await result

    async def start(self) -> None:
        await self.server.start()
        if self.health_server:
            await self.health_server.start()

    async def serve_forever(self, drain_seconds: float,
                            on_stop: Callable[[], Awaitable[None]] | None = None,
                            on_drain: Callable[[], None] | None = None,
                            stop: asyncio.Event | None = None) -> None:
        """Run until SIGTERM/SIGINT, then report NOT_SERVING and let in-flight calls finish.

        ``on_drain`` runs first: it ends calls that never finish by themselves (server
        streams), which would otherwise hold the drain for its whole grace period.
        ``stop``: servers sharing one process share one event set by its owner's signal
        handler (a loop keeps one handler per signal: a second server would replace it)."""
        if stop is None:
            stop = stop_on_signals()
        await stop.wait()
        exit_by(drain_seconds + EXIT_MARGIN_S)
        log.info("draining for up to %.1f s", drain_seconds)
        await self.set_serving(False)
        if on_drain:
            on_drain()
        await self.server.stop(drain_seconds)
        if self.health_server:
            await self.health_server.stop(0)
        if on_stop:
            await on_stop()


def exit_by(seconds: float) -> None:
    """Arm the last resort of a shutdown: a process still running ``seconds`` from now
    (a task that ignores cancellation, a thread that is never joined) logs every thread's
    stack and exits with FORCED_EXIT_CODE, so SIGTERM always ends it in bounded time."""
    def force() -> None:
        log.error("shutdown still running %.1f s after the stop signal: exiting with code %d",
                  seconds, FORCED_EXIT_CODE)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(FORCED_EXIT_CODE)

    timer = threading.Timer(seconds, force)
    timer.daemon = True  # never what keeps the process alive
    timer.start()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (on the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop

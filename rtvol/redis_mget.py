"""MGET whose reply lands in one reusable buffer: the feature store's read path.

Why not redis-py here: for one MGET of 100 windows (245 KB) its asyncio client costs
~300 µs more than the wire on our 2-core box (docs/BENCHMARKS.md, "Feature service"):
StreamReader copies, one bytes object per value, then a join to decode. This is an asyncio
``BufferedProtocol``: the kernel writes the reply straight into a bytearray reused between
calls, the reply is walked once to find where each value starts, and when every value has
the expected size the caller gets a strided numpy view of the buffer (no per-value object).

One job: MGET on a standalone Redis over TCP or a Unix socket, RESP2, no TLS. Its pool of
connections (``Connections``) also carries the store's window writes (rtvol.redis_write);
everything else (other reads, cluster, TLS) stays on redis-py; ``Endpoint.of`` says when
these apply. Errors are redis-py's exception types, so callers handle both alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from redis import exceptions as rx

from rtvol.resp import CRLF, bulk, resp_command

T = TypeVar("T")
_KEY_CACHE_MAX = 1 << 17  # encoded keys kept; beyond it the cache starts over




@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: taken from a redis-py asyncio client's own settings."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""  # Unix socket path; wins over host/port
    db: int = 0
    username: str | None = None
    password: str | None = None
    connect_timeout_s: float | None = None
    timeout_s: float | None = None  # longest wait for more reply bytes, as redis-py's socket_timeout

    @classmethod
    def of(cls, client: Any) -> Endpoint | None:
        """The endpoint of a standalone ``redis.asyncio.Redis``; None for cluster or TLS clients."""
        from redis.asyncio.connection import Connection, UnixDomainSocketConnection

        pool = getattr(client, "connection_pool", None)
        if pool is None or pool.connection_class not in (Connection, UnixDomainSocketConnection):
            return None  # RedisCluster has no single pool; SSLConnection is a Connection subclass
        kw = pool.connection_kwargs
        return cls(kw.get("host", "127.0.0.1"), int(kw.get("port", 6379)), kw.get("path", ""),
                   int(kw.get("db") or 0), kw.get("username"), kw.get("password"),
                   kw.get("socket_connect_timeout"), kw.get("socket_timeout"))

    def handshake(self) -> list[bytes]:
        """Commands sent once per new connection (each answers +OK)."""
        cmds = []
        if self.password is not None:
            auth = (self.username.encode(),) if self.username else ()
            cmds.append(resp_command(b"AUTH", *auth, self.password.encode()))
        if self.db:
            cmds.append(resp_command(b"SELECT", str(self.db).encode()))
        return cmds


class Reply:
    """One MGET reply inside a connection's buffer; valid only inside the ``decode`` callback.

    ``stride`` is set when every value is present with the expected size: value i then
    starts at ``offsets[0] + i * stride``.
    """

    def __init__(self, buffer: bytearray, offsets: Sequence[int], lengths: Sequence[int],
                 stride: int | None = None) -> None:
        self.buffer, self.offsets, self.lengths, self.stride = buffer, offsets, lengths, stride

    def records(self, dtype: np.dtype) -> np.ndarray | None:
        """Every value as one record of ``dtype``: a strided view of the buffer, no copy; None
        unless every value is present and ``dtype``-sized (the common case)."""
        if self.stride is None or not self.lengths or self.lengths[0] != dtype.itemsize:
            return None
        return np.ndarray((len(self.offsets),), dtype, self.buffer, self.offsets[0], (self.stride,))

    def values(self) -> list[memoryview | None]:
        mv = memoryview(self.buffer)
        return [None if length < 0 else mv[o:o + length]
                for o, length in zip(self.offsets, self.lengths, strict=True)]


class MgetProtocol(asyncio.BufferedProtocol):
    """One connection, one request at a time; finds where each value of a RESP array lies."""

    def __init__(self) -> None:
        self.buf = bytearray(1 << 16)
        self.n = 0
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] | None = None
        self.lost: Exception | None = None
        self._parse: Callable[[], bool] = lambda: False
        self._last_data = 0.0  # time.monotonic() of the latest bytes
        self._watchdog: asyncio.TimerHandle | None = None

    # ---- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if len(self.buf) - self.n < 1 << 16:  # replace, never resize: views may still point in
            bigger = bytearray(max(2 * len(self.buf), self.n + (1 << 16)))
            bigger[:self.n] = self.buf[:self.n]
            self.buf = bigger
        return memoryview(self.buf)[self.n:]

    def buffer_updated(self, nbytes: int) -> None:
        self.n += nbytes
        self._last_data = time.monotonic()
        if self.done is None or self.done.done():
            self.abort(rx.ConnectionError("redis sent data nobody asked for"))
            return
        try:
            complete = self._parse()
        except rx.ResponseError as e:  # a refused handshake: this connection is done
            self.abort(e)
            return
        except Exception as e:  # garbage on the wire: this connection is done
            self.abort(rx.ConnectionError(f"redis reply: {e}"))
            return
        if complete:
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(rx.ConnectionError(f"redis connection lost: {exc or 'closed by server'}"))

    def abort(self, exc: Exception) -> None:
        """Close the connection; a call waiting on it raises ``exc``."""
        self.lost = self.lost or exc
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)
        if self.transport is not None:  # abort, not close: nothing still queued is sent, as the
            self.transport.abort()      # buffer it may view (rtvol.redis_write.Frames) gets reused

    # ---- requests
    def begin(self, parse: Callable[[], bool], expect: int) -> asyncio.Future[None]:
        """Get ready for one reply of about ``expect`` bytes; the future ends when ``parse``
        says it is complete."""
        if len(self.buf) < expect:
            self.buf = bytearray(expect + (1 << 16))
        self.n, self._parse = 0, parse
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    async def request(self, payload: bytes | memoryview, parse: Callable[[], bool], expect: int,
                      idle_timeout_s: float | None = None) -> None:
        """Send ``payload`` and wait for its reply; with ``idle_timeout_s``, fail (and close)
        when no bytes arrive for that long, however long a large reply takes in all."""
        if self.lost is not None or self.transport is None:
            raise self.lost or rx.ConnectionError("redis connection not open")
        done = self.begin(parse, expect)
        self.transport.write(payload)
        if idle_timeout_s is None:
            await done
            return
        self._last_data = time.monotonic()
        self._watchdog = asyncio.get_running_loop().call_later(idle_timeout_s, self._watch, idle_timeout_s)
        try:
            await done
        finally:
            self._watchdog.cancel()

    def _watch(self, timeout_s: float) -> None:
        if self.done is None or self.done.done():
            return
        idle = time.monotonic() - self._last_data
        if idle >= timeout_s:
            self.abort(rx.TimeoutError(f"redis: no reply bytes for {timeout_s} s"))
        else:
            self._watchdog = asyncio.get_running_loop().call_later(timeout_s - idle, self._watch, timeout_s)

    async def simple(self, payloads: list[bytes]) -> None:
        """Send pipelined commands that each answer one status line (+OK)."""
        def parse() -> bool:
            if self.buf.count(CRLF, 0, self.n) < len(payloads):
                return False
            for line in bytes(self.buf[:self.n]).split(CRLF)[:len(payloads)]:
                if not line.startswith(b"+"):
                    raise rx.ResponseError(line[1:].decode(errors="replace"))
            return True
        await self.request(b"".join(payloads), parse, 0)

    async def mget(self, payload: bytes, count: int, value_size: int, idle_timeout_s: float | None) -> Reply:
        head = b"$%d\r\n" % value_size
        state = ArrayWalk(self, count, head)
        await self.request(payload, state.step, state.full, idle_timeout_s)
        if state.error is not None:
            raise rx.ResponseError(state.error)
        return state.reply()


class ArrayWalk:
    """Incremental RESP2 walk of an MGET reply (array of bulk strings or nils, or an error).

    It only runs when the reply could be complete (the buffer ends in CRLF, or holds as much
    as an all-present reply of ``value_size`` values), so a reply arriving in 64 KB pieces is
    not re-walked piece by piece; a resumable cursor keeps any re-walk linear. An all-present
    reply of exactly that size is checked with two numpy compares instead of a Python loop.
    """

    def __init__(self, proto: MgetProtocol, count: int, head: bytes) -> None:
        self.p, self.count, self.head = proto, count, head
        self.array_head = b"*%d\r\n" % count
        self.value_size = int(head[1:-2])
        self.stride = len(head) + self.value_size + 2
        self.full = len(self.array_head) + count * self.stride
        self.cursor, self.left = 0, -1  # -1: the array header is not read yet
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.uniform = False
        self.error: str | None = None

    def reply(self) -> Reply:
        if self.uniform:
            first = len(self.array_head) + len(self.head)
            return Reply(self.p.buf, range(first, first + self.count * self.stride, self.stride),
                         [self.value_size] * self.count, self.stride)
        stride = None
        if self.count and all(length == self.value_size for length in self.lengths):
            stride = self.stride
        return Reply(self.p.buf, self.offsets, self.lengths, stride)

    def _all_present(self, buf: bytearray) -> bool:
        if not self.count or not buf.startswith(self.array_head):
            return False
        at, k = len(self.array_head), len(self.head)
        heads = np.ndarray((self.count,), f"V{k}", buf, at, (self.stride,))
        ends = np.ndarray((self.count,), "V2", buf, at + self.stride - 2, (self.stride,))
        return bool((heads == np.void(self.head)).all() and (ends == np.void(CRLF)).all())

    def step(self) -> bool:
        buf, n = self.p.buf, self.p.n
        if n < self.full and buf[n - 2:n] != CRLF:
            return False
        if n == self.full and self.left < 0 and self._all_present(buf):
            self.uniform, self.left = True, 0
            return True
        c = self.cursor
        if self.left < 0:
            end = buf.find(CRLF, 0, n)
            if end < 0:
                return False
            if buf[0] == ord("-"):
                self.error = bytes(buf[1:end]).decode(errors="replace")
                return True
            if buf[0] != ord("*"):
                raise ValueError(f"expected an array, got {bytes(buf[:16])!r}")
            self.left, c = int(buf[1:end]), end + 2
        head = self.head
        while self.left:
            if buf.startswith(head, c):  # the expected value size: no parsing
                stop = c + self.stride
                if stop > n:
                    break
                self.offsets.append(c + len(head))
                self.lengths.append(self.value_size)
            else:
                end = buf.find(CRLF, c, n)
                if end < 0:
                    break
                if buf[c] != ord("$"):
                    raise ValueError(f"expected a bulk string, got {bytes(buf[c:c + 16])!r}")
                length = int(buf[c + 1:end])
                stop = end + 2 + (length + 2 if length >= 0 else 0)
                if stop > n:
                    break
                self.offsets.append(end + 2)
                self.lengths.append(length)
            c = stop
            self.left -= 1
        self.cursor = c
        return self.left == 0


class Connections:
    """A small pool of connections to one endpoint, each doing one request at a time; bounded
    by ``max_connections``. Shared by the MGET reader and the store's writer (rtvol.redis_write).

    A request that is cancelled (a caller's ``wait_for``) or fails closes its connection, so a
    half-read reply never leaks into the next one; a connection the server closed while idle
    is skipped, and the next request opens a new one.
    """

    def __init__(self, endpoint: Endpoint, max_connections: int = 16) -> None:
        self.endpoint = endpoint
        self._idle: list[MgetProtocol] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def _connect(self) -> MgetProtocol:
        e, loop = self.endpoint, asyncio.get_running_loop()
        proto: MgetProtocol | None = None
        try:
            async with asyncio.timeout(e.connect_timeout_s):
                _, proto = await (loop.create_unix_connection(MgetProtocol, e.path) if e.path
                                  else loop.create_connection(MgetProtocol, e.host, e.port))
                if handshake := e.handshake():
                    await proto.simple(handshake)  # a refusal raises ResponseError
        except BaseException as exc:
            if proto is not None:
                proto.abort(rx.ConnectionError("closed"))
            if isinstance(exc, OSError | TimeoutError):
                raise rx.ConnectionError(f"redis {e.path or f'{e.host}:{e.port}'}: {exc}") from exc
            raise
        return proto

    def _take_idle(self) -> MgetProtocol | None:
        while self._idle:  # skip connections the server closed while idle (restart, timeout)
            proto = self._idle.pop()
            if proto.lost is None:
                return proto
        return None

    async def use(self, request: Callable[[MgetProtocol], Awaitable[T]]) -> T:
        """``request`` on a connection of the pool (a new one if none is idle)."""
        async with self._slots:
            proto = self._take_idle() or await self._connect()
            ok = False
            try:
                result = await request(proto)
                ok = True
                return result
            finally:
                if ok and proto.lost is None:
                    self._idle.append(proto)
                else:
                    proto.abort(rx.ConnectionError("closed"))

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().abort(rx.ConnectionError("closed"))


class MgetReader(Connections):
    """MGET through the pool; a key's RESP encoding is cached."""

    def __init__(self, endpoint: Endpoint, max_connections: int = 16) -> None:
        super().__init__(endpoint, max_connections)
        self._args: dict[bytes, bytes] = {}  # key -> its RESP bulk string

    def _payload(self, keys: list[bytes]) -> bytes:
        head = b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1)
        try:
            return head + b"".join(map(self._args.__getitem__, keys))  # no Python loop when cached
        except KeyError:
            if len(self._args) > _KEY_CACHE_MAX:
                self._args.clear()
            for k in keys:
                self._args[k] = bulk(k)
            return head + b"".join(map(self._args.__getitem__, keys))

    async def mget(self, keys: list[bytes], value_size: int, decode: Callable[[Reply], T]) -> T:
        """MGET ``keys``; ``decode`` turns the reply into a result before the buffer is reused.

        ``value_size`` is the size most values have (the fast path); others still work.
        """
        payload = self._payload(keys)

        async def request(proto: MgetProtocol) -> T:
            return decode(await proto.mget(payload, len(keys), value_size, self.endpoint.timeout_s))

        return await self.use(request)

"""Raw ticks to WebSocket subscribers, served from a thread (and event loop) of its own.

Subscribe: ``ws://HOST:PORT/ticks?stocks=1,2&format=binary|json&overflow=drop_oldest|disconnect``
(each parameter optional: every stock, binary frames, the server's overflow policy). Each
feed message becomes one frame (loadtest/tickframes.py has the format); a frame holds only
the subscriber's stocks, and a message with none of them sends nothing. A bad query is
refused in the handshake with 400 and a message naming the parameter, and counted.

Every subscriber has a bounded queue of frames. When it is full, ``drop_oldest`` drops the
oldest waiting frame and ``disconnect`` closes the subscriber with 1008; both are counted.
Its socket's send buffer is fixed (``sndbuf``): left to autotuning, the kernel would take
megabytes for a subscriber that does not read, and the queue bound would mean little.
The feed's loop only calls :meth:`TickServer.publish`, which hands the batch to this
thread's loop: filtering, encoding and socket writes never run on the paced ingest's
loop, and a stalled subscriber costs it nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from rtvol.features.online_batch import UpdateBatch
from rtvol.featurestore import now_us
from rtvol.loadtest import tickframes

OVERFLOW_POLICIES = ("drop_oldest", "disconnect")
FORMATS = ("binary", "json")
PATHS = ("/", "/ticks")
PARAMETERS = ("stocks", "format", "overflow")


class BadSubscription(ValueError):
    """A subscribe URL the server refuses; ``field`` names the offending part."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Subscription:
    stocks: frozenset[int] | None = None  # None: every stock
    format: str = "binary"
    overflow: str = "drop_oldest"


def parse_subscription(path: str, default_overflow: str) -> Subscription:
    url = urlsplit(path)
    if url.path not in PATHS:
        raise BadSubscription("path", f"{url.path!r}: subscribe on /ticks")
    query = parse_qs(url.query)
    for name, values in query.items():
        if name not in PARAMETERS:
            raise BadSubscription(name, f"unknown parameter (known: {', '.join(PARAMETERS)})")
        if len(values) > 1:
            raise BadSubscription(name, "given more than once")
    stocks = None
    if "stocks" in query:
        text = query["stocks"][0]
        try:
            stocks = frozenset(int(s) for s in text.split(","))
        except ValueError:
            raise BadSubscription("stocks", f"{text!r}: expected comma-separated stock ids") from None
    fmt = query.get("format", ["binary"])[0]
    if fmt not in FORMATS:
        raise BadSubscription("format", f"{fmt!r}: expected one of {', '.join(FORMATS)}")
    overflow = query.get("overflow", [default_overflow])[0]
    if overflow not in OVERFLOW_POLICIES:
        raise BadSubscription("overflow", f"{overflow!r}: expected one of {', '.join(OVERFLOW_POLICIES)}")
    return Subscription(stocks, fmt, overflow)


@dataclass
class TickStats:
    """Counts over the feed's run (written on the server's thread, read by anyone)."""

    connected: int = 0  # subscribers accepted
    active: int = 0  # subscribers connected now
    frames: int = 0  # frames handed to subscribers' sockets
    updates: int = 0  # updates in those frames
    dropped_frames: int = 0  # frames a subscriber did not get: its queue was full, or the feed ended
    dropped_updates: int = 0
    disconnected: int = 0  # slow subscribers closed by the disconnect policy
    max_delay_s: float = 0.0  # longest time from publish to the subscriber's socket
    rejected: Counter[str] = field(default_factory=Counter)  # refused subscriptions by field

    def line(self) -> str:
        return (f"ws: {self.connected} subscribers, {self.frames:,} frames ({self.updates:,} updates), "
                f"dropped {self.dropped_frames:,} frames ({self.dropped_updates:,} updates), "
                f"disconnected {self.disconnected}, rejected {sum(self.rejected.values())}, "
                f"max delay {self.max_delay_s:.3f} s")


class Envelope:
    """One feed message on its way out; each (stocks, format) is selected and encoded once."""

    def __init__(self, batch: UpdateBatch) -> None:
        self.batch, self.published_us, self.published_at = batch, now_us(), time.perf_counter()
        self._selected: dict[frozenset[int] | None, UpdateBatch] = {None: batch}
        self._frames: dict[tuple[frozenset[int] | None, str], bytes] = {}

    def select(self, stocks: frozenset[int] | None) -> UpdateBatch:
        got = self._selected.get(stocks)
        if got is None:
            wanted = np.isin(self.batch.stock_id, np.fromiter(stocks or (), np.int64))
            got = self._selected[stocks] = self.batch.take(np.flatnonzero(wanted))
        return got

    def frame(self, sub: Subscription) -> bytes:
        key = (sub.stocks, sub.format)
        frame = self._frames.get(key)
        if frame is None:
            encode = tickframes.encode_json if sub.format == "json" else tickframes.encode_binary
            frame = self._frames[key] = encode(self.select(sub.stocks), self.published_us)
        return frame


class Subscriber:
    """One connection's bounded queue and the task that sends it, frame by frame."""

    def __init__(self, conn: ServerConnection, sub: Subscription, size: int, stats: TickStats) -> None:
        self.conn, self.sub, self.size, self.stats = conn, sub, size, stats
        self.queue: deque[Envelope] = deque()
        self.ready = asyncio.Event()
        self.finished = self.overflowed = False
        self.task = asyncio.create_task(self._send_all())

    def _drop(self, env: Envelope) -> None:
        self.stats.dropped_frames += 1
        self.stats.dropped_updates += len(env.select(self.sub.stocks))

    def offer(self, env: Envelope) -> None:
        if self.overflowed:  # being closed: counted, never queued
            self._drop(env)
            return
        if not len(env.select(self.sub.stocks)):  # none of its stocks: nothing to send
            return
        if len(self.queue) >= self.size:
            if self.sub.overflow == "disconnect":
                self.overflowed = True
                self.stats.disconnected += 1
                self._drop(env)
                self.task.cancel()  # it may be blocked in a send to the stalled socket
                return
            self._drop(self.queue.popleft())
        self.queue.append(env)
        self.ready.set()

    def abandon(self) -> None:
        """Count what is still queued as dropped (the subscriber will not get it)."""
        while self.queue:
            self._drop(self.queue.popleft())

    async def _send_all(self) -> None:
        while True:
            if not self.queue:
                if self.finished:
                    return
                self.ready.clear()
                await self.ready.wait()
                continue
            env = self.queue.popleft()
            try:
                await self.conn.send(env.frame(self.sub), text=self.sub.format == "json")
            except ConnectionClosed:
                self.queue.clear()  # the subscriber left: nothing more is owed to it
                return
            except asyncio.CancelledError:  # overflow or drain cut: the close that follows
                self._drop(env)  # aborts a peer that does not read, discarding what it had waiting
                raise
            self.stats.frames += 1
            self.stats.updates += len(env.select(self.sub.stocks))
            self.stats.max_delay_s = max(self.stats.max_delay_s, time.perf_counter() - env.published_at)


async def _close(conn: ServerConnection, code: int, reason: str, timeout_s: float) -> None:
    """A closing handshake, bounded: a stalled peer never drains the close frame, so abort."""
    try:
        await asyncio.wait_for(conn.close(code, reason), timeout_s)
    except TimeoutError:
        conn.transport.abort()


class TickServer:
    """``start`` binds (port 0: a free one) and serves on a daemon thread; ``stop`` drains."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, queue_size: int = 64,
                 overflow: str = "drop_oldest", close_timeout_s: float = 2.0,
                 sndbuf: int = 256 * 1024) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow: {overflow!r}, expected one of {', '.join(OVERFLOW_POLICIES)}")
        if queue_size < 1:
            raise ValueError(f"queue: {queue_size}, must be >= 1")
        self.host, self.port, self.queue_size = host, port, queue_size
        self.overflow, self.close_timeout_s, self.sndbuf = overflow, close_timeout_s, sndbuf
        self.stats = TickStats()
        self._subs: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._closing = False
        self._drain_s = 5.0
        self._bound = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="rtvol-feed-ws",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ticks"

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def start(self, timeout_s: float = 10.0) -> TickServer:
        self._thread.start()
        if not self._bound.wait(timeout_s):
            raise RuntimeError(f"tick server did not start on {self.host}:{self.port} in {timeout_s} s")
        if self._error is not None:
            raise self._error
        return self

    def publish(self, batch: UpdateBatch) -> None:
        """Thread-safe and O(1) for the caller: the fan-out runs on the server's loop."""
        if self._subs and self._loop is not None:  # nobody listening: not even an envelope
            self._loop.call_soon_threadsafe(self._fanout, Envelope(batch))

    def stop(self, drain_s: float = 5.0) -> TickStats:
        """Let subscribers take what is queued (up to ``drain_s``), close them, end the thread."""
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._drain_s = drain_s
            self._loop.call_soon_threadsafe(self._stopping.set)  # after every publish before it
            self._thread.join(drain_s + 3 * self.close_timeout_s + 5.0)
        return self.stats

    # ---- on the server's thread ---------------------------------------------------------------

    def _fanout(self, env: Envelope) -> None:
        for sub in list(self._subs):
            sub.offer(env)

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        if self._closing:
            return conn.respond(HTTPStatus.SERVICE_UNAVAILABLE, "the feed has finished\n")
        try:
            parse_subscription(request.path, self.overflow)
        except BadSubscription as e:
            self.stats.rejected[e.field] += 1
            return conn.respond(HTTPStatus.BAD_REQUEST, f"{e}\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        assert conn.request is not None  # the handshake is done
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        sub = Subscriber(conn, parse_subscription(conn.request.path, self.overflow), self.queue_size,
                         self.stats)
        self._subs.add(sub)
        self.stats.connected += 1
        self.stats.active += 1
        try:
            await asyncio.wait({sub.task})  # ends: feed finished, subscriber left, overflow or drain cut
        finally:
            self._subs.discard(sub)
            self.stats.active -= 1
            sub.abandon()
        error = None if sub.task.cancelled() else sub.task.exception()
        if error is not None:
            raise error  # websockets logs it and closes with 1011
        if sub.overflowed:
            await _close(conn, CloseCode.POLICY_VIOLATION,
                         f"slow consumer: more than {self.queue_size} frames waiting", self.close_timeout_s)
        else:
            await _close(conn, CloseCode.NORMAL_CLOSURE, "feed finished", self.close_timeout_s)

    async def _main(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        try:
            server = await serve(self._handle, self.host, self.port, process_request=self._check,
                                 compression=None, close_timeout=self.close_timeout_s, max_size=2**16)
        except OSError as e:
            self._error = e
            self._bound.set()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        self._bound.set()
        await self._stopping.wait()
        await self._shutdown(server)

    async def _shutdown(self, server: Server) -> None:
        self._closing = True
        subs = list(self._subs)
        for sub in subs:
            sub.finished = True
            sub.ready.set()
        if subs:
            _, late = await asyncio.wait([s.task for s in subs], timeout=self._drain_s)
            for task in late:
                task.cancel()
        deadline = time.monotonic() + 2 * self.close_timeout_s + 1.0
        while self._subs and time.monotonic() < deadline:  # their handlers are closing them
            await asyncio.sleep(0.02)
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), self.close_timeout_s + 1.0)

    def collect(self) -> Iterator[Metric]:
        """A Prometheus collector (``registry.register(server)``): the stats at scrape time."""
        s = self.stats
        yield GaugeMetricFamily("rtvol_feed_ws_subscribers", "Connected raw-tick subscribers",
                                value=s.active)
        for name, text, value in (
                ("frames", "Frames sent to raw-tick subscribers", s.frames),
                ("updates", "Updates sent to raw-tick subscribers", s.updates),
                ("dropped_frames", "Frames not delivered: a full subscriber queue, or the feed ended",
                 s.dropped_frames),
                ("disconnected", "Slow subscribers closed by the disconnect policy", s.disconnected)):
            yield CounterMetricFamily(f"rtvol_feed_ws_{name}", text, value=value)
        rejected = CounterMetricFamily("rtvol_feed_ws_rejected", "Refused subscriptions, by the bad field",
                                       labels=["field"])
        for name, n in s.rejected.items():
            rejected.add_metric([name], n)
        yield rejected

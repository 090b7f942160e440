"""The framed Ingest stream: a second listener for feeds of single-update messages.

Python gRPC costs 55-100 µs of CPU a message at each end, so one gRPC stream cannot carry
20,000 single-update messages a second on two cores; this asyncio Protocol reads frames
(rtvol/ingest_frames.py) for a few µs each. What one read brings is one apply, through the
same Ingestor as gRPC Ingest (same decode, checks, counters, store, Watch push and fan-out):
the reads batch by themselves, as the kernel's socket buffer fills while an apply runs.

Safety: the HELLO is checked by the service's auth.Guard for gRPC Ingest's roles (feeders);
a frame over the length bound, an undecodable message or a wrong HELLO is answered with an
ERROR frame naming it, counted, and the connection closed (the stream cannot be
resynchronised); frames complete before it are applied, a partial frame never is. While an
END waits for read-your-writes the transport is paused (back pressure through TCP), so the
buffer holds at most one read and one partial frame. At most ``max_connections`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

import numpy as np
from google.protobuf.message import DecodeError
from prometheus_client import Counter, Gauge

from rtvol import auth, rpc
from rtvol.features.online_batch import REASONS
from rtvol.featurestore import now_us
from rtvol.ingest_frames import (
    END,
    ERROR,
    HELLO,
    READY,
    SUMMARY,
    UPDATES,
    FrameError,
    FrameReader,
    frame,
    parse_hello,
)
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.services.feature.batching import MAX_MESSAGES, next_batch
from rtvol.services.feature.servicer import Ingestor, summary

log = logging.getLogger(__name__)

ERRORS = Counter("rtvol_feature_stream_errors_total",
                 "Framed Ingest connections ended by an ERROR frame, by reason", ["reason"])
CONNECTIONS = Gauge("rtvol_feature_stream_connections", "Open framed Ingest connections")


class IngestStreamServer:
    """The listener and its connections (``start``, then ``close`` at the drain)."""

    def __init__(self, ingestor: Ingestor, guard: auth.Guard | None, method: str, max_connections: int,
                 max_frame_bytes: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ingestor, self.guard, self.method = ingestor, guard, method  # method: whose auth rule
        self.max_connections, self.max_frame_bytes, self.ssl_context = (max_connections, max_frame_bytes,
                                                                          ssl_context)
        self.connections: set[_Connection] = set()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Connection(self), host, port, ssl=self.ssl_context,
                                               reuse_address=True)
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        """Stop accepting, end every connection (a feeder reconnects to another replica or later)."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.fail(FrameError("service: shutting down", "shutdown"))


class _Connection(asyncio.Protocol):
    def __init__(self, owner: IngestStreamServer) -> None:
        self.owner = owner
        self.reader = FrameReader(owner.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.ready = False  # the HELLO was accepted
        self.counts = np.zeros(len(REASONS), np.int64)
        self.messages = 0
        self.ending: asyncio.Task[None] | None = None  # an END waiting for read-your-writes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        if len(self.owner.connections) >= self.owner.max_connections:
            self.fail(FrameError(f"connections: at most {self.owner.max_connections} at once", "connections"))
            return
        self.owner.connections.add(self)
        CONNECTIONS.set(len(self.owner.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        # a partial frame and the counts go with the connection: only complete frames were applied
        self.owner.connections.discard(self)
        CONNECTIONS.set(len(self.owner.connections))
        if self.ending is not None:
            self.ending.cancel()

    def fail(self, error: FrameError) -> None:
        ERRORS.labels(error.reason).inc()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(ERROR, str(error).encode()))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            self._read_frames()
        except Exception:  # a bug, not the client's input: this connection ends, the service serves on
            log.exception("framed ingest: unhandled error")
            self.fail(FrameError("service: internal error", "internal"))

    def _read_frames(self) -> None:
        assert self.transport is not None
        requests: list[pb.IngestRequest] = []
        received = now_us()
        try:
            while not self.transport.is_closing() and (got := self.reader.next()) is not None:
                kind, body = got
                if kind == UPDATES and self.ready:
                    requests.append(self._decoded(body))
                elif kind == END and self.ready:
                    self._apply(requests, received)
                    requests = []
                    self.transport.pause_reading()  # frames after the END wait for its answer
                    self.ending = asyncio.get_running_loop().create_task(self._end())
                    return
                elif kind == HELLO and not self.ready:
                    self._hello(body)
                elif not self.ready:
                    raise FrameError("frame.kind: the first frame must be HELLO", "no_hello")
                else:
                    raise FrameError(f"frame.kind: {kind!r} is not a client frame kind", "frame_kind")
        except FrameError as e:
            self._apply(requests, received)  # what came before the bad frame, as gRPC Ingest does
            self.fail(e)
            return
        self._apply(requests, received)

    def _hello(self, body: bytes) -> None:
        key = parse_hello(body)
        if self.owner.guard is not None:
            denial = self.owner.guard.check(self.owner.method, key)  # counted by the guard
            if denial is not None:
                raise FrameError(f"hello.api_key: {denial.message}", "auth")
        self.ready = True
        assert self.transport is not None
        self.transport.write(frame(READY))

    def _decoded(self, body: bytes) -> pb.IngestRequest:
        try:
            return pb.IngestRequest.FromString(body)
        except DecodeError as e:
            rpc.UNDECODABLE.labels(self.owner.method).inc()  # the counter gRPC Ingest's would move
            raise FrameError(f"request: not a valid message for {self.owner.method} ({e})",
                             "undecodable") from None

    def _apply(self, requests: list[pb.IngestRequest], received_us: int) -> None:
        while requests:  # a message with a watermark ends a batch (Ingestor.apply_many)
            batch = next_batch(requests, MAX_MESSAGES)
            del requests[:len(batch)]
            self.counts += self.owner.ingestor.apply_many(batch, received_us)
            self.messages += len(batch)

    async def _end(self) -> None:
        assert self.transport is not None
        try:
            await self.owner.ingestor.settle()
        except Exception as e:  # the store or a watcher failed: no summary can promise read-your-writes
            log.exception("framed ingest: settling an END failed")
            self.fail(FrameError(f"service: the updates were applied but not settled ({type(e).__name__})",
                                 "settle"))
            return
        if self.transport.is_closing():
            return
        answer = summary(self.counts, self.messages)
        self.counts[:], self.messages = 0, 0
        self.transport.write(frame(SUMMARY, answer.SerializeToString()))
        self.ending = None
        self.transport.resume_reading()
        self._read_frames()  # what came after the END in the same read

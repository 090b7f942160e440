"""Follows the feature service's Watch stream: changed windows pushed as they close steps, held in
the gateway's memory and acknowledged at once (the feature service ends an Ingest call only
after that acknowledgement: read-your-writes). A broken stream is reopened (the first messages
of a new one are a snapshot, so nothing is missed). With several feature replicas, one
WindowWatch follows each (``follow_all``), all into the same memory: each replica pushes only
the stocks it owns. A gateway worker asks each for its own shard only. While a replica's stream
is down, its stocks' held windows may be stale: the memory stops answering for them (Predict
reads the store) until a new stream has delivered its snapshot. A stream that stalls unnoticed
is covered by the lease each message grants: the held windows answer only until the lease runs
out, counted from the sending of the acknowledgement the message echoes
(services/feature/watch.py). In `rtvol serve embedded` the replica sharing the process is
followed in process (``local``): the same messages and acknowledgements, none serialised, no
gRPC hop."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from rtvol import auth, sharding, tls, window_rows
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.rpc import MAX_MESSAGE_BYTES
from rtvol.services.gateway import metrics
from rtvol.services.gateway.memory import WindowMemory
from rtvol.tasks import BackgroundTask
from rtvol.watch_stream import WatchStream

log = logging.getLogger(__name__)
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


class WindowWatch:
    def __init__(self, feature_url: str, memory: WindowMemory, client_tls: tls.ClientTLS | None = None,
                 api_key: str = "", retry_s: float = 0.2, replica: int = 0, replicas: int = 1,
                 rows: bool = True, shard: tuple[int, int] = (0, 1),
                 local: WatchStream | None = None) -> None:
        """``rows``: take windows as their newest rows (rtvol/window_rows.py), not whole.
        ``shard``: (index, count) of the gateway worker: it follows only those stocks.
        ``local``: the replica's Watch stream in this process (followed instead of ``feature_url``)."""
        self.url, self.memory, self.retry_s, self.replica = feature_url, memory, retry_s, str(replica)
        # the stocks it pushes to this process
        self.owned = sharding.owned(memory.stocks, replicas, replica) & memory.mine
        self.client_tls, self.credential = client_tls, auth.metadata(api_key)
        self.metadata = [*self.credential, *([window_rows.METADATA] if rows else []),
                         *([sharding.shard_metadata(*shard)] if shard[1] > 1 else [])]
        self.rows, self.shard, self.local = rows, shard, local
        self._task = BackgroundTask()
        self._channel: grpc.aio.Channel | None = None  # while a Watch call is open on it
        self._local_open = False  # while a Watch stream in process is open

    def connected(self) -> bool:
        """A Watch call is open on a connected channel (a replica with no window yet pushes
        nothing, so no batch can tell)."""
        return self._local_open or (self._channel is not None and (
            self._channel.get_state() == grpc.ChannelConnectivity.READY))

    async def follow(self) -> None:
        """One Watch stream until it ends."""
        if self.local is not None:
            self._local_open = True
            metrics.WATCH_IN_PROCESS.labels(self.replica).set(1)
            try:
                await self._read(_LocalCall(self.local, self.rows, self.shard), time.monotonic())
            finally:
                self._local_open = False
                metrics.WATCH_IN_PROCESS.labels(self.replica).set(0)
            return
        async with tls.channel(self.url, self.client_tls, CHANNEL_OPTIONS) as channel:
            opened = time.monotonic()  # before the feature service can send the first message
            call = fpb_grpc.FeaturesStub(channel).Watch(metadata=self.metadata)
            self._channel = channel
            try:
                await self._read(call, opened)
            finally:
                self._channel = None

    async def _read(self, call: Any, opened: float) -> None:
        """Holds what ``call`` (a Watch call, over gRPC or in process) brings until it ends."""
        connected = metrics.WATCH_CONNECTED.labels(self.replica)
        batches = metrics.WATCH_BATCHES.labels(self.replica)
        acks = _Acks(call, opened)
        try:
            while (batch := await call.read()) is not grpc.aio.EOF:
                connected.set(1)
                self.memory.hold(batch)
                # from the first batch (the snapshot) until the lease it grants runs out
                self.memory.valid_until[self.owned] = acks.lease_end(batch.acked, batch.lease_us)
                acks.held(batch.batch)
                batches.inc()
        finally:
            acks.stop()
            self.memory.valid_until[self.owned] = 0.0  # until a new stream's snapshot
            connected.set(0)
            call.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await self.follow()
            except grpc.aio.AioRpcError as e:  # feature service away: Redis still answers
                metrics.UPSTREAM_ERRORS.labels("feature_watch", e.code().name).inc()
                log.debug("feature replica %s (%s): Watch ended: %s", self.replica, self.url, e.code().name)
            except (window_rows.RowsGap, ValueError) as e:  # a window it cannot rebuild: a new snapshot
                metrics.UPSTREAM_ERRORS.labels("feature_watch", type(e).__name__).inc()
                log.warning("feature replica %s (%s): Watch restarted: %s", self.replica, self.url, e)
            await asyncio.sleep(self.retry_s)

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()


class _LocalCall:
    """A Watch call on the feature service of this process, shaped as grpc's: ``read`` (a batch,
    or grpc.aio.EOF), ``write`` (an acknowledgement) and ``cancel``. The batches are the feature
    service's own messages, read before the next is produced (the stream stamps each as it
    yields it)."""

    def __init__(self, stream: WatchStream, rows: bool, shard: tuple[int, int]) -> None:
        self._acks: asyncio.Queue[fpb.WatchAck | None] = asyncio.Queue()
        self._batches = stream(self._read_acks(), rows, shard)
        self._closing: asyncio.Task[None] | None = None

    async def _read_acks(self) -> AsyncIterator[fpb.WatchAck]:
        while (ack := await self._acks.get()) is not None:
            yield ack

    async def read(self) -> Any:
        try:
            return await anext(self._batches)
        except StopAsyncIteration:
            return grpc.aio.EOF

    async def write(self, ack: fpb.WatchAck) -> None:
        self._acks.put_nowait(ack)

    def cancel(self) -> None:
        """Ends the stream: the feature service stops waiting for this watcher."""
        self._acks.put_nowait(None)
        # kept: a task only the loop refers to may be collected before it runs
        self._closing = asyncio.ensure_future(self._batches.aclose())  # type: ignore[attr-defined]


class _Acks:
    """Acknowledges held batches beside the reads: the next batch is read while an
    acknowledgement is being written (a write waits for grpc's completion), and the batches
    held meanwhile are acknowledged together by the newest one (an acknowledgement covers
    every batch up to it). Only held batches are acknowledged, so read-your-writes holds.
    Remembers when each acknowledgement was sent: the start of the lease a message echoing it
    grants."""

    def __init__(self, call: Any, opened: float) -> None:
        self.call, self.newest, self.written = call, 0, 0
        self.unechoed: collections.deque[tuple[int, float]] = collections.deque()  # (batch, sent)
        self.lease_start = opened  # what a message echoing no acknowledgement grants from
        self._more = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def lease_end(self, acked: int, lease_us: int) -> float:
        """Until when (monotonic) a message echoing acknowledgement ``acked`` lets the held
        windows answer; a feature service older than leases (``lease_us`` 0) grants no end."""
        while self.unechoed and self.unechoed[0][0] <= acked:  # echoes only grow
            self.lease_start = self.unechoed.popleft()[1]
        return self.lease_start + lease_us / 1e6 if lease_us > 0 else math.inf

    def held(self, batch: int) -> None:
        self.newest = batch
        self._more.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._more.wait()
                self._more.clear()
                if self.newest > self.written:
                    self.written = self.newest
                    self.unechoed.append((self.written, time.monotonic()))  # before it can arrive
                    await self.call.write(fpb.WatchAck(batch=self.written))
        except Exception as e:  # the stream broke: the reads see it end (and the feature service
            log.debug("Watch acknowledgement not written: %r", e)  # drops an unacknowledging watcher)

    def stop(self) -> None:
        self._task.cancel()


def follow_all(urls: list[str], memory: WindowMemory, client_tls: tls.ClientTLS | None = None,
               api_key: str = "", rows: bool = True, shard: tuple[int, int] = (0, 1),
               local: dict[int, WatchStream] | None = None) -> list[WindowWatch]:
    """One WindowWatch per feature replica (``urls`` in ordinal order), into one memory;
    ``local``: by ordinal, the replicas in this process, followed there."""
    return [WindowWatch(url, memory, client_tls, api_key, replica=i, replicas=len(urls), rows=rows,
                        shard=shard, local=(local or {}).get(i)) for i, url in enumerate(urls)]


async def wait_connected(watches: list[WindowWatch], timeout_s: float, poll_s: float = 0.02) -> bool:
    """Until every one of ``watches`` is connected, at most ``timeout_s``; whether they are."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not all(w.connected() for w in watches):
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True

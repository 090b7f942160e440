"""Pushes changed windows to watching gateways (the Watch RPC): the first stage of the
tick-to-signal pipeline.

Ingest marks the stocks whose windows changed; one task sends them as ONE WindowBatch per
wake-up, with no timer: while the loop is busy applying messages, marks accumulate and leave
together on its next turn, so batches grow with load by themselves. Each watcher acknowledges
the batches it holds; an Ingest call ends only once every watcher acknowledged the windows it
changed (read-your-writes at step granularity: a Predict sent after the acknowledgement finds
the gateway knowing the new window). A watcher that does not acknowledge within
``ack_timeout_s`` is dropped (it reconnects and gets a snapshot), never holding Ingest back
for much longer.

A dropped watcher may not know it yet (a stalled gateway still answers from the windows it
holds), so each one holds a lease: every message tells it the newest acknowledgement this
stream had received and ``lease_s``, and it answers from memory only until ``lease_s`` after it
SENT that acknowledgement (docs/ARCHITECTURE.md, read-your-writes). Ingest calls that end after
a watcher left wait until ``lease_s`` after the last message it was sent (which came after that
acknowledgement arrived): its lease has surely run out, and Predict reads the store, written
before. An idle stream gets a heartbeat (an empty batch) every quarter lease to keep it.

A watcher that asks for them (rtvol/window_rows.py) gets each window as its rows since the
version last pushed to every watcher (one step: 48 bytes, not 2,400); its snapshot, and every
message to a watcher that did not ask, carries whole windows.

A watcher may follow one shard of the stocks (``INDEX/COUNT`` in rtvol/sharding.py: a gateway
worker that infers those stocks): it gets, and acknowledges, only their windows, so N workers
share the stream's work instead of each taking all of it.

A watcher holds at most ``inflight`` messages it has not acknowledged: its shard's windows that
change meanwhile stay pending, each its newest version, and leave in one message when an
acknowledgement comes. So a watcher that falls behind (a gateway worker whose loop also serves
a Subscribe client) gets fewer, larger messages instead of a backlog of small ones it reads
seconds late; a stock changed again meanwhile gets one signal for both steps, current. The end
of an Ingest call sends what its windows need at once (read-your-writes does not wait on it).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import AsyncIterator

import numpy as np

from rtvol import sharding
from rtvol.features.online import OnlineState
from rtvol.features.spec import STEPS
from rtvol.featurestore import now_us
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.services.feature import metrics
from rtvol.tasks import BackgroundTask

log = logging.getLogger(__name__)


class Watcher:
    """One Watch stream: the batches queued for it and the last one it acknowledged."""

    def __init__(self, depth: int, rows: bool = False, shard: tuple[int, int] = (0, 1)) -> None:
        self.queue: asyncio.Queue[pb.WindowBatch | None] = asyncio.Queue(depth)  # None: end
        self.rows = rows  # takes windows as their newest rows (after its snapshot)
        self.shard = shard  # (index, count): it follows the stocks whose id mod count is index
        self.sent = 0  # the last batch number queued
        # (batch, when queued) of the messages queued and not acknowledged yet
        self.unacked: collections.deque[tuple[int, float]] = collections.deque()
        self.acked = 0
        self.acked_event = asyncio.Event()  # set (and replaced) on every acknowledgement
        self.granted_at = 0.0  # monotonic: when it was last sent a message (and so a lease)
        self.ended = False

    def push(self, message: pb.WindowBatch) -> bool:
        """Queue ``message``; False when the watcher is too far behind."""
        if self.queue.full():
            return False
        self.sent = message.batch
        self.unacked.append((message.batch, time.monotonic()))
        self.queue.put_nowait(message)
        return True

    def end(self) -> None:
        """No more batches: the stream ends and nobody waits for its acknowledgements."""
        self.ended = True
        self.ack(self.sent)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def ack(self, batch: int) -> None:
        self.acked = max(self.acked, batch)
        while self.unacked and self.unacked[0][0] <= self.acked:
            self.unacked.popleft()
        event, self.acked_event = self.acked_event, asyncio.Event()
        event.set()

    async def caught_up(self, batch: int) -> None:
        while self.acked < batch:
            await self.acked_event.wait()


class WindowFeed:
    def __init__(self, state: OnlineState, max_batch: int, depth: int = 1024,
                 ack_timeout_s: float = 1.0, stored_us: np.ndarray | None = None,
                 lease_s: float | None = None, inflight: int = 2) -> None:
        """``stored_us``: per stock, when the store last wrote its window (the publisher's), for
        the batches' hop stamps (rtvol/pipeline_hops.py); None: not known. ``lease_s`` (below
        ``ack_timeout_s``): a watcher's lease; None: half the ack timeout. ``inflight``: the
        messages a watcher may hold unacknowledged before its windows wait, coalesced."""
        if inflight < 1:
            raise ValueError(f"inflight ({inflight}) must be at least 1")
        self.state, self.max_batch, self.depth, self.ack_timeout_s = state, max_batch, depth, ack_timeout_s
        self.inflight = inflight
        self.lease_s = ack_timeout_s / 2 if lease_s is None else lease_s
        if not 0 < self.lease_s < ack_timeout_s:
            raise ValueError(f"lease_s ({self.lease_s:g}) must be above 0 and below ack_timeout_s "
                             f"({ack_timeout_s:g})")
        self.lease_us = round(self.lease_s * 1e6)
        self.fenced_until = 0.0  # monotonic: until then a watcher that left may hold a lease
        self.pending = np.zeros(state.n_stocks, bool)
        self.received_us = np.zeros(state.n_stocks, np.int64)  # earliest unsent receipt per stock
        self.applied_us = np.zeros(state.n_stocks, np.int64)  # the end of that receipt's apply
        self.stored_us = np.zeros(state.n_stocks, np.int64) if stored_us is None else stored_us
        self.changed_us = np.zeros(state.n_stocks, np.int64)  # receipt that last changed each window
        # the window version last pushed to every watcher that follows the stock: each holds at
        # least it (a snapshot is never older), so rows after it rebuild the window anywhere
        self.pushed = np.zeros(state.n_stocks, np.int64)
        self.watchers: set[Watcher] = set()
        self._batches = itertools.count(1)  # one numbering for every stream: a batch is shared
        self._wake = asyncio.Event()
        self._task = BackgroundTask()

    def mark(self, idx: np.ndarray, received_us: int) -> None:
        """The windows of ``idx`` changed with updates received at ``received_us``."""
        if not len(idx):
            return
        self.changed_us[idx] = received_us  # what a snapshot says (a reconnecting watcher)
        if not self.watchers:
            return
        fresh = idx[~self.pending[idx]]
        self.received_us[fresh] = received_us
        self.applied_us[fresh] = now_us()  # marks are made as an apply (or a watermark) ends
        self.pending[idx] = True
        self._wake.set()

    def send(self, every: bool = False) -> None:
        """The pending windows to the watchers that follow them, now: all of them when
        ``every`` (what Ingest calls before it ends), else those whose watchers each hold fewer
        than ``inflight`` unacknowledged messages. Watchers of one shard share its messages."""
        idx = np.flatnonzero(self.pending)
        if not len(idx):
            return
        shards: dict[tuple[int, int], list[Watcher]] = {}
        for w in self.watchers:
            shards.setdefault(w.shard, []).append(w)
        if not every:  # a stock of a behind watcher's shard waits (for every watcher of it)
            behind = [s for s, ws in shards.items() if any(len(w.unacked) >= self.inflight for w in ws)]
            if behind and self._drop_stalled([w for s in behind for w in shards[s]]):
                return self.send()  # a stalled watcher no longer holds its shard back
            if behind:
                waits = np.zeros(len(idx), bool)
                for index, count in behind:
                    waits |= sharding.owner(idx, count) == index
                idx = idx[~waits]
                if not len(idx):
                    return
        self.pending[idx] = False
        rows = np.minimum(self.state.closed[idx] - self.pushed[idx], STEPS)  # since the last push
        self.pushed[idx] = self.state.closed[idx]
        for (index, count), watchers in shards.items():
            followed = sharding.owner(idx, count) == index
            part_ids, part_rows = idx[followed], rows[followed]
            for lo in range(0, len(part_ids), self.max_batch):
                self._push(watchers, part_ids[lo:lo + self.max_batch], part_rows[lo:lo + self.max_batch])

    def _push(self, watchers: list[Watcher], part: np.ndarray, rows: np.ndarray) -> None:
        """One batch of ``part``'s windows to ``watchers``: as their newest ``rows`` to those
        that asked for rows, whole to the others."""
        message = self._message(next(self._batches), part, self.received_us[part], self.applied_us[part])
        forms = {w.rows for w in watchers}
        compact = pb.WindowBatch()
        if True in forms:
            compact.CopyFrom(message)
            compact.windows = self.state.newest_rows(part, rows).astype("<f4").tobytes()
            compact.rows.extend(rows.tolist())
        if False in forms:
            message.windows = self.state.windows(part).astype("<f4").tobytes()
        for w in watchers:
            if not w.push(compact if w.rows else message):
                self._drop(w, "queue full")
        metrics.WATCH_BATCH.observe(len(part))

    def _message(self, batch: int, part: np.ndarray, received_us: np.ndarray, applied_us: np.ndarray
                 ) -> pb.WindowBatch:
        """The batch of ``part``'s windows, all but the windows themselves."""
        s = self.state
        stored = self.stored_us[part]
        stored[stored < applied_us] = 0  # that write held an older window: this one is not stored yet
        return pb.WindowBatch(
            batch=batch, stock_ids=part.tolist(), version=s.closed[part].tolist(),
            sequence=s.seq[part].tolist(),
            event_time_us=np.nan_to_num(np.round(s.time[part] * 1e6)).astype(np.int64).tolist(),
            received_us=received_us.tolist(), end_step=np.maximum(s.step[part], 0).tolist(),
            applied_us=applied_us.tolist(), stored_us=stored.tolist())

    def _drop_stalled(self, watchers: list[Watcher]) -> bool:
        """Drops those of ``watchers`` whose oldest unacknowledged message waited longer than
        the ack timeout (a stalled gateway would hold its shard's windows back for good);
        whether it dropped any."""
        now = time.monotonic()
        stalled = [w for w in watchers if w.unacked and now - w.unacked[0][1] > self.ack_timeout_s]
        for w in stalled:
            self._drop(w, "ack timeout")
        return bool(stalled)

    def _drop(self, w: Watcher, why: str) -> None:
        log.warning("dropping a window watcher (%s); it gets a snapshot when it reconnects", why)
        metrics.WATCH_DROPPED.labels(why).inc()
        self._leave(w)

    def _leave(self, w: Watcher) -> None:
        """``w`` gets nothing more; Ingest calls wait out the lease it may still hold."""
        self.watchers.discard(w)
        w.end()
        self.fenced_until = max(self.fenced_until, fence(w.granted_at, self.lease_s))

    async def settled(self) -> None:
        """Send what is pending and wait until every watcher acknowledged it, and until no
        watcher that left may still answer from older windows (bounded: ack timeout + lease)."""
        self.send(every=True)
        targets = [(w, w.sent) for w in self.watchers]
        if targets:
            await self._acknowledged(targets)
        if (left := self.fenced_until - time.monotonic()) > 0:
            await asyncio.sleep(left)  # a watcher that left may hold a lease until then
            metrics.WATCH_LEASE_WAITS.inc()

    async def _acknowledged(self, targets: list[tuple[Watcher, int]]) -> None:
        started = time.perf_counter()
        waits = [asyncio.ensure_future(w.caught_up(batch)) for w, batch in targets]
        _, late = await asyncio.wait(waits, timeout=self.ack_timeout_s)
        for (w, _), fut in zip(targets, waits, strict=True):
            if fut in late:
                fut.cancel()
                self._drop(w, "ack timeout")
        metrics.WATCH_ACK.observe(time.perf_counter() - started)

    def watch(self, rows: bool = False, shard: tuple[int, int] = (0, 1)) -> Watcher:
        """A new watcher of the stocks of ``shard`` (index, count), its queue starting with a
        snapshot of every one of them that has a window (whole windows; later ones as their
        newest rows where ``rows``)."""
        w = Watcher(self.depth + self.state.n_stocks // self.max_batch + 1, rows, shard)
        idx = np.flatnonzero(self.state.closed > 0)
        idx = idx[sharding.owner(idx, shard[1]) == shard[0]]
        known = self.changed_us[idx]  # 0: not known (restored state)
        for lo in range(0, len(idx), self.max_batch):
            part = idx[lo:lo + self.max_batch]
            message = self._message(next(self._batches), part, known[lo:lo + self.max_batch],
                                    np.zeros(len(part), np.int64))
            message.windows = self.state.windows(part).astype("<f4").tobytes()
            w.push(message)
        self.watchers.add(w)
        return w

    async def stream(self, acks: AsyncIterator[pb.WatchAck], rows: bool = False,
                     shard: tuple[int, int] = (0, 1)) -> AsyncIterator[pb.WindowBatch]:
        """The Watch RPC: batches out, acknowledgements in."""
        w = self.watch(rows, shard)

        async def read_acks() -> None:
            async for a in acks:
                w.ack(a.batch)
                if self.pending.any():  # windows of its shard may have waited for it
                    self._wake.set()

        reader = asyncio.create_task(read_acks())
        try:
            while (message := await self._next(w)) is not None:
                # shared by the streams: each serialises it as it yields
                message.sent_us, message.acked, message.lease_us = now_us(), w.acked, self.lease_us
                w.granted_at = time.monotonic()  # after that acknowledgement arrived
                yield message
        finally:
            reader.cancel()
            if w in self.watchers:
                self._leave(w)
            w.ack(w.sent)

    async def _next(self, w: Watcher) -> pb.WindowBatch | None:
        """The next queued message, or a heartbeat after a quarter lease with none."""
        if not w.queue.empty():
            return w.queue.get_nowait()
        try:
            async with asyncio.timeout(self.lease_s / 4):
                return await w.queue.get()
        except TimeoutError:
            if w.ended:  # it ended as the wait timed out: no lease after the fence was set
                return None
            w.sent = next(self._batches)
            return pb.WindowBatch(batch=w.sent)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.send()

    def start(self) -> None:
        self._task.start(self._run())

    def end_streams(self) -> None:
        """End every Watch stream (on drain: they never end by themselves; gateways reconnect
        to a replica that is serving, or warm from the store)."""
        for w in list(self.watchers):
            self._leave(w)

    async def stop(self) -> None:
        await self._task.stop()
        self.end_streams()


def fence(granted_at: float, lease_s: float) -> float:
    """When a watcher last sent a message at ``granted_at`` (monotonic) has surely lost its
    lease: that message echoed an acknowledgement the watcher had sent before, and its lease
    runs ``lease_s`` from that sending."""
    return granted_at + lease_s if granted_at else 0.0

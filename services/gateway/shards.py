"""Gateway workers share the model work (``--workers N``, N > 1): each changed window is
inferred once, by the worker whose shard holds the stock (stock id mod N), and its signal is
written to the shared table (services/gateway/signaltable.py). Every other worker is woken
through its eventfd. A worker with Subscribe clients copies the slots that changed into its
own memory and pushes them to those clients; one without copies another shard's slot only
when a Predict or GET asks for that stock (``pull``) and otherwise just lets read-your-writes
waits look again: with N workers every signal was copied N-1 times, most never read.
docs/ARCHITECTURE.md, "Gateway worker processes", says why this shape.

The parent creates the table and one eventfd per worker before starting them and passes
their numbers in ``ENV`` (``index/count:table_fd:wake_fd,wake_fd,...``); a restarted worker
gets the same ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

import numpy as np

from rtvol import sharding
from rtvol.services.gateway import metrics
from rtvol.services.gateway.cache import SignalCache
from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.signal import Signal
from rtvol.services.gateway.signaltable import SignalTable

log = logging.getLogger(__name__)
ENV = "RTVOL_GATEWAY_SHARDS"


@dataclass(frozen=True)
class Layout:
    """Which shard this worker infers (0-based), of how many, and the shared file descriptors."""

    index: int
    count: int
    table_fd: int
    wake_fds: tuple[int, ...]  # one per worker, by shard index

    def encode(self) -> str:
        return f"{self.index}/{self.count}:{self.table_fd}:{','.join(map(str, self.wake_fds))}"

    @classmethod
    def decode(cls, text: str) -> Layout:
        try:
            shard, table, wakes = text.split(":")
            index, count = (int(x) for x in shard.split("/"))
            layout = cls(index, count, int(table), tuple(int(x) for x in wakes.split(",")))
        except ValueError as e:
            raise SystemExit(f"{ENV}={text!r}: not index/count:table_fd:wake_fd,... ({e})") from e
        if not 0 <= layout.index < layout.count == len(layout.wake_fds):
            raise SystemExit(f"{ENV}={text!r}: shard index or wake-ups do not match the count")
        return layout

    def mine(self, stocks: int) -> np.ndarray:
        """Per stock id: whether this worker infers it (stable: the id mod the worker count)."""
        return sharding.owned(stocks, self.count, self.index)


def new_wake_fds(count: int) -> tuple[int, ...]:
    fds = tuple(os.eventfd(0, os.EFD_NONBLOCK) for _ in range(count))
    for fd in fds:
        os.set_inheritable(fd, True)
    return fds


class Shards:
    """This worker's side: publishes its own signals, mirrors the other shards'."""

    def __init__(self, layout: Layout, table: SignalTable, memory: WindowMemory, hub: Hub,
                 cache: SignalCache) -> None:
        """``cache``: this worker's signal LRU, which GET /v1/signals/ID reads before Redis."""
        self.layout, self.table, self.memory, self.hub, self.cache = layout, table, memory, hub, cache
        self.others = ~layout.mine(table.stocks)
        self.seen = np.zeros(table.stocks, np.uint64)  # slot words already mirrored
        self.wake_fd = layout.wake_fds[layout.index]
        self.peer_fds = [fd for i, fd in enumerate(layout.wake_fds) if i != layout.index]
        memory.pull = cache.pull = self.pull  # another shard's signal, copied when asked for

    def publish(self, signals: list[Signal]) -> None:
        """After this worker inferred ``signals`` (its shard): into the table, then wake the others."""
        self.table.write(signals)
        for fd in self.peer_fds:
            os.eventfd_write(fd, 1)

    def mirror(self, push: bool = True) -> int:
        """Copy the other shards' changed slots into memory (and to Subscribe clients); returns
        how many. A slot written twice since the last look gives its newest signal only, as the
        pipeline itself infers only the newest window of a stock (counted)."""
        idx = np.flatnonzero((self.table.words != self.seen) & self.others)  # read() reads the words again
        return self._copy(idx, push)

    def pull(self, stock_id: int) -> None:
        """Copy another shard's slot of ``stock_id`` into memory if it changed since the last look
        (a word compare when not); pushed as a mirror would, so Subscribe clients miss nothing."""
        if self.others[stock_id] and self.table.words[stock_id] != self.seen[stock_id]:
            self._copy(np.array([stock_id]), push=bool(self.hub.subscriptions))

    def _copy(self, idx: np.ndarray, push: bool) -> int:
        if not len(idx):
            return 0
        read_words, signals = self.table.read(idx)
        if not signals:
            return 0
        ids = np.fromiter((s.stock_id for s in signals), np.int64, len(signals))
        prior = self.seen[ids]  # a write adds 2 to a slot's word
        if push and (skipped := int(np.count_nonzero((prior > 0) & (read_words - prior > 2)))):
            metrics.SHARED_COALESCED.inc(skipped)  # signals a Subscribe client never got
        self.seen[ids] = read_words
        self.memory.settle(signals)
        self.cache.put_local(signals)  # a read of another shard's signal needs no Redis
        if push:
            self.hub.publish(signals)
        metrics.SHARED_MIRRORED.inc(len(signals))
        return len(signals)

    def _woken(self) -> None:
        try:
            os.eventfd_read(self.wake_fd)
        except BlockingIOError:  # read already by an earlier wake-up
            return
        try:
            if self.hub.subscriptions:
                self.mirror()
            else:  # nothing to push: waits for another shard's signal look again (and pull it)
                self.memory.settle([])
        except Exception:  # keep following; a Predict for a stock missed computes it itself
            log.exception("mirroring the shared signal table failed")

    def start(self) -> None:
        """Warm from the table (what the other workers computed before this one started), then
        follow the wake-ups."""
        self.mirror(push=False)
        asyncio.get_running_loop().add_reader(self.wake_fd, self._woken)

    def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self.wake_fd)

"""Applies an Ingest stream's messages in batches: what arrives in a run goes as one.

Applying a message costs about the same for one update as for a hundred (a few hundred µs of
numpy calls), and a gRPC read about 50 µs, so a feed of single-update messages is kept up with
only if many are applied at once. The stream is read in one task and nothing spins or polls:

- a message that comes after a pause (nothing for ``quiet_s`` since the previous message or
  the last apply) is applied on the next loop turn, with whatever else that turn delivered: a
  feed of isolated updates waits for no timer;
- a message that comes in a run waits for the rest of the run, or until ``max_messages`` are
  pending: ``max_wait_s`` (the event loop's timers fire at millisecond granularity), or longer
  when applying is slow, so that applying takes at most ``apply_share`` of the stream's time
  (never longer than ``max_hold_s``). Under a load the reader can barely keep up with, batches
  grow until the apply's fixed cost per call (fan-out wake-ups, store and Watch marks, a few
  hundred µs of numpy calls) is a small part of each message's cost.

A message that carries a watermark ends a batch, so updates after it are still judged against it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import numpy as np

from rtvol.featurestore import now_us
from rtvol.proto.v1 import features_pb2 as pb

ApplyFn = Callable[[list[pb.IngestRequest], int], np.ndarray]  # (messages, received at µs) -> counts
MAX_MESSAGES = 4096  # an apply takes at most this many messages (any Ingest transport)


class StreamBatcher:
    def __init__(self, apply: ApplyFn, max_messages: int = MAX_MESSAGES, quiet_s: float = 1e-3,
                 max_wait_s: float = 1e-3, apply_share: float = 0.25, max_hold_s: float = 5e-3) -> None:
        self.apply, self.max_messages = apply, max_messages
        self.quiet_s, self.max_wait_s, self.max_hold_s = quiet_s, max_wait_s, max_hold_s
        self.reading_per_applying = (1 - apply_share) / apply_share

    def _wait_s(self, stream: _Stream) -> float:
        """How long a message in a run waits for the rest of it."""
        return min(self.max_hold_s, max(self.max_wait_s, stream.apply_s * self.reading_per_applying))

    async def consume(self, requests: AsyncIterator[pb.IngestRequest]) -> tuple[np.ndarray, int]:
        """Counts per reason over the whole stream, and the number of messages."""
        stream = _Stream(self.apply, self.max_messages)
        loop = asyncio.get_running_loop()
        last = -1.0  # monotonic time of the previous message or of the end of the last apply
        try:
            async for request in requests:
                now = time.monotonic()
                stream.add(request)
                if len(stream.pending) >= self.max_messages:
                    stream.flush()
                elif stream.due is None:
                    in_run = now - last < self.quiet_s
                    stream.due = (loop.call_at(loop.time() + self._wait_s(stream), stream.flush) if in_run
                                  else loop.call_soon(stream.flush))
                last = max(now, stream.flushed_at)
        finally:
            stream.flush()  # what came before the client's error, if any, is applied too
        stream.raise_error()
        return (stream.counts if stream.counts is not None else self.apply([], now_us())), stream.messages


class _Stream:
    """One Ingest stream's pending messages and the outcome of those applied."""

    def __init__(self, apply: ApplyFn, max_messages: int) -> None:
        self.apply, self.max_messages = apply, max_messages
        self.pending: list[pb.IngestRequest] = []
        self.received: list[int] = []  # receipt of each pending message, µs
        self.due: asyncio.Handle | None = None  # the scheduled flush
        self.counts: np.ndarray | None = None
        self.messages, self.flushed_at = 0, -1.0
        self.apply_s = 0.0  # wall time of the last flush that applied something
        self.error: BaseException | None = None  # raised by an apply that ran as a loop callback

    def add(self, request: pb.IngestRequest) -> None:
        self.received.append(now_us())
        self.pending.append(request)

    def flush(self) -> None:
        if self.due is not None:
            self.due.cancel()
            self.due = None
        started, applying = time.monotonic(), bool(self.pending)
        try:
            while self.pending:
                batch = next_batch(self.pending, self.max_messages)
                first_us = self.received[0]
                del self.pending[:len(batch)], self.received[:len(batch)]
                c = self.apply(batch, first_us)
                self.counts = c if self.counts is None else self.counts + c
                self.messages += len(batch)
        except Exception as e:  # kept for the stream's task, which raises it
            self.error = self.error or e
            self.pending.clear()
            self.received.clear()
        self.flushed_at = time.monotonic()
        if applying:
            self.apply_s = self.flushed_at - started

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def next_batch(pending: list[pb.IngestRequest], limit: int) -> list[pb.IngestRequest]:
    """The next batch: up to ``limit`` messages, ending at the first that carries a watermark."""
    for i, request in enumerate(pending[:limit]):
        if request.watermark_us > 0:
            return pending[:i + 1]
    return pending[:limit]

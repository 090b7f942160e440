"""Market-data feed pump: Optiver-layout data replayed into the feature service's Ingest.

Updates are merged across stocks in event-time order, sent as column-batched messages on
one client stream, paced by a token bucket. A message never spans a 10-minute bucket, and
the last one of each bucket carries the bucket's end as watermark, so every step closes.
Given several feature-service replicas (targets, in ordinal order), each message is split
by rtvol.sharding: replica i gets the updates of the stocks it owns on its own stream, and
every watermark.
With a TickServer, each message's updates also go to WebSocket subscribers (tickserver.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from rtvol import auth, sharding, tls
from rtvol.features.online_batch import UpdateBatch
from rtvol.features.online_replay import merge, stock_updates
from rtvol.features.spec import BUCKET_SECONDS
from rtvol.ingest_codec import encode_columns
from rtvol.ingest_frames import AsyncClient
from rtvol.loadtest.pacing import TokenBucket
from rtvol.loadtest.tickserver import TickServer, TickStats
from rtvol.localproc import wait_until
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from rtvol.training import optiver


def _stock(data: Path, stock: int, buckets: range | None) -> UpdateBatch:
    """One stock's updates in ``buckets``, numbered as in a replay of all its data.

    Sequence numbers continue across separate runs (buckets 0:10, then 10:10), so the
    feature service does not reject a later run's updates as out of order.
    """
    tables = [optiver.read_book(data, stock), optiver.read_trade(data, stock)]
    cols = [{c: t.column(c).to_numpy() for c in t.column_names} for t in tables]
    if buckets is None:
        return stock_updates(stock, *cols)
    keep = [(c["time_id"] >= buckets.start) & (c["time_id"] < buckets.stop) for c in cols]
    before = sum(int(np.count_nonzero(c["time_id"] < buckets.start)) for c in cols)
    b = stock_updates(stock, *({k: v[m] for k, v in c.items()} for c, m in zip(cols, keep, strict=True)))
    return replace(b, seq=b.seq + before)


def load(data: Path, buckets: range | None = None) -> tuple[list[int], UpdateBatch]:
    """(stock ids, every stock's updates in ``buckets`` of time_id, merged by event time)."""
    stocks = [int(s) for s in optiver.stock_ids(data)]
    return stocks, merge([_stock(data, s, buckets) for s in stocks])


Messages = Iterator[tuple[UpdateBatch, int]]


def messages(updates: UpdateBatch, batch: int) -> Messages:
    """(updates, watermark µs or 0) chunks of at most ``batch`` updates."""
    bucket = (updates.time // BUCKET_SECONDS).astype(np.int64)
    edges = np.flatnonzero(np.diff(bucket)) + 1  # where a new bucket starts
    for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(bucket)], strict=True):
        for start in range(int(lo), int(hi), batch):
            stop = min(start + batch, int(hi))
            watermark = int((bucket[lo] + 1) * BUCKET_SECONDS * 1_000_000) if stop == hi else 0
            yield updates.take(np.arange(start, stop)), watermark


def split(part: UpdateBatch, watermark: int, replicas: int) -> list[pb.IngestRequest | None]:
    """One message per replica (None: nothing for it): its stocks' updates, every watermark."""
    if replicas == 1:
        return [encode_columns(part, watermark)]
    who = sharding.owner(part.stock_id, replicas)
    out: list[pb.IngestRequest | None] = []
    for i in range(replicas):
        mine = who == i
        out.append(encode_columns(part.take(mine), watermark) if mine.any() or watermark else None)
    return out


@dataclass
class FeedReport:
    updates: int = 0
    messages: int = 0
    seconds: float = 0.0
    rate: float = 0.0  # achieved updates/s
    target_rate: float = 0.0  # 0: as fast as possible
    lag_s: float = 0.0  # behind the ideal schedule at the end (0 when unpaced)
    max_lag_s: float = 0.0
    accepted: int = 0
    rejected: int = 0
    ticks: TickStats | None = None  # WebSocket subscribers, when served

    def line(self) -> str:
        return (f"fed {self.updates:,} updates in {self.messages:,} messages, {self.seconds:.2f} s: "
                f"{self.rate:,.0f} updates/s (target {self.target_rate:,.0f}), lag {self.lag_s:.3f} s "
                f"(max {self.max_lag_s:.3f} s), accepted {self.accepted:,}, rejected {self.rejected:,}"
                + (f"\n{self.ticks.line()}" if self.ticks is not None else ""))


class Metrics:
    """Prometheus counters on their own registry (one per pump, no global state)."""

    def __init__(self, port: int | None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.updates = Counter("rtvol_feed_updates", "updates sent", registry=self.registry)
        self.lag = Gauge("rtvol_feed_lag_seconds", "behind the paced schedule", registry=self.registry)
        if port is not None:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)


Progress = Callable[[FeedReport], None]


async def _write(call: Any, msg: pb.IngestRequest) -> None:
    try:
        await call.write(msg)
    except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
        # the call ended under us (a refusal can race a write, which then fails as INTERNAL):
        # raise the call's own status (grpc.RpcError)
        await call
        raise


targets_of = sharding.targets  # HOST:PORT[,HOST:PORT...]: the replicas in ordinal order


class _GrpcIngest:
    """One gRPC Ingest call."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def write(self, msg: pb.IngestRequest) -> None:
        await _write(self.call, msg)

    async def finish(self) -> pb.IngestSummary:
        await self.call.done_writing()
        return await self.call


class _StreamIngest:
    """One framed Ingest connection (the feature service's --stream-port)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def write(self, msg: pb.IngestRequest) -> None:
        await self.client.send([msg])

    async def finish(self) -> pb.IngestSummary:
        return await self.client.end()


async def _open(stack: contextlib.AsyncExitStack, target: str, transport: str,
                client_tls: tls.ClientTLS | None, api_key: str, timeout_s: float
                ) -> _GrpcIngest | _StreamIngest:
    if transport == "stream":
        host, port = target.rsplit(":", 1)
        client = await AsyncClient.connect(host, int(port), api_key,
                                           client_tls.ssl_context() if client_tls is not None else None)
        stack.push_async_callback(client.close)
        return _StreamIngest(client)
    channel = await stack.enter_async_context(tls.channel(target, client_tls))
    ingest = pb_grpc.FeaturesStub(channel).Ingest
    return _GrpcIngest(ingest(timeout=timeout_s, metadata=auth.metadata(api_key)))


async def pump(target: str, msgs: Messages, rate: float = 0.0, batch: int = 2000,
               progress: Progress | None = None, metrics: Metrics | None = None,
               timeout_s: float = 600.0, progress_every_s: float = 0.5,
               ticks: TickServer | None = None, client_tls: tls.ClientTLS | None = None,
               api_key: str = "", transport: str = "grpc") -> FeedReport:
    """Send ``msgs`` on one Ingest stream per target (``targets_of``) at ``rate`` updates/s
    (0: unpaced); bounded by ``timeout_s``. ``client_tls`` and ``api_key``: how to reach a
    secured feature service. ``transport``: gRPC Ingest, or the framed stream ("stream": the
    targets are the feature services' --stream-port).

    ``ticks`` gets each message's updates as it is sent (a hand-over: its subscribers never
    hold the stream back). ``client_tls`` and ``api_key``: how to reach a secured feature service."""
    report = FeedReport(target_rate=rate, ticks=ticks.stats if ticks is not None else None)
    # room for two messages: a wait that overshoots by less than one message loses no time
    bucket = TokenBucket(rate, burst=max(rate * 0.02, 2.0 * batch)) if rate > 0 else None
    started = time.perf_counter()
    shown = started

    async def send(calls: list[_GrpcIngest | _StreamIngest]) -> list[pb.IngestSummary]:
        nonlocal shown
        for part, watermark in msgs:
            n = len(part)
            if bucket is not None:
                await bucket.take(n)
                lag = max(0.0, time.perf_counter() - started - report.updates / rate)
                report.lag_s, report.max_lag_s = lag, max(report.max_lag_s, lag)
            if ticks is not None:
                ticks.publish(part)
            for call, msg in zip(calls, split(part, watermark, len(calls)), strict=True):
                if msg is not None:
                    await call.write(msg)
            report.updates += n
            report.messages += 1
            if metrics is not None:
                metrics.updates.inc(n)
                metrics.lag.set(report.lag_s)
            now = time.perf_counter()
            if progress is not None and now - shown >= progress_every_s:
                shown = now
                report.seconds = now - started
                report.rate = report.updates / report.seconds
                progress(report)
        return [await call.finish() for call in calls]

    async with contextlib.AsyncExitStack() as stack:
        calls = [await _open(stack, t, transport, client_tls, api_key, timeout_s) for t in targets_of(target)]
        summaries = await asyncio.wait_for(send(calls), timeout_s)
    report.seconds = time.perf_counter() - started
    report.rate = report.updates / report.seconds if report.seconds > 0 else 0.0
    report.accepted = sum(int(s.accepted) for s in summaries)
    report.rejected = sum(int(s.rejected) for s in summaries)
    return report


def print_progress(r: FeedReport) -> None:
    ws = (f" ws {r.ticks.active} subscribers, dropped {r.ticks.dropped_frames:,} frames"
          if r.ticks is not None else "")
    print(f"\rfeed: {r.updates:>12,} updates {r.rate:>10,.0f}/s lag {r.lag_s:6.3f} s{ws}",
          end="", file=sys.stderr, flush=True)


def serve_ticks(ticks: TickServer, metrics: Metrics | None, subscribers: int, wait_s: float) -> None:
    """Announce the (started) WebSocket server; wait (bounded) for ``subscribers``."""
    if metrics is not None:
        metrics.registry.register(ticks)
    print(f"ws: raw ticks on {ticks.url}", file=sys.stderr, flush=True)
    if subscribers and not wait_until(lambda: ticks.subscribers >= subscribers, wait_s):
        print(f"ws: {ticks.subscribers} of {subscribers} subscribers after {wait_s:g} s; feeding anyway",
              file=sys.stderr, flush=True)


def run(target: str, data: Path, buckets: range | None = None, rate: float = 0.0, batch: int = 2000,
        freeze_gc: bool = False, metrics_port: int | None = None,
        progress: Progress | None = None, ticks: TickServer | None = None,
        wait_subscribers: int = 0, wait_s: float = 30.0,
        drain_s: float = 5.0, client_tls: tls.ClientTLS | None = None,
        api_key: str = "", transport: str = "grpc") -> tuple[list[int], FeedReport]:
    """Load, then pump, serving ``ticks`` (started) meanwhile and stopping it after; returns
    (stock ids, report)."""
    try:
        stocks, updates = load(data, buckets)
        if freeze_gc:  # the loaded arrays are long-lived: keep the collector from rescanning them
            gc.collect()
            gc.freeze()
        metrics = Metrics(metrics_port) if metrics_port is not None else None
        if ticks is not None:
            serve_ticks(ticks, metrics, wait_subscribers, wait_s)
        report = asyncio.run(pump(target, messages(updates, batch), rate, batch, progress, metrics,
                                  ticks=ticks, client_tls=client_tls, api_key=api_key,
                                  transport=transport))
    finally:
        if ticks is not None:
            ticks.stop(drain_s)
    if progress is not None:
        print(file=sys.stderr)
    return stocks, report


def replay(target: str, data: Path, buckets: range, client_tls: tls.ClientTLS | None = None,
           api_key: str = "", transport: str = "grpc") -> list[int]:
    """Ingest the given buckets of every stock, unpaced (tests); returns the stocks."""
    return run(target, data, buckets, client_tls=client_tls, api_key=api_key, transport=transport)[0]


def report_dict(r: FeedReport) -> dict[str, Any]:
    """The report as JSON-ready values; ``from_dict`` reads it back."""
    doc = {k: v for k, v in asdict(r).items() if k != "ticks"}
    if r.ticks is not None:
        doc["ws"] = asdict(r.ticks) | {"rejected": dict(r.ticks.rejected)}
    return doc


def from_dict(doc: dict[str, Any]) -> FeedReport:
    """A report written by ``report_dict`` (older ones wrote every number as a float)."""
    ws, kinds = doc.get("ws"), asdict(FeedReport())  # each field's default gives its type
    ticks = None if ws is None else TickStats(**ws | {"rejected": Counter(ws["rejected"])})
    return FeedReport(**{k: type(kinds[k])(v) for k, v in doc.items() if k in kinds and k != "ticks"},
                      ticks=ticks)

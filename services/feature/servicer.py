"""The Features gRPC service: Ingest (client streaming), GetFeatures, Universe, GetVwap."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
from opentelemetry import trace

from rtvol import sharding, window_rows
from rtvol.errors import InvalidInput
from rtvol.features.online import OnlineState
from rtvol.features.online_batch import REASONS, R, UpdateBatch
from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.featurestore import FeatureStore, now_us
from rtvol.ingest_codec import decode_many
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from rtvol.services.feature import metrics
from rtvol.services.feature.batching import StreamBatcher
from rtvol.services.feature.estimates import Filters, universe
from rtvol.services.feature.fanout import FanOut
from rtvol.services.feature.publisher import Publisher
from rtvol.services.feature.vwap import Vwap
from rtvol.services.feature.watch import WindowFeed
from rtvol.telemetry import extract_metadata, traced

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Features"].full_name


def _bad(method: str, message: str, reason: str) -> InvalidInput:
    """The error to raise for a bad call (INVALID_ARGUMENT naming the field), counted."""
    metrics.BAD_REQUESTS.labels(method, reason).inc()
    return InvalidInput(message, reason)


def _count(request: pb.IngestRequest) -> int:
    return len(request.updates) + len(request.columns.stock_id)


class Ingestor:
    """Applies ingest messages to the state and counts the outcome; never raises on bad updates."""

    def __init__(self, state: OnlineState, publisher: Publisher, max_batch: int,
                 fanout: FanOut | None = None, owned: np.ndarray | None = None,
                 feed: WindowFeed | None = None) -> None:
        self.state, self.publisher, self.max_batch = state, publisher, max_batch
        self.fanout = fanout or FanOut([])
        self.owned = owned  # None: every stock is this replica's
        self.feed = feed or WindowFeed(state, max_batch)  # without watchers: marks nothing

    def _changed(self, idx: np.ndarray, received_us: int) -> None:
        # the Watch push first: woken first, its task queues the batch and the Watch stream
        # writes it on the loop turn before the store's flush (windows copied, checkpoints
        # exported, a Redis write encoded), which no signal waits for
        self.feed.mark(idx, received_us)
        self.publisher.mark(idx, received_us)

    def _apply(self, batch: UpdateBatch) -> np.ndarray:
        """Reasons of ``batch``'s updates; another replica's stocks are not_owned."""
        if self.owned is None:
            return self.state.apply(batch)
        known = (batch.stock_id >= 0) & (batch.stock_id < self.state.n_stocks)
        mine = ~known | self.owned[np.where(known, batch.stock_id, 0)]  # unknown ids: their own reasons
        reason = np.full(len(batch), R["not_owned"], np.int8)
        reason[mine] = self.state.apply(batch.take(mine))
        return reason

    async def settle(self) -> None:
        """Read-your-writes at the end of an Ingest call (gRPC or framed stream): returns once
        the windows and sequence numbers it changed are in the store and every watching gateway
        holds its windows."""
        await self.publisher.flush(touched=True)
        await self.feed.settled()

    def apply(self, request: pb.IngestRequest) -> np.ndarray:
        """Counts per reason (index into REASONS) for this message."""
        return self.apply_many([request], now_us())

    def apply_many(self, requests: list[pb.IngestRequest], received_us: int) -> np.ndarray:
        """Counts per reason for these messages, applied as one batch (received at
        ``received_us``); only the last may carry a watermark (services/feature/batching.py)."""
        counts = np.zeros(len(REASONS), np.int64)
        sized = []
        for request in requests:
            n = _count(request)
            if n > self.max_batch:
                counts[R["oversized_batch"]] += n
            elif n:
                sized.append(request)
                metrics.BATCH.observe(n)
        if sized:
            batch, malformed = decode_many(sized)
            counts[R["malformed"]] += sum(_count(sized[i]) for i in malformed)
            if len(batch):
                started = time.perf_counter()
                before = self.state.closed.copy()
                reason = self._apply(batch)
                counts += np.bincount(reason, minlength=len(REASONS))
                metrics.APPLY.observe(time.perf_counter() - started)
                metrics.MESSAGES_PER_APPLY.observe(len(sized))
                self.fanout.offer(batch, reason, time.monotonic())  # never blocks
                self._changed(np.flatnonzero(self.state.closed != before), received_us)
                self.publisher.touch(batch.stock_id[reason == 0])
        watermark = requests[-1].watermark_us if requests else 0
        if watermark > 0:
            closed = self.state.advance(watermark / 1e6)
            if closed is None:  # a jump past the stream's clock: never adopted
                counts[R["watermark_ahead"]] += 1
            else:
                self._changed(closed, received_us)
        metrics.UPDATES.inc(int(counts[0]))
        for i in np.flatnonzero(counts[1:]) + 1:
            metrics.REJECTS.labels(REASONS[i]).inc(int(counts[i]))
        return counts


def summary(counts: np.ndarray, messages: int) -> pb.IngestSummary:
    """An Ingest call's answer: counts per reason (index into REASONS) over its messages."""
    return pb.IngestSummary(accepted=int(counts[0]), rejected=int(counts[1:].sum()), messages=messages,
                            rejected_by_reason={REASONS[i]: int(counts[i])
                                                for i in np.flatnonzero(counts[1:]) + 1})


class FeaturesServicer(pb_grpc.FeaturesServicer):
    def __init__(self, state: OnlineState, store: FeatureStore, ingestor: Ingestor,
                 tracer: trace.Tracer, from_memory: bool = True, vwap: Vwap | None = None) -> None:
        self.state, self.store, self.ingestor, self.tracer = state, store, ingestor, tracer
        self.from_memory = from_memory  # False: read the store like any other reader would
        self.vwap = vwap or Vwap(state.n_stocks)  # without the fan-out consumer: never a trade
        self.batcher = StreamBatcher(ingestor.apply_many)

    async def Ingest(self, request_iterator: AsyncIterator[pb.IngestRequest],
                     context: grpc.aio.ServicerContext) -> pb.IngestSummary:
        counts, messages = await self.batcher.consume(request_iterator)
        await self.ingestor.settle()
        return summary(counts, messages)

    def _stock_ids(self, ids: list[int], method: str) -> np.ndarray:
        idx = np.asarray(ids, np.int64)
        if not len(idx):
            raise _bad(method, "stock_ids: empty", "empty")
        bad = idx[(idx < 0) | (idx >= self.state.n_stocks)]
        if len(bad):
            raise _bad(method, f"stock_ids: unknown stock ids {bad[:10].tolist()} "
                       f"(known: 0..{self.state.n_stocks - 1})", "unknown_stock")
        return idx

    async def Watch(self, request_iterator: AsyncIterator[pb.WatchAck],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WindowBatch]:
        metadata = tuple(context.invocation_metadata() or ())
        shard = (0, 1)
        for key, value in metadata:
            if key == sharding.WATCH_SHARD:
                try:
                    shard = sharding.parse_shard(str(value))
                except ValueError as e:
                    raise _bad("Watch", str(e), "shard") from None
        rows = window_rows.METADATA in metadata
        async for batch in self.ingestor.feed.stream(request_iterator, rows, shard):
            yield batch

    async def GetFeatures(self, request: pb.GetFeaturesRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetFeaturesResponse:
        started = time.perf_counter()
        # the caller's trace context only where spans go somewhere (docs/ARCHITECTURE.md, tracing)
        parent = extract_metadata(context.invocation_metadata()) if traced(self.tracer) else None
        with self.tracer.start_as_current_span("GetFeatures", context=parent) as span:
            idx = self._stock_ids(list(request.stock_ids), "GetFeatures")
            span.set_attribute("rtvol.stocks", len(idx))
            if self.from_memory:
                got = self.ingestor.publisher.read(idx)
            else:
                got = await self.store.read(idx)
                metrics.STORE.labels("read").observe(time.perf_counter() - started)
            age = got.age_ms(now_us())
            stale = ~got.found | ((age > request.max_staleness_ms) if request.max_staleness_ms > 0 else False)
            reply = pb.GetFeaturesResponse(
                windows=got.windows.tobytes(), steps=STEPS, features=N_FEATURES,
                feature_spec_hash=self.store.spec_hash, stock_ids=idx.tolist(),
                event_time_us=got.event_time_us.tolist(), sequence=got.sequence.tolist(),
                age_ms=np.where(got.found, age, 0.0).tolist(),
                stale=np.broadcast_to(stale, idx.shape).tolist(),
                found=got.found.tolist())
        metrics.GET.observe(time.perf_counter() - started)
        return reply

    async def Universe(self, request: pb.UniverseRequest,
                       context: grpc.aio.ServicerContext) -> pb.UniverseResponse:
        if request.top_k <= 0:
            raise _bad("Universe", "top_k: must be positive", "top_k")
        f = request.filters
        r = universe(self.state, request.top_k, Filters(f.min_price, f.max_price, f.min_volume, f.max_spread),
                     request.momentum_weight, request.volatility_weight)
        return pb.UniverseResponse(eligible=r.eligible, entries=[
            pb.UniverseEntry(stock_id=int(s), score=float(sc), volatility=float(v), momentum=float(m))
            for s, sc, v, m in zip(r.stock_ids, r.score, r.volatility, r.momentum, strict=True)])

    async def GetVwap(self, request: pb.GetVwapRequest,
                      context: grpc.aio.ServicerContext) -> pb.GetVwapResponse:
        idx = self._stock_ids(list(request.stock_ids), "GetVwap")
        v = self.vwap.view(idx)
        found = v.bucket >= 0
        age_ms = np.where(found, (time.monotonic() - v.ingested_s) * 1000.0, 0.0)
        return pb.GetVwapResponse(stock_ids=idx.tolist(), vwap=np.where(found, v.vwap, 0.0).tolist(),
                                  volume=v.volume.tolist(), time_id=v.bucket.tolist(),
                                  last_trade_us=v.last_trade_us.tolist(), age_ms=age_ms.tolist(),
                                  found=found.tolist())

"""rtvol.proto.v1.Signals for trading engines: unary and streaming Predict, Subscribe."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextvars import Token

import grpc
import numpy as np
from opentelemetry import context as otel_context

from rtvol.errors import InvalidInput
from rtvol.featurestore import now_us
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc
from rtvol.services.gateway import metrics, validation
from rtvol.services.gateway.columns import to_columns
from rtvol.services.gateway.hub import Hub, Subscription
from rtvol.services.gateway.predictor import Predictor
from rtvol.services.gateway.signal import Signal
from rtvol.telemetry import exports_traces, extract_metadata, extract_traceparent, observe_many

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Signals"].full_name


class SignalsServicer(pb_grpc.SignalsServicer):
    def __init__(self, predictor: Predictor, hub: Hub, max_ids: int) -> None:
        self.predictor, self.hub, self.max_ids = predictor, hub, max_ids
        self.draining = False  # set on SIGTERM: open PredictStreams end after their current answer
        # without an exporter a caller's trace context goes nowhere: not read (tens of µs a call)
        self.traced = exports_traces()

    async def _answer(self, request: pb.PredictRequest, route: str) -> pb.PredictResponse:
        try:
            validation.check_text("request_id", request.request_id, validation.MAX_REQUEST_ID)
            validation.check_text("traceparent", request.traceparent, validation.MAX_TRACEPARENT)
            ids = validation.check_ids(request.stock_ids, self.max_ids)
            staleness = validation.check_staleness(request.max_staleness_ms)
        except InvalidInput as e:
            metrics.REJECTS.labels(route, e.reason).inc()
            raise
        signals = await self.predictor.predict(ids, staleness, request.kelly, route)
        now = now_us()
        return pb.PredictResponse(signals=[s.to_proto(now) for s in signals], request_id=request.request_id)

    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext
                      ) -> pb.PredictResponse:
        token = _continue_trace(request.traceparent, self._caller(context))
        try:
            return await self._answer(request, "grpc")
        finally:
            _end_trace(token)

    async def PredictStream(self, request_iterator: AsyncIterator[pb.PredictRequest],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PredictResponse]:
        # each request is its own trace span: under the message's traceparent when it has
        # one, else under whoever opened the stream (its metadata), else a trace of its own
        opener = self._caller(context)
        async for request in request_iterator:
            token = _continue_trace(request.traceparent, opener)
            try:
                answer = await self._answer(request, "grpc_stream")
            except InvalidInput as e:  # this request only: answered in-stream, the stream goes on
                request_id = request.request_id[:validation.MAX_REQUEST_ID]
                answer = pb.PredictResponse(request_id=request_id, error=str(e))
            finally:  # before the yield: the stream may resume in another context
                _end_trace(token)
            yield answer
            if self.draining:  # the caller reconnects to a replica that is serving
                return

    def _caller(self, context: grpc.aio.ServicerContext) -> otel_context.Context | None:
        """The caller's trace context from its metadata; None where no span is exported."""
        return extract_metadata(context.invocation_metadata()) if self.traced else None

    def _subscribe(self, request: pb.SubscribeRequest) -> Subscription:
        if not request.all and not request.stock_ids:
            metrics.REJECTS.labels("subscribe", "empty_ids").inc()
            raise InvalidInput("stock_ids: empty (set all = true for every stock)", "empty_ids")
        if len(request.stock_ids) > self.max_ids:
            metrics.REJECTS.labels("subscribe", "too_many_ids").inc()
            raise InvalidInput(f"stock_ids: {len(request.stock_ids)} ids, at most {self.max_ids} "
                               "(set all = true for every stock)", "too_many_ids")
        return self.hub.subscribe(None if request.all else frozenset(request.stock_ids), request.hops)

    @contextlib.contextmanager
    def _subscribed(self, request: pb.SubscribeRequest) -> Iterator[Subscription]:
        """The stream's subscription, taken off the hub when the stream ends however it ends."""
        sub = self._subscribe(request)
        try:
            yield sub
        finally:
            self.hub.unsubscribe(sub)

    async def Subscribe(self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
                        ) -> AsyncIterator[pb.Signal]:
        with self._subscribed(request) as sub:
            while (waiting := await sub.take()) is not None:
                for msg in _pushed(waiting, _leaving(waiting), sub.hops):
                    yield msg

    async def SubscribeBatches(self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[pb.SignalBatch]:
        with self._subscribed(request) as sub:
            while (waiting := await sub.take()) is not None:
                yield pb.SignalBatch(signals=_pushed(waiting, _leaving(waiting), sub.hops))

    async def SubscribeColumns(self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
                               ) -> AsyncIterator[pb.SignalColumns]:
        with self._subscribed(request) as sub:
            while (waiting := await sub.take()) is not None:
                yield to_columns(waiting, _leaving(waiting), sub.hops)


def _leaving(signals: list[Signal]) -> int:
    """Now (wall µs), as ``signals`` are pushed: their tick-to-signal observed (at once: a
    pipeline batch pushes hundreds)."""
    now = now_us()
    received = np.fromiter((sig.received_us for sig in signals), np.int64, len(signals))
    observe_many(metrics.TICK_TO_SIGNAL, np.maximum(0, now - received[received > 0]) / 1e6)
    return now


def _pushed(signals: list[Signal], now: int, hops: bool = False) -> list[pb.Signal]:
    """The messages of signals pushed at ``now``; with ``hops`` each carries the pipeline's
    hops, this push the last (rtvol/pipeline_hops.py)."""
    msgs = [sig.to_proto(now) for sig in signals]
    if hops:
        for sig, msg in zip(signals, msgs, strict=True):
            if sig.hops_us:
                msg.hops_us.extend((*sig.hops_us, now))
    return msgs


def _continue_trace(traceparent: str, caller: otel_context.Context | None
                    ) -> Token[otel_context.Context] | None:
    """Attaches the message's traceparent, else the caller's context: the token to end it
    with; None (nothing attached) where the caller's context was not read."""
    if caller is None:
        return None
    return otel_context.attach(extract_traceparent(traceparent, caller) or caller)


def _end_trace(token: Token[otel_context.Context] | None) -> None:
    if token is not None:
        otel_context.detach(token)

"""Follows the feature service's Watch stream: changed windows pushed as they close steps,
held in the gateway's memory and acknowledged at once (the feature service ends an Ingest
call only after that acknowledgement: read-your-writes). A broken stream is reopened (the
first messages of a new one are a snapshot, so nothing is missed)."""

from __future__ import annotations

import asyncio
import logging

import grpc

from rtvol import auth, tls
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.rpc import MAX_MESSAGE_BYTES
from rtvol.services.gateway import metrics
from rtvol.services.gateway.memory import WindowMemory
from rtvol.tasks import BackgroundTask

log = logging.getLogger(__name__)
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


class WindowWatch:
    def __init__(self, feature_url: str, memory: WindowMemory, client_tls: tls.ClientTLS | None = None,
                 api_key: str = "", retry_s: float = 0.2) -> None:
        self.url, self.memory, self.retry_s = feature_url, memory, retry_s
        self.client_tls, self.credential = client_tls, auth.metadata(api_key)
        self._task = BackgroundTask()

    async def follow(self) -> None:
        """One Watch stream until it ends."""
        async with tls.channel(self.url, self.client_tls, CHANNEL_OPTIONS) as channel:
            call = fpb_grpc.FeaturesStub(channel).Watch(metadata=self.credential)
            try:
                while (batch := await call.read()) is not grpc.aio.EOF:
                    metrics.WATCH_CONNECTED.set(1)
                    self.memory.hold(batch)
                    await call.write(fpb.WatchAck(batch=batch.batch))
                    metrics.WATCH_BATCHES.inc()
            finally:
                metrics.WATCH_CONNECTED.set(0)
                call.cancel()

    async def _run(self) -> None:
        while True:
            try:
                await self.follow()
            except grpc.aio.AioRpcError as e:  # feature service away: Redis still answers
                metrics.UPSTREAM_ERRORS.labels("feature_watch", e.code().name).inc()
            await asyncio.sleep(self.retry_s)

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

"""GET /v1/universe: the feature service's ranked universe when it is configured, and
always the stocks that have a volatility estimate.

Each feature replica ranks only the stocks it owns (its online state holds no others), and a
stock's score depends on that stock alone, so every replica is asked for its top K and the
answers are merged into one ranking (the top K of the union is inside the union of each
one's top K). A replica that does not answer is counted and left out: the others still rank."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from rtvol import auth, tls
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.services.gateway import metrics
from rtvol.services.gateway.tier3 import VolCache

log = logging.getLogger(__name__)


class Universe:
    def __init__(self, feature_urls: list[str], vol: VolCache, client_tls: tls.ClientTLS | None = None,
                 api_key: str = "", timeout_s: float = 1.0) -> None:
        self.vol, self.timeout_s, self.credential = vol, timeout_s, auth.metadata(api_key)
        self.urls = feature_urls
        self.channels = [tls.channel(url, client_tls) for url in feature_urls]
        self.stubs = [fpb_grpc.FeaturesStub(channel) for channel in self.channels]

    async def top(self, top_k: int) -> dict[str, Any]:
        est = self.vol.estimate
        out: dict[str, Any] = {"stock_ids": [] if est is None else sorted(int(s) for s in est.stock_ids),
                               "top": None}
        if self.stubs:
            replies = await asyncio.gather(*(self._ask(i, top_k) for i in range(len(self.stubs))))
            if any(r is not None for r in replies):  # the ids above still answer
                entries = [e for r in replies if r is not None for e in r.entries]
                entries.sort(key=lambda e: (-e.score, e.stock_id))
                out["top"] = [{"stock_id": e.stock_id, "score": e.score, "volatility": e.volatility,
                               "momentum": e.momentum} for e in entries[:top_k]]
        return out

    async def _ask(self, replica: int, top_k: int) -> fpb.UniverseResponse | None:
        try:
            return await self.stubs[replica].Universe(fpb.UniverseRequest(top_k=top_k),
                                                      timeout=self.timeout_s, metadata=self.credential)
        except grpc.aio.AioRpcError as e:
            metrics.UPSTREAM_ERRORS.labels("feature", e.code().name).inc()
            log.warning("feature replica %d (%s): Universe failed: %s", replica, self.urls[replica],
                        e.code().name)
            return None

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

"""GET /v1/universe: the feature service's ranked universe when it is configured, and
always the stocks that have a volatility estimate."""

from __future__ import annotations

from typing import Any

import grpc

from rtvol import auth, tls
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.services.gateway import metrics
from rtvol.services.gateway.tier3 import VolCache


class Universe:
    def __init__(self, feature_url: str, vol: VolCache, client_tls: tls.ClientTLS | None = None,
                 api_key: str = "", timeout_s: float = 1.0) -> None:
        self.vol, self.timeout_s, self.credential = vol, timeout_s, auth.metadata(api_key)
        self.channel = tls.channel(feature_url, client_tls) if feature_url else None
        self.stub = fpb_grpc.FeaturesStub(self.channel) if self.channel else None

    async def top(self, top_k: int) -> dict[str, Any]:
        est = self.vol.estimate
        out: dict[str, Any] = {"stock_ids": [] if est is None else sorted(int(s) for s in est.stock_ids),
                               "top": None}
        if self.stub is not None:
            try:
                reply = await self.stub.Universe(fpb.UniverseRequest(top_k=top_k), timeout=self.timeout_s,
                                                 metadata=self.credential)
                out["top"] = [{"stock_id": e.stock_id, "score": e.score, "volatility": e.volatility,
                               "momentum": e.momentum} for e in reply.entries]
            except grpc.aio.AioRpcError as e:  # the ids above still answer
                metrics.UPSTREAM_ERRORS.labels("feature", e.code().name).inc()
        return out

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

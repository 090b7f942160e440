"""Predict over the gateway's gRPC or REST API: one async ``send(stock_ids)`` per target URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from loadtest.openloop import Send


class ItemError(Exception):
    """The call succeeded but a stock in it was not answered."""

    kind = "item_error"


class HttpStatus(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.kind = f"http:{code}"


@asynccontextmanager
async def connect(target: str, max_inflight: int) -> AsyncIterator[Send]:
    """``grpc://HOST:PORT`` or ``http://HOST:PORT``: a sender on one long-lived connection pool."""
    scheme, _, hostport = target.partition("://")
    if scheme == "grpc":
        import grpc

        from rtvol.proto.v1 import signals_pb2 as pb
        from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

        async with grpc.aio.insecure_channel(hostport) as channel:
            stub = pb_grpc.SignalsStub(channel)

            async def send_grpc(ids: list[int]) -> None:
                reply = await stub.Predict(pb.PredictRequest(stock_ids=ids))
                if any(s.error for s in reply.signals):
                    raise ItemError
            yield send_grpc
    elif scheme == "http":
        import httpx

        limits = httpx.Limits(max_connections=max_inflight, max_keepalive_connections=max_inflight)
        async with httpx.AsyncClient(base_url=target, limits=limits, timeout=None) as client:
            async def send_http(ids: list[int]) -> None:
                reply = await client.post("/v1/predict", json={"stock_ids": ids})
                if reply.status_code != 200:
                    raise HttpStatus(reply.status_code)
                if any("error" in s for s in reply.json()["signals"]):
                    raise ItemError
            yield send_http
    else:
        raise ValueError(f"target {target!r}: expected grpc://HOST:PORT or http://HOST:PORT")


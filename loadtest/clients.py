"""Predict over the gateway's gRPC or REST API: one async ``send(stock_ids)`` per target URL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from rtvol import auth, tls
from rtvol.loadtest.openloop import Send


class ItemError(Exception):
    """The call succeeded but a stock in it was not answered."""

    kind = "item_error"


class HttpStatus(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.kind = f"http:{code}"


@asynccontextmanager
async def connect(target: str, max_inflight: int, client_tls: tls.ClientTLS | None = None,
                  api_key: str = "", grpc_connections: int = 1) -> AsyncIterator[Send]:
    """``grpc://HOST:PORT`` or ``http(s)://HOST:PORT``: a sender on one long-lived connection pool;
    ``client_tls`` verifies a TLS gateway (gRPC; https:// for REST), ``api_key`` is presented.
    gRPC calls take turns over ``grpc_connections`` connections (one channel each): a gateway's
    worker processes share its port by connection, so one connection reaches one worker;
    REST opens up to ``max_inflight`` connections anyway."""
    scheme, _, hostport = target.partition("://")
    metadata = auth.metadata(api_key)
    if scheme == "grpc":
        from rtvol.proto.v1 import signals_pb2 as pb
        from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc

        async with AsyncExitStack() as channels:
            # a local subchannel pool: channels to one target would share one connection otherwise
            stubs = itertools.cycle([pb_grpc.SignalsStub(await channels.enter_async_context(
                tls.channel(hostport, client_tls, [("grpc.use_local_subchannel_pool", 1)])))
                for _ in range(grpc_connections)])

            async def send_grpc(ids: list[int]) -> None:
                reply = await next(stubs).Predict(pb.PredictRequest(stock_ids=ids), metadata=metadata)
                if any(s.error for s in reply.signals):
                    raise ItemError
            yield send_grpc
    elif scheme in ("http", "https"):
        # aiohttp (C parser): httpx spent >1 ms of client CPU a request and, open loop on
        # 2 cores, the generator itself saturated below 600/s (docs/BENCHMARKS.md, Gateway)
        import json

        import aiohttp

        connector = aiohttp.TCPConnector(limit=max_inflight,
                                         ssl=client_tls.ssl_context() if client_tls else True)
        headers = {"content-type": "application/json", **dict(metadata)}
        async with aiohttp.ClientSession(target, connector=connector) as client:
            async def send_http(ids: list[int]) -> None:
                body = json.dumps({"stock_ids": ids}).encode()
                async with client.post("/v1/predict", data=body, headers=headers) as reply:
                    data = await reply.read()
                if reply.status != 200:
                    raise HttpStatus(reply.status)
                if any("error" in s for s in json.loads(data)["signals"]):
                    raise ItemError
            yield send_http
    else:
        raise ValueError(f"target {target!r}: expected grpc://, http:// or https://HOST:PORT")


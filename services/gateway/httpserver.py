"""The gateway's HTTP server settings, in one place: the gateway and the bare echo that
`rtvol bench gateway` measures as its floor must run the same server the same way."""

from __future__ import annotations

import importlib.util
import math

import uvicorn
from starlette.types import ASGIApp

# httptools (C) parses a request in a few µs where h11 (pure Python) takes ~100; uvicorn's
# "auto" picks it when installed (a pinned dependency), this names the one in use
PARSER = "httptools" if importlib.util.find_spec("httptools") else "h11"


class Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # rpc.Server owns SIGTERM and drains both
        pass


def config(app: ASGIApp, host: str, port: int, drain_seconds: float) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, http=PARSER, log_level="warning", access_log=False,
                          # keep-alive connections must end within the drain too
                          timeout_graceful_shutdown=math.ceil(drain_seconds), lifespan="off")

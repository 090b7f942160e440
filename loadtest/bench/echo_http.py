"""A bare FastAPI echo on the gateway's own HTTP server settings: the REST floor that
`rtvol bench gateway` reports ratios against. POST /echo answers the body it was sent.

    python -m rtvol.loadtest.bench.echo_http --port PORT
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request, Response

from rtvol import eventloop
from rtvol.services.gateway import httpserver


def create_app() -> FastAPI:
    app = FastAPI(title="rtvol echo")

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/json")

    @app.get("/livez")
    async def livez() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m rtvol.loadtest.bench.echo_http", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    a = p.parse_args()
    eventloop.run(uvicorn.Server(httpserver.config(create_app(), a.host, a.port, 1.0)).serve())


if __name__ == "__main__":
    main()

"""rtvol.eventloop: the services' loop (uvloop by default, asyncio's on request), and the framed
Ingest listener on both (uvloop's transports are not asyncio.Transport subclasses: an
isinstance check there refused every connection)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
import uvloop

from rtvol import eventloop
from rtvol.ingest_frames import AsyncClient
from rtvol.services.feature.stream import IngestStreamServer


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_by_default_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTVOL_EVENT_LOOP", raising=False)
    assert eventloop.run(_loop_type()) is uvloop.Loop
    assert eventloop.run(_loop_type(), "asyncio") is not uvloop.Loop
    assert issubclass(eventloop.run(_loop_type(), "asyncio"), asyncio.BaseEventLoop)
    monkeypatch.setenv("RTVOL_EVENT_LOOP", "asyncio")
    assert eventloop.run(_loop_type()) is not uvloop.Loop
    assert eventloop.run(_loop_type(), "uvloop") is uvloop.Loop


async def _handshake() -> int:
    """A HELLO answered READY by the framed listener (no updates: the ingestor is not reached)."""
    server = IngestStreamServer(cast(Any, None), None, "/rtvol.proto.v1.Features/Ingest",
                                max_connections=2, max_frame_bytes=1 << 20)
    port = await server.start("127.0.0.1", 0)
    try:
        client = await asyncio.wait_for(AsyncClient.connect("127.0.0.1", port), 5)
        opened = len(server.connections)
        await client.close()
        return opened
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_framed_ingest_accepts_a_connection_on_either_loop(kind: eventloop.EventLoop) -> None:
    assert eventloop.run(_handshake(), kind) == 1

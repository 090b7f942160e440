"""A reference subscriber of the feed's raw ticks: counts what arrives and how late.

``python -m rtvol.loadtest.ticksub ws://127.0.0.1:8765/ticks?stocks=1,2 [--seconds S]`` reads
until the feed closes the stream (or S seconds), then prints one line: frames, updates,
and the delay from the feed's send to this process (publish stamp vs. wall clock: same
host only). Binary and JSON frames are both understood. ``--stall`` connects with a tiny
receive window and never reads: a slow consumer, to see the feed's overflow policy work.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rtvol.featurestore import now_us
from rtvol.loadtest import tickframes


@dataclass
class Received:
    frames: int = 0
    updates: int = 0
    delays_ms: list[float] = field(default_factory=list)
    close: str = ""

    def line(self) -> str:
        d = np.asarray(self.delays_ms or [0.0])
        return (f"received {self.frames:,} frames, {self.updates:,} updates; delay ms p50 "
                f"{np.percentile(d, 50):.2f} p99 {np.percentile(d, 99):.2f} max {d.max():.2f}; {self.close}")


def _small_window(url: str) -> socket.socket:
    u = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sizes the window
    try:
        sock.connect((u.hostname or "127.0.0.1", u.port or 80))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def _connect(url: str, patience_s: float, stall: bool) -> ClientConnection:
    """The feed listens once it has loaded its data: retry a refused connection meanwhile."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            if stall:
                return await connect(url, sock=_small_window(url), max_size=None, compression=None,
                                     max_queue=1, close_timeout=1)
            return await connect(url, max_size=None, compression=None)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def receive(url: str, seconds: float, stall: bool = False) -> Received:
    got = Received()
    ws = await _connect(url, min(seconds, 60.0), stall)
    deadline = time.monotonic() + seconds
    if stall:
        await asyncio.sleep(seconds)
        got.close = f"stalled for {seconds:g} s"
        ws.transport.abort()
        return got
    async with ws:
        try:
            while (left := deadline - time.monotonic()) > 0:
                published, rec = tickframes.decode(await asyncio.wait_for(ws.recv(), left))
                got.frames, got.updates = got.frames + 1, got.updates + len(rec)
                got.delays_ms.append((now_us() - published) / 1000)
            got.close = f"stopped after {seconds:g} s"
        except TimeoutError:
            got.close = f"stopped after {seconds:g} s"
        except ConnectionClosed:
            got.close = f"closed by the feed: {ws.close_code} {ws.close_reason}"
    return got


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rtvol.loadtest.ticksub", description=__doc__.splitlines()[0])
    p.add_argument("url", help="ws://HOST:PORT/ticks[?stocks=..&format=binary|json]")
    p.add_argument("--seconds", type=float, default=600.0, help="stop after this long at most")
    p.add_argument("--stall", action="store_true", help="never read (for --seconds): a slow consumer")
    a = p.parse_args(argv)
    print(asyncio.run(receive(a.url, a.seconds, a.stall)).line(), flush=True)


if __name__ == "__main__":
    main()

"""`rtvol feed --ws-port`: real WebSocket subscribers of a real feed run into a real feature service.

A full-stream subscriber and a one-stock JSON subscriber get every update of theirs, in
order; two subscribers that never read fill their queues: one has frames dropped, the
other is disconnected, both counted, and the feed still finishes with every update
accepted. A bad subscribe URL is refused with 400 naming the parameter, and counted.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import procs
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from rtvol.loadtest import feed, tickframes

pytestmark = pytest.mark.integration
BUCKETS = range(0, 10)  # ~16,000 updates of the tiny data: ~1.8 MB of binary frames per full subscriber


@pytest.fixture
def feature_target(tiny_data: Path, tmp_path: Path) -> Iterator[str]:
    stocks = len(list((tiny_data / "book_train.parquet").iterdir()))
    proc, target = procs.feature_service(tmp_path, "", stocks)  # in-process store
    try:
        yield target
    finally:
        proc.stop()


def subscribe(url: str, sock: socket.socket | None = None, **kw: object) -> ClientConnection:
    """Connect, retrying until the feed has loaded its data and listens (bounded)."""
    last: Exception | None = None
    for _ in range(300):
        try:
            return connect(url, sock=sock, open_timeout=5, max_size=None, **kw)  # type: ignore[arg-type]
        except (ConnectionRefusedError, TimeoutError) as e:
            last = e
            procs.wait_until(lambda: False, 0.1)
    raise AssertionError(f"could not subscribe to {url}: {last}")


def stalled(port: int, query: str) -> ClientConnection:
    """A subscriber that never reads, with a tiny receive window: the server's sends block."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sizes the window
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    return subscribe(f"ws://127.0.0.1:{port}/ticks?{query}", sock, max_queue=1, close_timeout=1)


def read_all(ws: ClientConnection) -> Callable[[], tuple[np.ndarray, set[type]]]:
    """Read frames on a thread until the server closes; join() gives (records, frame types)."""
    got: list[np.ndarray] = []
    kinds: set[type] = set()

    def run() -> None:
        try:
            for frame in ws:
                kinds.add(type(frame))
                got.append(tickframes.decode(frame)[1])
        except ConnectionClosed:
            pass

    reader = threading.Thread(target=run, daemon=True)
    reader.start()

    def join() -> tuple[np.ndarray, set[type]]:
        reader.join(timeout=60)
        assert not reader.is_alive(), "subscriber still reading 60 s after the feed ended"
        return (np.concatenate(got) if got else np.zeros(0, tickframes.RECORD)), kinds
    return join


def test_feed_serves_raw_ticks_to_websocket_subscribers(tiny_data: Path, feature_target: str,
                                                        tmp_path: Path, free_port: Callable[[], int]) -> None:
    _, updates = feed.load(tiny_data, BUCKETS)
    one = int(updates.stock_id[0])
    port, report_path = free_port(), tmp_path / "feed.json"
    log = (tmp_path / "feed.log").open("wb")
    clients = contextlib.ExitStack()  # closes every subscriber at the end
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtvol.cli", "feed", "--data", str(tiny_data), "--target", feature_target,
         "--buckets", f"{BUCKETS.start}:{len(BUCKETS)}", "--rate", "5000", "--batch", "50",
         "--ws-port", str(port), "--ws-queue", "32", "--ws-wait", "4", "--ws-drain", "1",
         "--report", str(report_path)],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        with pytest.raises(InvalidStatus) as refused:
            subscribe(f"ws://127.0.0.1:{port}/ticks?stocks=abc")
        assert refused.value.response.status_code == 400
        assert b"stocks" in refused.value.response.body

        everything = clients.enter_context(subscribe(f"ws://127.0.0.1:{port}/ticks"))
        mine = clients.enter_context(subscribe(f"ws://127.0.0.1:{port}/ticks?stocks={one}&format=json"))
        for query in ("", "overflow=disconnect"):
            clients.enter_context(stalled(port, query))
        join_all, join_one = read_all(everything), read_all(mine)
        assert proc.wait(timeout=120) == 0, (tmp_path / "feed.log").read_text()
        (got_all, kinds_all), (got_one, kinds_one) = join_all(), join_one()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        clients.close()

    report = json.loads(report_path.read_text())
    assert report["updates"] == report["accepted"] == len(updates) and report["rejected"] == 0
    ws_report = report["ws"]
    assert ws_report["connected"] == 4 and ws_report["rejected"] == {"stocks": 1}
    assert ws_report["disconnected"] == 1 and ws_report["dropped_frames"] > 0
    assert ws_report["active"] == 0

    assert everything.close_code == 1000 and everything.close_reason == "feed finished"
    assert kinds_all == {bytes} and kinds_one == {str}  # binary frames, and JSON in text frames
    assert np.array_equal(got_all["stock_id"], updates.stock_id)
    assert np.array_equal(got_all["sequence"], updates.seq)
    assert np.array_equal(got_all["event_time_us"], np.round(updates.time * 1e6).astype(np.int64))
    assert np.array_equal(got_all["bid_price1"], updates.bid1)
    assert np.array_equal(got_all["price"], updates.price)
    ones = updates.stock_id == one
    assert np.array_equal(got_one["stock_id"], updates.stock_id[ones])
    assert np.array_equal(got_one["sequence"], updates.seq[ones])
    assert np.array_equal(got_one["ask_size1"], updates.ask_size1[ones])
    # every update went to each subscriber, was dropped for it, or (the disconnected one only)
    # was never offered after it was closed
    n, n_one = len(updates), int(ones.sum())
    assert 2 * n + n_one < ws_report["updates"] + ws_report["dropped_updates"] <= 3 * n + n_one


def test_feed_generates_a_synthetic_market_when_given_no_data(feature_target: str) -> None:
    """`rtvol feed --synthetic N`: fresh ticks from the demo's generator into a real service."""
    run = subprocess.run(
        [sys.executable, "-m", "rtvol.cli", "feed", "--synthetic", "3", "--synthetic-buckets", "3",
         "--seed", "7", "--target", feature_target, "--rate", "0"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "synthetic ticks (seed 7)" in run.stdout
    fed = int(re.search(r"fed ([\d,]+) updates", run.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert fed > 1000 and "rejected 0" in run.stdout, run.stdout[-2000:]

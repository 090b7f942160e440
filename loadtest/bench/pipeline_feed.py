"""`rtvol bench pipeline`'s feed: an open-loop Ingest feed in its own process, each feature
replica sent its own stocks' updates in messages of the plan's batch, paced at the plan's
rate; the plan also says which updates close a step (and the window version they make), so
the bench can match every step to its signal. `rtvol bench apply` feeds the same messages to
the apply path in process."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtvol import sharding

INGEST = "/rtvol.proto.v1.Features/Ingest"


@dataclass(frozen=True)
class FeedPlan:
    targets: tuple[str, ...]  # the feature replicas, in ordinal order
    rate: float  # updates/s
    batch: int  # updates per message
    stocks: int
    first_stock: int  # stocks first_stock .. first_stock + stocks - 1: fresh ones for each mode
    duration_s: float
    speedup: float
    transport: str = "grpc"  # or "stream": the framed Ingest stream (targets: the --stream-port ones)


def build(plan: FeedPlan) -> tuple[list[list[bytes | None]], np.ndarray, np.ndarray, np.ndarray]:
    """The feed's messages by send slot, one per replica at most (serialised; None: that
    replica sends nothing in the slot), and for each update that closes a step: the slot it is
    sent in, its stock and the window version it makes (steps closed: the plan's stocks are fresh, their
    first update opens a step)."""
    from rtvol.loadtest.ticks import STEP_US
    from rtvol.proto.v1 import features_pb2 as pb

    n_updates = int(plan.rate * plan.duration_s) // plan.batch * plan.batch
    k = np.arange(n_updates)
    stock = plan.first_stock + k % plan.stocks
    event_us = (STEP_US + k / plan.rate * plan.speedup * 1e6).astype(np.int64)
    step = event_us // STEP_US
    seq = k // plan.stocks
    closes = np.zeros(n_updates, bool)
    version = np.zeros(n_updates, np.int64)
    # a stock's update closes (step - its previous step) steps; its version counts them all
    for s in range(plan.stocks):
        rows = np.arange(s, n_updates, plan.stocks)
        st = step[rows]
        closes[rows] = np.diff(st, prepend=st[:1]) > 0
        version[rows] = st - st[:1]
    mid = 100.0 + (k % 97) * 1e-3
    owner = sharding.owner(stock, len(plan.targets))

    def part(rows: np.ndarray) -> bytes | None:
        if not len(rows):
            return None
        m, n = mid[rows], len(rows)
        return pb.IngestRequest(columns=pb.UpdateColumns(
            stock_id=stock[rows].tolist(), event_time_us=event_us[rows].tolist(), sequence=seq[rows].tolist(),
            kind=[0] * n, bid_price1=(m - 0.01).tolist(), ask_price1=(m + 0.01).tolist(),
            bid_price2=(m - 0.02).tolist(), ask_price2=(m + 0.02).tolist(), bid_size1=[10.0] * n,
            ask_size1=[12.0] * n, bid_size2=[20.0] * n, ask_size2=[22.0] * n)).SerializeToString()

    # each replica's own updates in messages of plan.batch, as a feed handler that routes by
    # owner batches them; a message leaves in the slot (of the rate's batch interval) of its
    # last update. Splitting each message K ways instead would send K times the messages for
    # the same updates, which measures the per-message cost rather than the replicas.
    replicas = len(plan.targets)
    messages: list[list[bytes | None]] = [[None] * replicas for _ in range(n_updates // plan.batch)]
    slot = np.zeros(n_updates, np.int64)  # the slot each update is sent in
    for r in range(replicas):
        mine = np.flatnonzero(owner == r)
        for lo in range(0, len(mine), plan.batch):
            rows = mine[lo:lo + plan.batch]
            sent_in = rows[-1] // plan.batch
            slot[rows] = sent_in
            messages[sent_in][r] = part(rows)
    at = np.flatnonzero(closes)
    return messages, slot[at], stock[at], version[at]


def _grpc_streams(plan: FeedPlan, paced: Callable[[int], Iterator[bytes]]) -> list[Any]:
    """One gRPC Ingest call per replica, sending ``paced(replica)``: the summaries."""
    import grpc

    from rtvol.proto.v1 import features_pb2 as pb

    with contextlib.ExitStack() as channels:
        calls = []
        for r, target in enumerate(plan.targets):
            ch = channels.enter_context(grpc.insecure_channel(target))
            ingest = ch.stream_unary(INGEST, request_serializer=None,  # the messages are serialised
                                     response_deserializer=pb.IngestSummary.FromString)
            calls.append(ingest.future(paced(r), timeout=plan.duration_s * 10 + 60))
        return [call.result() for call in calls]


def _framed_streams(plan: FeedPlan, paced: Callable[[int], Iterator[bytes]]) -> list[Any]:
    """One framed Ingest connection per replica (a thread each), each message its own
    ``sendall`` as a tick feed's would be: the summaries."""
    from concurrent.futures import ThreadPoolExecutor

    from rtvol.ingest_frames import BlockingClient

    def one(r: int) -> Any:
        host, port = plan.targets[r].rsplit(":", 1)
        with BlockingClient(host, int(port), timeout_s=plan.duration_s * 10 + 60) as client:
            for m in paced(r):
                client.send(m)
            return client.end()

    with ThreadPoolExecutor(len(plan.targets)) as pool:
        return list(pool.map(one, range(len(plan.targets))))


def feed(plan: FeedPlan, out: str) -> None:
    """The feeder process: paced sends on one Ingest stream per replica (its message of each
    slot at the slot's time), over gRPC or the framed stream (``plan.transport``); writes
    the send time of each slot's message per replica (0: none), each stream's summary, and
    the feeder's own CPU seconds while sending."""
    messages, *_ = build(plan)
    interval = plan.batch / plan.rate
    sent_us = np.zeros((len(messages), len(plan.targets)), np.int64)
    start = time.perf_counter() + 0.05

    def paced(replica: int) -> Iterator[bytes]:
        for i, parts in enumerate(messages):
            if (m := parts[replica]) is None:
                continue
            ahead = start + i * interval - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            sent_us[i, replica] = time.time_ns() // 1000
            yield m

    began, cpu_began = time.perf_counter(), time.process_time()
    summaries = (_framed_streams if plan.transport == "stream" else _grpc_streams)(plan, paced)
    took, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    np.savez(out, sent_us=sent_us, accepted=[s.accepted for s in summaries],
             rejected=[s.rejected for s in summaries], seconds=took, cpu_s=cpu)


@contextlib.contextmanager
def feeder_running(name: str, plan: FeedPlan, workdir: Path) -> Iterator[Callable[[], Any]]:
    """The feeder process, started; yields a call that waits for its end and returns what it
    wrote (``feed``). Still running when the block ends (it failed, or its caller has measured
    what it needed): killed, so no feeder outlives the bench."""
    out = workdir / f"feed-{name}.npz"
    feeder = mp.get_context("spawn").Process(target=feed, args=(plan, str(out)))
    feeder.start()

    def result() -> Any:
        feeder.join(plan.duration_s * 10 + 120)
        if feeder.exitcode != 0:
            raise RuntimeError(f"feeder ({name}) exited with {feeder.exitcode}")
        return np.load(out)

    try:
        yield result
    finally:
        if feeder.is_alive():
            feeder.kill()
        feeder.join()


def run_feeder(name: str, plan: FeedPlan, workdir: Path) -> Any:
    """Runs the feeder process to its end; what it wrote (``feed``)."""
    with feeder_running(name, plan, workdir) as result:
        return result()

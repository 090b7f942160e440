"""The feature service as a real process (real redis-server): replay parity and bad input over gRPC."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import procs

from rtvol.features.online_replay import merge, stock_updates
from rtvol.features.spec import BUCKET_SECONDS, N_FEATURES, STEPS, spec_hash
from rtvol.ingest_codec import encode_columns
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from rtvol.training import dataset, optiver

pytestmark = pytest.mark.integration
N_STOCKS = 12


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return procs.free_port()


@pytest.fixture(scope="module")
def service(redis_db: str, metrics_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # a later flag wins: the helper's --metrics-port 0 is overridden
    proc, target = procs.feature_service(tmp_path_factory.mktemp("feature"), redis_db, N_STOCKS,
                                         "--max-batch", "1000", "--metrics-port", str(metrics_port),
                                         "--alert-stale-after-s", "3600")
    try:
        yield target
    finally:
        assert proc.stop() == 0, proc.tail()  # graceful drain


@pytest.fixture
def stub(service: str) -> Iterator[pb_grpc.FeaturesStub]:
    with grpc.insecure_channel(service) as ch:
        yield pb_grpc.FeaturesStub(ch)


def _columns(table) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {c: table.column(c).to_numpy() for c in table.column_names}


def _windows(reply: pb.GetFeaturesResponse) -> np.ndarray:
    return np.frombuffer(reply.windows, "<f4").reshape(len(reply.stock_ids), reply.steps, reply.features)


def test_replay_through_the_service_gives_offline_windows(stub: pb_grpc.FeaturesStub,
                                                          tiny_data: Path) -> None:
    stocks = optiver.stock_ids(tiny_data)
    offline = {s: dataset.stock_windows(tiny_data, s, np.arange(40)) for s in stocks}
    updates = merge([stock_updates(s, _columns(optiver.read_book(tiny_data, s)),
                                   _columns(optiver.read_trade(tiny_data, s))) for s in stocks])
    bucket = (updates.time // BUCKET_SECONDS).astype(np.int64)
    for b in range(40):
        rows = np.flatnonzero(bucket == b)
        # several messages per bucket, then the feed's watermark at the bucket's end
        msgs = [encode_columns(updates.take(part)) for part in np.array_split(rows, 3)]
        msgs.append(pb.IngestRequest(watermark_us=(b + 1) * BUCKET_SECONDS * 1_000_000))
        summary = stub.Ingest(iter(msgs), timeout=30)
        assert (summary.accepted, summary.rejected) == (len(rows), 0)
        reply = stub.GetFeatures(pb.GetFeaturesRequest(stock_ids=stocks), timeout=10)
        assert reply.feature_spec_hash == spec_hash() and (reply.steps, reply.features) == (STEPS, N_FEATURES)
        assert all(reply.found)
        np.testing.assert_allclose(_windows(reply), np.stack([offline[s][b] for s in stocks]),
                                   rtol=1e-5, atol=1e-6)
        last = updates.take(rows[updates.stock_id[rows] == stocks[0]][-1:])
        assert reply.sequence[0] == last.seq[0]
        assert reply.event_time_us[0] == round(last.time[0] * 1e6)
    top = stub.Universe(pb.UniverseRequest(top_k=2), timeout=10)
    assert len(top.entries) == 2 and top.eligible == len(stocks)
    assert top.entries[0].score >= top.entries[1].score > 0


def _book(stock: int, seq: int, t: float, bid: float = 1.0, ask: float = 1.001, size: float = 10.0
          ) -> pb.MarketUpdate:
    return pb.MarketUpdate(stock_id=stock, sequence=seq, event_time_us=int(t * 1e6), book=pb.BookSnapshot(
        bid_price1=bid, ask_price1=ask, bid_price2=bid - 0.001, ask_price2=ask + 0.001,
        bid_size1=size, ask_size1=size, bid_size2=size, ask_size2=size))


def test_bad_input_is_rejected_by_reason_and_the_service_keeps_serving(stub: pb_grpc.FeaturesStub) -> None:
    s, t0 = N_STOCKS - 1, 100 * BUCKET_SECONDS  # a stock and a time the replay test never used
    good = [_book(s, 1, t0), _book(s, 2, t0 + 1)]
    bad = [_book(s, 2, t0 + 2),  # duplicate sequence
           _book(s, 1, t0 + 3),  # out of order
           _book(s, 3, t0 + 4, bid=1.002),  # crossed
           _book(s, 4, t0 + 4, bid=1.001),  # locked
           _book(s, 5, t0 + 5, size=0.0),  # non-positive size
           _book(s, 6, t0 + 5, bid=float("nan")),
           _book(N_STOCKS + 5, 1, t0),  # unknown stock
           _book(-1, 1, t0),  # malformed id
           pb.MarketUpdate(stock_id=s, sequence=9, event_time_us=int(t0 * 1e6))]  # no payload
    oversized = pb.IngestRequest(updates=[_book(s, 100 + i, t0 + 6) for i in range(1001)])
    late = [_book(s, 20, t0 + 30), _book(s, 21, t0 + 1)]  # second lands in an already closed step
    summary = stub.Ingest(iter([pb.IngestRequest(updates=good + bad), oversized,
                                pb.IngestRequest(updates=late)]), timeout=30)
    assert summary.accepted == 3
    assert dict(summary.rejected_by_reason) == {
        "duplicate_sequence": 1, "out_of_order": 1, "crossed_book": 1, "locked_book": 1, "non_positive": 1,
        "non_finite": 1, "unknown_stock": 1, "malformed": 2, "oversized_batch": 1001, "late": 1}
    with pytest.raises(grpc.RpcError) as err:
        stub.GetFeatures(pb.GetFeaturesRequest(stock_ids=[N_STOCKS + 1]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown stock ids" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        stub.Universe(pb.UniverseRequest(top_k=0), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # still serving, and the good updates moved the stock on (the step at t0 closed)
    reply = stub.GetFeatures(pb.GetFeaturesRequest(stock_ids=[s], max_staleness_ms=60_000), timeout=10)
    assert reply.found[0] and reply.sequence[0] == 20 and not reply.stale[0]
    # steps t0 (two snapshots) and t0+12 s (empty) closed when the update at t0+30 s arrived
    assert _windows(reply)[0, -2:, 7].tolist() == pytest.approx([np.log1p(2), 0.0])


def test_hostile_updates_and_watermarks_are_rejected_and_never_poison_a_stock(
        stub: pb_grpc.FeaturesStub, metrics_port: int) -> None:
    s, new, t0 = 4, 5, 140 * BUCKET_SECONDS  # stocks and a time no other test uses
    first = stub.Ingest(iter([pb.IngestRequest(updates=[_book(s, 1, t0), _book(s, 2, t0 + 13)])]), timeout=30)
    assert first.accepted == 2
    day = 86_400
    t = t0 + 14
    hostile = [_book(s, 3, t, size=1e308), _trade(s, 3, t, price=1e300, size=1.0),
               _trade(s, 3, t, price=float("inf"), size=1.0), _trade(s, 3, t, price=1.0, size=-1.0),
               _trade(s, 3, t, price=0.0, size=1.0), _book(s, 2**63 - 1, t0 + 15),
               _book(s, 2**40, t0 + 15),  # a jump of 2**40 sequence numbers
               pb.MarketUpdate(stock_id=s, sequence=4, event_time_us=10**18, book=_book(s, 4, 0).book),
               _book(s, 5, t0 + 10 * day),  # ten days past the stock's clock
               _book(new, 1, t0 + 10 * day)]  # a new stock's first update, ten days past the stream's
    summary = stub.Ingest(iter([pb.IngestRequest(updates=hostile), pb.IngestRequest(watermark_us=2**62)]),
                          timeout=30)
    assert summary.accepted == 0
    assert dict(summary.rejected_by_reason) == {"out_of_range": 4, "non_finite": 1, "non_positive": 2,
                                                "sequence_jump": 1, "time_jump": 2, "watermark_ahead": 1}
    # nothing was adopted: the next real updates of both stocks are accepted, the windows are intact
    after = stub.Ingest(iter([pb.IngestRequest(updates=[_book(s, 6, t0 + 26), _book(new, 1, t0 + 1)])]),
                        timeout=30)
    assert (after.accepted, after.rejected) == (2, 0)
    reply = stub.GetFeatures(pb.GetFeaturesRequest(stock_ids=[s]), timeout=10)
    window = _windows(reply)[0]
    assert reply.found[0] and reply.sequence[0] == 6 and np.isfinite(window).all()
    assert window[-2:, 7].tolist() == pytest.approx([np.log1p(1), np.log1p(1)])  # one book in each step
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for reason in ("out_of_range", "sequence_jump", "time_jump", "watermark_ahead"):
        assert f'rtvol_feature_rejects_total{{reason="{reason}"}}' in text


def test_volatility_estimate_is_refreshed_in_the_store(stub: pb_grpc.FeaturesStub, redis_db: str) -> None:
    import asyncio

    from rtvol.featurestore import RedisStore

    s, t0 = 6, 145 * BUCKET_SECONDS  # a stock and a time no other test uses
    # the second update closes the stock's first step: it has an estimate (a repeated run finds
    # both applied already: duplicates, rejected)
    stub.Ingest(iter([pb.IngestRequest(updates=[_book(s, 1, t0), _book(s, 2, t0 + 13)])]), timeout=30)

    async def read() -> float:
        store = RedisStore.connect(redis_db, spec_hash())
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                est = await store.read_vol()
                if est is not None and s in est.stock_ids:
                    return est.age_ms()
                await asyncio.sleep(0.05)
        finally:
            await store.close()
        raise AssertionError(f"no volatility estimate of stock {s} within 10 s")

    assert asyncio.run(read()) < 2_000  # refreshed every 150 ms


def test_crossed_book_alert_is_published_on_redis(stub: pb_grpc.FeaturesStub, redis_server: str) -> None:
    import json

    import redis

    from rtvol.services.feature.alerts import ALERT_CHANNEL

    client = redis.Redis.from_url(redis_server)
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(ALERT_CHANNEL)
    try:
        assert sub.get_message(timeout=5) is None  # the subscription is live before we ingest
        s, t0 = N_STOCKS - 2, 110 * BUCKET_SECONDS  # a stock and time no other test uses
        summary = stub.Ingest(iter([pb.IngestRequest(updates=[_book(s, 1, t0, bid=1.002)])]), timeout=30)
        assert dict(summary.rejected_by_reason) == {"crossed_book": 1}
        deadline, alerts = time.monotonic() + 10, []
        while time.monotonic() < deadline and not alerts:
            msg = sub.get_message(timeout=1)
            if msg is not None:
                alerts.append(json.loads(msg["data"]))
        assert [(a["kind"], a["stock_ids"]) for a in alerts] == [("crossed_book", [s])]
    finally:
        sub.close()
        client.close()


def test_metrics_endpoint_shows_rates_rejects_queues_staleness_and_redis_latency(
        stub: pb_grpc.FeaturesStub, metrics_port: int) -> None:
    import urllib.request

    s, t0 = N_STOCKS - 3, 120 * BUCKET_SECONDS
    stub.Ingest(iter([pb.IngestRequest(updates=[_book(s, 1, t0), _book(s, 2, t0 + 13),
                                                _book(s, 2, t0 + 14)])]), timeout=30)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line.startswith("rtvol_feature_")}
    assert samples["rtvol_feature_updates_total"] >= 2
    assert samples['rtvol_feature_rejects_total{reason="duplicate_sequence"}'] >= 1
    for consumer in ("alerts", "vwap"):
        assert f'rtvol_feature_fanout_queue_depth{{consumer="{consumer}"}}' in samples
        assert f'rtvol_feature_fanout_drops_total{{consumer="{consumer}"}}' in samples
    assert "rtvol_feature_window_staleness_seconds" in samples
    assert samples['rtvol_feature_store_seconds_count{op="write"}'] >= 1  # Redis round trips timed


def _trade(stock: int, seq: int, t: float, price: float, size: float) -> pb.MarketUpdate:
    return pb.MarketUpdate(stock_id=stock, sequence=seq, event_time_us=int(t * 1e6),
                           trade=pb.Trade(price=price, size=size, order_count=1))


def _vwap_when(stub: pb_grpc.FeaturesStub, stocks: list[int], done: Callable[[pb.GetVwapResponse], bool]
               ) -> pb.GetVwapResponse:
    """GetVwap until ``done`` (VWAP trails Ingest by its fan-out queue), for at most 10 s."""
    deadline = time.monotonic() + 10
    while True:
        reply = stub.GetVwap(pb.GetVwapRequest(stock_ids=stocks), timeout=10)
        if done(reply) or time.monotonic() > deadline:
            return reply
        time.sleep(0.02)


def test_get_vwap_answers_each_stocks_bucket_vwap_over_grpc(stub: pb_grpc.FeaturesStub,
                                                           metrics_port: int) -> None:
    s, t0 = N_STOCKS - 4, 130 * BUCKET_SECONDS  # a stock and a time no other test uses
    trades = [_trade(s, 1, t0 + 1, 1.0, 10), _trade(s, 2, t0 + 5, 1.01, 30),
              _trade(s, 3, t0 + 9, 0.99, 0.0)]  # a zero size is rejected: never in the VWAP
    summary = stub.Ingest(iter([pb.IngestRequest(updates=[_book(s, 0, t0), *trades])]), timeout=30)
    assert (summary.accepted, dict(summary.rejected_by_reason)) == (3, {"non_positive": 1})
    reply = _vwap_when(stub, [s, s + 1], lambda r: r.volume[0] == 40)  # s + 1: books only
    assert list(reply.stock_ids) == [s, s + 1] and list(reply.found) == [True, False]
    assert reply.vwap[0] == pytest.approx((1.0 * 10 + 1.01 * 30) / 40)
    assert (reply.volume[0], reply.time_id[0], reply.last_trade_us[0]) == (40, 130, int((t0 + 5) * 1e6))
    assert 0 <= reply.age_ms[0] < 10_000
    assert (reply.vwap[1], reply.volume[1], reply.time_id[1]) == (0, 0, -1)  # never traded

    # the first trade of the next bucket starts that bucket's VWAP
    next_bucket = _trade(s, 4, t0 + BUCKET_SECONDS + 2, 1.02, 5)
    stub.Ingest(iter([pb.IngestRequest(updates=[next_bucket])]), timeout=30)
    reply = _vwap_when(stub, [s], lambda r: r.time_id[0] == 131)
    assert (reply.vwap[0], reply.volume[0], reply.time_id[0]) == (pytest.approx(1.02), 5, 131)

    with pytest.raises(grpc.RpcError) as err:
        stub.GetVwap(pb.GetVwapRequest(stock_ids=[s, N_STOCKS + 3]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"stock_ids: unknown stock ids [{N_STOCKS + 3}]" in (err.value.details() or "")
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'rtvol_feature_bad_requests_total{method="GetVwap",reason="unknown_stock"} 1.0' in text

"""The framed Ingest stream (the feature service's --stream-port) against real processes:
a feed round trip, read-your-writes after the summary frame (a gateway Predict sees the step),
bad frames answered by a named ERROR frame and counted, a client that disconnects mid-frame,
the connection bound; and with TLS (mTLS) and API keys, feeders only."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from helpers import metrics, procs

from rtvol import auth, certs, stack
from rtvol.features.spec import BUCKET_SECONDS
from rtvol.ingest_frames import (
    END,
    ERROR,
    HEADER,
    UPDATES,
    BlockingClient,
    FrameReader,
    StreamRefused,
    frame,
    hello,
    updates,
)
from rtvol.loadtest import feed
from rtvol.loadtest.ticks import StepTicks
from rtvol.proto.v1 import features_pb2 as fpb
from rtvol.proto.v1 import features_pb2_grpc as fpb_grpc
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc
from rtvol.tls import ClientTLS

pytestmark = pytest.mark.integration
STOCKS = 40
MAX_CONNECTIONS, MAX_FRAME = 4, 1 << 20  # a feed message of 2,000 updates: ~220 kB
CHECKED = list(range(30, 36))  # stocks the read-your-writes test steps (the replay uses the data's ids)
HOSTILE, PARTIAL = 36, 38  # stocks of the hostile-values tests (and the next) and the disconnect test


@dataclass
class Plain:
    feature: str  # gRPC
    stream: tuple[str, int]
    metrics: str
    gateway: str  # gRPC


@pytest.fixture(scope="module")
def plain(redis_db: str, tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plain]:
    sport, mport = procs.free_port(), procs.free_port()
    extra = ("--stream-port", str(sport), "--metrics-port", str(mport), "--stream-max-connections",
             str(MAX_CONNECTIONS), "--stream-max-frame-bytes", str(MAX_FRAME))
    with procs.pipeline_stack(tmp_path_factory.mktemp("ingest_stream"), redis_db, tiny_repo, STOCKS,
                              feature_extra=extra) as (feature_url, _base, grpc_target, _gw):
        yield Plain(feature_url, ("127.0.0.1", sport), f"http://127.0.0.1:{mport}", grpc_target)


def _error_of(sock: socket.socket | ssl.SSLSocket) -> str:
    """The ERROR frame's text the service sends before it closes the connection."""
    reader = FrameReader()
    while True:
        got = reader.next()
        if got is not None:
            kind, body = got
            if kind == ERROR:
                return body.decode()
            continue  # READY
        data = sock.recv(65536)
        assert data, "closed without an ERROR frame"
        reader.feed(data)


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _raw(plain: Plain) -> socket.socket:
    return socket.create_connection(plain.stream, timeout=10)


def _serving(plain: Plain) -> None:
    """A new connection is still accepted and answered (the service kept serving)."""
    with BlockingClient(*plain.stream) as client:
        assert client.end().messages == 0


def test_a_replay_over_the_stream_is_accepted_whole(plain: Plain, tiny_data: Path) -> None:
    target = f"{plain.stream[0]}:{plain.stream[1]}"
    stocks, report = feed.run(target, tiny_data, range(0, 3), transport="stream")
    assert report.updates > 1000 and (report.accepted, report.rejected) == (report.updates, 0)
    with grpc.insecure_channel(plain.feature) as ch:
        reply = fpb_grpc.FeaturesStub(ch).GetFeatures(fpb.GetFeaturesRequest(stock_ids=stocks), timeout=10)
    assert all(reply.found)


def test_a_predict_after_the_summary_frame_sees_the_closed_step(plain: Plain) -> None:
    ticks = StepTicks(STOCKS)
    with BlockingClient(*plain.stream) as client, grpc.insecure_channel(plain.gateway) as gch:
        predict = pb_grpc.SignalsStub(gch).Predict
        client.send(ticks.message(CHECKED))  # each stock's first step opens
        assert client.end().accepted == len(CHECKED)
        for step in range(1, 6):
            for sid in CHECKED:
                client.send(ticks.message([sid]))
                summary = client.end()
                assert (summary.accepted, summary.messages) == (1, 1), summary
                sig = predict(pb.PredictRequest(stock_ids=[sid]), timeout=10).signals[0]
                assert not sig.error, sig.error
                assert sig.window_version >= ticks.closed(sid) == step, (sid, step, sig)


def _hostile(stock: int) -> list[fpb.IngestRequest]:
    t0 = 20 * BUCKET_SECONDS * 10**6  # within a day of the stream's clock: no time_jump
    book = {"bid_price1": 1.0, "ask_price1": 1.001, "bid_price2": 0.999, "ask_price2": 1.002,
            "bid_size1": 1.0, "ask_size1": 1.0, "bid_size2": 1.0, "ask_size2": 1.0}

    def update(sid: int, seq: int, t: int, **change: float) -> fpb.MarketUpdate:
        return fpb.MarketUpdate(stock_id=sid, sequence=seq, event_time_us=t,
                                book=fpb.BookSnapshot(**book | change))

    return [fpb.IngestRequest(updates=[update(stock, 1, t0),
                                       update(stock, 2, t0 + 1, bid_price1=float("nan")),
                                       update(stock, 3, t0 + 2, ask_size1=float("inf")),
                                       update(stock, 2**62, t0 + 3), update(STOCKS + 3, 1, t0)]),
            fpb.IngestRequest(watermark_us=2**62)]


def test_hostile_values_are_rejected_by_reason_as_grpc_ingest_rejects_them(plain: Plain) -> None:
    with BlockingClient(*plain.stream) as client:
        for message in _hostile(HOSTILE):
            client.send(message)
        summary = client.end()
    with grpc.insecure_channel(plain.feature) as ch:
        over_grpc = fpb_grpc.FeaturesStub(ch).Ingest(iter(_hostile(HOSTILE + 1)), timeout=30)
    assert (summary.accepted, summary.messages) == (1, 2), summary
    assert dict(summary.rejected_by_reason) == {"non_finite": 2, "out_of_range": 1, "unknown_stock": 1,
                                                "watermark_ahead": 1}
    assert summary == over_grpc


def test_an_oversized_frame_is_refused_and_the_connection_closed(plain: Plain) -> None:
    before = metrics.total(plain.metrics, 'rtvol_feature_stream_errors_total{reason="oversized_frame"}')
    with _raw(plain) as sock:
        sock.sendall(hello() + HEADER.pack(MAX_FRAME + 1) + UPDATES + b"\0" * 1000)
        assert _error_of(sock) == f"frame.length: {MAX_FRAME + 1} bytes is over the limit of {MAX_FRAME}"
        assert _closed(sock)
    after = metrics.total(plain.metrics, 'rtvol_feature_stream_errors_total{reason="oversized_frame"}')
    assert after == before + 1
    _serving(plain)


def test_an_undecodable_message_is_refused_counted_and_never_applied(plain: Plain) -> None:
    before = metrics.total(plain.metrics, "rtvol_grpc_undecodable_total")
    with _raw(plain) as sock:
        sock.sendall(hello() + frame(UPDATES, b"\xff\xff\xff\xff") + frame(END))
        error = _error_of(sock)
        assert error.startswith("request: not a valid message for /rtvol.proto.v1.Features/Ingest"), error
        assert _closed(sock)
    assert metrics.total(plain.metrics, "rtvol_grpc_undecodable_total") == before + 1
    _serving(plain)


@pytest.mark.parametrize(("first", "error"), [
    (hello(version=9), "hello.version: 9 is not supported (this service speaks 1)"),
    (hello(magic=b"HTTP/1.1"), "hello.magic: not an rtvol ingest stream"),
    (frame(END), "frame.kind: the first frame must be HELLO"),
    (hello() + frame(b"Z"), "frame.kind: b'Z' is not a client frame kind"),
], ids=["version", "magic", "no-hello", "kind"])
def test_a_bad_field_is_named_in_the_error_frame(plain: Plain, first: bytes, error: str) -> None:
    with _raw(plain) as sock:
        sock.sendall(first)
        assert _error_of(sock) == error
        assert _closed(sock)
    _serving(plain)


def test_a_client_that_disconnects_mid_frame_leaves_nothing_applied(plain: Plain) -> None:
    ticks = StepTicks(STOCKS, start=500)
    message = updates(ticks.message([PARTIAL]))
    with BlockingClient(*plain.stream) as client:
        client.send_raw(message[:len(message) // 2])  # half a frame, then the connection goes
    _serving(plain)
    with BlockingClient(*plain.stream) as client:
        client.send_raw(message)  # the same update: a duplicate had the half been applied
        summary = client.end()
    assert (summary.accepted, summary.rejected) == (1, 0), summary


def test_at_most_the_configured_connections_are_served(plain: Plain) -> None:
    open_ = [BlockingClient(*plain.stream) for _ in range(MAX_CONNECTIONS)]
    try:
        with pytest.raises(StreamRefused, match=f"connections: at most {MAX_CONNECTIONS} at once"):
            BlockingClient(*plain.stream)
    finally:
        for client in open_:
            client.close()
    assert procs.wait_until(lambda: metrics.total(plain.metrics, "rtvol_feature_stream_connections") == 0, 10)
    _serving(plain)


KEYS = {"feeder": auth.new_key(), "engine": auth.new_key()}


@dataclass
class Secured:
    stream: tuple[str, int]
    client: ClientTLS


@pytest.fixture(scope="module")
def secured(redis_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A feature service with mTLS and API keys (feeders may Ingest, engines may not)."""
    logs = tmp_path_factory.mktemp("ingest_stream_tls")
    ca, pairs = certs.local_pki(logs / "pki")
    client = ClientTLS(ca, pairs["client"].cert, pairs["client"].key)
    keys_file = logs / "api-keys"
    keys_file.write_text("".join(f"{role}-holder {role} {auth.hash_key(key)}\n"
                                 for role, key in KEYS.items()))
    port, sport = procs.free_port(), procs.free_port()
    proc = procs.Proc("feature service", stack.feature_cmd(
        port, 0, redis_db, STOCKS, "--stream-port", str(sport), "--api-keys-file", str(keys_file),
        "--tls-cert", pairs["feature"].cert, "--tls-key", pairs["feature"].key, "--tls-client-ca", ca),
        logs / "feature.log", procs.grpc_ready(f"127.0.0.1:{port}", client))
    try:
        yield Secured(("127.0.0.1", sport), client)
    finally:
        assert proc.stop() == 0, proc.tail()


def test_tls_round_trip_for_a_feeder(secured: Secured) -> None:
    ticks = StepTicks(STOCKS, start=700)
    with BlockingClient(*secured.stream, KEYS["feeder"], secured.client.ssl_context()) as client:
        for _ in range(3):
            client.send(ticks.message(CHECKED))
        summary = client.end()
    assert (summary.accepted, summary.rejected, summary.messages) == (3 * len(CHECKED), 0, 3)


@pytest.mark.parametrize(("key", "error"), [
    ("", "hello.api_key: credential required"),
    ("not-a-key", "hello.api_key: unknown API key"),
    (KEYS["engine"],
     "hello.api_key: role 'engine' may not call /rtvol.proto.v1.Features/Ingest (needs feeder)"),
], ids=["missing", "unknown", "engine"])
def test_a_refused_key_gets_an_error_frame(secured: Secured, key: str, error: str) -> None:
    with pytest.raises(StreamRefused) as refused:
        BlockingClient(*secured.stream, key, secured.client.ssl_context())
    assert str(refused.value).startswith(error), refused.value


def test_tls_only_and_a_client_certificate_demanded(secured: Secured) -> None:
    with socket.create_connection(secured.stream, timeout=10) as sock:  # plaintext: no READY ever
        sock.sendall(hello(KEYS["feeder"]))
        assert _closed(sock)
    no_cert = ClientTLS(secured.client.ca).ssl_context()
    with pytest.raises((ssl.SSLError, StreamRefused, ConnectionError)):
        BlockingClient(*secured.stream, KEYS["feeder"], no_cert)

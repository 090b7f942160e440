"""`rtvol serve feature`: the feature service process."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rtvol import auth, config, eventloop, rpc, sharding, telemetry, tls
from rtvol.features.online import Limits
from rtvol.features.online_cuda import online_state
from rtvol.features.spec import spec_hash
from rtvol.featurestore import FeatureStore, InProcessStore, RedisStore, redis_client
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from rtvol.services.feature.alerts import ALERT_CHANNEL, Alerts
from rtvol.services.feature.fanout import Consumer, FanOut
from rtvol.services.feature.publisher import Publisher
from rtvol.services.feature.recovery import recover
from rtvol.services.feature.servicer import SERVICE_NAME, FeaturesServicer, Ingestor
from rtvol.services.feature.settings import FeatureSettings
from rtvol.services.feature.stream import IngestStreamServer
from rtvol.services.feature.ticklog import TickLog
from rtvol.services.feature.volatility import VolEstimator
from rtvol.services.feature.vwap import Vwap
from rtvol.services.feature.watch import WindowFeed
from rtvol.watch_stream import WatchStream

log = logging.getLogger("rtvol.feature")
# Ingest only from feeders; reads (the gateway's /v1/universe) from services and operators
INGEST = f"/{SERVICE_NAME}/Ingest"
ACCESS = auth.grpc_rules(frozenset({auth.SERVICE, auth.OPERATOR}), {INGEST: frozenset({auth.FEEDER})})


def make_store(s: FeatureSettings) -> FeatureStore:
    if s.redis_url:
        client = redis_client(s.redis_url, s.redis_cluster, **tls.redis(s.redis_url, s))
        return RedisStore(client, spec_hash(), ttl_s=s.redis_ttl_s, stream_maxlen=s.stream_maxlen)
    return InProcessStore(spec_hash(), ttl_s=s.redis_ttl_s, stream_maxlen=s.stream_maxlen)


def make_fanout(s: FeatureSettings, vwap: Vwap) -> tuple[FanOut, list[Callable[[], None]]]:
    """The side consumers the settings ask for, and what closes them after their threads end."""
    consumers, closers = [Consumer("vwap", vwap.handle, s.fanout_queue, "drop_oldest")], []
    if s.ticklog_dir:
        log_ = TickLog(Path(s.ticklog_dir), s.ticklog_max_rows, s.ticklog_max_files, s.ticklog_max_bytes,
                       s.ticklog_max_age_s, s.ticklog_fsync_interval_s)
        consumers.append(Consumer("ticklog", log_.handle, s.fanout_queue, "drop_newest", log_.tick,
                                  tick_s=min(0.5, s.ticklog_fsync_interval_s)))
        closers.append(log_.close)
    if s.alerts:
        publish: Callable[[bytes], object] = lambda message: 0  # noqa: E731 (no Redis: counted only)
        if s.redis_url:
            # used on the consumer's thread
            client = redis_client(s.redis_url, s.redis_cluster, sync=True, **tls.redis(s.redis_url, s))
            publish = functools.partial(client.publish, ALERT_CHANNEL)
            closers.append(client.close)
        alerts = Alerts(s.stocks, publish, s.alert_spike_sigmas, stale_after_s=s.alert_stale_after_s)
        consumers.append(Consumer("alerts", alerts.handle, s.fanout_queue, "drop_oldest", alerts.tick))
    return FanOut(consumers), closers


def stream_server(s: FeatureSettings, ingestor: Ingestor) -> IngestStreamServer | None:
    """The framed Ingest listener the settings ask for (--stream-port), with the gRPC port's
    keys (the same rule as gRPC Ingest) and TLS (mTLS with a client CA); None: off."""
    if not s.stream_port:
        return None
    server_tls = tls.server(s)
    return IngestStreamServer(ingestor, auth.guard("feature", s.api_keys_file, ACCESS), INGEST,
                              s.stream_max_connections, s.stream_max_frame_bytes,
                              server_tls.listener() if server_tls is not None else None)


async def serve(s: FeatureSettings, store: FeatureStore | None = None,
                shutdown: asyncio.Event | None = None,
                on_watch: Callable[[int, WatchStream], None] | None = None) -> None:
    """``store``, ``shutdown`` and ``on_watch`` are given when another component shares the
    process (services/embedded.py): then the store is theirs to close, and ``on_watch`` gets this
    replica's ordinal and its Watch stream, to follow in process (the RPC's messages, not
    serialised), once recovery is done."""
    limits = Limits(s.max_sequence_gap, s.max_time_ahead_s, s.max_watermark_ahead_s)
    state = online_state(s.stocks, limits, s.device)
    own_store = store is None
    if store is None:
        store = make_store(s)
    publisher = Publisher(state, store, s.flush_interval_s)
    ordinal = s.replica if s.replica >= 0 else sharding.ordinal_of(socket.gethostname())
    owned = sharding.owned(s.stocks, s.replicas, ordinal)
    await recover(state, store, publisher, np.flatnonzero(owned))  # a store it cannot read: no start
    vwap = Vwap(s.stocks)  # fed by the fan-out, read by GetVwap
    fanout, closers = make_fanout(s, vwap)
    feed = WindowFeed(state, s.max_batch_pushed, ack_timeout_s=s.watch_ack_timeout_s, lease_s=s.lease_s,
                      stored_us=publisher.stored_us, inflight=s.watch_inflight)
    if on_watch is not None:
        on_watch(ordinal, feed.stream)
    vol = VolEstimator(state, store, s.vol_interval_s, s.vol_halflife_steps, f"{ordinal}/{s.replicas}")
    server = rpc.Server.secured([SERVICE_NAME], s, "feature", ACCESS)
    ingestor = Ingestor(state, publisher, s.max_batch, fanout, None if s.replicas == 1 else owned, feed)
    stream = stream_server(s, ingestor)
    pb_grpc.add_FeaturesServicer_to_server(
        FeaturesServicer(state, store, ingestor,
                         telemetry.tracer("rtvol-feature"),
                         s.features_from != "store" and s.replicas == 1, vwap),  # memory holds only its own
        server.server)
    port = server.listen(f"{s.host}:{s.port}")
    server.listen_health(s.host, s.health_port)
    await server.start()
    stream_port = await stream.start(s.host, s.stream_port) if stream is not None else 0
    publisher.start()
    feed.start()
    vol.start()
    fanout.start()
    await server.set_serving(True)
    telemetry.after_warmup(s.freeze_gc)
    log.info("feature service ready: grpc %s:%d, stream %d, metrics %d, store %s, spec %s, replica %d "
             "of %d, state on %s",
             s.host, port, stream_port, s.metrics_port, "redis" if s.redis_url else "in-process", spec_hash(),
             ordinal, s.replicas, s.device)

    def drain() -> None:
        if stream is not None:
            stream.close()
        feed.end_streams()

    async def stop() -> None:
        await vol.stop()
        await feed.stop()
        await publisher.stop()
        await asyncio.to_thread(fanout.stop)
        for close in closers:
            close()
        if own_store:
            await store.close()

    await server.serve_forever(s.drain_seconds, stop, on_drain=drain, stop=shutdown)


def main(argv: Sequence[str] | None = None) -> None:
    s = config.load(FeatureSettings, argv, "rtvol serve feature")
    telemetry.bootstrap("rtvol-feature", s.log_level, [(s.host, s.metrics_port)], tls.metrics(s))
    eventloop.run(serve(s), s.event_loop)

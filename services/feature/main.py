"""`rtvol serve feature`: the feature service process."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence

from rtvol import config, rpc, telemetry
from rtvol.features.online import OnlineState
from rtvol.features.spec import spec_hash
from rtvol.featurestore import FeatureStore, InProcessStore, RedisStore
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from services.feature.publisher import Publisher
from services.feature.servicer import SERVICE_NAME, FeaturesServicer, Ingestor
from services.feature.settings import FeatureSettings
from services.feature.volatility import VolEstimator

log = logging.getLogger("rtvol.feature")


def make_store(s: FeatureSettings) -> FeatureStore:
    if s.redis_url:
        return RedisStore.connect(s.redis_url, spec_hash(), cluster=s.redis_cluster, ttl_s=s.redis_ttl_s,
                                  stream_maxlen=s.stream_maxlen)
    return InProcessStore(spec_hash(), ttl_s=s.redis_ttl_s, stream_maxlen=s.stream_maxlen)


async def serve(s: FeatureSettings) -> None:
    state = OnlineState(s.stocks)
    store = make_store(s)
    publisher = Publisher(state, store, s.flush_interval_s)
    vol = VolEstimator(state, store, s.vol_interval_s, s.vol_halflife_steps)
    server = rpc.Server([SERVICE_NAME])
    pb_grpc.add_FeaturesServicer_to_server(
        FeaturesServicer(state, store, Ingestor(state, publisher, s.max_batch),
                         telemetry.setup_tracing("rtvol-feature")), server.server)
    port = server.listen(f"{s.host}:{s.port}")
    telemetry.start_metrics(s.metrics_port, s.host)
    await server.start()
    publisher.start()
    vol.start()
    await server.set_serving(True)
    if s.freeze_gc:
        gc.freeze()
    log.info("feature service ready: grpc %s:%d, metrics %d, store %s, spec %s", s.host, port,
             s.metrics_port, "redis" if s.redis_url else "in-process", spec_hash())

    async def stop() -> None:
        await vol.stop()
        await publisher.stop()
        await store.close()

    await server.serve_forever(s.drain_seconds, stop)


def main(argv: Sequence[str] | None = None) -> None:
    s = config.load(FeatureSettings, argv, "rtvol serve feature")
    logging.basicConfig(level=s.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(s))

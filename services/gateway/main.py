"""`rtvol serve gateway`: REST (uvicorn) and gRPC in one event loop, over one Predictor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from rtvol import auth, config, eventloop, rpc, shm, telemetry, tls
from rtvol.features.spec import spec_hash
from rtvol.featurestore import FeatureStore, RedisStore, redis_client
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc
from rtvol.services.gateway import httpserver, labels, shards, workers
from rtvol.services.gateway.breaker import Breaker
from rtvol.services.gateway.cache import SignalCache
from rtvol.services.gateway.fanin import Coalescer
from rtvol.services.gateway.grpc_api import SERVICE_NAME, SignalsServicer
from rtvol.services.gateway.hub import Hub
from rtvol.services.gateway.kelly import KellyTable
from rtvol.services.gateway.memory import WindowMemory
from rtvol.services.gateway.pipeline import Pipeline
from rtvol.services.gateway.precompute import Precomputer
from rtvol.services.gateway.predictor import FeatureSource, Predictor, Tiers
from rtvol.services.gateway.readiness import Readiness
from rtvol.services.gateway.rest import create_app
from rtvol.services.gateway.scorer import LiveScorer, repository_validation
from rtvol.services.gateway.settings import GatewaySettings
from rtvol.services.gateway.shadow import Shadow
from rtvol.services.gateway.sidecar_client import SidecarClient
from rtvol.services.gateway.signaltable import SignalTable
from rtvol.services.gateway.tier1 import ModelClient, Tier1
from rtvol.services.gateway.tier2 import LocalModel, allowance_per_window_s
from rtvol.services.gateway.tier3 import VolCache
from rtvol.services.gateway.universe import Universe
from rtvol.services.gateway.versions import VersionFollower, served_version
from rtvol.services.gateway.watch import WindowWatch, follow_all, wait_connected
from rtvol.watch_stream import WatchStream

log = logging.getLogger("rtvol.gateway")
READERS = frozenset({auth.ENGINE, auth.OPERATOR})
GRPC_ACCESS = auth.grpc_rules(READERS)
OPERATORS = frozenset({auth.OPERATOR})
HTTP_ACCESS = auth.Rules(READERS, {"/livez": auth.OPEN, "/readyz": auth.OPEN, "/metrics": OPERATORS},
                         (("/docs", OPERATORS), ("/redoc", OPERATORS), ("/openapi.json", OPERATORS)))


def _breaker(name: str, s: GatewaySettings, latency_budget_s: float = float("inf")) -> Breaker:
    return Breaker(name, s.breaker_window, s.breaker_min_calls, s.breaker_error_rate, s.breaker_open_s,
                   s.breaker_probes, latency_budget_s)


def _redis(url: str, timeout_s: float, s: GatewaySettings) -> Any:
    # short socket timeouts: a stopped Redis must cost a request milliseconds, not seconds
    return redis_client(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **tls.redis(url, s))


def _slots(s: GatewaySettings) -> shm.Slots | None:
    """The shared-memory region for big tier-1 batches; None (the windows go in the requests,
    as without it) where it cannot be made, e.g. a memory volume too small for every worker's."""
    if s.model_shm_dir is None:
        return None
    try:
        return shm.Slots(s.model_shm_dir, s.model_shm_bytes)
    except OSError as e:
        log.warning("--model-shm-dir %s: no region of %d bytes (%s): tier-1 windows go in the requests",
                    s.model_shm_dir, s.model_shm_bytes, e.strerror)
        return None


def _per_window_s(s: GatewaySettings, local: LocalModel) -> float:
    configured = s.model_latency_budget_per_window_us / 1e6
    allowance, tier2 = allowance_per_window_s(configured, s.model_latency_budget_tier2_factor, local)
    if tier2 is not None:
        log.info("tier-1 allowance a window: %.0f µs (configured %.0f; %g x tier 2's %.1f µs here)",
                 allowance * 1e6, configured * 1e6, s.model_latency_budget_tier2_factor, tier2 * 1e6)
    return allowance


async def serve(s: GatewaySettings, store: FeatureStore | None = None,
                shutdown: asyncio.Event | None = None, local_watch: dict[int, WatchStream] | None = None,
                local_model: ModelClient | None = None) -> None:
    """``store``, ``shutdown`` and ``local_watch`` are given when the feature service shares the
    process (services/embedded.py): its in-process store, one drain signal for both, and by
    replica ordinal its Watch stream, followed in process (with --watch-in-process).
    ``local_model``: tier 1's models in this process, called in place of a sidecar (no shadow)."""
    timeout_s = s.store_timeout_ms / 1000
    redis = _redis(s.redis_url, timeout_s, s) if s.redis_url else None
    own_store = store is None and redis is not None
    if own_store:
        store = RedisStore(redis, spec_hash())
    version = s.model_version if s.model_version is not None else served_version(s.model_repository,
                                                                                  s.model_name)
    local = LocalModel(s.model_repository, s.model_name, version, s.ort_threads)
    if why := labels.too_long(local.name, local.version):  # nothing older to keep serving
        raise SystemExit(f"tier 2 cannot serve {local.name} version {local.version}: {why}")
    tier1 = fanin = client = shadow = shadow_client = None
    client_tls, api_key = tls.client(s), auth.read_key(s.api_key_file)  # to the sidecar and feature service
    if s.model_url or local_model:
        client = local_model or SidecarClient(s.model_url, s.model_name, s.model_streams, client_tls, api_key,
                                              _slots(s))
        budget_s = s.model_latency_budget_ms / 1000
        tier1 = Tier1(client, _breaker("sidecar", s, budget_s), s.model_timeout_ms / 1000, s.model_probe_s,
                      _per_window_s(s, local), judge_wall=s.model_budget_judges == "wall",
                      probe_windows=s.breaker_probe_windows)
        # the pipeline's batches go out through the fan-in too: a lower limit would queue them there
        fanin = Coalescer(tier1.batch, s.max_batch, max(s.fanin_max_inflight, s.pipeline_inflight))
    if s.model_url and not local_model:
        # a channel of its own: shadow calls never queue behind (or ahead of) served ones
        shadow_client = SidecarClient(s.model_url, s.model_name, 1, client_tls, api_key)
        shadow = Shadow(shadow_client, s.shadow_max_batch, s.shadow_timeout_ms / 1000, s.shadow_queue,
                        served=tier1)
    vol = VolCache(store, s.vol_refresh_s, timeout_s)
    cache = SignalCache(s.cache_size, redis, spec_hash())
    predictor = Predictor(features=FeatureSource(store, _breaker("store", s), timeout_s),
                          tiers=Tiers(tier1, fanin, local, vol), cache=cache,
                          kelly=KellyTable(s.kelly_cap, s.kelly_target_vol), stocks=s.stocks,
                          deadline_s=s.deadline_ms / 1000, tracer=telemetry.tracer("rtvol-gateway"))
    predictor.shadow = shadow
    follower = (VersionFollower(s.model_repository, predictor, shadow, s.model_poll_s, s.ort_threads,
                                follow_tier2=s.model_version is None) if s.model_poll_s > 0 else None)
    hub = Hub()
    precompute = (Precomputer(store, predictor, cache, hub, s.precompute_poll_s, s.deadline_ms / 1000)
                  if store is not None and s.precompute else None)
    universe = Universe(s.feature_urls, vol, client_tls, api_key)
    watches: list[WindowWatch] = []
    pipeline = shared = None
    if s.feature_url and s.precompute:  # windows pushed by the feature service: no poll
        scorer = LiveScorer(s.stocks, repository_validation(s.model_repository))
        layout = shards.Layout.decode(os.environ[shards.ENV]) if s.worker and shards.ENV in os.environ \
            else None
        table = SignalTable(layout.table_fd, s.stocks) if layout else None
        predictor.memory = WindowMemory(s.stocks, scorer, layout.mine(s.stocks) if layout else None,
                                        (table.window_version, table.valid_until) if table else None)
        if shadow is not None:
            shadow.scorer = scorer  # shadow signals are scored as the served ones, role=shadow
        # one per replica, each carrying this worker's shard only
        watches = follow_all(s.feature_urls, predictor.memory, client_tls, api_key, s.watch_rows,
                             (layout.index, layout.count) if layout else (0, 1),
                             local_watch if s.watch_in_process else None)
        if layout and table:  # a worker: infers its shard, shares those signals with the other workers
            shared = shards.Shards(layout, table, predictor.memory, hub, cache)
        pipeline = Pipeline(predictor.memory, predictor, cache, hub, s.max_batch, s.deadline_ms / 1000,
                            share=shared.publish if shared else None, inflight=s.pipeline_inflight)
    readiness = Readiness(tier1, watches)

    # a worker shares both ports with the others (services/gateway/workers.py)
    server = rpc.Server.secured([SERVICE_NAME], s, "gateway", GRPC_ACCESS,
                                [("grpc.so_reuseport", 1)] if s.worker else [])
    signals = SignalsServicer(predictor, hub, s.max_ids)
    pb_grpc.add_SignalsServicer_to_server(signals, server.server)
    app = auth.wrap_http(create_app(predictor, s.max_ids, readiness.state, universe.top, s.api_docs),
                         auth.guard("gateway", s.api_keys_file, HTTP_ACCESS))
    limits = httpserver.Limits(s.http_max_connections, s.http_limit_concurrency, s.http_request_timeout_s,
                               s.http_keep_alive_s, s.http_max_body_bytes)
    server_tls = tls.server(s)
    http = httpserver.Server(httpserver.config(app, s.host, s.port, s.drain_seconds, limits,
                                               server_tls.uvicorn() if server_tls else {}))

    async def open_ports() -> tuple[asyncio.Task[None], int]:
        """gRPC and HTTP listening (grpc listens as it binds: a worker's port joins the group
        only here); returns the HTTP server's task and the gRPC port."""
        grpc_port = server.listen(f"{s.host}:{s.grpc_port}")
        await server.start()
        sockets = [httpserver.shared_socket(s.host, s.port)] if s.worker else None
        task = asyncio.create_task(http.serve(sockets))
        while not http.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            raise SystemExit(f"HTTP server did not start on {s.host}:{s.port}")
        return task, grpc_port

    await server.set_serving(False)  # until start-up has finished, as /readyz
    if not s.worker:  # probes reach a starting process: /readyz says what it waits for
        http_task, grpc_port = await open_ports()
    await _start_up(readiness, vol, tier1, s.model_wait_s)
    if follower:
        await follower.check()  # the shadow version from the start
        follower.start()
    if shadow:
        shadow.start()
    if precompute:
        if s.worker:  # warm before it takes connections (below)
            await precompute.warm()
        precompute.start(follow=not watches, warm=not s.worker)
    if watches and pipeline:
        if shared:
            shared.start()  # the other shards' signals, before this worker takes connections
        pipeline.start()
        for watch in watches:
            watch.start()
        readiness.starting(f"waiting up to {s.feature_wait_s:g} s for the Watch stream of each of "
                           f"{len(watches)} feature replicas")
        if not await wait_connected(watches, s.feature_wait_s):
            log.warning("feature replicas not followed yet (their stocks are answered from the store): %s",
                        [w.url for w in watches if not w.connected()])
    if s.worker:  # a (re)started worker takes connections once warm; the others answer meanwhile
        http_task, grpc_port = await open_ports()
    readiness.started()
    await server.set_serving(True)
    telemetry.after_warmup(s.freeze_gc)
    lag = telemetry.LoopLag()  # rtvol_event_loop_lag_seconds: what a ready request waits for this loop
    lag.start()
    print(f"rtvol-gateway listening on http {s.host}:{s.port} grpc {s.host}:{grpc_port}", flush=True)
    log.info("model %s v%s, tier 1 %s, store %s", local.name, local.version,
             "in process" if local_model else s.model_url or "off",
             type(store).__name__ if store else "none")

    def drain() -> None:
        """/readyz says draining; ends what never ends by itself (pushes, open PredictStreams)
        and starts the HTTP drain beside the gRPC one: the two together fit in one drain time
        (a readiness probe arriving after this finds the port closed: not ready either)."""
        readiness.drain()
        hub.close()
        signals.draining = True
        http.should_exit = True

    async def stop() -> None:
        lag.stop()
        await http_task
        if precompute:
            await precompute.stop()
        for watch in watches:
            await watch.stop()
        if pipeline:
            await pipeline.stop()
        if shared:
            shared.stop()
            shared.table.close()
        await vol.stop()
        await universe.close()
        if follower:
            await follower.stop()
        if shadow:
            await shadow.stop()
        if tier1:
            await tier1.stop()
        for sidecar in (client, shadow_client):
            if sidecar:
                await sidecar.close()
        if own_store and store is not None:
            await store.close()  # its MGET reader's connections, then the client
        elif redis is not None:
            await redis.aclose()

    await server.serve_forever(s.drain_seconds, stop, on_drain=drain, stop=shutdown)


async def _start_up(readiness: Readiness, vol: VolCache, tier1: Tier1 | None, sidecar_wait_s: float) -> None:
    """What must happen before the gateway is ready (tier 2's model is loaded already): the
    volatility estimates read once (the universe /v1/universe and tier 3 answer from), and
    the sidecar ready or, after ``sidecar_wait_s``, left to the background probe."""
    readiness.starting("reading the volatility estimates")
    with contextlib.suppress(Exception):  # the store is down: its refresh loop counts and retries
        await vol.refresh()
    vol.start()
    if tier1 is not None:
        readiness.starting(f"waiting up to {sidecar_wait_s:g} s for the sidecar")
        if not await tier1.wait_ready(sidecar_wait_s):
            log.warning("tier 2 answers: %s", tier1.status()[1])
        tier1.start()


def main(argv: Sequence[str] | None = None) -> None:
    s = config.load(GatewaySettings, argv, "rtvol serve gateway")
    n = workers.count(s)
    if n > 1 and not s.worker:  # the supervisor of n workers, each this function with --worker I
        logging.basicConfig(level=s.log_level, format=telemetry.LOG_FORMAT)
        raise SystemExit(workers.supervise(s, list(argv or []), n))
    # a worker's --metrics-port is served by its supervisor, for all workers together
    telemetry.bootstrap("rtvol-gateway", s.log_level, [(s.host, 0 if s.worker else s.metrics_port)],
                        tls.metrics(s))
    eventloop.run(serve(s), s.event_loop)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

"""`rtvol serve model`: the model sidecar (Open Inference Protocol over gRPC)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from rtvol import auth, eventloop, telemetry, tls
from rtvol.config import load
from rtvol.rpc import Server
from rtvol.services.model import backends
from rtvol.services.model.dataplane import DataPlane
from rtvol.services.model.registry import BatchPolicy, Registry
from rtvol.services.model.servicer import SERVICE_NAME, InferenceServicer
from rtvol.services.model.settings import ModelSettings
from rtvol.services.model.shadow import ShadowPolicy
from rtvol.services.model.shm import Regions

log = logging.getLogger("rtvol.model")
ACCESS = auth.grpc_rules(frozenset({auth.SERVICE, auth.OPERATOR}))  # the gateway, operators


def _slowed(make: Callable[..., Any], delay_s: float) -> Callable[..., Any]:
    """Backends whose every batch takes ``delay_s`` longer, as on a stalled GPU (fault tests)."""
    def create(*args: Any, **kwargs: Any) -> Any:
        backend = make(*args, **kwargs)
        infer = backend.infer

        def slow(window: Any) -> Any:
            time.sleep(delay_s)
            return infer(window)
        backend.infer = slow
        return backend
    return create


class Models:
    """The models of ``s.model_repository`` loaded as the sidecar serves them (backends, batchers,
    the threads they compute on): the sidecar's, or, in `rtvol serve embedded --model`, tier 1's
    in the gateway's process."""

    def __init__(self, s: ModelSettings) -> None:
        if s.backend not in backends.NAMES:
            raise SystemExit(f"--backend must be one of {backends.NAMES}")
        pool = partial(ThreadPoolExecutor, 1) if s.compute_thread else None
        self.executor = pool(thread_name_prefix="backend") if pool else None
        # shadow versions compute on a thread of their own: never ahead of a served batch in a queue
        self.shadow_executor = pool(thread_name_prefix="shadow") if pool else None
        make: Callable[..., backends.Backend] = partial(backends.create, s.backend, precision=s.precision,
                                                        threads=s.ort_threads)
        if s.debug_delay_ms > 0:
            make = _slowed(make, s.debug_delay_ms / 1000)
        self.registry = Registry(s.model_repository, make, s.max_queue_delay_us, self.executor,
                                 BatchPolicy(s.inline_max_rows, s.idle_dispatch, s.max_queue_rows,
                                             s.max_queue_bytes),
                                 self.shadow_executor,
                                 ShadowPolicy(s.shadow_slice_rows, s.shadow_max_pause_ms / 1000))
        self.poll_s = s.poll_seconds
        self._poller: asyncio.Task[None] | None = None

    def follow(self) -> None:
        """Load new versions as they appear in the repository, every ``poll_seconds`` (0: never)."""
        if self.poll_s > 0:
            self._poller = asyncio.create_task(self.registry.poll_forever(self.poll_s))

    async def close(self) -> None:
        if self._poller:
            self._poller.cancel()
        await self.registry.close()
        for pool in (self.executor, self.shadow_executor):
            if pool:
                pool.shutdown(wait=True)


async def serve(s: ModelSettings) -> None:
    models = Models(s)
    registry = models.registry
    regions = None if s.shm_dir is None else Regions(s.shm_dir, max_bytes=s.shm_max_bytes)
    dataplane = DataPlane(registry, regions)
    server = Server.secured([SERVICE_NAME], s, "model", ACCESS)
    from rtvol.proto.inference import grpc_service_pb2_grpc as pb_grpc

    servicer = InferenceServicer(dataplane, telemetry.tracer("rtvol-model"), s.stream_max_inflight)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server.server)
    port = server.listen(f"{s.host}:{s.port}")
    if s.unix_socket:
        server.listen(f"unix:{s.unix_socket}")
    server.listen_health(s.host, s.health_port)
    await server.set_serving(False)
    await server.start()
    print(f"rtvol-model listening on {s.host}:{port}", flush=True)  # tests read the port

    loaded = await registry.sync()  # live but not ready until every model is loaded and warm
    if not loaded:
        log.warning("no model in %s yet; polling", s.model_repository)
    dataplane.ready = True
    await server.set_serving(True)
    telemetry.after_warmup(s.freeze_gc)
    log.info("ready: %s", ", ".join(loaded) or "(no models)")
    models.follow()

    async def stop() -> None:
        await models.close()

    def drain() -> None:
        servicer.draining = True

    await server.serve_forever(s.drain_seconds, on_stop=stop, on_drain=drain)


def main(argv: Sequence[str] | None = None) -> None:
    s = load(ModelSettings, argv, "rtvol serve model")
    telemetry.bootstrap("rtvol-model", s.log_level, [(s.host, s.metrics_port)], tls.metrics(s))
    eventloop.run(serve(s), s.event_loop)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

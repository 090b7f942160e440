"""`rtvol serve embedded`: the feature service and the gateway in one process, one event loop.

Without Redis the two share the feature service's in-process store: the gateway reads the
windows, the change stream and the volatility estimate from memory, so it still answers
from tier 1 and still pushes pre-computed signals. `rtvol up` runs this when there is no
redis-server binary, or with ``--no-redis``. This module composes the two services; it
is not a service of its own (the services still never import each other).

Arguments: the feature service's flags, then ``--gateway`` and the gateway's flags, and
optionally ``--model`` and the model sidecar's flags, each as `rtvol serve
feature|gateway|model --help` lists them. With ``--model`` the sidecar's models are loaded in
this process and tier 1 calls them directly (services/embedded_model.py; the sidecar's
listening and TLS flags do not apply, the gateway's --model-url is not used, no shadow).
RTVOL_* variables apply to all, as they would to processes started from one environment.
SIGTERM drains all. The gateway follows the feature service's Watch stream in process (no
gRPC hop, nothing serialised) unless --no-watch-in-process. Both Prometheus endpoints (the
feature service's metrics port, the gateway's /metrics) show the whole process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from rtvol import config, eventloop, rpc, telemetry, tls
from rtvol.services.embedded_model import InProcessModel
from rtvol.services.feature import main as feature
from rtvol.services.feature.settings import FeatureSettings
from rtvol.services.gateway import main as gateway
from rtvol.services.gateway.settings import GatewaySettings
from rtvol.services.model.main import Models
from rtvol.services.model.settings import ModelSettings
from rtvol.watch_stream import WatchStream

SEPARATOR = "--gateway"
MODEL = "--model"


def _cut(args: list[str], separator: str) -> tuple[list[str], list[str] | None]:
    if separator not in args:
        return args, None
    at = args.index(separator)
    return args[:at], args[at + 1:]


def split(argv: Sequence[str] | None) -> tuple[list[str], list[str], list[str] | None]:
    """(feature service flags, gateway flags, model flags or None) around the first
    ``--gateway`` and the first ``--model`` after it."""
    features, rest = _cut(list(argv or []), SEPARATOR)
    gateway_args, model_args = _cut(rest or [], MODEL)
    return features, gateway_args, model_args


async def serve(fs: FeatureSettings, gs: GatewaySettings, ms: ModelSettings | None = None) -> None:
    models = Models(ms) if ms is not None else None
    if models is not None:  # loaded and warm before anything is served, as a sidecar is ready
        await models.registry.sync()
        models.follow()  # and new versions loaded as the sidecar would
    store = feature.make_store(fs)
    shutdown = rpc.stop_on_signals()
    watch: asyncio.Future[tuple[int, WatchStream]] = asyncio.get_running_loop().create_future()
    tasks = [asyncio.create_task(feature.serve(fs, store, shutdown, lambda *w: watch.set_result(w)),
                                 name="feature service")]
    try:
        # the gateway starts once the feature service has recovered and can be watched
        started: list[asyncio.Future[Any]] = [watch, tasks[0]]
        await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
        if watch.done():
            ordinal, stream = watch.result()
            # the gateway's --feature-url lists every replica in ordinal order: this one is followed here
            local = {ordinal: stream} if len(gs.feature_urls) == fs.replicas else {}
            tier1 = InProcessModel(models, gs.model_name) if models is not None else None
            serving = gateway.serve(gs, store, shutdown, local, tier1)
            tasks.append(asyncio.create_task(serving, name="gateway"))
        # both run until the signal; one failing (e.g. its port is taken) drains the other
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        shutdown.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
        if models is not None:
            await models.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result


def main(argv: Sequence[str] | None = None) -> None:
    feature_args, gateway_args, model_args = split(argv)
    fs = config.load(FeatureSettings, feature_args, "rtvol serve embedded [FEATURE FLAGS]")
    gs = config.load(GatewaySettings, gateway_args, f"rtvol serve embedded ... {SEPARATOR} [GATEWAY FLAGS]")
    ms = None if model_args is None else config.load(
        ModelSettings, model_args, f"rtvol serve embedded ... {SEPARATOR} ... {MODEL} [MODEL FLAGS]")
    telemetry.bootstrap("rtvol-embedded", fs.log_level,
                        [(fs.host, fs.metrics_port), (gs.host, gs.metrics_port)], tls.metrics(gs))
    eventloop.run(serve(fs, gs, ms), gs.event_loop)

"""`rtvol serve embedded`: the feature service and the gateway in one process, one event loop.

Without Redis the two share the feature service's in-process store: the gateway reads the
windows, the change stream and the volatility estimate from memory, so it still answers
from tier 1 and still pushes pre-computed signals. `rtvol up` runs this when there is no
redis-server binary, or with ``--no-redis``. This module composes the two services; it
is not a service of its own (the services still never import each other).

Arguments: the feature service's flags, then ``--gateway`` and the gateway's flags, each
as `rtvol serve feature|gateway --help` lists them. RTVOL_* variables apply to both, as
they would to two processes started from one environment. SIGTERM drains both.
Both Prometheus endpoints (the feature service's metrics port, the gateway's /metrics)
show the whole process: every metric of both services.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rtvol import config, rpc, telemetry, tls
from rtvol.services.feature import main as feature
from rtvol.services.feature.settings import FeatureSettings
from rtvol.services.gateway import main as gateway
from rtvol.services.gateway.settings import GatewaySettings

SEPARATOR = "--gateway"


def split(argv: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """(feature service flags, gateway flags) around the first ``--gateway``."""
    args = list(argv or [])
    if SEPARATOR not in args:
        return args, []
    at = args.index(SEPARATOR)
    return args[:at], args[at + 1:]


async def serve(fs: FeatureSettings, gs: GatewaySettings) -> None:
    store = feature.make_store(fs)
    shutdown = rpc.stop_on_signals()
    tasks = [asyncio.create_task(feature.serve(fs, store, shutdown), name="feature service"),
             asyncio.create_task(gateway.serve(gs, store, shutdown), name="gateway")]
    try:
        # both run until the signal; one failing (e.g. its port is taken) drains the other
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        shutdown.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result


def main(argv: Sequence[str] | None = None) -> None:
    feature_args, gateway_args = split(argv)
    fs = config.load(FeatureSettings, feature_args, "rtvol serve embedded [FEATURE FLAGS]")
    gs = config.load(GatewaySettings, gateway_args, f"rtvol serve embedded ... {SEPARATOR} [GATEWAY FLAGS]")
    telemetry.bootstrap("rtvol-embedded", fs.log_level,
                        [(fs.host, fs.metrics_port), (gs.host, gs.metrics_port)], tls.metrics(gs))
    asyncio.run(serve(fs, gs))

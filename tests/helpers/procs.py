"""Real service processes for integration tests: redis-server, feature service, model
sidecar and gateway, each on a loopback port, with its output in a log file.

Process handling and command lines live in rtvol.localproc and rtvol.stack (`rtvol up`
uses the same ones). Every wait is bounded; a process that does not come up fails the test
with its log tail. A process keeps its port across ``kill``/``restart``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from rtvol import stack
from rtvol.localproc import Proc, free_port, grpc_ready, http_ready, redis_ready, stop_all, wait_until

__all__ = [
    "BUSY_MACHINE_BUDGETS",
    "Proc",
    "embedded_service",
    "feature_service",
    "free_port",
    "gateway",
    "grpc_channels",
    "grpc_ready",
    "http_ready",
    "pipeline_stack",
    "redis",
    "redis_ready",
    "sidecar",
    "stop_all",
    "upstreams",
    "wait_until",
]

# gateway budgets for a test machine whose cores every process shares: the production tier-1
# budget (5 ms, measured from the gateway) is missed whenever a neighbour takes the core, and
# over-budget batches open the sidecar breaker; the tests that use these check answers and
# real faults, not budgets (benchmarks do that)
BUSY_MACHINE_BUDGETS = ("--deadline-ms", "500", "--model-timeout-ms", "200",
                        "--model-latency-budget-ms", "100")


# the feature service drops a watching gateway that has not acknowledged a change within its
# ack timeout (1 s), and an Ingest call then returns without that gateway holding the window:
# on a test machine whose cores other jobs share, a gateway process is sometimes starved that
# long, which the read-your-writes checks would read as a broken guarantee
BUSY_MACHINE_WATCH = ("--watch-ack-timeout-s", "5")


REDIS_DATABASES = 64  # one per test module that asks for its own (conftest's redis_db)


def redis(workdir: Path, port: int | None = None) -> Proc:
    port = port or free_port()
    cmd = [*stack.redis_cmd(port, workdir), "--databases", str(REDIS_DATABASES)]
    proc = Proc("redis-server", cmd, workdir / "redis.log", redis_ready(port), timeout_s=10)
    proc.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    return proc


def feature_service(log_dir: Path, redis_url: str, stocks: int, *extra: str,
                    port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    target = f"127.0.0.1:{port}"
    return Proc("feature service", stack.feature_cmd(port, 0, redis_url, stocks, *extra),
                log_dir / "feature.log", grpc_ready(target)), target


def sidecar(log_dir: Path, repo: Path, *extra: str, port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    target = f"127.0.0.1:{port}"
    return Proc("model sidecar", stack.sidecar_cmd(port, 0, repo, "--poll-seconds", "0", *extra),
                log_dir / "sidecar.log", grpc_ready(target)), target


def upstreams(log_dir: Path, redis_url: str, repo: Path, stocks: int, started: list[Proc],
              feature_extra: Sequence[str] = ()) -> tuple[str, str]:
    """A feature service and a model sidecar for a gateway, each added to ``started`` as it
    comes up (for ``stop_all``): (feature target, model target)."""
    feature, feature_url = feature_service(log_dir, redis_url, stocks, *BUSY_MACHINE_WATCH, *feature_extra)
    started.append(feature)
    model, model_url = sidecar(log_dir, repo)
    started.append(model)
    return feature_url, model_url


def gateway(log_dir: Path, repo: Path, *extra: str) -> tuple[Proc, str, str]:
    """(process, http base URL, grpc target)."""
    http, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http}"
    return Proc("gateway", stack.gateway_cmd(http, grpc_port, repo, *extra),
                log_dir / "gateway.log", http_ready(base + "/readyz")), base, f"127.0.0.1:{grpc_port}"


def embedded_service(log_dir: Path, repo: Path, feature_args: Sequence[str], *gateway_extra: str
                     ) -> tuple[Proc, str, str]:
    """The feature service (``feature_args``, its ports included) and a gateway in one process
    (`rtvol serve embedded`): (process, http base URL, grpc target), as ``gateway``."""
    http, grpc_port = free_port(), free_port()
    base, target = f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc_port}"
    cmd = stack.embedded_cmd(list(feature_args), stack.gateway_args(http, grpc_port, repo, *gateway_extra))
    return Proc("embedded", cmd, log_dir / "embedded.log", http_ready(base + "/readyz")), base, target


@contextlib.contextmanager
def grpc_channels(target: str, n: int) -> Iterator[list[grpc.Channel]]:
    """``n`` channels to ``target``, each on a connection of its own (grpc shares one connection
    between channels with the same arguments): a gateway's workers share its port by connection."""
    with contextlib.ExitStack() as channels:
        own = [("grpc.use_local_subchannel_pool", 1)]
        yield [channels.enter_context(grpc.insecure_channel(target, options=own)) for _ in range(n)]


@contextlib.contextmanager
def pipeline_stack(log_dir: Path, redis_url: str, repo: Path, stocks: int, *gateway_extra: str,
                   model_url: str = "", feature_extra: Sequence[str] = (), embedded: bool = False,
                   embedded_model: bool = False) -> Iterator[tuple[str, str, str, Proc]]:
    """Feature service, sidecar and a gateway following the feature service's Watch stream,
    with budgets generous for a busy machine (the tests check answers, not budgets). Yields
    (feature service target, gateway base URL, gateway gRPC target, gateway process); every process
    is stopped at the end, even when another fails to stop, and a non-zero exit fails the test.
    ``model_url``: a model server the caller runs (e.g. tritonserver) instead of our sidecar;
    ``feature_extra``: more feature service flags; ``embedded``: the feature service and the
    gateway as one process (`rtvol serve embedded`, the Watch stream followed in process);
    ``embedded_model``: that, with tier 1's models in the process too (no sidecar)."""
    started: list[Proc] = []
    try:
        if not model_url and not embedded_model:
            model, model_url = sidecar(log_dir, repo)
            started.append(model)
        fport = free_port()
        feature_url, feature_flags = f"127.0.0.1:{fport}", (*BUSY_MACHINE_WATCH, *feature_extra)
        gateway_flags = ["--redis-url", redis_url, "--model-url", model_url, "--feature-url", feature_url,
                         "--stocks", str(stocks), *BUSY_MACHINE_BUDGETS, *gateway_extra]
        if embedded or embedded_model:
            if embedded_model:
                gateway_flags += ["--model", "--model-repository", str(repo), "--poll-seconds", "0"]
            features = stack.feature_args(fport, 0, redis_url, stocks, *feature_flags)
            gw, base, grpc_target = embedded_service(log_dir, repo, features, *gateway_flags)
        else:
            feature, _ = feature_service(log_dir, redis_url, stocks, *feature_flags, port=fport)
            started.append(feature)
            gw, base, grpc_target = gateway(log_dir, repo, *gateway_flags)
        started.append(gw)
        yield feature_url, base, grpc_target, gw
    finally:
        codes = stop_all(started)  # every one, even when one fails to stop
        assert set(codes.values()) <= {0}, codes

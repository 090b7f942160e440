"""`rtvol bench pipeline`'s stack: redis-server, the feature services, the model sidecar and the
gateway on free loopback ports, as separate processes (as `rtvol up` runs them) or with the
feature service and the gateway as one process (`rtvol serve embedded`), optionally with tier
1's models in it too."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from rtvol import shm, stack
from rtvol.loadtest.bench.harness import Processes
from rtvol.localproc import free_port, grpc_ready, http_ready, redis_ready

EMBEDDED = "feature+gateway"  # the process name of `rtvol serve embedded` in the report


def feature_names(replicas: int) -> list[str]:
    """The feature services' process names (one: "feature", as before replicas)."""
    return ["feature"] if replicas == 1 else [f"feature-{i}" for i in range(replicas)]


def start(ps: Processes, repo: Path, stocks: int, backend: str, gateway_args: Sequence[str],
          feature_args: Sequence[str] = (), model_args: Sequence[str] = (), workers: int = 1,
          feature_replicas: int = 1, shared_memory: bool = True, embedded: bool = False,
          embedded_model: bool = False) -> tuple[dict[str, tuple[str, ...]], str, str, str]:
    """Starts the stack (``shared_memory``: big tier-1 batches through system shared memory, as
    `rtvol up` runs it; ``embedded``: the feature service and the gateway as one process, `rtvol
    serve embedded`, the Watch stream followed in process; ``embedded_model``: tier 1's models in
    that process too, no sidecar); returns the feature services' targets (in ordinal order) by transport
    (gRPC and the framed stream), the gateway's gRPC target, its HTTP base and the sidecar's
    metrics base. ``embedded`` takes one feature replica and one gateway worker."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not on PATH (apt-get install redis-server)")
    rport, mport, hport, gport, xport = (free_port() for _ in range(5))
    ps.start("redis", stack.redis_cmd(rport, ps.workdir), redis_ready(rport))
    redis_url = f"redis://127.0.0.1:{rport}/0"
    features, streams, model = [], [], f"127.0.0.1:{mport}"
    embedded = embedded or embedded_model
    if shared_memory and not embedded_model:
        shm_dir = str(shm.local_dir(ps.workdir))
        model_args = ["--shm-dir", shm_dir, *model_args]
        gateway_args = ["--model-shm-dir", shm_dir, *gateway_args]
    commands = []
    for i in range(feature_replicas):
        fport, sport = free_port(), free_port()
        features.append(f"127.0.0.1:{fport}")
        streams.append(f"127.0.0.1:{sport}")
        commands.append(stack.feature_args(fport, 0, redis_url, stocks, "--replicas", str(feature_replicas),
                                           "--replica", str(i), "--stream-port", str(sport), *feature_args))
    gateway = stack.gateway_args(hport, gport, repo, "--redis-url", redis_url, "--model-url", model,
                                 "--feature-url", ",".join(features), "--stocks", str(stocks),
                                 "--workers", str(workers), *gateway_args)
    gateway_ready = http_ready(f"http://127.0.0.1:{hport}/readyz")
    if not embedded:
        for name, args, target in zip(feature_names(feature_replicas), commands, features, strict=True):
            ps.start(name, stack.serve("feature", *args), grpc_ready(target))
    if not embedded_model:
        ps.start("model", stack.sidecar_cmd(mport, xport, repo, "--backend", backend, *model_args),
                 grpc_ready(model))
    if embedded:
        models = ["--model", "--model-repository", str(repo), "--backend", backend, *model_args]
        feature_ready = grpc_ready(features[0])
        ps.start(EMBEDDED, stack.embedded_cmd(commands[0], [*gateway, *(models if embedded_model else [])]),
                 lambda: feature_ready() and gateway_ready())
    else:
        ps.start("gateway", stack.serve("gateway", *gateway), gateway_ready)
    # the models' metrics: the sidecar's, or the whole embedded process's on the gateway's port
    return ({"grpc": tuple(features), "stream": tuple(streams)}, f"127.0.0.1:{gport}",
            f"http://127.0.0.1:{hport}", f"http://127.0.0.1:{hport if embedded_model else xport}")

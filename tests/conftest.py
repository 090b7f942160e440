"""Shared fixtures: one tiny synthetic dataset (and a model trained on it) per session."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import procs, redis_servers

from rtvol.training import synth

# gateways the tests start are one process unless a test asks for workers (--workers wins over
# the environment): the default, one worker per core, would double every gateway on 2 cores
os.environ.setdefault("RTVOL_WORKERS", "1")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    synth.write(synth.generate(synth.TINY), out)
    return out


@pytest.fixture(scope="session")
def tiny_repo(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with one version trained for a few epochs on the tiny data."""
    import torch

    from rtvol.training import dataset, train

    torch.set_num_threads(1)
    repo = tmp_path_factory.mktemp("models")
    train.run(dataset.load(tiny_data, progress=False), repo, train.TrainConfig(epochs=3),
              progress=False)
    return repo


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Call it for a free loopback TCP port (there is a small race until you bind it)."""
    return procs.free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the session; yields its URL.

    No persistence; tests that share it use their own keys (or FLUSHDB). Skips with a reason
    when the binary is absent (`make test` installs the Debian package redis-server).
    """
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (apt-get install redis-server, or `make system-deps`)")
    workdir = tmp_path_factory.mktemp("redis")
    for _attempt in range(3):  # the free port can be taken between probe and bind
        try:
            proc = procs.redis(workdir)
            break
        except RuntimeError:
            continue
    else:
        pytest.fail("redis-server did not start on a free port in 3 attempts")
    try:
        yield proc.url  # type: ignore[attr-defined]
    finally:
        proc.stop(timeout_s=10)


_databases = itertools.count(1)  # database 0 is the session's shared one


@pytest.fixture(scope="module")
def redis_db(redis_server: str) -> str:
    """A Redis database of this test module's own on the session's server: a module whose
    assertions depend on what is (not) in Redis cannot see another module's writes."""
    n = next(_databases)
    if n >= procs.REDIS_DATABASES:
        pytest.fail(f"more than {procs.REDIS_DATABASES - 1} test modules asked for their own Redis database")
    return redis_server.rsplit("/", 1)[0] + f"/{n}"


def _need_redis_binaries(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"{name} not installed (apt-get install redis-server, or `make system-deps`)")


@pytest.fixture(scope="session")
def redis_unix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A redis-server listening on a loopback port and a Unix socket: (redis:// URL, unix:// URL)."""
    _need_redis_binaries("redis-server")
    try:
        proc, tcp, unix = redis_servers.with_retries(
            lambda i: redis_servers.unix(tmp_path_factory.mktemp(f"redis-unix-{i}")))
    except RuntimeError as e:
        pytest.fail(f"redis-server with a Unix socket: {e}")
    try:
        yield tcp, unix
    finally:
        proc.stop(timeout_s=10)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis_servers.Cluster]:
    """A real Redis Cluster for the session: three masters on free loopback ports, every slot
    assigned, cluster_state ok on each node; its ``url`` is ``redis+cluster://`` one node."""
    _need_redis_binaries("redis-server", "redis-cli")
    try:
        cluster = redis_servers.with_retries(
            lambda i: redis_servers.Cluster(tmp_path_factory.mktemp(f"redis-cluster-{i}")).start())
    except RuntimeError as e:
        pytest.fail(f"a 3-master Redis Cluster: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()

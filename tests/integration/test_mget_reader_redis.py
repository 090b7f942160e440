"""The store's MGET reader (rtvol.redis_mget) against real redis-servers: TCP and Unix socket,
database selection, AUTH and error replies, stalls, cancellation, dropped connections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
import redis
from helpers import redis_servers
from redis import exceptions as rx

from rtvol import featurestore as fs
from rtvol.features.spec import N_FEATURES, STEPS

pytestmark = pytest.mark.integration
PASSWORD = "s3cret"


def _windows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, STEPS, N_FEATURES)).astype(np.float32)


async def _write(url: str, spec: str, ids: np.ndarray, seed: int = 0) -> np.ndarray:
    w = _windows(len(ids), seed)
    store = fs.RedisStore.connect(url, spec)
    await store.write(ids, w, ids + 100, ids + 200)
    await store.close()
    return w


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A server of this module's own (it gets paused and has its clients killed), with a
    password: (TCP URL, Unix URL), both carrying the password."""
    proc, tcp, unix = redis_servers.with_retries(lambda i: redis_servers.unix(
        tmp_path_factory.mktemp(f"redis-private-{i}"), "--requirepass", PASSWORD))
    try:
        yield (tcp.replace("redis://", f"redis://:{PASSWORD}@"), f"{unix}?password={PASSWORD}")
    finally:
        proc.stop(timeout_s=10)


@pytest.fixture
async def spec() -> AsyncIterator[str]:
    yield uuid.uuid4().hex[:16]  # own keys on a shared server


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_reads_what_redis_py_wrote_over_tcp_and_unix_socket(redis_unix: tuple[str, str], spec: str,
                                                                  transport: str) -> None:
    tcp, unix = redis_unix
    ids = np.arange(100)
    w = await _write(tcp, spec, ids)
    store = fs.RedisStore.connect(unix if transport == "unix" else tcp, spec)
    assert store.reader is not None and bool(store.reader.endpoint.path) == (transport == "unix")
    try:
        for _ in range(3):  # the same pooled connection and buffer, reused
            got = await store.read(ids[::-1])
            assert got.found.all() and got.windows.flags.writeable
            np.testing.assert_array_equal(got.windows, w[::-1])
            assert got.sequence.tolist() == (ids[::-1] + 100).tolist()
            assert got.event_time_us.tolist() == (ids[::-1] + 200).tolist()
    finally:
        await store.close()


async def test_missing_stocks_and_foreign_values(redis_server: str, spec: str) -> None:
    w = await _write(redis_server, spec, np.array([1, 3]))
    store = fs.RedisStore.connect(redis_server, spec)
    try:
        got = await store.read(np.array([0, 1, 2, 3, 4]))
        assert got.found.tolist() == [False, True, False, True, False]
        np.testing.assert_array_equal(got.windows[[1, 3]], w)
        assert not got.windows[[0, 2, 4]].any() and got.sequence.tolist() == [0, 101, 0, 103, 0]
        one = await store.read(np.array([3]))  # one stock: still a copy, not a view of the buffer
        assert one.windows.flags.writeable and one.windows.flags.owndata
        await store.client.set(fs.window_key(spec, 2), b"not a window")
        with pytest.raises(ValueError, match="unknown encoding"):
            await store.read(np.array([1, 2, 3]))
        assert (await store.read(np.array([3]))).found.all()  # and the next read is fine
    finally:
        await store.close()


async def test_reads_the_database_the_url_names(redis_db: str, redis_server: str, spec: str) -> None:
    assert not redis_db.endswith("/0")
    await _write(redis_db, spec, np.array([5]))
    for url, found in ((redis_db, True), (redis_server, False)):
        store = fs.RedisStore.connect(url, spec)
        try:
            assert (await store.read(np.array([5]))).found.tolist() == [found]
        finally:
            await store.close()


async def test_concurrent_reads_and_one_large_read(redis_server: str, spec: str) -> None:
    ids = np.arange(8192)
    w = await _write(redis_server, spec, ids, seed=3)
    store = fs.RedisStore.connect(redis_server, spec)
    rng = np.random.default_rng(0)
    picks = [rng.choice(ids, size=int(rng.integers(1, 300)), replace=False) for _ in range(30)]
    try:
        results = await asyncio.gather(*(store.read(p) for p in picks), store.read(ids))
        for p, got in zip([*picks, ids], results, strict=True):
            np.testing.assert_array_equal(got.windows, w[p])
        assert store.reader is not None and 1 < len(store.reader._idle) <= 16  # pooled, bounded
    finally:
        await store.close()


async def test_password_from_the_url_and_error_replies(private: tuple[str, str], spec: str) -> None:
    tcp, unix = private
    await _write(tcp, spec, np.array([7]))
    for url in private:
        store = fs.RedisStore.connect(url, spec)
        try:
            assert (await store.read(np.array([7]))).found.all()
        finally:
            await store.close()
    wrong = fs.RedisStore.connect(tcp.replace(PASSWORD, "wrong"), spec)
    with pytest.raises(rx.ResponseError, match="WRONGPASS"):
        await wrong.read(np.array([7]))
    await wrong.close()
    admin = redis.Redis.from_url(tcp)
    admin.acl_setuser("nomget", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-mget"])
    denied = fs.RedisStore.connect(unix.split("?")[0] + "?username=nomget&password=pw", spec)
    try:
        with pytest.raises(rx.ResponseError, match="NOPERM"):
            await denied.read(np.array([7]))
    finally:
        await denied.close()
        admin.close()


async def test_a_stalled_server_times_out_and_the_next_read_starts_clean(private: tuple[str, str],
                                                                         spec: str) -> None:
    tcp, _ = private
    ids = np.arange(50)
    w = await _write(tcp, spec, ids)
    # the gateway's way: its client's socket_timeout bounds each read, and it wraps reads in wait_for
    timed = fs.RedisStore(fs.redis_client(tcp, socket_timeout=0.1), spec)
    untimed = fs.RedisStore.connect(tcp, spec)
    admin = redis.Redis.from_url(tcp)
    try:
        assert (await timed.read(ids)).found.all() and (await untimed.read(ids)).found.all()
        admin.execute_command("CLIENT", "PAUSE", "500", "ALL")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(rx.TimeoutError):
            await timed.read(ids)
        assert loop.time() - started < 0.4
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(untimed.read(ids), 0.05)  # cancelled by the caller
        # at once, still paused: the cancelled read's late reply must not answer this one
        got = await asyncio.wait_for(untimed.read(ids[::-1]), 5)
        np.testing.assert_array_equal(got.windows, w[::-1])
        np.testing.assert_array_equal((await timed.read(ids[::-1])).windows, w[::-1])
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        await timed.close()
        await untimed.close()


async def test_connections_closed_by_the_server_while_idle_are_replaced(private: tuple[str, str],
                                                                         spec: str) -> None:
    tcp, _ = private
    await _write(tcp, spec, np.array([1]))
    store = fs.RedisStore.connect(tcp, spec)
    admin = redis.Redis.from_url(tcp)
    try:
        assert (await store.read(np.array([1]))).found.all()
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        await asyncio.sleep(0.1)  # the event loop sees the close
        assert (await store.read(np.array([1]))).found.all()
    finally:
        admin.close()
        await store.close()


def test_only_tls_clients_keep_redis_py_for_reads() -> None:
    assert fs.RedisStore(fs.redis_client("rediss://127.0.0.1:1"), "x").reader is None
    assert fs.RedisStore(fs.redis_client("unix:///nowhere.sock"), "x").reader is not None


def test_the_read_path_benchmark_runs_over_tcp_unix_and_cluster(redis_unix: tuple[str, str],
                                                                 redis_cluster: redis_servers.Cluster,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from rtvol.loadtest.bench import features as bench

    urls = [*redis_unix, redis_cluster.url]
    bench.main(["--reads-only", *(f"--redis-url={u}" for u in urls), "--reads=20", "--rounds-of-reads=2"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert [r[0] for r in rows] == [urls[0]] * 4 + [urls[1]] * 4 + [urls[2]]  # every variant, every URL
    assert all(r[-3].startswith("p50=") and r[-1].startswith("p99.9=") for r in rows)

"""The store's raw write (rtvol.redis_write) against real redis-servers: the same keys, values,
TTLs, checkpoints and stream entries as redis-py's pipeline; errors of the same types; a
connection the server dropped is replaced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis
from helpers import redis_servers
from redis import exceptions as rx

from rtvol import featurestore as fs
from rtvol.features import online_checkpoint
from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.localproc import Proc

pytestmark = pytest.mark.integration
TTL_S = 1234


def _batch(ids: list[int], seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n = len(ids)
    windows = rng.normal(size=(n, STEPS, N_FEATURES)).astype(np.float32)
    checkpoints = np.frombuffer(rng.bytes(n * online_checkpoint.RECORD.itemsize), online_checkpoint.RECORD)
    return (np.array(ids), windows, rng.integers(0, 1 << 40, n), rng.integers(0, 1 << 50, n),
            checkpoints)


def _stored(admin: redis.Redis, spec: str) -> dict[str, object]:
    """Everything a store wrote under ``spec``, with the spec hash taken out of the key names."""
    out: dict[str, object] = {}
    for key in admin.scan_iter(match=f"rtvol:*{spec}*", count=1000):
        name, kind = key.decode().replace(spec, "SPEC"), admin.type(key).decode()
        ttl = admin.ttl(key)
        if kind == "string":
            out[name] = (admin.get(key), ttl > 0 and abs(ttl - TTL_S) <= 2)
        elif kind == "hash":
            out[name] = (admin.hgetall(key), ttl > 0 and abs(ttl - TTL_S) <= 2)
        else:
            out[name] = ([fields for _, fields in admin.xrange(key)], ttl)
    return out


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_the_raw_write_stores_what_redis_py_stores(redis_unix: tuple[str, str], transport: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tcp, unix = redis_unix
    monkeypatch.setattr(fs, "now_us", lambda: 1_700_000_000_123_456)  # the values' written_us
    raw_spec, py_spec = uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]
    raw = fs.RedisStore.connect(unix if transport == "unix" else tcp, raw_spec, ttl_s=TTL_S, stream_maxlen=3)
    py = fs.RedisStore.connect(tcp, py_spec, ttl_s=TTL_S, stream_maxlen=3)
    assert raw.writer is not None
    py.writer = None  # redis-py's pipeline: the reference
    batches = [([0, 7, 123_456], 1, True), ([7], 2, False), (list(range(500)), 3, True), ([99, 1], 4, True)]
    try:
        for ids, seed, with_checkpoints in batches:
            sid, w, seq, ev, ck = _batch(ids, seed)
            for store in (raw, py):
                await store.write(sid, w, seq, ev, ck if with_checkpoints else None)
    finally:
        await raw.close()
        await py.close()
    admin = redis.Redis.from_url(tcp)
    try:
        got, want = _stored(admin, raw_spec), _stored(admin, py_spec)
    finally:
        admin.close()
    assert len(want) == 500 + 2 + 1  # windows, checkpoints, stream (the 123,456th stock too)
    assert got.keys() == want.keys()
    for name, value in want.items():
        assert got[name] == value, name
    value, ttl_ok = want["rtvol:fw:SPEC:123456"]  # type: ignore[misc]
    first_seq = _batch([0, 7, 123_456], 1)[2]  # that stock is written once, by the first batch
    assert ttl_ok and fs.decode_windows([value]).sequence.tolist() == [first_seq[2]]
    assert len(want["rtvol:fw:SPEC:changes"][0]) == 4  # type: ignore[index]


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    """A server of this module's own (its clients get killed, a user added, it gets stopped)."""
    proc, tcp, _ = redis_servers.with_retries(lambda i: redis_servers.unix(
        tmp_path_factory.mktemp(f"redis-write-{i}")))
    try:
        yield tcp, proc
    finally:
        proc.stop(timeout_s=10)


async def test_an_acl_refusal_raises_what_redis_py_raises_and_the_connection_stays(
        private: tuple[str, Proc]) -> None:
    tcp, _ = private
    admin = redis.Redis.from_url(tcp)
    admin.execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read", "+@connection")
    url = tcp.replace("redis://", "redis://reader:pw@")
    spec = uuid.uuid4().hex[:16]
    raw, py = fs.RedisStore.connect(url, spec), fs.RedisStore.connect(url, spec)
    py.writer = None
    sid, w, seq, ev, ck = _batch([1, 2], 0)
    try:
        for store in (raw, py, raw):  # the raw one twice: the refused write left its connection usable
            with pytest.raises(rx.NoPermissionError, match=r"Command # 1 .*no permissions"):
                await store.write(sid, w, seq, ev, ck)
        assert raw.writer is not None and len(raw.writer._idle) == 1
        assert admin.keys(f"*{spec}*") == []
    finally:
        admin.close()
        await raw.close()
        await py.close()


async def test_a_dropped_connection_is_replaced_and_a_gone_server_raises_connection_error(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    proc, tcp, _ = redis_servers.with_retries(lambda i: redis_servers.unix(
        tmp_path_factory.mktemp(f"redis-gone-{i}")))
    spec = uuid.uuid4().hex[:16]
    raw, py = fs.RedisStore.connect(tcp, spec), fs.RedisStore.connect(tcp, spec)
    py.writer = None
    sid, w, seq, ev, ck = _batch([1, 2], 0)
    try:
        await raw.write(sid, w, seq, ev, ck)
        admin = redis.Redis.from_url(tcp)
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        admin.close()
        await asyncio.sleep(0.1)  # the event loop sees the close
        await raw.write(sid, w, seq, ev, ck)  # on a new connection
        proc.stop(timeout_s=10)
        for store in (raw, py):
            with pytest.raises(rx.ConnectionError):
                await store.write(sid, w, seq, ev, ck)
    finally:
        proc.stop(timeout_s=10)
        await raw.close()
        await py.close()


def test_only_tls_and_cluster_clients_keep_redis_py_for_writes() -> None:
    assert fs.RedisStore(fs.redis_client("rediss://127.0.0.1:1"), "x").writer is None
    assert fs.RedisStore(fs.redis_client("redis+cluster://127.0.0.1:1"), "x").writer is None
    assert fs.RedisStore(fs.redis_client("unix:///nowhere.sock"), "x").writer is not None


async def test_the_publisher_keeps_windows_dirty_while_redis_is_gone_and_writes_them_after(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from rtvol.features.online import OnlineState
    from rtvol.services.feature.publisher import Publisher

    proc, tcp, _ = redis_servers.with_retries(lambda i: redis_servers.unix(
        tmp_path_factory.mktemp(f"redis-restart-{i}")))
    store = fs.RedisStore.connect(tcp, uuid.uuid4().hex[:16])
    publisher = Publisher(OnlineState(4), store, 0.0)
    try:
        publisher.mark(np.array([1]))
        assert await publisher.flush() == 1  # a pooled connection now exists
        proc.stop(timeout_s=10)
        publisher.mark(np.array([2]))
        with pytest.raises(rx.ConnectionError):
            await publisher.flush()
        assert publisher.dirty.tolist() == [False, False, True, False]  # kept for the next flush
        proc.restart()  # the same port, empty (no persistence)
        assert await publisher.flush() == 1
        assert (await store.read(np.arange(4))).found.tolist() == [False, False, True, False]
    finally:
        proc.stop(timeout_s=10)
        await store.close()

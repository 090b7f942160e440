"""Feature store: the latest window of each stock, shared by the feature service and the gateway.

Encoding (pinned by tests/unit/test_store_encoding.py; change FORMAT_VERSION if you change it):
* key ``rtvol:fw:{spec_hash}:{stock_id}`` — one plain key per stock, so Redis Cluster spreads
  stocks over slots (no hash tag); a new feature spec never reads an old spec's windows;
* value = HEADER (little-endian: magic ``RTVW``, format version u16, steps u16, features
  u16, reserved u16, sequence i64, event time µs i64, written at µs i64 (wall clock)) + the
  window as ``steps x features`` little-endian float32, oldest step first;
* change stream ``rtvol:fw:{spec_hash}:changes``: one entry per written batch, field ``ids``
  = the stock ids as little-endian int32, trimmed to about ``stream_maxlen`` entries;
* volatility estimate ``rtvol:vol:{spec_hash}``: VOL_HEADER (magic ``RTVV``, version u16,
  reserved u16, computed at µs i64, count i32) + int32 stock ids + float32 estimates.
Writes are pipelined and non-transactional (a reader may see part of a batch; every window
is self-consistent); a read of many stocks is one MGET (cluster: one MGET per node).
"""

from __future__ import annotations

import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rtvol.features.spec import N_FEATURES, STEPS

MAGIC, VOL_MAGIC = b"RTVW", b"RTVV"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sHHHHqqq")
VOL_HEADER = struct.Struct("<4sHHqi")
WINDOW_BYTES = STEPS * N_FEATURES * 4


def now_us() -> int:
    return time.time_ns() // 1000


def window_key(spec_hash: str, stock_id: int) -> bytes:
    return f"rtvol:fw:{spec_hash}:{int(stock_id)}".encode()


def stream_key(spec_hash: str) -> bytes:
    return f"rtvol:fw:{spec_hash}:changes".encode()


def vol_key(spec_hash: str) -> bytes:
    return f"rtvol:vol:{spec_hash}".encode()


def encode_window(window: np.ndarray, sequence: int, event_time_us: int, written_us: int) -> bytes:
    payload = np.ascontiguousarray(window, "<f4")
    if payload.shape != (STEPS, N_FEATURES):
        raise ValueError(f"window shape {payload.shape}, expected ({STEPS}, {N_FEATURES})")
    return HEADER.pack(MAGIC, FORMAT_VERSION, STEPS, N_FEATURES, 0, int(sequence),
                       int(event_time_us), int(written_us)) + payload.tobytes()


@dataclass
class Windows:
    """Windows of the requested stocks; rows of stocks without a window are zeros, found False."""

    windows: np.ndarray  # [n, STEPS, N_FEATURES] float32
    found: np.ndarray  # bool
    sequence: np.ndarray  # int64
    event_time_us: np.ndarray  # int64
    written_us: np.ndarray  # int64

    def age_ms(self, at_us: int | None = None) -> np.ndarray:
        return ((at_us or now_us()) - self.written_us) / 1000.0


HEADER_RECORD = np.dtype([("magic", "S4"), ("version", "<u2"), ("steps", "<u2"), ("features", "<u2"),
                          ("reserved", "<u2"), ("sequence", "<i8"), ("event_time_us", "<i8"),
                          ("written_us", "<i8")])
assert HEADER_RECORD.itemsize == HEADER.size


# One stored value as a numpy record: a whole MGET reply is decoded by a single frombuffer.
VALUE_RECORD = np.dtype([("head", HEADER_RECORD), ("window", "<f4", (STEPS, N_FEATURES))])


def decode_windows(values: list[bytes | None]) -> Windows:
    """Decode a whole MGET reply at once: one join + one frombuffer, no per-value Python work."""
    n = len(values)
    out = Windows(np.zeros((n, STEPS, N_FEATURES), np.float32), np.zeros(n, bool),
                  np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))
    present = [v for v in values if v is not None]
    if not present:
        return out
    joined = b"".join(present)
    if len(joined) != len(present) * VALUE_RECORD.itemsize or any(
            len(v) != VALUE_RECORD.itemsize for v in present):
        raise ValueError("feature store value: unknown encoding (wrong length)")
    rec = np.frombuffer(joined, VALUE_RECORD)
    head = rec["head"]
    if not ((head["magic"] == MAGIC) & (head["version"] == FORMAT_VERSION) & (head["steps"] == STEPS)
            & (head["features"] == N_FEATURES)).all():
        raise ValueError("feature store value: unknown encoding (magic, version or shape)")
    if len(present) == n:
        out.found[:] = True
        out.windows = np.ascontiguousarray(rec["window"])  # writable, C-ordered for tobytes()
    else:
        out.found[:] = [v is not None for v in values]
        out.windows[out.found] = rec["window"]
    out.sequence[out.found] = head["sequence"]
    out.event_time_us[out.found] = head["event_time_us"]
    out.written_us[out.found] = head["written_us"]
    return out


@dataclass
class VolEstimate:
    stock_ids: np.ndarray  # int32
    vol: np.ndarray  # float32: estimated RV of the next bucket
    computed_us: int

    def age_ms(self, at_us: int | None = None) -> float:
        return ((at_us or now_us()) - self.computed_us) / 1000.0


def encode_vol(v: VolEstimate) -> bytes:
    ids = np.ascontiguousarray(v.stock_ids, "<i4")
    return (VOL_HEADER.pack(VOL_MAGIC, FORMAT_VERSION, 0, int(v.computed_us), len(ids))
            + ids.tobytes() + np.ascontiguousarray(v.vol, "<f4").tobytes())


def decode_vol(value: bytes) -> VolEstimate:
    magic, version, _, computed, n = VOL_HEADER.unpack_from(value)
    if magic != VOL_MAGIC or version != FORMAT_VERSION:
        raise ValueError(f"volatility estimate: unknown encoding {magic!r} v{version}")
    ids = np.frombuffer(value, "<i4", n, VOL_HEADER.size)
    return VolEstimate(ids, np.frombuffer(value, "<f4", n, VOL_HEADER.size + 4 * n), computed)


def encode_ids(stock_ids: np.ndarray) -> bytes:
    return np.ascontiguousarray(stock_ids, "<i4").tobytes()


class FeatureStore(Protocol):
    """What the feature service writes and the gateway reads (Redis or in-process)."""

    spec_hash: str

    async def write(self, stock_ids: np.ndarray, windows: np.ndarray, sequence: np.ndarray,
                    event_time_us: np.ndarray) -> None: ...

    async def read(self, stock_ids: np.ndarray) -> Windows: ...

    async def changes(self, after: bytes, count: int) -> list[tuple[bytes, np.ndarray]]: ...

    async def write_vol(self, estimate: VolEstimate) -> None: ...

    async def read_vol(self) -> VolEstimate | None: ...

    async def close(self) -> None: ...


def _encode_batch(stock_ids: np.ndarray, windows: np.ndarray, sequence: np.ndarray,
                  event_time_us: np.ndarray, written_us: int) -> list[bytes]:
    return [encode_window(windows[i], sequence[i], event_time_us[i], written_us)
            for i in range(len(stock_ids))]


class RedisStore:
    """Redis (standalone or redis-py's RedisCluster client: same commands, cluster-safe keys)."""

    def __init__(self, client: Any, spec_hash: str, ttl_s: int = 3600, stream_maxlen: int = 10_000) -> None:
        from redis.asyncio.cluster import RedisCluster

        self.client, self.spec_hash = client, spec_hash
        self.ttl_s, self.stream_maxlen = ttl_s, stream_maxlen
        self.cluster = isinstance(client, RedisCluster)
        self._keys: dict[int, bytes] = {}  # key bytes per stock: formatting 100 keys costs ~25 µs

    def _key(self, stock_id: int) -> bytes:
        key = self._keys.get(stock_id)
        if key is None:
            key = self._keys[stock_id] = window_key(self.spec_hash, stock_id)
        return key

    @classmethod
    def connect(cls, url: str, spec_hash: str, cluster: bool = False, **kw: Any) -> RedisStore:
        if cluster:
            from redis.asyncio.cluster import RedisCluster

            return cls(RedisCluster.from_url(url), spec_hash, **kw)
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url), spec_hash, **kw)

    async def write(self, stock_ids: np.ndarray, windows: np.ndarray, sequence: np.ndarray,
                    event_time_us: np.ndarray) -> None:
        if len(stock_ids) == 0:
            return
        values = _encode_batch(stock_ids, windows, sequence, event_time_us, now_us())
        pipe = self.client.pipeline(transaction=False)
        for sid, value in zip(stock_ids, values, strict=True):
            pipe.set(self._key(int(sid)), value, ex=self.ttl_s)
        pipe.xadd(stream_key(self.spec_hash), {b"ids": encode_ids(stock_ids)},
                  maxlen=self.stream_maxlen, approximate=True)
        await pipe.execute()

    async def read(self, stock_ids: np.ndarray) -> Windows:
        keys = [self._key(s) for s in np.asarray(stock_ids).tolist()]
        if not keys:
            return decode_windows([])
        values = await (self.client.mget_nonatomic(keys) if self.cluster else self.client.mget(keys))
        return decode_windows(values)

    async def changes(self, after: bytes, count: int) -> list[tuple[bytes, np.ndarray]]:
        entries = await self.client.xrange(stream_key(self.spec_hash), min=b"(" + after if after != b"0"
                                           else b"-", count=count)
        return [(eid, np.frombuffer(fields[b"ids"], "<i4")) for eid, fields in entries]

    async def write_vol(self, estimate: VolEstimate) -> None:
        await self.client.set(vol_key(self.spec_hash), encode_vol(estimate), ex=self.ttl_s)

    async def read_vol(self) -> VolEstimate | None:
        value = await self.client.get(vol_key(self.spec_hash))
        return None if value is None else decode_vol(value)

    async def close(self) -> None:
        await self.client.aclose()


class InProcessStore:
    """The same interface and byte encoding in memory: the embedded single-process default."""

    def __init__(self, spec_hash: str, ttl_s: int = 3600, stream_maxlen: int = 10_000) -> None:
        self.spec_hash, self.ttl_s = spec_hash, ttl_s
        self.values: dict[bytes, tuple[bytes, float]] = {}  # key -> (value, expires at)
        self.stream: deque[tuple[bytes, np.ndarray]] = deque(maxlen=stream_maxlen)
        self._next_id = 0

    def _get(self, key: bytes) -> bytes | None:
        item = self.values.get(key)
        if item is None or item[1] < time.monotonic():
            return None
        return item[0]

    async def write(self, stock_ids: np.ndarray, windows: np.ndarray, sequence: np.ndarray,
                    event_time_us: np.ndarray) -> None:
        if len(stock_ids) == 0:
            return
        expires = time.monotonic() + self.ttl_s
        values = _encode_batch(stock_ids, windows, sequence, event_time_us, now_us())
        for sid, value in zip(stock_ids, values, strict=True):
            self.values[window_key(self.spec_hash, sid)] = (value, expires)
        self._next_id += 1
        self.stream.append((f"{self._next_id}-0".encode(), np.array(stock_ids, np.int32)))

    async def read(self, stock_ids: np.ndarray) -> Windows:
        return decode_windows([self._get(window_key(self.spec_hash, s)) for s in stock_ids])

    async def changes(self, after: bytes, count: int) -> list[tuple[bytes, np.ndarray]]:
        floor = int(after.split(b"-")[0])
        return [e for e in self.stream if int(e[0].split(b"-")[0]) > floor][:count]

    async def write_vol(self, estimate: VolEstimate) -> None:
        self.values[vol_key(self.spec_hash)] = (encode_vol(estimate), time.monotonic() + self.ttl_s)

    async def read_vol(self) -> VolEstimate | None:
        value = self._get(vol_key(self.spec_hash))
        return None if value is None else decode_vol(value)

    async def close(self) -> None:
        self.values.clear()

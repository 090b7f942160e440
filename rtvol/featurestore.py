"""Feature store: the latest window of each stock, shared by the feature service and the gateway.

Encoding (pinned by tests/unit/test_store_encoding.py; change FORMAT_VERSION if you change it):
* key ``rtvol:fw:{spec_hash}:{stock_id}`` — one plain key per stock, so Redis Cluster spreads
  stocks over slots (no hash tag); a new feature spec never reads an old spec's windows;
* value = HEADER (little-endian: magic ``RTVW``, format version u16 (2), steps u16, features
  u16, reserved u16, sequence i64, event time µs i64, written at µs i64 (wall clock), window
  version i64 (steps closed: what a signal computed from it carries), received at µs i64 (the
  feature service's receipt of the update that last changed it; 0: not known)) + the window
  as ``steps x features`` little-endian float32, oldest step first. A format-1 value (the
  header without the last two fields) is still read, as window version 0, so gateways can be
  upgraded before the feature service that writes format 2;
* change stream ``rtvol:fw:{spec_hash}:changes``: one entry per written batch, field ``ids``
  = the stock ids as little-endian int32, trimmed to about ``stream_maxlen`` entries;
* online checkpoints ``rtvol:fs:{spec_hash}``: a hash, field = the stock id as decimal text,
  value = the stock's whole online state as rtvol.features.online_checkpoint.RECORD (the
  feature service's restart point); one HSET per write, in the same pipeline as, and before,
  the windows (one command for any number of stocks: a SET each would halve the ingest
  rate), its TTL refreshed with them;
* volatility estimate ``rtvol:vol:{spec_hash}``: a hash, one field per feature-service
  replica, ``ORDINAL/REPLICAS`` (``0/1`` for one), each VOL_HEADER (magic ``RTVV``, version
  u16, reserved u16, computed at µs i64, count i32) + int32 stock ids + float32 estimates of
  that replica's stocks; a read merges the fields of the newest sharding (``merge_vol``).
Writes are pipelined and non-transactional (a reader may see part of a batch; every window
is self-consistent): on a standalone Redis one pre-encoded RESP buffer through
rtvol.redis_write, on a cluster or over TLS redis-py's pipeline (the same commands). A read
of many stocks is one MGET through rtvol.redis_mget (its reply decoded in place), or on a
cluster one pipelined round trip per node holding an MGET per slot.

URLs: ``redis://``, ``rediss://`` and ``unix:///path/redis.sock?db=N`` (standalone), and
``redis+cluster://host:port`` (any node of a Redis Cluster: redis-py's RedisCluster client).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rtvol.features.spec import N_FEATURES, STEPS
from rtvol.resp import CRLF, bulk, resp_command

if TYPE_CHECKING:
    from rtvol.redis_mget import Reply

MAGIC, VOL_MAGIC = b"RTVW", b"RTVV"
FORMAT_VERSION = 2  # of the window values
VOL_FORMAT_VERSION = 1
HEADER = struct.Struct("<4sHHHHqqqqq")
V1_HEADER_BYTES = struct.calcsize("<4sHHHHqqq")  # format 1: no window version, no receipt
VOL_HEADER = struct.Struct("<4sHHqi")
WINDOW_BYTES = STEPS * N_FEATURES * 4


def now_us() -> int:
    return time.time_ns() // 1000


def window_key(spec_hash: str, stock_id: int) -> bytes:
    return f"rtvol:fw:{spec_hash}:{int(stock_id)}".encode()


def checkpoint_key(spec_hash: str) -> bytes:
    return f"rtvol:fs:{spec_hash}".encode()


def stream_key(spec_hash: str) -> bytes:
    return f"rtvol:fw:{spec_hash}:changes".encode()


def vol_key(spec_hash: str) -> bytes:
    return f"rtvol:vol:{spec_hash}".encode()


def encode_window(window: np.ndarray, sequence: int, event_time_us: int, written_us: int,
                  version: int = 0, received_us: int = 0) -> bytes:
    payload = np.ascontiguousarray(window, "<f4")
    if payload.shape != (STEPS, N_FEATURES):
        raise ValueError(f"window shape {payload.shape}, expected ({STEPS}, {N_FEATURES})")
    head = HEADER.pack(MAGIC, FORMAT_VERSION, STEPS, N_FEATURES, 0, int(sequence), int(event_time_us),
                       int(written_us), int(version), int(received_us))
    return head + payload.tobytes()


@dataclass
class Windows:
    """Windows of the requested stocks; rows of stocks without a window are zeros, found False."""

    windows: np.ndarray  # [n, STEPS, N_FEATURES] float32
    found: np.ndarray  # bool
    sequence: np.ndarray  # int64
    event_time_us: np.ndarray  # int64
    written_us: np.ndarray  # int64
    version: np.ndarray  # int64: steps closed in the window (0: not known)
    received_us: np.ndarray  # int64: receipt of the update that last changed it (0: not known)

    def age_ms(self, at_us: int | None = None) -> np.ndarray:
        return ((at_us or now_us()) - self.written_us) / 1000.0


HEADER_RECORD = np.dtype([("magic", "S4"), ("format", "<u2"), ("steps", "<u2"), ("features", "<u2"),
                          ("reserved", "<u2"), ("sequence", "<i8"), ("event_time_us", "<i8"),
                          ("written_us", "<i8"), ("version", "<i8"), ("received_us", "<i8")])
assert HEADER_RECORD.itemsize == HEADER.size
_HEAD_BYTES = HEADER.pack(MAGIC, FORMAT_VERSION, STEPS, N_FEATURES, 0, 0, 0, 0, 0, 0)  # the rest zero
_HEAD_TEMPLATE = np.frombuffer(_HEAD_BYTES, HEADER_RECORD)[0]


# One stored value as a numpy record: a whole MGET reply is decoded by a single frombuffer.
VALUE_RECORD = np.dtype([("head", HEADER_RECORD), ("window", "<f4", (STEPS, N_FEATURES))])


def decode_windows(values: Sequence[bytes | memoryview | None]) -> Windows:
    """Decode a whole MGET reply at once: one join + one frombuffer, no per-value Python work
    (but for a format-1 value, brought to format 2 first)."""
    present = [v if len(v) != _V1_VALUE_BYTES else _from_v1(v) for v in values if v is not None]
    if any(len(v) != VALUE_RECORD.itemsize for v in present):
        raise ValueError("feature store value: unknown encoding (wrong length)")
    found = np.fromiter((v is not None for v in values), bool, len(values))
    return windows_from_records(np.frombuffer(b"".join(present), VALUE_RECORD), found)


def decode_reply(reply: Reply) -> Windows:
    """Decode an MGET reply in place: when every value is present (the steady state) the
    records are a strided view of the reply buffer, copied once into the result."""
    rec = reply.records(VALUE_RECORD)
    if rec is None:
        return decode_windows(reply.values())
    return windows_from_records(rec, np.ones(len(rec), bool))


_V1_VALUE_BYTES = V1_HEADER_BYTES + WINDOW_BYTES
_V1_PREFIX = struct.pack("<4sHHH", MAGIC, 1, STEPS, N_FEATURES)
_V2_PREFIX = _HEAD_BYTES[:len(_V1_PREFIX)]  # the same fields of the format written now


def _from_v1(value: bytes | memoryview) -> bytes:
    """A format-1 value as format 2, window version and receipt 0 (not known); any other value
    of that length is left to fail the format check."""
    raw = bytes(value)
    if not raw.startswith(_V1_PREFIX):
        return raw
    return _V2_PREFIX + raw[len(_V2_PREFIX):V1_HEADER_BYTES] + bytes(16) + raw[V1_HEADER_BYTES:]


# magic, version, steps and features of a stored value as one 10-byte field: a whole reply's
# headers are checked with a single compare (four field compares cost ~6 µs for 100 stocks)
_PREFIX_BYTES = struct.calcsize("<4sHHH")  # HEADER up to (not including) reserved
_PREFIX_RECORD = np.dtype({"names": ["prefix"], "formats": [f"V{_PREFIX_BYTES}"], "offsets": [0],
                           "itemsize": VALUE_RECORD.itemsize})
_EXPECTED_PREFIX = np.void(_HEAD_BYTES[:_PREFIX_BYTES])


def windows_from_records(rec: np.ndarray, found: np.ndarray) -> Windows:
    """Windows of ``len(found)`` stocks from the records of the found ones, copied (``rec`` may
    view a buffer that is reused after this returns)."""
    if len(rec) and not (rec.view(_PREFIX_RECORD)["prefix"] == _EXPECTED_PREFIX).all():
        raise ValueError("feature store value: unknown encoding (magic, version or shape)")
    head, n = rec["head"], len(found)
    if len(rec) == n:  # every stock found: nothing zero-filled to allocate (and fault in) first
        return Windows(np.array(rec["window"], order="C"), found,
                       *(head[name].astype(np.int64) for name in _STAMPS))
    out = Windows(np.zeros((n, STEPS, N_FEATURES), np.float32), found,
                  *(np.zeros(n, np.int64) for _ in _STAMPS))
    out.windows[found] = rec["window"]
    for name in _STAMPS:
        getattr(out, name)[found] = head[name]
    return out


_STAMPS = ("sequence", "event_time_us", "written_us", "version", "received_us")  # Windows' order


@dataclass
class VolEstimate:
    stock_ids: np.ndarray  # int32
    vol: np.ndarray  # float32: estimated RV of the next bucket
    computed_us: int

    def age_ms(self, at_us: int | None = None) -> float:
        return ((at_us or now_us()) - self.computed_us) / 1000.0


def encode_vol(v: VolEstimate) -> bytes:
    ids = np.ascontiguousarray(v.stock_ids, "<i4")
    return (VOL_HEADER.pack(VOL_MAGIC, VOL_FORMAT_VERSION, 0, int(v.computed_us), len(ids))
            + ids.tobytes() + np.ascontiguousarray(v.vol, "<f4").tobytes())


def decode_vol(value: bytes) -> VolEstimate:
    magic, version, _, computed, n = VOL_HEADER.unpack_from(value)
    if magic != VOL_MAGIC or version != VOL_FORMAT_VERSION:
        raise ValueError(f"volatility estimate: unknown encoding {magic!r} v{version}")
    ids = np.frombuffer(value, "<i4", n, VOL_HEADER.size)
    return VolEstimate(ids, np.frombuffer(value, "<f4", n, VOL_HEADER.size + 4 * n), computed)


def merge_vol(fields: dict[bytes, bytes]) -> VolEstimate | None:
    """One estimate from the replicas' fields: those of the sharding (REPLICAS) the newest
    field was written under (fields of an earlier replica count are left over), as old as
    the oldest of them."""
    parts = [(name.split(b"/")[-1], decode_vol(value)) for name, value in fields.items()]
    if not parts:
        return None
    newest = max(parts, key=lambda p: p[1].computed_us)[0]
    current = [e for replicas, e in parts if replicas == newest]
    return VolEstimate(np.concatenate([e.stock_ids for e in current]),
                       np.concatenate([e.vol for e in current]), min(e.computed_us for e in current))


def encode_ids(stock_ids: np.ndarray) -> bytes:
    return np.ascontiguousarray(stock_ids, "<i4").tobytes()


class FeatureStore(Protocol):
    """What the feature service writes and the gateway reads (Redis or in-process)."""

    spec_hash: str

    async def write(self, stock_ids: np.ndarray, windows: np.ndarray, sequence: np.ndarray,
                    event_time_us: np.ndarray, checkpoints: np.ndarray | None = None,
                    stamps: Stamps | None = None) -> None:
        """``checkpoints``: one fixed-size record per stock, stored before its window;
        ``stamps``: each window's version and receipt (None: not known, stored as 0)."""

    async def read(self, stock_ids: np.ndarray) -> Windows: ...

    async def read_checkpoints(self, stock_ids: np.ndarray) -> list[bytes | None]: ...

    async def changes(self, after: bytes, count: int) -> list[tuple[bytes, np.ndarray]]: ...

    async def write_vol(self, estimate: VolEstimate, shard: str = "0/1") -> None:
        """``shard``: ``ORDINAL/REPLICAS`` of the writing feature-service replica."""

    async def read_vol(self) -> VolEstimate | None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Stamps:
    """Per window of a write: its version (steps closed) and the receipt of the update that
    last changed it, what a signal computed from the stored window carries."""

    version: np.ndarray
    received_us: np.ndarray

    def rows(self, rows: Any) -> Stamps:
        return Stamps(self.version[rows], self.received_us[rows])


def encode_values(windows: np.ndarray, sequence: np.ndarray, event_time_us: np.ndarray,
                  written_us: int, stamps: Stamps | None = None) -> bytes:
    """The stored values of a batch, back to back (each ``VALUE_RECORD.itemsize`` bytes, as
    ``encode_window`` would make them), built by numpy in one go."""
    rec = np.empty(len(windows), VALUE_RECORD)
    _fill_values(rec, windows, sequence, event_time_us, written_us, stamps)
    return rec.tobytes()


def _fill_values(rec: np.ndarray, windows: np.ndarray, sequence: np.ndarray, event_time_us: np.ndarray,
                 written_us: int, stamps: Stamps | None) -> None:
    """Fill ``rec`` (VALUE_RECORDs, possibly a strided view into a RESP buffer)."""
    if windows.shape[1:] != (STEPS, N_FEATURES):
        raise ValueError(f"window shape {windows.shape[1:]}, expected ({STEPS}, {N_FEATURES})")
    head = rec["head"]
    head[...] = _HEAD_TEMPLATE
    head["sequence"] = sequence
    head["event_time_us"] = event_time_us
    head["written_us"] = written_us
    if stamps is not None:
        head["version"] = stamps.version
        head["received_us"] = stamps.received_us
    rec["window"] = windows


def _encode_batch(windows: np.ndarray, sequence: np.ndarray, event_time_us: np.ndarray,
                  written_us: int, stamps: Stamps | None) -> list[bytes]:
    values = encode_values(windows, sequence, event_time_us, written_us, stamps)
    size = VALUE_RECORD.itemsize
    return [values[i:i + size] for i in range(0, len(values), size)]


CLUSTER_SCHEME = "redis+cluster://"


def redis_client(url: str, cluster: bool = False, sync: bool = False, **kw: Any) -> Any:
    """A redis-py client for ``url`` (asyncio unless ``sync``); ``redis+cluster://host:port``
    (or ``cluster``) gives redis-py's RedisCluster, started from that node."""
    if url.startswith(CLUSTER_SCHEME):
        url, cluster = "redis://" + url.removeprefix(CLUSTER_SCHEME), True
    if sync:
        import redis

        return (redis.RedisCluster if cluster else redis.Redis).from_url(url, **kw)
    import redis.asyncio as aioredis

    return (aioredis.RedisCluster if cluster else aioredis.Redis).from_url(url, **kw)


def _cached(cache: dict[int, bytes], ids: list[int], make: Callable[[int], bytes]) -> list[bytes]:
    """``make(i)`` of every id, remembered: formatting 100 keys costs ~25 µs."""
    try:
        return list(map(cache.__getitem__, ids))  # no Python loop once every id is cached
    except KeyError:
        return [cache.get(i) or cache.setdefault(i, make(i)) for i in ids]


class RedisStore:
    """Redis (standalone or redis-py's RedisCluster client: same commands, cluster-safe keys).

    On a standalone Redis without TLS (``Endpoint.of``), reads go through rtvol.redis_mget and
    the window writes through rtvol.redis_write (their own connections, to the endpoint the
    given client is configured for, with its timeouts); everything else through ``client``.
    """

    def __init__(self, client: Any, spec_hash: str, ttl_s: int = 3600, stream_maxlen: int = 10_000) -> None:
        from redis.asyncio.cluster import RedisCluster

        from rtvol.redis_mget import Endpoint, MgetReader
        from rtvol.redis_write import Frames, PipelineWriter

        self.client, self.spec_hash = client, spec_hash
        self.ttl_s, self.stream_maxlen = ttl_s, stream_maxlen
        self.cluster = isinstance(client, RedisCluster)
        endpoint = None if self.cluster else Endpoint.of(client)
        self.reader = MgetReader(endpoint) if endpoint is not None else None  # None: redis-py MGET
        self.writer = PipelineWriter(endpoint, 4) if endpoint is not None else None  # None: redis-py
        self._keys: dict[int, bytes] = {}  # key per stock
        self._set_heads: dict[int, bytes] = {}  # RESP of "SET key" and the value's length, per stock
        self._fields: dict[int, dict[int, bytes]] = {}  # per record size, per stock: RESP of the
        self._set_tail = CRLF + bulk(b"EX") + bulk(b"%d" % ttl_s)  # field and the record's length
        self._expire = resp_command(b"EXPIRE", checkpoint_key(spec_hash), b"%d" % ttl_s)
        self._xadd_head = b"*8\r\n" + b"".join(map(bulk, (  # the ids' bulk string follows
            b"XADD", stream_key(spec_hash), b"MAXLEN", b"~", b"%d" % stream_maxlen, b"*", b"ids")))
        self._frames = Frames()  # the write's RESP buffer, reused: one write at a time
        self._write_lock = asyncio.Lock()

    def _key(self, stock_id: int) -> bytes:
        return window_key(self.spec_hash, stock_id)

    def _set_head(self, stock_id: int) -> bytes:
        return b"*5\r\n$3\r\nSET\r\n" + bulk(self._key(stock_id)) + b"$%d\r\n" % VALUE_RECORD.itemsize

    def _frame_write(self, stock_ids: np.ndarray, windows: np.ndarray, sequence: np.ndarray,
                     event_time_us: np.ndarray, checkpoints: np.ndarray | None, stamps: Stamps | None) -> int:
        """Put the write into ``self._frames`` as RESP; returns its number of commands: those
        redis-py's pipeline sends (``write``), framed per run of stocks by numpy."""
        frames, ids = self._frames, stock_ids.tolist()
        frames.clear()
        if checkpoints is not None:  # first: a stored window never runs ahead of its checkpoint
            size = checkpoints.dtype.itemsize
            fields = self._fields.setdefault(size, {})
            frames.raw(b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(ids)) + bulk(checkpoint_key(self.spec_hash)))
            heads = _cached(fields, ids, lambda s: bulk(b"%d" % s) + b"$%d\r\n" % size)
            for rows, records in frames.rows(heads, checkpoints.dtype, CRLF):
                records[...] = checkpoints[rows]
            frames.raw(self._expire)
        written_us = now_us()
        for rows, values in frames.rows(_cached(self._set_heads, ids, self._set_head), VALUE_RECORD,
                                        self._set_tail):
            _fill_values(values, windows[rows], sequence[rows], event_time_us[rows], written_us,
                         None if stamps is None else stamps.rows(rows))
        frames.raw(self._xadd_head + bulk(encode_ids(stock_ids)))
        return len(ids) + 1 + (2 if checkpoints is not None else 0)

    @classmethod
    def connect(cls, url: str, spec_hash: str, cluster: bool = False, **kw: Any) -> RedisStore:
        return cls(redis_client(url, cluster), spec_hash, **kw)

    async def write(self, stock_ids: np.ndarray, windows: np.ndarray, sequence: np.ndarray,
                    event_time_us: np.ndarray, checkpoints: np.ndarray | None = None,
                    stamps: Stamps | None = None) -> None:
        if len(stock_ids) == 0:
            return
        if self.writer is not None:
            async with self._write_lock:
                replies = self._frame_write(stock_ids, windows, sequence, event_time_us, checkpoints, stamps)
                await self.writer.execute(self._frames.view(), replies)
            return
        values = _encode_batch(windows, sequence, event_time_us, now_us(), stamps)
        pipe = self.client.pipeline(transaction=False)
        if checkpoints is not None:  # first: a stored window never runs ahead of its checkpoint
            pipe.hset(checkpoint_key(self.spec_hash), mapping=dict(zip(
                stock_ids.tolist(), (c.tobytes() for c in checkpoints), strict=True)))
            pipe.expire(checkpoint_key(self.spec_hash), self.ttl_s)
        for sid, value in zip(stock_ids.tolist(), values, strict=True):
            pipe.set(window_key(self.spec_hash, sid), value, ex=self.ttl_s)
        pipe.xadd(stream_key(self.spec_hash), {b"ids": encode_ids(stock_ids)},
                  maxlen=self.stream_maxlen, approximate=True)
        await pipe.execute()

    async def read(self, stock_ids: np.ndarray) -> Windows:
        keys = _cached(self._keys, np.asarray(stock_ids).tolist(), self._key)
        if not keys:
            return decode_windows([])
        if self.reader is not None:
            return await self.reader.mget(keys, VALUE_RECORD.itemsize, decode_reply)
        values = await (self.client.mget_nonatomic(keys) if self.cluster else self.client.mget(keys))
        return decode_windows(values)

    async def read_checkpoints(self, stock_ids: np.ndarray) -> list[bytes | None]:
        ids = np.asarray(stock_ids).tolist()
        return list(await self.client.hmget(checkpoint_key(self.spec_hash), ids)) if ids else []

    async def changes(self, after: bytes, count: int) -> list[tuple[bytes, np.ndarray]]:
        entries = await self.client.xrange(stream_key(self.spec_hash), min=b"(" + after if after != b"0"
                                           else b"-", count=count)
        return [(eid, np.frombuffer(fields[b"ids"], "<i4")) for eid, fields in entries]

    async def write_vol(self, estimate: VolEstimate, shard: str = "0/1") -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(vol_key(self.spec_hash), shard, encode_vol(estimate))
        pipe.expire(vol_key(self.spec_hash), self.ttl_s)
        await pipe.execute()

    async def read_vol(self) -> VolEstimate | None:
        return merge_vol(await self.client.hgetall(vol_key(self.spec_hash)))

    async def close(self) -> None:
        for pool in (self.reader, self.writer):
            if pool is not None:
                await pool.close()
        await self.client.aclose()


class InProcessStore:
    """The same interface and byte encoding in memory: the embedded single-process default."""

    def __init__(self, spec_hash: str, ttl_s: int = 3600, stream_maxlen: int = 10_000) -> None:
        self.spec_hash, self.ttl_s = spec_hash, ttl_s
        self.values: dict[bytes, tuple[bytes, float]] = {}  # key -> (value, expires at)
        self.checkpoints: dict[int, bytes] = {}  # stock id -> online checkpoint
        self.stream: deque[tuple[bytes, np.ndarray]] = deque(maxlen=stream_maxlen)
        self._next_id = 0

    def _get(self, key: bytes) -> bytes | None:
        item = self.values.get(key)
        if item is None or item[1] < time.monotonic():
            return None
        return item[0]

    async def write(self, stock_ids: np.ndarray, windows: np.ndarray, sequence: np.ndarray,
                    event_time_us: np.ndarray, checkpoints: np.ndarray | None = None,
                    stamps: Stamps | None = None) -> None:
        if len(stock_ids) == 0:
            return
        expires = time.monotonic() + self.ttl_s
        values = _encode_batch(windows, sequence, event_time_us, now_us(), stamps)
        if checkpoints is not None:
            self.checkpoints.update(zip(stock_ids.tolist(), (c.tobytes() for c in checkpoints), strict=True))
        for sid, value in zip(stock_ids.tolist(), values, strict=True):
            self.values[window_key(self.spec_hash, sid)] = (value, expires)
        self._next_id += 1
        self.stream.append((f"{self._next_id}-0".encode(), np.array(stock_ids, np.int32)))

    async def read(self, stock_ids: np.ndarray) -> Windows:
        return decode_windows([self._get(window_key(self.spec_hash, s)) for s in stock_ids])

    async def read_checkpoints(self, stock_ids: np.ndarray) -> list[bytes | None]:
        return [self.checkpoints.get(s) for s in np.asarray(stock_ids).tolist()]

    async def changes(self, after: bytes, count: int) -> list[tuple[bytes, np.ndarray]]:
        # ids run 1, 2, 3, ...: the first entry after ``after`` sits at a known offset. A scan
        # of the whole stream cost ~2 ms per poll once it was full (the gateway polls every 5 ms)
        oldest = self._next_id - len(self.stream) + 1
        start = max(0, int(after.split(b"-")[0]) + 1 - oldest)
        return list(itertools.islice(self.stream, start, start + count))

    async def write_vol(self, estimate: VolEstimate, shard: str = "0/1") -> None:
        self.values[vol_key(self.spec_hash) + b"/" + shard.encode()] = (encode_vol(estimate),
                                                                         time.monotonic() + self.ttl_s)

    async def read_vol(self) -> VolEstimate | None:
        prefix = vol_key(self.spec_hash) + b"/"
        fields = {k[len(prefix):]: self._get(k) for k in list(self.values) if k.startswith(prefix)}
        return merge_vol({k: v for k, v in fields.items() if v is not None})

    async def close(self) -> None:
        self.values.clear()

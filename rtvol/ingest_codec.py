"""IngestRequest -> UpdateBatch: columns without a per-update loop, MarketUpdate messages with one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rtvol.features.online_batch import BOOK, FIELDS, TRADE, UpdateBatch
from rtvol.proto.v1 import features_pb2 as pb

COLUMN_FIELDS = {"bid1": "bid_price1", "ask1": "ask_price1", "bid2": "bid_price2", "ask2": "ask_price2",
                 "bid_size1": "bid_size1", "ask_size1": "ask_size1", "bid_size2": "bid_size2",
                 "ask_size2": "ask_size2", "price": "price", "size": "size", "order_count": "order_count"}
BOOK_FIELDS = tuple(COLUMN_FIELDS)[:8]
FROMITER_MAX = 32  # columns up to this long are read with np.fromiter


class Malformed(ValueError):
    """A message whose columns cannot be lined up: every update in it is rejected."""


def _array(values: Sequence[float], dtype: type) -> np.ndarray:
    """A repeated field as an array: np.array walks it as a generic sequence (~3 µs whatever its
    length), np.fromiter costs ~0.5 µs for a few values but more per value."""
    n = len(values)
    return np.fromiter(values, dtype, n) if n <= FROMITER_MAX else np.array(values, dtype)


def _from_columns(c: pb.UpdateColumns) -> dict[str, np.ndarray]:
    n = len(c.stock_id)
    cols = {"stock_id": _array(c.stock_id, np.int64), "seq": _array(c.sequence, np.int64),
            "time": _array(c.event_time_us, np.float64) / 1e6, "kind": _array(c.kind, np.int64)}
    for dst, src in COLUMN_FIELDS.items():
        v = getattr(c, src)
        cols[dst] = _array(v, np.float64) if len(v) else np.zeros(n)
    if any(len(v) != n for v in cols.values()):
        raise Malformed("update columns have different lengths")
    cols["kind"] = np.where((cols["kind"] == BOOK) | (cols["kind"] == TRADE), cols["kind"], -1)
    return cols


def _from_messages(updates: list[pb.MarketUpdate]) -> dict[str, np.ndarray]:
    n = len(updates)
    cols = {k: np.zeros(n) for k in COLUMN_FIELDS}
    cols |= {"stock_id": np.zeros(n, np.int64), "seq": np.zeros(n, np.int64), "time": np.zeros(n),
             "kind": np.full(n, -1, np.int64)}
    for i, u in enumerate(updates):
        cols["stock_id"][i], cols["seq"][i], cols["time"][i] = u.stock_id, u.sequence, u.event_time_us / 1e6
        which = u.WhichOneof("payload")
        if which == "book":
            cols["kind"][i] = BOOK
            for dst in BOOK_FIELDS:
                cols[dst][i] = getattr(u.book, COLUMN_FIELDS[dst])
        elif which == "trade":
            cols["kind"][i] = TRADE
            t = u.trade
            cols["price"][i], cols["size"][i], cols["order_count"][i] = t.price, t.size, t.order_count
    return cols


def decode(request: pb.IngestRequest) -> UpdateBatch:
    """Message updates first, then the columns (both may be present)."""
    parts = [_from_messages(list(request.updates))] if len(request.updates) else []
    if request.HasField("columns"):
        parts.append(_from_columns(request.columns))
    if not parts:
        return UpdateBatch.from_columns({"stock_id": np.zeros(0, np.int64)})
    return _batch(parts[0] if len(parts) == 1
                  else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def _batch(cols: dict[str, np.ndarray]) -> UpdateBatch:
    cols["kind"] = cols["kind"].astype(np.int8)
    return UpdateBatch.from_columns(cols)


def encode_columns(b: UpdateBatch, watermark_us: int = 0) -> pb.IngestRequest:
    """The client side of the fast path (feeds, tests, benchmarks)."""
    c = pb.UpdateColumns(stock_id=b.stock_id.tolist(), event_time_us=np.round(b.time * 1e6).astype(
        np.int64).tolist(), sequence=b.seq.tolist(), kind=b.kind.tolist())
    for dst, src in COLUMN_FIELDS.items():
        getattr(c, src).extend(getattr(b, dst).tolist())
    return pb.IngestRequest(columns=c, watermark_us=watermark_us)


_LIST_FIELDS = (("stock_id", "stock_id"), ("seq", "sequence"), ("time", "event_time_us"), ("kind", "kind"),
                *COLUMN_FIELDS.items())


class _Columns:
    """Columnar messages gathered field by field into Python lists: a message costs a few list
    extends, and numpy is called once for all of them."""

    def __init__(self) -> None:
        self.lists: dict[str, list[float]] = {dst: [] for dst, _ in _LIST_FIELDS}

    def __len__(self) -> int:
        return len(self.lists["stock_id"])

    def add(self, c: pb.UpdateColumns) -> bool:
        """False (nothing added) when the columns cannot be lined up."""
        n = len(c.stock_id)
        values = [getattr(c, src) for _, src in _LIST_FIELDS]
        if any(len(v) != n for v in values[1:4]) or any(len(v) not in (0, n) for v in values[4:]):
            return False
        for (dst, _), v in zip(_LIST_FIELDS, values, strict=True):
            if len(v):
                self.lists[dst].extend(v)
            else:
                self.lists[dst].extend([0.0] * n)
        return True

    def batch(self) -> UpdateBatch:
        cols = {k: np.array(v, np.float64) for k, v in self.lists.items()}
        cols["time"] /= 1e6
        kind = cols["kind"]
        cols["kind"] = np.where((kind == BOOK) | (kind == TRADE), kind, -1).astype(np.int8)
        self.lists = {k: [] for k in self.lists}
        return UpdateBatch.from_columns(cols)


def _merged(run: list[pb.IngestRequest]) -> UpdateBatch | None:
    """Columnar messages merged by protobuf itself (repeated fields concatenate: ~1 µs a
    message), or None when their columns would not line up merged (e.g. book-only and
    trade-only messages leave different columns empty, or one message is malformed)."""
    if len(run) == 1:  # nothing to merge: no copy of the message
        merged = run[0].columns
    else:
        merged = pb.UpdateColumns()
        for request in run:
            merged.MergeFrom(request.columns)
    n = len(merged.stock_id)
    if any(len(getattr(merged, src)) not in (0, n) for _, src in _LIST_FIELDS[4:]):
        return None
    if sum(len(r.columns.stock_id) for r in run) != n:
        return None
    try:
        return _batch(_from_columns(merged))
    except Malformed:
        return None


def _gathered(run: list[pb.IngestRequest], first: int, malformed: list[int]) -> UpdateBatch:
    columns = _Columns()
    for i, request in enumerate(run):
        if not columns.add(request.columns):
            malformed.append(first + i)
    return columns.batch()


def decode_many(requests: list[pb.IngestRequest]) -> tuple[UpdateBatch, list[int]]:
    """The updates of several messages as one batch, in arrival order, and the positions of the
    malformed messages (their updates are left out). Runs of columnar messages, what a fast
    feed sends, are merged by protobuf and decoded once; others go through ``decode``."""
    parts: list[UpdateBatch] = []
    malformed: list[int] = []
    run_start = 0

    def close_run(end: int) -> None:
        run = requests[run_start:end]
        if run:
            batch = _merged(run)
            parts.append(batch if batch is not None else _gathered(run, run_start, malformed))

    for i, request in enumerate(requests):
        if len(request.updates):
            close_run(i)  # keep arrival order
            run_start = i + 1
            try:
                parts.append(decode(request))
            except Malformed:
                malformed.append(i)
    close_run(len(requests))
    if not parts:
        return decode(pb.IngestRequest()), malformed
    if len(parts) == 1:
        return parts[0], malformed
    joined = {k: np.concatenate([getattr(p, k) for p in parts]) for k in FIELDS}
    return UpdateBatch.from_columns(joined), malformed

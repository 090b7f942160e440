"""IngestRequest -> UpdateBatch: columns without a per-update loop, MarketUpdate messages with one."""

from __future__ import annotations

import numpy as np

from rtvol.features.online_batch import BOOK, TRADE, UpdateBatch
from rtvol.proto.v1 import features_pb2 as pb

COLUMN_FIELDS = {"bid1": "bid_price1", "ask1": "ask_price1", "bid2": "bid_price2", "ask2": "ask_price2",
                 "bid_size1": "bid_size1", "ask_size1": "ask_size1", "bid_size2": "bid_size2",
                 "ask_size2": "ask_size2", "price": "price", "size": "size", "order_count": "order_count"}
BOOK_FIELDS = tuple(COLUMN_FIELDS)[:8]


class Malformed(ValueError):
    """A message whose columns cannot be lined up: every update in it is rejected."""


def _from_columns(c: pb.UpdateColumns) -> dict[str, np.ndarray]:
    n = len(c.stock_id)
    cols = {"stock_id": np.array(c.stock_id, np.int64), "seq": np.array(c.sequence, np.int64),
            "time": np.array(c.event_time_us, np.float64) / 1e6, "kind": np.array(c.kind, np.int64)}
    for dst, src in COLUMN_FIELDS.items():
        v = getattr(c, src)
        cols[dst] = np.array(v, np.float64) if len(v) else np.zeros(n)
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
    cols = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    cols["kind"] = cols["kind"].astype(np.int8)
    return UpdateBatch.from_columns(cols)


def encode_columns(b: UpdateBatch, watermark_us: int = 0) -> pb.IngestRequest:
    """The client side of the fast path (feeds, tests, benchmarks)."""
    c = pb.UpdateColumns(stock_id=b.stock_id.tolist(), event_time_us=np.round(b.time * 1e6).astype(
        np.int64).tolist(), sequence=b.seq.tolist(), kind=b.kind.tolist())
    for dst, src in COLUMN_FIELDS.items():
        getattr(c, src).extend(getattr(b, dst).tolist())
    return pb.IngestRequest(columns=c, watermark_us=watermark_us)

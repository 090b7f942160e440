"""A batch of market updates, column by column (struct of arrays), and its value checks.

Both the gRPC ingest path and the replay tools build an :class:`UpdateBatch`; the online
state (online.py) only ever sees batches whose rows passed :func:`check_values`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

BOOK, TRADE = 0, 1

# Reject reasons: index 0 means accepted. Labels go into the rejects counter.
REASONS: tuple[str, ...] = (
    "ok", "malformed", "unknown_stock", "non_finite", "non_positive", "crossed_book",
    "locked_book", "duplicate_sequence", "out_of_order", "late", "oversized_batch",
    "out_of_range", "sequence_jump", "time_jump", "watermark_ahead", "not_owned",
)
R = {name: i for i, name in enumerate(REASONS)}


@dataclass
class UpdateBatch:
    """``n`` updates; book columns are ignored on trade rows and vice versa."""

    stock_id: np.ndarray  # int64
    time: np.ndarray  # float64 event time, seconds: bucket * 600 + seconds_in_bucket
    seq: np.ndarray  # int64, strictly increasing per stock
    kind: np.ndarray  # int8: BOOK or TRADE
    bid1: np.ndarray
    ask1: np.ndarray
    bid2: np.ndarray
    ask2: np.ndarray
    bid_size1: np.ndarray
    ask_size1: np.ndarray
    bid_size2: np.ndarray
    ask_size2: np.ndarray
    price: np.ndarray
    size: np.ndarray
    order_count: np.ndarray

    def __len__(self) -> int:
        return len(self.stock_id)

    def take(self, index: np.ndarray) -> UpdateBatch:
        return UpdateBatch(**{name: getattr(self, name)[index] for name in FIELDS})

    def select(self, index: np.ndarray) -> UpdateBatch:
        """``take`` for callers that only read: this batch itself, not a copy of its 15 columns,
        when ``index`` (a mask or positions) keeps every row in order, as it usually does."""
        n = len(self)
        if index.dtype == bool:
            whole = bool(index.all())
        else:
            whole = len(index) == n and (n == 0 or bool((index == np.arange(n)).all()))
        return self if whole else self.take(index)

    @classmethod
    def from_columns(cls, cols: Mapping[str, np.ndarray]) -> UpdateBatch:
        """Missing price/size columns are zeros; every column must have the same length."""
        n = len(cols["stock_id"])
        out = {}
        for f in fields(cls):
            dtype = {"stock_id": np.int64, "seq": np.int64, "kind": np.int8}.get(f.name, np.float64)
            v = np.asarray(cols[f.name], dtype) if f.name in cols else np.zeros(n, dtype)
            if v.shape != (n,):
                raise ValueError(f"column {f.name} has shape {v.shape}, expected ({n},)")
            out[f.name] = v
        return cls(**out)


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(UpdateBatch))
BOOK_PRICES = ("bid1", "ask1", "bid2", "ask2")
BOOK_SIZES = ("bid_size1", "ask_size1", "bid_size2", "ask_size2")

# Plausible values: inside these bounds every derived number (WAP, its log, spread, sums of
# squared returns, notional) stays finite in float64 and in the float32 window. Powers of
# two, so the Triton kernel's float32 constants are the same numbers.
MIN_PRICE, MAX_PRICE = 2.0**-30, 2.0**30  # about 1e-9 .. 1e9
MAX_SIZE = 2.0**40  # about 1.1e12; also bounds order_count
MAX_EVENT_TIME_S = 2.0**33  # about 8.6e9 s: year 2242 as Unix time, exact in event_time_us
MAX_SEQUENCE = 2**53


def check_values(b: UpdateBatch, n_stocks: int) -> np.ndarray:
    """Per update, the first reason (index into REASONS) its own values are invalid; 0 if fine.

    Checks that need no state: the stateful ones (sequence, lateness) live in the state.
    """
    book, trade = b.kind == BOOK, b.kind == TRADE
    book_vals = np.stack([getattr(b, c) for c in BOOK_PRICES + BOOK_SIZES])
    trade_vals = np.stack([b.price, b.size, b.order_count])
    finite = np.isfinite(b.time) & np.where(book, np.isfinite(book_vals).all(0),
                                            np.isfinite(trade_vals).all(0))
    with np.errstate(invalid="ignore"):
        def out_of_range(v: np.ndarray) -> np.ndarray:
            return (v < MIN_PRICE) | (v > MAX_PRICE)

        crossed = (b.bid1 > b.ask1) | (b.bid2 > b.bid1) | (b.ask2 < b.ask1)
        book_out = out_of_range(book_vals[:4]).any(0) | (book_vals[4:] > MAX_SIZE).any(0)
        trade_out = out_of_range(trade_vals[0]) | (trade_vals[1:] > MAX_SIZE).any(0)
        checks = [
            (~(book | trade) | (b.seq < 0), "malformed"),
            (b.stock_id < 0, "malformed"),
            (b.stock_id >= n_stocks, "unknown_stock"),
            (~finite, "non_finite"),
            (b.time < 0, "malformed"),
            (np.where(book, (book_vals <= 0).any(0), (trade_vals[:2] <= 0).any(0) | (trade_vals[2] < 0)),
             "non_positive"),
            (np.where(book, book_out, trade_out) | (b.time > MAX_EVENT_TIME_S) | (b.seq > MAX_SEQUENCE),
             "out_of_range"),
            (book & crossed, "crossed_book"),
            (book & (b.bid1 == b.ask1), "locked_book"),
        ]
    return first_reasons(len(b), checks)


def first_reasons(n: int, checks: Sequence[tuple[np.ndarray, str]]) -> np.ndarray:
    """Per row, the reason (index into REASONS) of the first check whose mask is set; 0 if none.
    The masks are looked at one by one only when one is set somewhere (a bad batch)."""
    reason = np.zeros(n, np.int8)
    if not checks or not np.logical_or.reduce([mask for mask, _ in checks]).any():
        return reason
    for mask, name in checks:
        reason[(reason == 0) & mask] = R[name]
    return reason

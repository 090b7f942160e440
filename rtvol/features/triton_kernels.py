"""Triton GPU kernels: the online snapshot round and the offline windows, same numbers as numpy.

* :class:`GpuOnlineState` holds :class:`~rtvol.features.online.OnlineState`'s struct of
  arrays as CUDA tensors; :meth:`GpuOnlineState.apply_round` applies one cross-stock round
  (at most one update per stock) in ONE launch: value checks, stateful checks, step closing
  into the ring and accumulation, lane = update = stock, so no two lanes touch one stock.
* :func:`compute_windows_gpu` is :func:`rtvol.features.offline.compute_windows` on the GPU:
  per-row kernels (returns, fp64 atomic sums per step cell, close state of each cell's
  last row) and a per-bucket kernel that carries the close state forward and writes rows.
Sums are float64 in both paths; atomics add in another order than numpy's bincount, so the
float32 windows agree to float32 rounding, not bit for bit (tests/unit/test_triton_kernels.py).

Importing this module needs neither a GPU nor triton (kernels are plain functions until
triton is present; torch and triton are imported when a kernel is first used).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from rtvol.features.online import DEFAULT_LIMITS, Limits, OnlineState, rounds
from rtvol.features.online_batch import (
    BOOK,
    FIELDS,
    MAX_EVENT_TIME_S,
    MAX_PRICE,
    MAX_SEQUENCE,
    MAX_SIZE,
    MIN_PRICE,
    TRADE,
    R,
    UpdateBatch,
)
from rtvol.features.spec import INDEX, N_FEATURES, STEP_SECONDS, STEPS

if TYPE_CHECKING:
    import torch

try:  # the kernels' language; absent on CPU-only installs, where nothing here is called
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None


def _jit(fn: Callable[..., None]) -> Any:
    return triton.jit(fn) if triton is not None else fn


BLOCK = 128
INT_COLS = ("stock_id", "seq", "kind")
FLOAT_COLS = tuple(f for f in FIELDS if f not in INT_COLS)  # time, book prices/sizes, trade
F = INDEX  # feature column indices, passed to kernels as constexpr


@_jit
def _finite(x):
    return (x == x) & (tl.abs(x) < float("inf"))


@_jit
def _col(ptr, c, n, offs, mask):
    return tl.load(ptr + c * n + offs, mask=mask, other=1.0)


@_jit
def _round_kernel(ints, floats, n, n_stocks, step_p, seq_p, time_p, closed_p, acc_p, close_p, has_p,
                  logwap_p, ring_p, head_p, reason_p, clock_p, max_gap, max_ahead,
                  STEPS: tl.constexpr, NF: tl.constexpr, STEP_S: tl.constexpr, BOOK_K: tl.constexpr,
                  TRADE_K: tl.constexpr, MALFORMED: tl.constexpr, UNKNOWN: tl.constexpr,
                  NON_FINITE: tl.constexpr, NON_POSITIVE: tl.constexpr, CROSSED: tl.constexpr,
                  LOCKED: tl.constexpr, DUPLICATE: tl.constexpr, OUT_OF_ORDER: tl.constexpr,
                  LATE: tl.constexpr, OUT_OF_RANGE: tl.constexpr, SEQ_JUMP: tl.constexpr,
                  TIME_JUMP: tl.constexpr, MIN_P: tl.constexpr, MAX_P: tl.constexpr,
                  MAX_SZ: tl.constexpr, MAX_T: tl.constexpr, MAX_SEQ: tl.constexpr, I_RV1: tl.constexpr,
                  I_RV2: tl.constexpr, I_RET: tl.constexpr,
                  I_SPREAD: tl.constexpr, I_BAL: tl.constexpr, I_IMB: tl.constexpr, I_SIZE: tl.constexpr,
                  I_BOOKS: tl.constexpr, I_VOL: tl.constexpr, I_TRADES: tl.constexpr,
                  I_ORDERS: tl.constexpr, I_PREM: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n
    sid = tl.load(ints + offs, mask=live, other=0)
    seq = tl.load(ints + n + offs, mask=live, other=0)
    kind = tl.load(ints + 2 * n + offs, mask=live, other=-1)
    t = _col(floats, 0, n, offs, live)
    bid1 = _col(floats, 1, n, offs, live)
    ask1 = _col(floats, 2, n, offs, live)
    bid2 = _col(floats, 3, n, offs, live)
    ask2 = _col(floats, 4, n, offs, live)
    bs1 = _col(floats, 5, n, offs, live)
    as1 = _col(floats, 6, n, offs, live)
    bs2 = _col(floats, 7, n, offs, live)
    as2 = _col(floats, 8, n, offs, live)
    price = _col(floats, 9, n, offs, live)
    size = _col(floats, 10, n, offs, live)
    orders = _col(floats, 11, n, offs, live)
    book = kind == BOOK_K
    trade = kind == TRADE_K

    # value checks: online_batch.check_values, first reason wins, same order
    r = tl.where(~(book | trade) | (seq < 0), MALFORMED, 0)
    r = tl.where((r == 0) & (sid < 0), MALFORMED, r)
    r = tl.where((r == 0) & (sid >= n_stocks), UNKNOWN, r)
    book_finite = (_finite(bid1) & _finite(ask1) & _finite(bid2) & _finite(ask2) & _finite(bs1)
                   & _finite(as1) & _finite(bs2) & _finite(as2))
    trade_finite = _finite(price) & _finite(size) & _finite(orders)
    r = tl.where((r == 0) & ~(_finite(t) & tl.where(book, book_finite, trade_finite)), NON_FINITE, r)
    r = tl.where((r == 0) & (t < 0), MALFORMED, r)
    book_bad = ((bid1 <= 0) | (ask1 <= 0) | (bid2 <= 0) | (ask2 <= 0) | (bs1 <= 0) | (as1 <= 0)
                | (bs2 <= 0) | (as2 <= 0))
    trade_bad = (price <= 0) | (size <= 0) | (orders < 0)
    r = tl.where((r == 0) & tl.where(book, book_bad, trade_bad), NON_POSITIVE, r)
    book_out = ((bid1 < MIN_P) | (bid1 > MAX_P) | (ask1 < MIN_P) | (ask1 > MAX_P) | (bid2 < MIN_P)
                | (bid2 > MAX_P) | (ask2 < MIN_P) | (ask2 > MAX_P) | (bs1 > MAX_SZ) | (as1 > MAX_SZ)
                | (bs2 > MAX_SZ) | (as2 > MAX_SZ))
    trade_out = (price < MIN_P) | (price > MAX_P) | (size > MAX_SZ) | (orders > MAX_SZ)
    out = tl.where(book, book_out, trade_out) | (t > MAX_T) | (seq > MAX_SEQ)
    r = tl.where((r == 0) & out, OUT_OF_RANGE, r)
    r = tl.where((r == 0) & book & ((bid1 > ask1) | (bid2 > bid1) | (ask2 < ask1)), CROSSED, r)
    r = tl.where((r == 0) & book & (bid1 == ask1), LOCKED, r)

    # stateful checks (OnlineState._apply_round)
    valid = live & (r == 0)
    s = tl.where(valid, sid, 0)
    cur_seq = tl.load(seq_p + s, mask=valid, other=0)
    cur_step = tl.load(step_p + s, mask=valid, other=0)
    cur_time = tl.load(time_p + s, mask=valid, other=0.0)
    clock = tl.load(clock_p)
    ref = tl.where(cur_time == cur_time, cur_time, clock)  # a new stock: the stream's clock
    g = libdevice.floor(t / STEP_S).to(tl.int64)
    r = tl.where(valid & (seq == cur_seq), DUPLICATE, r)
    r = tl.where(valid & (r == 0) & (seq < cur_seq), OUT_OF_ORDER, r)
    r = tl.where(valid & (r == 0) & (cur_seq >= 0) & (seq - cur_seq > max_gap), SEQ_JUMP, r)
    r = tl.where(valid & (r == 0) & (ref > -float("inf")) & (t - ref > max_ahead), TIME_JUMP, r)
    r = tl.where(valid & (r == 0) & (g < cur_step), LATE, r)
    tl.store(reason_p + offs, r.to(tl.int8), mask=live)
    ok = valid & (r == 0)

    # close steps start..g-1 into the ring (OnlineState._close_until / _step_rows)
    start = tl.where(cur_step < 0, g, cur_step)
    k = g - start
    moving = ok & (k > 0)
    head = tl.load(head_p + s, mask=ok, other=0)
    has = tl.load(has_p + s, mask=ok, other=0) != 0
    a0 = tl.load(acc_p + s * 8 + 0, mask=ok, other=0.0)
    a1 = tl.load(acc_p + s * 8 + 1, mask=ok, other=0.0)
    a2 = tl.load(acc_p + s * 8 + 2, mask=ok, other=0.0)
    a3 = tl.load(acc_p + s * 8 + 3, mask=ok, other=0.0)
    a4 = tl.load(acc_p + s * 8 + 4, mask=ok, other=0.0)
    a5 = tl.load(acc_p + s * 8 + 5, mask=ok, other=0.0)
    a6 = tl.load(acc_p + s * 8 + 6, mask=ok, other=0.0)
    a7 = tl.load(acc_p + s * 8 + 7, mask=ok, other=0.0)
    c_spread = tl.where(has, tl.load(close_p + s * 5 + 0, mask=ok, other=0.0), 0.0)
    c_bal = tl.where(has, tl.load(close_p + s * 5 + 1, mask=ok, other=0.0), 0.0)
    c_imb = tl.where(has, tl.load(close_p + s * 5 + 2, mask=ok, other=0.0), 0.0)
    c_size = tl.where(has, tl.load(close_p + s * 5 + 3, mask=ok, other=0.0), 0.0)
    c_mid = tl.where(has, tl.load(close_p + s * 5 + 4, mask=ok, other=0.0), 0.0)
    rv1 = libdevice.sqrt(a0).to(tl.float32)
    rv2 = libdevice.sqrt(a1).to(tl.float32)
    ret = a2.to(tl.float32)
    books = libdevice.log1p(a3).to(tl.float32)
    vol = libdevice.log1p(a4).to(tl.float32)
    trades = libdevice.log1p(a6).to(tl.float32)
    n_orders = libdevice.log1p(a7).to(tl.float32)
    priced = (a4 > 0) & (c_mid > 0)
    prem = tl.where(priced, tl.where(priced, a5 / a4, 0.0) / tl.where(priced, c_mid, 1.0) - 1.0, 0.0)
    prem = prem.to(tl.float32)
    remaining = STEPS - 1 - start % STEPS  # empty steps left in the open step's bucket
    first = tl.maximum(k - STEPS, 0)
    zero = tl.zeros([BLOCK], tl.float32)
    for jj in range(STEPS):
        j = first + jj
        act = moving & (j < k)
        row = ring_p + ((s * STEPS + (head + j) % STEPS) * NF).to(tl.int64)
        is0 = j == 0
        in_bucket = j <= remaining
        tl.store(row + I_RV1, tl.where(is0, rv1, zero), mask=act)
        tl.store(row + I_RV2, tl.where(is0, rv2, zero), mask=act)
        tl.store(row + I_RET, tl.where(is0, ret, zero), mask=act)
        tl.store(row + I_BOOKS, tl.where(is0, books, zero), mask=act)
        tl.store(row + I_VOL, tl.where(is0, vol, zero), mask=act)
        tl.store(row + I_TRADES, tl.where(is0, trades, zero), mask=act)
        tl.store(row + I_ORDERS, tl.where(is0, n_orders, zero), mask=act)
        tl.store(row + I_PREM, tl.where(is0, prem, zero), mask=act)
        tl.store(row + I_SPREAD, tl.where(in_bucket, c_spread, 0.0).to(tl.float32), mask=act)
        tl.store(row + I_BAL, tl.where(in_bucket, c_bal, 0.0).to(tl.float32), mask=act)
        tl.store(row + I_IMB, tl.where(in_bucket, c_imb, 0.0).to(tl.float32), mask=act)
        tl.store(row + I_SIZE, tl.where(in_bucket, c_size, 0.0).to(tl.float32), mask=act)
    tl.store(head_p + s, tl.where(moving, (head + k) % STEPS, head), mask=ok)
    closed = tl.load(closed_p + s, mask=ok, other=0)
    tl.store(closed_p + s, closed + tl.where(moving, k, 0), mask=ok)
    tl.store(step_p + s, g, mask=ok)
    tl.store(seq_p + s, seq, mask=ok)
    tl.store(time_p + s, t, mask=ok)
    a0 = tl.where(moving, 0.0, a0)
    a1 = tl.where(moving, 0.0, a1)
    a2 = tl.where(moving, 0.0, a2)
    a3 = tl.where(moving, 0.0, a3)
    a4 = tl.where(moving, 0.0, a4)
    a5 = tl.where(moving, 0.0, a5)
    a6 = tl.where(moving, 0.0, a6)
    a7 = tl.where(moving, 0.0, a7)
    has = has & ~(moving & (g // STEPS != start // STEPS))

    # accumulate the update (OnlineState._add_book / _add_trade)
    ob = ok & book
    w1 = (bid1 * as1 + ask1 * bs1) / (bs1 + as1)
    w2 = (bid2 * as2 + ask2 * bs2) / (bs2 + as2)
    l1 = libdevice.log(w1)
    l2 = libdevice.log(w2)
    r1 = tl.where(has, l1 - tl.load(logwap_p + s * 2, mask=ob, other=0.0), 0.0)
    r2 = tl.where(has, l2 - tl.load(logwap_p + s * 2 + 1, mask=ob, other=0.0), 0.0)
    a0 = tl.where(ob, a0 + r1 * r1, a0)
    a1 = tl.where(ob, a1 + r2 * r2, a1)
    a2 = tl.where(ob, a2 + r1, a2)
    a3 = tl.where(ob, a3 + 1.0, a3)
    bid_depth = bs1 + bs2
    ask_depth = as1 + as2
    total = bid_depth + ask_depth
    tl.store(close_p + s * 5 + 0, ask1 / bid1 - 1.0, mask=ob)
    tl.store(close_p + s * 5 + 1, w1 / w2 - 1.0, mask=ob)
    tl.store(close_p + s * 5 + 2, (bid_depth - ask_depth) / total, mask=ob)
    tl.store(close_p + s * 5 + 3, libdevice.log1p(total), mask=ob)
    tl.store(close_p + s * 5 + 4, (bid1 + ask1) / 2.0, mask=ob)
    tl.store(logwap_p + s * 2, l1, mask=ob)
    tl.store(logwap_p + s * 2 + 1, l2, mask=ob)
    has = has | ob
    ot = ok & trade
    a4 = tl.where(ot, a4 + size, a4)
    a5 = tl.where(ot, a5 + size * price, a5)
    a6 = tl.where(ot, a6 + 1.0, a6)
    a7 = tl.where(ot, a7 + orders, a7)
    tl.store(has_p + s, has.to(tl.int8), mask=ok)
    tl.store(acc_p + s * 8 + 0, a0, mask=ok)
    tl.store(acc_p + s * 8 + 1, a1, mask=ok)
    tl.store(acc_p + s * 8 + 2, a2, mask=ok)
    tl.store(acc_p + s * 8 + 3, a3, mask=ok)
    tl.store(acc_p + s * 8 + 4, a4, mask=ok)
    tl.store(acc_p + s * 8 + 5, a5, mask=ok)
    tl.store(acc_p + s * 8 + 6, a6, mask=ok)
    tl.store(acc_p + s * 8 + 7, a7, mask=ok)


def _constants() -> dict[str, float]:
    return dict(STEPS=STEPS, NF=N_FEATURES, STEP_S=STEP_SECONDS, BOOK_K=BOOK, TRADE_K=TRADE,
                MALFORMED=R["malformed"], UNKNOWN=R["unknown_stock"], NON_FINITE=R["non_finite"],
                NON_POSITIVE=R["non_positive"], CROSSED=R["crossed_book"], LOCKED=R["locked_book"],
                DUPLICATE=R["duplicate_sequence"], OUT_OF_ORDER=R["out_of_order"], LATE=R["late"],
                OUT_OF_RANGE=R["out_of_range"], SEQ_JUMP=R["sequence_jump"], TIME_JUMP=R["time_jump"],
                MIN_P=MIN_PRICE, MAX_P=MAX_PRICE, MAX_SZ=MAX_SIZE, MAX_T=MAX_EVENT_TIME_S,
                MAX_SEQ=MAX_SEQUENCE,
                I_RV1=F["wap1_rv"], I_RV2=F["wap2_rv"], I_RET=F["wap1_return"], I_SPREAD=F["spread"],
                I_BAL=F["wap_balance"], I_IMB=F["depth_imbalance"], I_SIZE=F["log_book_size"],
                I_BOOKS=F["book_updates"], I_VOL=F["trade_volume"], I_TRADES=F["trade_count"],
                I_ORDERS=F["order_count"], I_PREM=F["vwap_premium"], BLOCK=BLOCK)


STATE_ARRAYS = ("step", "seq", "time", "closed", "acc", "close", "has_close", "log_wap", "ring", "head")


class GpuOnlineState:
    """OnlineState's arrays as CUDA tensors (``has_close`` as int8); one launch per round."""

    step: torch.Tensor
    seq: torch.Tensor
    time: torch.Tensor
    closed: torch.Tensor
    acc: torch.Tensor
    close: torch.Tensor
    has_close: torch.Tensor
    log_wap: torch.Tensor
    ring: torch.Tensor
    head: torch.Tensor

    def __init__(self, n_stocks: int, device: str = "cuda", limits: Limits = DEFAULT_LIMITS) -> None:
        self.n_stocks, self.device, self.limits = n_stocks, device, limits
        self.load(OnlineState(n_stocks, limits))

    def load(self, state: OnlineState) -> None:
        import torch

        for name in STATE_ARRAYS:
            a = getattr(state, name)
            a = a.astype(np.int8) if a.dtype == bool else a
            setattr(self, name, torch.from_numpy(np.ascontiguousarray(a)).to(self.device))
        # the stream's clock stays on the device: each round's accepted times move it, no sync
        self.clock = torch.tensor([state.clock], dtype=torch.float64, device=self.device)

    def to_cpu(self) -> OnlineState:
        out = OnlineState(self.n_stocks, self.limits)
        for name in STATE_ARRAYS:
            a = getattr(self, name).cpu().numpy()
            setattr(out, name, a.astype(bool) if name == "has_close" else a)
        out.clock = float(self.clock.item())
        return out

    def upload(self, b: UpdateBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Two host-to-device copies: [3, n] int64 (ids, seq, kind) and [12, n] float64."""
        import torch

        ints = np.stack([b.stock_id, b.seq, b.kind.astype(np.int64)])
        floats = np.stack([getattr(b, c) for c in FLOAT_COLS])
        return (torch.from_numpy(ints).to(self.device, non_blocking=True),
                torch.from_numpy(floats).to(self.device, non_blocking=True))

    def apply_round_device(self, ints: torch.Tensor, floats: torch.Tensor) -> torch.Tensor:
        """One round already on the device (at most one row per valid stock); int8 reasons."""
        import torch

        n = ints.shape[1]
        reason = torch.empty(n, dtype=torch.int8, device=self.device)
        if n:
            _round_kernel[(triton.cdiv(n, BLOCK),)](
                ints, floats, n, self.n_stocks, self.step, self.seq, self.time, self.closed, self.acc,
                self.close, self.has_close, self.log_wap, self.ring, self.head, reason, self.clock,
                self.limits.max_sequence_gap, self.limits.max_time_ahead_s, **_constants())
            accepted = torch.where(reason == 0, floats[0], -torch.inf)
            torch.maximum(self.clock, accepted.max(), out=self.clock)
        return reason

    def apply_round(self, b: UpdateBatch) -> np.ndarray:
        return self.apply_round_device(*self.upload(b)).cpu().numpy()

    def apply(self, b: UpdateBatch) -> np.ndarray:
        """Like OnlineState.apply: rounds split on the host, one launch each."""
        reason = np.zeros(len(b), np.int8)
        for rnd in rounds(b.stock_id):
            reason[rnd] = self.apply_round(b.take(rnd))
        return reason


# ---- offline -------------------------------------------------------------------------------

@_jit
def _book_rows_kernel(cols, group, seconds, n, sums, close, has,
                      STEPS: tl.constexpr, STEP_S: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < n
    prev = live & (i > 0)
    grp = tl.load(group + i, mask=live, other=0)
    cell = grp * STEPS + tl.minimum(tl.load(seconds + i, mask=live, other=0) // STEP_S, STEPS - 1)
    bid1 = _col(cols, 0, n, i, live)
    ask1 = _col(cols, 1, n, i, live)
    bid2 = _col(cols, 2, n, i, live)
    ask2 = _col(cols, 3, n, i, live)
    bs1 = _col(cols, 4, n, i, live)
    as1 = _col(cols, 5, n, i, live)
    bs2 = _col(cols, 6, n, i, live)
    as2 = _col(cols, 7, n, i, live)
    w1 = (bid1 * as1 + ask1 * bs1) / (bs1 + as1)
    w2 = (bid2 * as2 + ask2 * bs2) / (bs2 + as2)
    p1 = (_col(cols, 0, n, i - 1, prev) * _col(cols, 5, n, i - 1, prev)
          + _col(cols, 1, n, i - 1, prev) * _col(cols, 4, n, i - 1, prev)) / (
        _col(cols, 4, n, i - 1, prev) + _col(cols, 5, n, i - 1, prev))
    p2 = (_col(cols, 2, n, i - 1, prev) * _col(cols, 7, n, i - 1, prev)
          + _col(cols, 3, n, i - 1, prev) * _col(cols, 6, n, i - 1, prev)) / (
        _col(cols, 6, n, i - 1, prev) + _col(cols, 7, n, i - 1, prev))
    same = prev & (tl.load(group + i - 1, mask=prev, other=-1) == grp)
    r1 = tl.where(same, libdevice.log(w1) - libdevice.log(p1), 0.0)
    r2 = tl.where(same, libdevice.log(w2) - libdevice.log(p2), 0.0)
    tl.atomic_add(sums + cell * 4 + 0, r1 * r1, mask=live, sem="relaxed")
    tl.atomic_add(sums + cell * 4 + 1, r2 * r2, mask=live, sem="relaxed")
    tl.atomic_add(sums + cell * 4 + 2, r1, mask=live, sem="relaxed")
    tl.atomic_add(sums + cell * 4 + 3, tl.where(live, 1.0, 0.0), mask=live, sem="relaxed")
    # the cell's last row holds its close state (rows are sorted by group, seconds)
    nxt = live & (i + 1 < n)
    next_cell = (tl.load(group + i + 1, mask=nxt, other=-1) * STEPS
                 + tl.minimum(tl.load(seconds + i + 1, mask=nxt, other=0) // STEP_S, STEPS - 1))
    last = live & (~nxt | (next_cell != cell))
    bid_depth = bs1 + bs2
    ask_depth = as1 + as2
    total = bid_depth + ask_depth
    tl.store(close + cell * 5 + 0, ask1 / bid1 - 1.0, mask=last)
    tl.store(close + cell * 5 + 1, w1 / w2 - 1.0, mask=last)
    tl.store(close + cell * 5 + 2, (bid_depth - ask_depth) / total, mask=last)
    tl.store(close + cell * 5 + 3, libdevice.log1p(total), mask=last)
    tl.store(close + cell * 5 + 4, (bid1 + ask1) / 2.0, mask=last)
    tl.store(has + cell, tl.full([BLOCK], 1, tl.int8), mask=last)


@_jit
def _trade_rows_kernel(cols, group, seconds, n, sums,
                       STEPS: tl.constexpr, STEP_S: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = i < n
    grp = tl.load(group + i, mask=live, other=0)
    cell = grp * STEPS + tl.minimum(tl.load(seconds + i, mask=live, other=0) // STEP_S, STEPS - 1)
    price = _col(cols, 0, n, i, live)
    size = _col(cols, 1, n, i, live)
    tl.atomic_add(sums + cell * 4 + 0, size, mask=live, sem="relaxed")
    tl.atomic_add(sums + cell * 4 + 1, size * price, mask=live, sem="relaxed")
    tl.atomic_add(sums + cell * 4 + 2, tl.where(live, 1.0, 0.0), mask=live, sem="relaxed")
    tl.atomic_add(sums + cell * 4 + 3, _col(cols, 2, n, i, live), mask=live, sem="relaxed")


@_jit
def _finish_kernel(n_groups, sums, tsums, close, has, out,
                   STEPS: tl.constexpr, NF: tl.constexpr, I_RV1: tl.constexpr, I_RV2: tl.constexpr,
                   I_RET: tl.constexpr, I_SPREAD: tl.constexpr, I_BAL: tl.constexpr, I_IMB: tl.constexpr,
                   I_SIZE: tl.constexpr, I_BOOKS: tl.constexpr, I_VOL: tl.constexpr,
                   I_TRADES: tl.constexpr, I_ORDERS: tl.constexpr, I_PREM: tl.constexpr,
                   BLOCK: tl.constexpr):
    grp = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = grp < n_groups
    spread = tl.zeros([BLOCK], tl.float64)
    bal = tl.zeros([BLOCK], tl.float64)
    imb = tl.zeros([BLOCK], tl.float64)
    size = tl.zeros([BLOCK], tl.float64)
    mid = tl.zeros([BLOCK], tl.float64)
    for step in range(STEPS):
        cell = grp.to(tl.int64) * STEPS + step
        seen = tl.load(has + cell, mask=live, other=0) != 0  # carry the close state forward
        spread = tl.where(seen, tl.load(close + cell * 5 + 0, mask=live & seen, other=0.0), spread)
        bal = tl.where(seen, tl.load(close + cell * 5 + 1, mask=live & seen, other=0.0), bal)
        imb = tl.where(seen, tl.load(close + cell * 5 + 2, mask=live & seen, other=0.0), imb)
        size = tl.where(seen, tl.load(close + cell * 5 + 3, mask=live & seen, other=0.0), size)
        mid = tl.where(seen, tl.load(close + cell * 5 + 4, mask=live & seen, other=0.0), mid)
        r1sq = tl.load(sums + cell * 4 + 0, mask=live, other=0.0)
        r2sq = tl.load(sums + cell * 4 + 1, mask=live, other=0.0)
        r1 = tl.load(sums + cell * 4 + 2, mask=live, other=0.0)
        books = tl.load(sums + cell * 4 + 3, mask=live, other=0.0)
        volume = tl.load(tsums + cell * 4 + 0, mask=live, other=0.0)
        notional = tl.load(tsums + cell * 4 + 1, mask=live, other=0.0)
        trades = tl.load(tsums + cell * 4 + 2, mask=live, other=0.0)
        orders = tl.load(tsums + cell * 4 + 3, mask=live, other=0.0)
        priced = (volume > 0) & (mid > 0)
        prem = tl.where(priced, notional / tl.where(priced, volume, 1.0) / tl.where(priced, mid, 1.0)
                        - 1.0, 0.0)
        row = out + cell * NF
        tl.store(row + I_RV1, libdevice.sqrt(r1sq).to(tl.float32), mask=live)
        tl.store(row + I_RV2, libdevice.sqrt(r2sq).to(tl.float32), mask=live)
        tl.store(row + I_RET, r1.to(tl.float32), mask=live)
        tl.store(row + I_SPREAD, spread.to(tl.float32), mask=live)
        tl.store(row + I_BAL, bal.to(tl.float32), mask=live)
        tl.store(row + I_IMB, imb.to(tl.float32), mask=live)
        tl.store(row + I_SIZE, size.to(tl.float32), mask=live)
        tl.store(row + I_BOOKS, libdevice.log1p(books).to(tl.float32), mask=live)
        tl.store(row + I_VOL, libdevice.log1p(volume).to(tl.float32), mask=live)
        tl.store(row + I_TRADES, libdevice.log1p(trades).to(tl.float32), mask=live)
        tl.store(row + I_ORDERS, libdevice.log1p(orders).to(tl.float32), mask=live)
        tl.store(row + I_PREM, prem.to(tl.float32), mask=live)


BOOK_IN = ("bid_price1", "ask_price1", "bid_price2", "ask_price2", "bid_size1", "ask_size1",
           "bid_size2", "ask_size2")
TRADE_IN = ("price", "size", "order_count")


def _rows_to_device(cols: Mapping[str, np.ndarray], names: tuple[str, ...], group: np.ndarray,
                    device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each column crosses in its own (narrow, Optiver) dtype and is widened to float64 on the
    device: packing float64 on the host cost more than the kernels (2x the bytes, one more pass).
    Each goes through page-locked memory (torch's caching host allocator, reused across calls):
    one DMA instead of the driver's staging of pageable memory (H200, the demo rows' 255 MB:
    34.6 -> 6.6 ms, docs/BENCHMARKS.md)."""
    import torch

    def up(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).pin_memory().to(device, non_blocking=True)

    packed = (torch.stack([up(cols[c]).to(torch.float64) for c in names]) if len(group)
              else torch.zeros((len(names), 0), dtype=torch.float64, device=device))
    return packed, up(group).to(torch.int64), up(cols["seconds_in_bucket"]).to(torch.int64)


def compute_windows_device(n_groups: int, book: Mapping[str, np.ndarray], book_group: np.ndarray,
                           trade: Mapping[str, np.ndarray], trade_group: np.ndarray,
                           device: str = "cuda") -> torch.Tensor:
    """offline.compute_windows on the GPU; the windows stay on the device, float32."""
    import torch

    n_cells = n_groups * STEPS
    consts = dict(STEPS=STEPS, STEP_S=STEP_SECONDS, BLOCK=BLOCK)
    sums = torch.zeros(n_cells * 4, dtype=torch.float64, device=device)
    tsums = torch.zeros(n_cells * 4, dtype=torch.float64, device=device)
    close = torch.zeros(n_cells * 5, dtype=torch.float64, device=device)
    has = torch.zeros(n_cells, dtype=torch.int8, device=device)
    out = torch.empty((n_groups, STEPS, N_FEATURES), dtype=torch.float32, device=device)
    bcols, bgroup, bsec = _rows_to_device(book, BOOK_IN, book_group, device)
    tcols, tgroup, tsec = _rows_to_device(trade, TRADE_IN, trade_group, device)
    if len(bgroup):
        _book_rows_kernel[(triton.cdiv(len(bgroup), BLOCK),)](bcols, bgroup, bsec, len(bgroup), sums, close,
                                                              has, **consts)
    if len(tgroup):
        _trade_rows_kernel[(triton.cdiv(len(tgroup), BLOCK),)](tcols, tgroup, tsec, len(tgroup), tsums,
                                                               **consts)
    if n_groups:
        idx = {k: v for k, v in _constants().items() if k.startswith("I_")}
        _finish_kernel[(triton.cdiv(n_groups, BLOCK),)](n_groups, sums, tsums, close, has, out,
                                                        STEPS=STEPS, NF=N_FEATURES, BLOCK=BLOCK, **idx)
    return out


def compute_windows_gpu(n_groups: int, book: Mapping[str, np.ndarray], book_group: np.ndarray,
                        trade: Mapping[str, np.ndarray], trade_group: np.ndarray,
                        device: str = "cuda") -> np.ndarray:
    """Same signature and result as offline.compute_windows (transfers both ways included).
    The windows come back into page-locked memory, which the array keeps (its base is the
    tensor): a copy into fresh pageable memory took 41 ms for the demo's 58 MB, this 1.2 ms."""
    import torch

    windows = compute_windows_device(n_groups, book, book_group, trade, trade_group, device)
    host = torch.empty(windows.shape, dtype=windows.dtype, pin_memory=True)
    host.copy_(windows)  # blocking: the array is read next
    return host.numpy()


@functools.cache
def available() -> str:
    """'' when the GPU path can run here, else why not (for skips and the bench)."""
    if triton is None:
        return "triton is not installed"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return "" if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is false)"

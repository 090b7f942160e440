"""Triton kernels give the numpy path's numbers (runs on a CUDA host; skips with a reason on CPU).

Imports only numpy, torch, triton and rtvol.features so it runs in the slim GPU image:
    python3 -m pytest --noconftest -m gpu tests/unit/test_triton_kernels.py
"""

from __future__ import annotations

import numpy as np
import pytest

from rtvol.features import offline
from rtvol.features import triton_kernels as tk
from rtvol.features.online import OnlineState, rounds
from rtvol.features.online_batch import BOOK, TRADE, UpdateBatch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(tk.available()), reason=tk.available() or "ok")]
N_STOCKS = 64


def _stream(n_rounds: int, seed: int) -> list[UpdateBatch]:
    """Snapshot rounds whose clocks jump (steps, buckets and > STEPS-step gaps close) plus bad rows."""
    rng = np.random.default_rng(seed)
    clock = np.zeros(N_STOCKS)
    seq = np.zeros(N_STOCKS, np.int64)
    mid = np.ones(N_STOCKS)
    out = []
    for _ in range(n_rounds):
        n = N_STOCKS + 8
        stock = np.r_[rng.permutation(N_STOCKS), rng.integers(-2, N_STOCKS + 3, 8)]
        s = np.clip(stock, 0, N_STOCKS - 1)
        jump = rng.choice([0.0, 1.0, 7.0, 30.0, 700.0], size=n, p=[0.2, 0.4, 0.25, 0.13, 0.02])
        clock[s[:N_STOCKS]] += jump[:N_STOCKS]
        seq[s[:N_STOCKS]] += 1
        mid *= np.exp(rng.normal(0, 1e-3, N_STOCKS))
        m = mid[s]
        half = m * 5e-4
        sizes = rng.integers(1, 500, (4, n)).astype(float)
        cols = {"stock_id": stock, "time": clock[s] - rng.choice([0.0, 40.0], n, p=[0.95, 0.05]),
                "seq": seq[s] - rng.choice([0, 1, 3], n, p=[0.9, 0.05, 0.05]),
                "kind": rng.choice([BOOK, TRADE, 5], n, p=[0.75, 0.23, 0.02]), "bid1": m - half,
                "ask1": m + half, "bid2": m - 3 * half, "ask2": m + 3 * half, "bid_size1": sizes[0],
                "ask_size1": sizes[1], "bid_size2": sizes[2], "ask_size2": sizes[3], "price": m,
                "size": sizes[0], "order_count": rng.integers(0, 4, n).astype(float)}
        bad = rng.random(n) < 0.05  # crossed, locked, NaN, zero size
        pick = rng.integers(0, 3, n)
        cols["bid1"] = np.where(bad, np.select([pick == 0, pick == 1], [m + 2 * half, m + half], np.nan),
                                cols["bid1"])
        cols["size"] = np.where(rng.random(n) < 0.02, 0.0, cols["size"])
        # implausible values and jumps past the stock's clocks: rejected the same way by both paths
        cols["ask_size1"] = np.where(rng.random(n) < 0.01, 1e308, cols["ask_size1"])
        cols["time"] = cols["time"] + np.where(rng.random(n) < 0.01, 1e6, 0.0)
        cols["seq"] = cols["seq"] + np.where(rng.random(n) < 0.01, 10**7, 0)
        out.append(UpdateBatch.from_columns(cols))
    return out


def test_snapshot_round_kernel_matches_the_numpy_state() -> None:
    cpu, gpu = OnlineState(N_STOCKS), tk.GpuOnlineState(N_STOCKS)
    for b in _stream(300, seed=1):
        np.testing.assert_array_equal(gpu.apply(b), cpu.apply(b))
    got = gpu.to_cpu()
    assert got.clock == cpu.clock
    for name in ("step", "seq", "closed", "head", "has_close"):
        np.testing.assert_array_equal(getattr(got, name), getattr(cpu, name), err_msg=name)
    assert cpu.closed.min() > 0 and cpu.closed.max() > 2 * 50  # steps and buckets did close
    for name in ("time", "acc", "close", "log_wap"):
        np.testing.assert_allclose(getattr(got, name), getattr(cpu, name), rtol=1e-12, atol=1e-15,
                                   err_msg=name)
    np.testing.assert_allclose(got.windows(np.arange(N_STOCKS)), cpu.windows(np.arange(N_STOCKS)),
                               rtol=1e-6, atol=1e-7)


def test_one_round_is_one_launch_over_every_stock() -> None:
    b = _stream(1, seed=2)[0]
    assert len(rounds(b.stock_id)) > 1  # the bad ids repeat stocks: apply splits them ...
    first = b.take(np.arange(N_STOCKS))  # ... one stock each: a single round, a single launch
    cpu, gpu = OnlineState(N_STOCKS), tk.GpuOnlineState(N_STOCKS)
    np.testing.assert_array_equal(gpu.apply_round(first), cpu.apply(first))


def _rows(n_groups: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray],
                                              np.ndarray]:
    rng = np.random.default_rng(seed)
    per = rng.integers(0, 120, n_groups)  # some buckets have no rows at all
    group = np.repeat(np.arange(n_groups), per)
    sec = np.concatenate([np.sort(rng.integers(0, 600, k)) for k in per])
    mid = np.exp(np.cumsum(rng.normal(0, 1e-3, len(group)))).astype(np.float32)
    sizes = rng.integers(1, 300, (4, len(group)))
    book = {"seconds_in_bucket": sec, "bid_price1": mid * 0.999, "ask_price1": mid * 1.001,
            "bid_price2": mid * 0.998, "ask_price2": mid * 1.002, "bid_size1": sizes[0],
            "ask_size1": sizes[1], "bid_size2": sizes[2], "ask_size2": sizes[3]}
    tper = rng.integers(0, 30, n_groups)
    tgroup = np.repeat(np.arange(n_groups), tper)
    trade = {"seconds_in_bucket": np.concatenate([np.sort(rng.integers(0, 600, k)) for k in tper]),
             "price": np.exp(rng.normal(0, 1e-2, len(tgroup))).astype(np.float32),
             "size": rng.integers(1, 200, len(tgroup)), "order_count": rng.integers(1, 9, len(tgroup))}
    return book, group, trade, tgroup


def test_offline_kernels_match_compute_windows() -> None:
    book, group, trade, tgroup = _rows(700, seed=3)
    want = offline.compute_windows(700, book, group, trade, tgroup)
    got = tk.compute_windows_gpu(700, book, group, trade, tgroup)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

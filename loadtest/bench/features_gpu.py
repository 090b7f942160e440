"""`rtvol bench features --gpu`: Triton kernels vs the numpy path, transfers included.

* snapshot: one round of ``--stocks`` updates (one per stock) applied to the online state:
  numpy ``OnlineState.apply`` vs host->device copy of the round + one kernel launch + the
  reasons copied back;
* offline: windows of ``--groups`` buckets (the demo dataset is 40 stocks x 600 time_ids =
  24,000) from in-memory rows: ``offline.compute_windows`` vs host->device copy of the rows,
  the kernels and the windows copied back.
Imports only numpy, torch, triton and rtvol.features, so it runs in the slim GPU image:
``python3 -m rtvol.loadtest.bench.features_gpu``. Times are medians of ``--repeat`` runs after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from rtvol.features import offline
from rtvol.features.online import OnlineState
from rtvol.features.online_replay import snapshot_batches


def _median_s(fn: Callable[[], object], repeat: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def demo_rows(n_groups: int, book_per_group: int = 200, trades_per_group: int = 40, seed: int = 0
              ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Book/trade rows sorted by (group, second), about the density of the synthetic demo data."""
    rng = np.random.default_rng(seed)

    def seconds(per: int) -> tuple[np.ndarray, np.ndarray]:
        group = np.repeat(np.arange(n_groups), per)
        return group, np.sort(rng.integers(0, 600, (n_groups, per)), axis=1).ravel()

    group, sec = seconds(book_per_group)
    mid = np.exp(np.cumsum(rng.normal(0, 1e-4, len(group)))).astype(np.float32)
    sizes = rng.integers(1, 500, (4, len(group))).astype(np.int32)
    book = {"seconds_in_bucket": sec, "bid_price1": mid * np.float32(0.9995),
            "ask_price1": mid * np.float32(1.0005), "bid_price2": mid * np.float32(0.999),
            "ask_price2": mid * np.float32(1.001), "bid_size1": sizes[0], "ask_size1": sizes[1],
            "bid_size2": sizes[2], "ask_size2": sizes[3]}
    tgroup, tsec = seconds(trades_per_group)
    trade = {"seconds_in_bucket": tsec, "price": np.ones(len(tgroup), np.float32),
             "size": rng.integers(1, 300, len(tgroup)).astype(np.int32),
             "order_count": rng.integers(1, 9, len(tgroup)).astype(np.int16)}
    return book, group, trade, tgroup


def run(stocks: int, groups: int, repeat: int) -> dict[str, float | str]:
    import torch

    from rtvol.features import triton_kernels as tk

    why = tk.available()
    if why:
        return {"skipped": why}
    sync = torch.cuda.synchronize
    out: dict[str, float] = {}
    warm, *batches = snapshot_batches(stocks, repeat + 1)
    cpu, gpu = OnlineState(stocks), tk.GpuOnlineState(stocks)
    cpu.apply(warm)
    gpu.apply_round(warm)  # compiles the kernel
    it = iter(batches)
    out["snapshot_cpu_ms"] = _median_s(lambda: cpu.apply(next(it)), repeat, sync) * 1e3
    it = iter(batches)
    out["snapshot_gpu_ms"] = _median_s(lambda: gpu.apply_round(next(it)), repeat, sync) * 1e3
    fresh = tk.GpuOnlineState(stocks)  # the same rounds again, already on the device
    fresh.apply_round(warm)
    uploaded = iter([fresh.upload(b) for b in batches])
    out["snapshot_gpu_kernel_only_ms"] = _median_s(lambda: fresh.apply_round_device(*next(uploaded)),
                                                   repeat, sync) * 1e3
    out["snapshot_ratio"] = out["snapshot_cpu_ms"] / out["snapshot_gpu_ms"]

    book, group, trade, tgroup = demo_rows(groups)
    tk.compute_windows_gpu(8, *_head(book, group, trade, tgroup, 8))  # compile
    out["offline_rows"] = float(len(group) + len(tgroup))
    out["offline_cpu_ms"] = _median_s(lambda: offline.compute_windows(groups, book, group, trade, tgroup),
                                      max(1, repeat // 10), sync) * 1e3
    out["offline_gpu_ms"] = _median_s(lambda: tk.compute_windows_gpu(groups, book, group, trade, tgroup),
                                      max(1, repeat // 10), sync) * 1e3
    out["offline_ratio"] = out["offline_cpu_ms"] / out["offline_gpu_ms"]
    return {"device": torch.cuda.get_device_name(), **{k: round(v, 4) for k, v in out.items()}}


def _head(book: dict[str, np.ndarray], group: np.ndarray, trade: dict[str, np.ndarray], tgroup: np.ndarray,
          n: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]:
    b, t = group < n, tgroup < n
    return {k: v[b] for k, v in book.items()}, group[b], {k: v[t] for k, v in trade.items()}, tgroup[t]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rtvol bench features --gpu", description=__doc__)
    p.add_argument("--stocks", type=int, default=8000)
    p.add_argument("--groups", type=int, default=24_000)
    p.add_argument("--repeat", type=int, default=50)
    a, _ = p.parse_known_args(list(argv or []))
    print(json.dumps(run(a.stocks, a.groups, a.repeat), indent=1))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

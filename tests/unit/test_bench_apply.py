"""`rtvol bench apply` runs on the pipeline bench's own feed and counts what it applied."""

from __future__ import annotations

import asyncio

from rtvol.loadtest.bench.apply import bench_shape, parse_shapes


def test_bench_apply_applies_the_pipeline_feed() -> None:
    r = asyncio.run(bench_shape(batch=10, group=2, stocks=20, updates=2_000, speedup=100.0, consumers=True))
    assert r["messages"] == 180 and r["cpu_us_per_update"] > 0  # 200 messages less a tenth of warm-up
    assert r["store_flush_cpu_us_per_update"] is None  # no --redis-url
    assert parse_shapes("100x1,1x10") == [(100, 1), (1, 10)]

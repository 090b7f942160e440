"""The latency histogram every benchmark uses: HDR, 1 µs .. 10 s, 3 significant digits."""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

PERCENTILES = (50, 99, 99.9)


def latency_us() -> HdrHistogram:
    """An empty histogram of latencies in µs."""
    return HdrHistogram(1, 10_000_000, 3)


def record_s(h: HdrHistogram, seconds: float) -> None:
    """Record a duration given in seconds (at least 1 µs: HDR's lowest value)."""
    h.record_value(max(1, int(seconds * 1e6)))


def summary(h: HdrHistogram) -> dict[str, int]:
    """{"p50_us", "p99_us", "p99_9_us", "n"}: the figures the benchmark tables report."""
    return {"p50_us": h.get_value_at_percentile(50), "p99_us": h.get_value_at_percentile(99),
            "p99_9_us": h.get_value_at_percentile(99.9), "n": h.get_total_count()}

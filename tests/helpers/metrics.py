"""Reading a service's Prometheus text."""

from __future__ import annotations

import re

import httpx


def scrape(base: str) -> str:
    return httpx.get(base + "/metrics", timeout=5).text


def total(base: str, name: str) -> float:
    """The sum of every series of ``name`` on ``base``/metrics (all label values)."""
    text = scrape(base)
    return sum(float(v) for v in re.findall(re.escape(name) + r"(?:\{[^}]*\})? ([0-9.e+]+)", text))


def count_above(base: str, histogram: str, le: str) -> float:
    """Observations of ``histogram`` above its bucket ``le`` (as Prometheus prints it, e.g. "0.5"),
    over every series on ``base``/metrics; raises if no series has that bucket (a misspelt name or
    bound would otherwise read as nothing above it)."""
    text = scrape(base)

    def bucket(bound: str) -> float:
        counts = re.findall(re.escape(histogram) + r'_bucket\{(?:[^}]*,)?le="' + re.escape(bound)
                            + r'"[^}]*\} ([0-9.e+]+)', text)
        if not counts:
            raise AssertionError(f"no {histogram} series with a bucket le={bound!r} on {base}/metrics")
        return sum(float(v) for v in counts)

    return bucket("+Inf") - bucket(le)

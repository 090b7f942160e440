"""Reading a service's Prometheus text."""

from __future__ import annotations

import re

import httpx


def total(base: str, name: str) -> float:
    """The sum of every series of ``name`` on ``base``/metrics (all label values)."""
    text = httpx.get(base + "/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(re.escape(name) + r"(?:\{[^}]*\})? ([0-9.e+]+)", text))

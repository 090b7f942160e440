"""What the server saw during a load run: its Prometheus histograms scraped before and after,
the difference summarised as percentiles. Set beside the client's figures, they say where a
tail comes from: the handler (rtvol_gateway_request_seconds), the event loop getting to a
ready request late (rtvol_event_loop_lag_seconds), collector pauses (rtvol_gc_pause_seconds),
or connections opened (rtvol_gateway_http_connections_total: each one accepted on the loop).
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# the histograms that explain a gateway's tail (family name -> what a line calls it)
TAIL = {"rtvol_gateway_request_seconds": "handler", "rtvol_event_loop_lag_seconds": "loop lag",
        "rtvol_gc_pause_seconds": "GC pause"}
# and the counters that do (family name without _total -> what a line calls it)
COUNTS = {"rtvol_gateway_http_connections": "HTTP connections accepted"}
PERCENTILES = (50.0, 99.0, 99.9)

Buckets = dict[str, dict[float, float]]  # family -> upper bound (s) -> cumulative count, all series summed
Scrape = tuple[Buckets, dict[str, float]]  # and each family's sum (histograms) or value (counters)


def scrape(url: str, api_key: str = "", timeout_s: float = 5.0) -> Scrape:
    """The TAIL histograms and COUNTS counters at ``url`` (a /metrics address)."""
    request = urllib.request.Request(url, headers={"X-API-Key": api_key} if api_key else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        text = answer.read().decode()
    return parse(text)


def parse(text: str) -> Scrape:
    buckets: Buckets = {name: {} for name in TAIL}
    sums = dict.fromkeys([*TAIL, *COUNTS], 0.0)
    for family in text_string_to_metric_families(text):
        if family.name not in sums:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                sums[family.name] += sample.value
            elif sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                counts = buckets[family.name]
                counts[bound] = counts.get(bound, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                sums[family.name] += sample.value
    return buckets, sums


def percentile(cumulative: Mapping[float, float], p: float) -> float:
    """The upper bound of the bucket holding the ``p``-th percentile (inf: beyond the last)."""
    total = cumulative.get(math.inf, 0.0)
    if total <= 0:
        return 0.0
    for bound in sorted(cumulative):
        if cumulative[bound] >= total * p / 100:
            return bound
    return math.inf


def delta(before: Scrape, after: Scrape) -> dict[str, dict[str, Any]]:
    """Per TAIL histogram over the run: count, total seconds, percentiles (bucket upper bounds,
    ms); per COUNTS counter: its increase."""
    out: dict[str, dict[str, Any]] = {}
    for name, label in TAIL.items():
        counts = {b: n - before[0][name].get(b, 0.0) for b, n in after[0][name].items()}
        entry: dict[str, Any] = {"count": int(counts.get(math.inf, 0.0)),
                                 "total_s": round(after[1][name] - before[1][name], 4)}
        entry |= {f"p{p:g}_ms": percentile(counts, p) * 1000 for p in PERCENTILES}
        out[label] = entry
    for name, label in COUNTS.items():
        out[label] = {"count": int(after[1][name] - before[1][name])}
    return out


def line(d: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: each histogram's count, total and percentiles (bucket upper bounds)."""
    parts = []
    for label, e in d.items():
        if len(e) == 1:  # a counter
            parts.append(f"{label}: {e['count']:,}")
            continue
        pct = " ".join(f"p{p:g} <={e[f'p{p:g}_ms']:g}" for p in PERCENTILES)
        parts.append(f"{label}: {e['count']:,} (total {e['total_s']:g} s) ms {pct}")
    return "server: " + "; ".join(parts)

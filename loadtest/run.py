"""`rtvol loadtest`: one open-loop run, or a sweep for the highest rate that meets a p99 target."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtvol.loadtest import fanout, openloop, report
from rtvol.tls import ClientTLS


@dataclass(frozen=True)
class Plan:
    target: str
    duration_s: float
    stocks: Sequence[int]
    ids_per_request: int = 1
    max_inflight: int = 256
    timeout_s: float = 2.0
    client_tls: ClientTLS | None = None  # https:// and grpc over TLS
    api_key: str = ""
    grpc_connections: int = 1  # in all: shared out over the generator processes
    processes: int = 1  # generator processes the schedule is split over (loadtest/fanout.py)


def measure(plan: Plan, rate: float) -> openloop.Result:
    return fanout.run(plan, rate, plan.processes)


def once(plan: Plan, rate: float, out: Path) -> dict[str, Any]:
    """Run at ``rate`` and write the report under ``out``; returns the summary."""
    res = measure(plan, rate)
    s = report.summary(res, plan.target)
    s["files"] = [str(p) for p in report.write(res, s, out)]
    return s


def sweep(plan: Plan, start_rate: float, p99_target_ms: float, out: Path, steps: int = 6,
          factor: float = 1.6, max_error_rate: float = 0.01) -> dict[str, Any]:
    """Raise the rate by ``factor`` per step (at most ``steps``) until p99 or errors go over.

    Returns the highest passing rate (0 when even the first fails) and every step's summary.
    """
    results: list[dict[str, Any]] = []
    best = 0.0
    rate = start_rate
    for _ in range(steps):
        s = once(plan, rate, out / f"rate_{rate:.0f}")
        s["pass"] = s["latency_ms"]["p99"] <= p99_target_ms and s["error_rate"] <= max_error_rate
        results.append(s)
        print(("PASS " if s["pass"] else "FAIL ") + report.line(s), flush=True)
        if not s["pass"]:
            break
        best = rate
        rate *= factor
    doc = {"p99_target_ms": p99_target_ms, "max_error_rate": max_error_rate, "best_rate": best,
           "steps": results}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(doc, indent=2))
    return doc

"""Latency reports: HDR histogram percentiles, errors by kind, JSON and two PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from rtvol.loadtest.openloop import Result

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MAX_US = 3_600_000_000  # one hour: far above any bounded request
SUSPECT_CORES = 0.8  # a generator process this busy may be late with its sends


def histogram(res: Result) -> HdrHistogram:
    h = HdrHistogram(1, MAX_US, 3)
    for s in res.latency_s:
        h.record_value(min(MAX_US, max(1, round(s * 1e6))))
    return h


def summary(res: Result, target: str) -> dict[str, Any]:
    h = histogram(res)
    ms = {f"p{p:g}": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    return {"target": target, "rate": res.rate, "duration_s": res.duration_s, "elapsed_s": res.elapsed_s,
            "scheduled": res.scheduled, "ok": res.ok, "errors": dict(res.errors),
            "error_rate": (res.scheduled - res.ok) / res.scheduled if res.scheduled else 0.0,
            "achieved_rate": res.ok / res.elapsed_s if res.elapsed_s > 0 else 0.0,
            "latency_ms": ms | {"max": h.get_max_value() / 1000 if res.ok else 0.0,
                                "mean": h.get_mean_value() / 1000 if res.ok else 0.0},
            "generator": cpu_report(res)}


def cpu_report(res: Result) -> dict[str, Any]:
    """What the generator itself spent: CPU µs a scheduled request, and the busiest process's
    share of a core (near 1: the generator, not the target, may be what limits the figures)."""
    busiest = max(res.generator_cpu_s, default=0.0) / res.elapsed_s if res.elapsed_s > 0 else 0.0
    late = np.percentile(res.send_late_s, PERCENTILES[2:]) * 1000 if res.send_late_s else [0.0, 0.0]
    return {"processes": len(res.generator_cpu_s),
            "send_late_ms": {"p99": round(float(late[0]), 3), "p99.9": round(float(late[1]), 3)},
            "cpu_us_per_request": round(sum(res.generator_cpu_s) / max(1, res.scheduled) * 1e6, 1),
            "busiest_process_cores": round(busiest, 2),
            "suspect": busiest >= SUSPECT_CORES}


def line(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    errors = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items())) or "none"
    return (f"{s['target']} at {s['rate']:,.0f}/s for {s['duration_s']:g} s: "
            f"{s['ok']:,}/{s['scheduled']:,} ok "
            f"({s['achieved_rate']:,.0f}/s); latency ms p50 {lat['p50']:.2f} p90 {lat['p90']:.2f} "
            f"p99 {lat['p99']:.2f} p99.9 {lat['p99.9']:.2f} max {lat['max']:.2f}; errors: {errors}; "
            + (generator_line(s["generator"]) if "generator" in s else "generator not recorded"))


def generator_line(g: dict[str, Any]) -> str:
    """The generator's own cost beside the figures it produced, with a warning when it may be
    what limited them."""
    text = (f"generator {g['processes']} process(es), {g['cpu_us_per_request']:g} µs CPU a request, "
            f"busiest process {g['busiest_process_cores']:.2f} of a core")
    if "send_late_ms" in g:  # the generator's own lag is in every latency it measured
        text += f", sends late p99 {g['send_late_ms']['p99']:.2f} p99.9 {g['send_late_ms']['p99.9']:.2f} ms"
    if g["suspect"]:
        text += " -- WARNING: a generator process near a full core: these figures may measure the " \
                "generator (use more --processes)"
    return text


def _plots(res: Result, out: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out / "latency_over_time.png", out / "percentile_spectrum.png"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter(res.intended_s, [s * 1000 for s in res.latency_s], s=2, alpha=0.5)
    ax.set(xlabel="intended send time (s)", ylabel="latency (ms)", yscale="log", title=title)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    h = histogram(res)
    nines = [1 - 10 ** (-k / 4) for k in range(0, 21)]  # 0 .. 99.999 %
    fig, ax = plt.subplots(figsize=(8, 4))
    if res.ok:
        ax.plot([1 / (1 - q) for q in nines], [h.get_value_at_percentile(q * 100) / 1000 for q in nines])
    ax.set_xscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    ax.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax.set(xlabel="percentile", ylabel="latency (ms)", title=title + ": percentile spectrum")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths


def write(res: Result, s: dict[str, Any], out: Path) -> list[Path]:
    """report.json, latency_over_time.png and percentile_spectrum.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(s, indent=2))
    return [out / "report.json", *_plots(res, out, f"{s['target']} @ {s['rate']:,.0f}/s")]

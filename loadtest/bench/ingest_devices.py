"""`rtvol bench ingest-devices`: the feature service's ingest on the CPU (numpy) and on the GPU
(Triton kernels), and where the GPU starts to win.

For each universe size N (``--universes``) and message size k (``--batches``: updates per
Ingest message, each stock at most once, as a feeder batching a snapshot sends them), one
message at a time goes through the service's own path (Ingestor.apply_many: decode, the
online state's apply, marking the changed windows), in process, no gRPC (its cost is the
same on both devices). Per cell: p50/p99/p99.9 per message and updates/s (k / mean time),
then per N the smallest k at which the GPU's p50 beats the CPU's: the crossover. A feed of R
updates/s sent in messages of k takes R/k messages/s: the device whose time per message is
below k/R keeps up.

    rtvol bench ingest-devices [--universes 500,2000,8000,32000] [--batches 1,100,1000,8000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rtvol import histograms
from rtvol.features.online_cuda import DEVICES, online_state
from rtvol.features.online_replay import snapshot_batches
from rtvol.features.spec import spec_hash
from rtvol.featurestore import InProcessStore
from rtvol.ingest_codec import encode_columns
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.services.feature.publisher import Publisher
from rtvol.services.feature.servicer import Ingestor

WARMUP = 20  # messages: the first launch compiles the Triton kernel


def messages(n_stocks: int, k: int, count: int) -> list[pb.IngestRequest]:
    """``count`` messages of ``k`` stocks each, cycling through snapshot rounds of ``n_stocks``."""
    per_round = -(-n_stocks // k)
    out: list[pb.IngestRequest] = []
    for b in snapshot_batches(n_stocks, -(-count // per_round)):
        for start in range(0, n_stocks, k):
            if len(out) == count:
                return out
            out.append(encode_columns(b.take(np.arange(start, min(start + k, n_stocks)))))
    return out


def cell(n_stocks: int, k: int, device: str) -> dict[str, Any]:
    count = min(1000, max(50, 200_000 // k)) + WARMUP
    state = online_state(n_stocks, device=device)
    ingest = Ingestor(state, Publisher(state, InProcessStore(spec_hash()), 0.0), 1 << 20)
    h = histograms.latency_us()
    accepted, total_s = 0, 0.0
    for i, msg in enumerate(messages(n_stocks, k, count)):
        started = time.perf_counter()
        counts = ingest.apply_many([msg], 0)
        took = time.perf_counter() - started
        if i >= WARMUP:
            histograms.record_s(h, took)
            accepted, total_s = accepted + int(counts[0]), total_s + took
    assert accepted == (count - WARMUP) * k, "every update of the bench's feed is valid"
    q = {f"p{p}_us": round(h.get_value_at_percentile(p), 1) for p in histograms.PERCENTILES}
    return {"stocks": n_stocks, "batch": k, "device": device, **q,
            "updates_per_s": round(accepted / total_s)}


def crossover(rows: list[dict[str, Any]]) -> dict[int, int | None]:
    """Per universe: the smallest message size at which the GPU's p50 is below the CPU's."""
    out: dict[int, int | None] = {}
    for n in sorted({r["stocks"] for r in rows}):
        p50 = {(r["batch"], r["device"]): r["p50_us"] for r in rows if r["stocks"] == n}
        wins = [k for (k, d) in p50 if d == "cuda" and (k, "cpu") in p50 and p50[k, "cuda"] < p50[k, "cpu"]]
        out[n] = min(wins) if wins else None
    return out


def table(rows: list[dict[str, Any]], cross: dict[int, int | None]) -> str:
    lines = [f"{'stocks':>7}{'batch':>7}{'device':>7}{'p50 us':>10}{'p99 us':>10}{'p99.9 us':>10}"
             f"{'updates/s':>14}"]
    lines += [f"{r['stocks']:>7}{r['batch']:>7}{r['device']:>7}{r['p50_us']:>10,.0f}{r['p99_us']:>10,.0f}"
              f"{r['p99.9_us']:>10,.0f}{r['updates_per_s']:>14,}" for r in rows]
    if {"cpu", "cuda"} <= {r["device"] for r in rows}:
        lines += [f"crossover, {n} stocks: " + (f"the GPU is faster from {k} updates per message"
                                                 if k else "the GPU is never faster here")
                  for n, k in cross.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="rtvol bench ingest-devices", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--universes", default="500,2000,8000,32000", help="universe sizes, comma-separated")
    p.add_argument("--batches", default="1,100,1000,8000",
                   help="updates per message, comma-separated (sizes above a universe are skipped)")
    p.add_argument("--devices", default=",".join(DEVICES), help="cpu and/or cuda")
    p.add_argument("--out", type=Path, default=Path("bench-ingest-devices.json"))
    a = p.parse_args(argv)
    devices = a.devices.split(",")
    rows = [cell(n, k, d) for n in map(int, a.universes.split(","))
            for k in map(int, a.batches.split(",")) if k <= n for d in devices]
    cross = crossover(rows)
    a.out.write_text(json.dumps({"cells": rows, "crossover": cross}, indent=2) + "\n")
    print(table(rows, cross))

"""Live accuracy against offline accuracy on the same buckets.

Replays a dataset bucket by bucket into a running stack (a feature service, and a gateway that
follows its Watch stream), asks the gateway for every stock's signal after each bucket (so each
whole bucket's window is served once, however the pipeline coalesces windows), then reads the
gateway's live-scoring counters (services/gateway/scorer.py) and computes the same figure
offline: the model run on the offline windows of bucket t (rtvol.features.offline, what
training reads), scored against the WAP1 realized volatility of bucket t+1 computed from the
raw book rows (offline.realized_volatility, the target `rtvol data from-ticklog` writes).

    python -m rtvol.loadtest.live_accuracy --data DIR --repo MODELS --feature HOST:PORT \\
        --gateway HOST:PORT --metrics http://HOST:PORT [--buckets 0:40] [--out live.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
from prometheus_client.parser import text_string_to_metric_families

from rtvol.features import offline
from rtvol.features.spec import BUCKET_SECONDS
from rtvol.loadtest import feed
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.proto.v1 import signals_pb2_grpc as pb_grpc
from rtvol.repository import MODEL_FILE, version_dir
from rtvol.training import baselines, dataset, optiver

COLUMNS = {"rtvol_live_squared_percentage_error_total": 0, "rtvol_live_scored_signals_total": 1}


@dataclass(frozen=True)
class Score:
    rmspe: float
    signals: int


def replay(feature: str, gateway: str, data: Path, buckets: range, batch: int = 2000,
           timeout_s: float = 30.0) -> list[int]:
    """Ingest ``buckets`` one Ingest call each (it returns once the gateway holds the bucket's
    last windows), then Predict every stock; returns the stocks."""
    stocks, updates = feed.load(data, buckets)
    bucket = (updates.time // BUCKET_SECONDS).astype(np.int64)
    with grpc.insecure_channel(gateway) as channel:
        predict = pb_grpc.SignalsStub(channel).Predict
        for b in buckets:
            part = updates.take(np.flatnonzero(bucket == b))
            asyncio.run(feed.pump(feature, feed.messages(part, batch), batch=batch, timeout_s=timeout_s))
            answer = predict(pb.PredictRequest(stock_ids=stocks), timeout=timeout_s)
            if errors := [s.error for s in answer.signals if s.error]:
                raise RuntimeError(f"bucket {b}: the gateway answered errors: {errors[:3]}")
    return stocks


def live(before: str, after: str, model: str, role: str = "serving") -> dict[str, Score]:
    """Live RMSPE and scored signals per tier (and ``all``) between two scrapes of a gateway's
    /metrics."""
    start, end = _sums(before, model, role), _sums(after, model, role)
    out = {}
    for key, (sq, n) in end.items():
        sq0, n0 = start.get(key, (0.0, 0.0))
        if n > n0:
            out[key] = Score(math.sqrt((sq - sq0) / (n - n0)), int(n - n0))
    return out


def _sums(metrics_text: str, model: str, role: str) -> dict[str, tuple[float, float]]:
    """(squared percentage errors, scored signals) per tier and ``all``."""
    sums: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = sample.labels
            column = COLUMNS.get(sample.name)
            if column is None or labels.get("model") != model or labels.get("role") != role:
                continue
            for key in (labels["tier"], "all"):
                sums.setdefault(key, [0.0, 0.0])[column] += sample.value
    return {k: (sq, n) for k, (sq, n) in sums.items()}


def offline_score(data: Path, repo: Path, model: str, buckets: range) -> dict[str, Score]:
    """The model on the offline windows of each bucket t (every t whose next bucket is in
    ``buckets`` and has returns): ``next_bucket``, against bucket t+1's realized RV (what the
    live scorer measures); ``target``, against the data's own target (what `rtvol evaluate`
    scores; on synthetic data a hidden bucket that is NOT the next replayed one)."""
    ds = dataset.load(data, progress=False)
    session = ort.InferenceSession(str(version_dir(repo, model) / MODEL_FILE),
                                   providers=["CPUExecutionProvider"])
    (predicted,) = session.run(["rv"], {"window": ds.windows})
    realized = {s: _bucket_rv(data, s) for s in np.unique(ds.stock_id).tolist()}
    following = np.array([realized[s].get(t + 1, 0.0) for s, t in zip(ds.stock_id.tolist(),
                                                                      ds.time_id.tolist(), strict=True)])
    rows = np.isin(ds.time_id, np.asarray(buckets)) & np.isin(ds.time_id + 1, np.asarray(buckets))
    rows &= following > 0
    guess = predicted[rows, 0]
    return {"next_bucket": Score(baselines.rmspe(following[rows], guess), int(rows.sum())),
            "target": Score(baselines.rmspe(ds.target[rows], guess), int(rows.sum()))}


def _bucket_rv(data: Path, stock: int) -> dict[int, float]:
    """WAP1 realized volatility of each bucket of ``stock``, from its book rows."""
    book = optiver.read_book(data, stock)
    cols = {c: book.column(c).to_numpy() for c in book.column_names}
    time_ids, group = np.unique(cols["time_id"], return_inverse=True)
    w = offline.wap(cols["bid_price1"], cols["ask_price1"], cols["bid_size1"], cols["ask_size1"])
    return dict(zip(time_ids.tolist(), offline.realized_volatility(w, group, len(time_ids)).tolist(),
                    strict=True))


def _buckets(text: str) -> range:
    start, stop = (int(x) for x in text.split(":"))
    return range(start, stop)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rtvol.loadtest.live_accuracy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="Optiver-layout data (rtvol data synth)")
    ap.add_argument("--repo", type=Path, required=True, help="the model repository the stack serves")
    ap.add_argument("--model", default="rtvol_cnn", help="the model the gateway serves")
    ap.add_argument("--feature", required=True, help="feature service gRPC HOST:PORT")
    ap.add_argument("--gateway", required=True,
                    help="gateway gRPC HOST:PORT (it follows the feature service)")
    ap.add_argument("--metrics", required=True, help="gateway HTTP base URL (its /metrics)")
    ap.add_argument("--buckets", type=_buckets, default=range(0, 40), help="time_ids START:STOP")
    ap.add_argument("--out", type=Path, help="write the comparison as JSON")
    a = ap.parse_args(argv)
    scrape = a.metrics.rstrip("/") + "/metrics"
    before = httpx.get(scrape, timeout=10).text
    replay(a.feature, a.gateway, a.data, a.buckets)
    scores = live(before, httpx.get(scrape, timeout=10).text, a.model)
    report = {"live": {k: asdict(v) for k, v in scores.items()},
              "offline": {k: asdict(v) for k, v in offline_score(a.data, a.repo, a.model, a.buckets).items()},
              "buckets": [a.buckets.start, a.buckets.stop]}
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Feed the feature service with the tiny dataset's market data, bucket by bucket."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np

from rtvol.features.online_replay import merge, stock_updates
from rtvol.features.spec import BUCKET_SECONDS
from rtvol.proto.v1 import features_pb2 as pb
from rtvol.proto.v1 import features_pb2_grpc as pb_grpc
from services.feature.decode import encode_columns
from training import optiver


def _columns(table) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {c: table.column(c).to_numpy() for c in table.column_names}


def replay(target: str, data: Path, buckets: range) -> list[int]:
    """Ingest the given buckets of every stock (closing each with a watermark); returns the stocks."""
    stocks = optiver.stock_ids(data)
    updates = merge([stock_updates(s, _columns(optiver.read_book(data, s)),
                                   _columns(optiver.read_trade(data, s))) for s in stocks])
    bucket = (updates.time // BUCKET_SECONDS).astype(np.int64)
    msgs = []
    for b in buckets:
        msgs.append(encode_columns(updates.take(np.flatnonzero(bucket == b))))
        msgs.append(pb.IngestRequest(watermark_us=(b + 1) * BUCKET_SECONDS * 1_000_000))
    with grpc.insecure_channel(target) as ch:
        pb_grpc.FeaturesStub(ch).Ingest(iter(msgs), timeout=60)
    return [int(s) for s in stocks]

"""SubscribeColumns: a burst of signals as one message of columns carries every number the
Signal messages of SubscribeBatches carry (the bench's client reads both into the same rows);
a signal without a direction or momentum (tier 3) or with an error comes whole."""

from __future__ import annotations

import math

from rtvol.loadtest.bench.pipeline_subscriber import batch_rows, columns_rows
from rtvol.pipeline_hops import HOPS
from rtvol.proto.v1 import signals_pb2 as pb
from rtvol.services.gateway.columns import to_columns
from rtvol.services.gateway.grpc_api import _pushed
from rtvol.services.gateway.signal import Signal

NOW = 1_800_000_000_000_000


def _signals() -> list[Signal]:
    hops = tuple(NOW - 1000 + i for i in range(len(HOPS) - 1))
    return [Signal(5, 0.0125, (0.2, 0.3, 0.5), -0.25, "rtvol_cnn", "3", 1, NOW - 4_000, NOW - 100,
                   window_version=7, received_us=NOW - 5_000, hops_us=hops),
            Signal(9, 0.5, (0.6, 0.3, 0.1), 0.0, "rtvol_cnn", "2", 2, NOW - 2_500, NOW - 90, stale=True,
                   window_version=3, received_us=NOW - 3_000),  # a redo: no hops
            Signal(11, 0.02, None, None, "volatility_estimate", "", 3, NOW - 9_000, NOW - 80),
            Signal(12, error="no features yet for stock 12")]


def test_columns_carry_what_the_signal_messages_carry() -> None:
    signals = _signals()
    msg = pb.SignalColumns.FromString(to_columns(signals, NOW).SerializeToString())
    assert list(msg.stock_id) == [5, 9] and list(msg.tier) == [1, 2] and list(msg.stale) == [False, True]
    assert list(msg.rv) == [0.0125, 0.5] and list(msg.momentum) == [-0.25, 0.0]
    assert list(msg.direction) == [0.2, 0.3, 0.5, 0.6, 0.3, 0.1]
    assert list(msg.feature_age_ms) == [4.0, 2.5]
    assert list(msg.window_version) == [7, 3] and list(msg.received_us) == [NOW - 5_000, NOW - 3_000]
    names = [(msg.models[i], msg.versions[i]) for i in msg.name]
    assert names == [("rtvol_cnn", "3"), ("rtvol_cnn", "2")] and len(msg.models) == 2
    assert list(msg.others) == [signals[2].to_proto(NOW), signals[3].to_proto(NOW)]
    assert not msg.hops_us  # not asked for
    numbers = [*msg.rv, *msg.direction, *msg.momentum, *msg.feature_age_ms]
    assert all(math.isfinite(x) for x in numbers)


def test_hops_run_per_signal_and_end_with_the_push() -> None:
    signals = _signals()[:2]
    msg = to_columns(signals, NOW, hops=True)
    runs = [list(msg.hops_us[i * len(HOPS):(i + 1) * len(HOPS)]) for i in range(2)]
    assert runs[0] == [*signals[0].hops_us, NOW]
    assert runs[1] == [0] * len(HOPS)  # a signal without hops: zeros, as Subscribe gives it none


def test_the_bench_client_reads_both_streams_alike() -> None:
    signals = _signals()[:3]  # the client counts model signals and tier 3; errors have no stock row
    columns = pb.SignalColumns.FromString(to_columns(signals, NOW, hops=True).SerializeToString())
    batch = pb.SignalBatch.FromString(pb.SignalBatch(signals=_pushed(signals, NOW, True)).SerializeToString())
    from_columns, from_batch = columns_rows(columns, NOW + 7), batch_rows(batch, NOW + 7)
    assert from_columns.tolist() == from_batch.tolist() and len(from_columns) == 3
    assert from_columns[:, 1].tolist() == [5, 9, 11]


def test_an_empty_burst_is_an_empty_message() -> None:
    msg = to_columns([], NOW, hops=True)
    assert msg.ByteSize() == 0 and len(columns_rows(msg, NOW)) == 0

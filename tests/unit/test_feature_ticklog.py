"""Tick log round trip: replay tiny data -> tick log (rotating) -> Optiver layout -> same windows."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rtvol.features import offline
from rtvol.features.online import OnlineState
from rtvol.features.online_batch import UpdateBatch
from rtvol.features.online_replay import merge, snapshot_batches, stock_updates
from rtvol.services.feature.fanout import Consumer, FanOut, Ingested
from rtvol.services.feature.ticklog import TickLog, read_ticklog, recover_part, to_optiver
from rtvol.training import dataset, optiver


def _columns(table) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {c: table.column(c).to_numpy() for c in table.column_names}


def test_replayed_ticks_come_back_as_the_same_training_windows(tiny_data: Path, tmp_path: Path) -> None:
    stocks = optiver.stock_ids(tiny_data)
    updates = merge([stock_updates(s, _columns(optiver.read_book(tiny_data, s)),
                                   _columns(optiver.read_trade(tiny_data, s))) for s in stocks])
    state = OnlineState(max(stocks) + 1)
    log = TickLog(tmp_path / "ticks", max_rows=len(updates) // 3, max_files=100)
    consumer = Consumer("ticklog", log.handle, maxsize=10_000, policy="drop_newest")
    fan = FanOut([consumer])
    fan.start()
    for part in np.array_split(np.arange(len(updates)), 50):
        b = updates.take(part)
        fan.offer(b, state.apply(b), 0.0)
    assert consumer.drain(30) and consumer.drops == 0
    fan.stop()
    log.close()
    assert len(list((tmp_path / "ticks").glob("ticks-*.arrow"))) >= 3  # it rotated
    assert len(read_ticklog(tmp_path / "ticks")) == len(updates)

    out = tmp_path / "optiver"
    assert to_optiver(tmp_path / "ticks", out) == len(stocks)
    time_ids = np.arange(40)
    for s in stocks:
        np.testing.assert_array_equal(dataset.stock_windows(out, s, time_ids),
                                      dataset.stock_windows(tiny_data, s, time_ids))
    data = dataset.load(out, progress=False)  # what `rtvol train --data` reads
    assert len(data) == len(stocks) * 39  # the last bucket has no next bucket to be its target
    first = data.stock_id == stocks[0]
    # target of bucket b is the RV of bucket b+1, which that bucket's window also gives
    np.testing.assert_allclose(data.target[first][:-1], offline.bucket_rv(data.windows[first][1:]),
                               rtol=1e-5)


def _ingested(updates: UpdateBatch) -> Ingested:
    return Ingested(updates, np.zeros(len(updates), np.int8), 0.0)


def test_files_rotate_by_size_and_by_age_as_well_as_rows(tmp_path: Path) -> None:
    b = snapshot_batches(100, 1)[0]
    by_size = TickLog(tmp_path / "size", max_bytes=1)  # every write fills a file
    for _ in range(3):
        by_size.handle(_ingested(b))
    assert len(list((tmp_path / "size").glob("ticks-*.arrow"))) == 3
    by_age = TickLog(tmp_path / "age", max_age_s=0.05)
    by_age.handle(_ingested(b))
    by_age.tick()
    assert not list((tmp_path / "age").glob("ticks-*.arrow"))  # young: still open
    time.sleep(0.06)
    by_age.tick()  # what the fan-out calls while idle
    assert len(read_ticklog(tmp_path / "age")) == len(b)


def test_a_part_file_left_by_a_crash_is_recovered_up_to_its_last_whole_batch(tmp_path: Path) -> None:
    b = snapshot_batches(100, 1)[0]
    log = TickLog(tmp_path, fsync_interval_s=0.0)  # fsync after every batch
    for _ in range(3):
        log.handle(_ingested(b))
    part = next(tmp_path.glob("ticks-*.arrow.part"))
    with part.open("ab") as f:  # the crash tore the next batch
        f.write(part.read_bytes()[-500:])
    assert TickLog(tmp_path) and not list(tmp_path.glob("*.part"))
    got = read_ticklog(tmp_path)
    assert len(got) == 3 * len(b)
    np.testing.assert_array_equal(got.seq[:len(b)], b.seq)
    empty = tmp_path / "ticks-000000009.arrow.part"
    empty.write_bytes(b"\xff\xff")  # not even a schema: nothing to recover
    assert recover_part(empty) == 0 and not empty.exists()

"""Rotating on-disk tick log (Arrow IPC streams) and its converter to Optiver's layout.

The writer appends every *accepted* update (the UpdateBatch columns) to
``ticks-<counter>.arrow.part``. It rotates at ``max_rows`` rows, ``max_bytes`` bytes or
``max_age_s`` seconds, whichever comes first: the file is closed, fsynced and renamed to
``.arrow`` (then the directory is fsynced), so readers only ever see complete files, and
the oldest files beyond ``max_files`` are deleted. The open file is fsynced every
``fsync_interval_s``: a crash loses at most that much. At start, a ``.part`` file left by
a crash is recovered: its complete record batches (what was durably written) become a
readable ``.arrow`` file. ``to_optiver`` turns a tick log into the layout
``rtvol train --data`` reads (book/trade parquet per stock, train.csv whose target is the
next bucket's WAP1 RV): the simplest way back into training, since the training reader
needs no new code. Run it as ``rtvol data from-ticklog --ticklog DIR --out DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from rtvol import schema
from rtvol.features import offline
from rtvol.features.online_batch import BOOK, FIELDS, TRADE, UpdateBatch
from rtvol.features.spec import BUCKET_SECONDS
from rtvol.services.feature import metrics
from rtvol.services.feature.fanout import Ingested

log = logging.getLogger(__name__)
TICK_SCHEMA = pa.schema([(f, pa.int64() if f in ("stock_id", "seq") else pa.int8() if f == "kind"
                          else pa.float64()) for f in FIELDS])


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, batches: list[pa.RecordBatch], sch: pa.Schema) -> None:
    """``batches`` as a complete stream at ``path``: written aside, fsynced, renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        with ipc.new_stream(f, sch) as writer:
            for b in batches:
                writer.write_batch(b)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)
    _fsync_dir(path.parent)


def recover_part(part: Path) -> int:
    """Turn a crashed writer's ``.part`` file into a complete ``.arrow`` file holding every
    record batch that was fully written (a torn last batch is dropped); returns its rows.
    A part with no complete batch is removed."""
    batches: list[pa.RecordBatch] = []
    sch = TICK_SCHEMA
    try:
        with part.open("rb") as f:
            reader = ipc.open_stream(f)
            sch = reader.schema
            while True:
                batches.append(reader.read_next_batch())
    except StopIteration:
        pass  # a clean end: the writer closed the stream but did not rename it
    except (pa.ArrowInvalid, OSError):
        pass  # torn at the crash: what came before it is kept
    rows = sum(len(b) for b in batches)
    if batches:
        _write_durably(part.with_suffix(""), batches, sch)
    part.unlink()
    _fsync_dir(part.parent)
    return rows


class TickLog:
    """Fan-out consumer: runs on its worker thread, so file I/O never touches ingest."""

    def __init__(self, directory: Path, max_rows: int = 1_000_000, max_files: int = 100,
                 max_bytes: int = 256 << 20, max_age_s: float = 3600.0,
                 fsync_interval_s: float = 1.0) -> None:
        self.dir, self.max_rows, self.max_files = Path(directory), max_rows, max_files
        self.max_bytes, self.max_age_s, self.fsync_interval_s = max_bytes, max_age_s, fsync_interval_s
        self.dir.mkdir(parents=True, exist_ok=True)
        for part in sorted(self.dir.glob("ticks-*.arrow.part")):
            rows = recover_part(part)
            metrics.TICKLOG_RECOVERED.inc(rows)
            log.warning("tick log: recovered %d rows of %s (left by a crash)", rows, part.name)
        self._writer: ipc.RecordBatchStreamWriter | None = None
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._rows = 0
        self._opened = self._synced = 0.0

    def handle(self, item: Ingested) -> None:
        b = item.batch.take(item.reason == 0)
        if not len(b):
            return
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write_batch(pa.record_batch([getattr(b, f) for f in FIELDS], schema=TICK_SCHEMA))
        self._rows += len(b)
        metrics.TICKLOG_ROWS.inc(len(b))
        self.tick()

    def tick(self) -> None:
        """Rotate the open file when it is full or old, else fsync it when that is due."""
        if self._writer is None or self._file is None:
            return
        now = time.monotonic()
        if (self._rows >= self.max_rows or self._file.tell() >= self.max_bytes
                or now - self._opened >= self.max_age_s):
            self.rotate()
        elif now - self._synced >= self.fsync_interval_s:
            self._sync()

    def _sync(self) -> None:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def _open(self) -> None:
        # names sort by creation: one past the last file there (a restart appends)
        existing = sorted(self.dir.glob("ticks-*.arrow*"))
        serial = int(existing[-1].name[len("ticks-"):].split(".")[0]) + 1 if existing else 1
        self._path = self.dir / f"ticks-{serial:09d}.arrow.part"
        self._file = self._path.open("wb")
        self._writer = ipc.new_stream(self._file, TICK_SCHEMA)
        self._rows = 0
        self._opened = self._synced = time.monotonic()

    def rotate(self) -> None:
        """Close the open file (it becomes readable, durably) and apply the retention limit."""
        if self._writer is None or self._file is None or self._path is None:
            return
        self._writer.close()
        self._sync()
        self._file.close()
        self._path.rename(self._path.with_suffix(""))
        _fsync_dir(self.dir)
        self._writer, self._file, self._path = None, None, None
        for old in sorted(self.dir.glob("ticks-*.arrow"))[:-self.max_files]:
            old.unlink()

    close = rotate


class TickLogError(Exception):
    """A tick log that cannot be converted (missing, empty, unreadable): a user-facing message."""


def read_ticklog(directory: Path) -> UpdateBatch:
    """Every complete file, in order, as one batch (an empty log gives an empty batch)."""
    tables = [ipc.open_stream(str(p)).read_all() for p in sorted(Path(directory).glob("ticks-*.arrow"))]
    if not tables:
        return UpdateBatch.from_columns({"stock_id": np.zeros(0, np.int64)})
    t = pa.concat_tables(tables)
    return UpdateBatch.from_columns({f: t.column(f).to_numpy() for f in FIELDS})


BOOK_COLUMNS = {"bid_price1": "bid1", "ask_price1": "ask1", "bid_price2": "bid2", "ask_price2": "ask2",
                "bid_size1": "bid_size1", "ask_size1": "ask_size1", "bid_size2": "bid_size2",
                "ask_size2": "ask_size2"}
TRADE_COLUMNS = {"price": "price", "size": "size", "order_count": "order_count"}


def _table(b: UpdateBatch, columns: dict[str, str], sch: pa.Schema) -> pa.Table:
    time_id = np.floor(b.time / BUCKET_SECONDS)
    cols = {"time_id": time_id, "seconds_in_bucket": np.floor(b.time - time_id * BUCKET_SECONDS)}
    cols |= {dst: getattr(b, src) for dst, src in columns.items()}
    # Optiver's physical types (float32 prices, integer sizes), as the training reader expects
    return pa.table({n: np.asarray(cols[n]).astype(sch.field(n).type.to_pandas_dtype()) for n in sch.names},
                    schema=sch)


def _targets(stock_id: int, book: pa.Table) -> pa.Table:
    """Target of bucket b = RV of bucket b+1's WAP1 (Optiver's definition); needs b+1 logged."""
    tid = book.column("time_id").to_numpy().astype(np.int64)
    buckets, group = np.unique(tid, return_inverse=True)
    rv = offline.realized_volatility(offline.wap(*(book.column(c).to_numpy() for c in (
        "bid_price1", "ask_price1", "bid_size1", "ask_size1"))), group, len(buckets))
    has_next = np.r_[buckets[1:] == buckets[:-1] + 1, False]
    return pa.table({"stock_id": np.full(has_next.sum(), stock_id, np.int32),
                     "time_id": buckets[has_next].astype(np.int32), "target": rv[1:][has_next[:-1]]},
                    schema=schema.TARGET_SCHEMA)


def _check(ticklog: Path) -> None:
    if not ticklog.is_dir():
        raise TickLogError(f"--ticklog {ticklog}: no such directory (the feature service's --ticklog-dir)")
    if not any(ticklog.glob("ticks-*.arrow")):
        open_files = len(list(ticklog.glob("ticks-*.arrow.part")))
        hint = (f"; {open_files} file(s) still being written (.arrow.part): stop the feature service, "
                "or wait until it rotates the file (after a crash: start it again, it recovers them)"
                if open_files else "")
        raise TickLogError(f"--ticklog {ticklog}: no complete tick-log files (ticks-*.arrow){hint}")


def to_optiver(ticklog: Path, out: Path, split: str = "train") -> int:
    """Write Optiver's layout from a tick log; returns the number of stocks written.

    Raises TickLogError when there is nothing to convert (no directory, no complete file, no rows).
    """
    _check(Path(ticklog))
    try:
        b = read_ticklog(ticklog)
    except (OSError, pa.ArrowInvalid) as e:
        raise TickLogError(f"--ticklog {ticklog}: unreadable tick-log file: {e}") from e
    if not len(b):
        raise TickLogError(f"--ticklog {ticklog}: the tick log holds no updates")
    stocks = np.unique(b.stock_id)
    targets = []
    for s in stocks.tolist():
        mine = b.take(np.flatnonzero(b.stock_id == s))
        mine = mine.take(np.lexsort((mine.seq,)))  # arrival order per stock
        book = _table(mine.take(mine.kind == BOOK), BOOK_COLUMNS, schema.BOOK_SCHEMA)
        trade = _table(mine.take(mine.kind == TRADE), TRADE_COLUMNS, schema.TRADE_SCHEMA)
        for folder, table in ((schema.book_dir(split), book), (schema.trade_dir(split), trade)):
            part = Path(out) / folder / schema.stock_partition(s)
            part.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, part / "part-0.parquet")
        targets.append(_targets(s, book))
    if targets:
        pacsv.write_csv(pa.concat_tables(targets), Path(out) / f"{split}.csv")
    return len(stocks)


def main(argv: Sequence[str] | None = None) -> None:
    """Same as `rtvol data from-ticklog` (rtvol/cli/data.py has the full help)."""
    p = argparse.ArgumentParser(prog="python -m rtvol.services.feature.ticklog",
                                description=to_optiver.__doc__)
    p.add_argument("--ticklog", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        n = to_optiver(a.ticklog, a.out)
    except TickLogError as e:
        p.error(str(e))
    print(f"wrote {n} stocks in Optiver's layout to {a.out}")


if __name__ == "__main__":
    main()

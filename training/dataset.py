"""Windows and labels for every (stock_id, time_id) of a data directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from rtvol import schema
from rtvol.features import offline, targets
from rtvol.training import optiver


@dataclass
class Dataset:
    windows: np.ndarray  # [n, STEPS, N_FEATURES] float32
    stock_id: np.ndarray
    time_id: np.ndarray
    target: np.ndarray  # next-bucket RV
    oracle: np.ndarray | None  # synthetic data only
    next_return: np.ndarray | None  # synthetic data only: labels direction and momentum

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, mask: np.ndarray) -> Dataset:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[mask]

        return Dataset(self.windows[mask], self.stock_id[mask], self.time_id[mask],
                       self.target[mask], pick(self.oracle), pick(self.next_return))

    def direction(self) -> np.ndarray | None:
        if self.next_return is None:
            return None
        return targets.direction_class(targets.move_score(self.next_return, self.target))

    def momentum(self) -> np.ndarray | None:
        if self.next_return is None:
            return None
        return targets.momentum(targets.move_score(self.next_return, self.target))


def _group_index(time_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map each row's time_id to its position in ``wanted`` (sorted); -1 when not wanted."""
    pos = np.searchsorted(wanted, time_ids)
    pos = np.minimum(pos, len(wanted) - 1)
    hit = wanted[pos] == time_ids
    return np.where(hit, pos, -1), hit


def stock_windows(data_dir: Path, stock_id: int, time_ids: np.ndarray,
                  split: str = "train", device: str = "cpu") -> np.ndarray:
    """Windows of one stock for the given sorted time_ids (a bucket with no rows is zeros);
    ``device`` cuda: built by the Triton kernels (same numbers to float32 rounding)."""
    book = optiver.read_book(data_dir, stock_id, split)
    trade = optiver.read_trade(data_dir, stock_id, split)

    def columns(table: pa.Table) -> tuple[dict[str, np.ndarray], np.ndarray]:
        group, hit = _group_index(table.column("time_id").to_numpy().astype(np.int64), time_ids)
        cols = {c: table.column(c).to_numpy()[hit] for c in table.column_names}
        return cols, group[hit]

    b, bg = columns(book)
    t, tg = columns(trade)
    if device == "cuda":
        from rtvol.features.triton_kernels import compute_windows_gpu

        return compute_windows_gpu(len(time_ids), b, bg, t, tg)
    return offline.compute_windows(len(time_ids), b, bg, t, tg)


def load(data_dir: Path, split: str = "train", progress: bool = True, device: str = "cpu") -> Dataset:
    data_dir = Path(data_dir)
    labels = optiver.read_targets(data_dir, split)
    stocks = optiver.stock_ids(data_dir, split)
    parts, ids, tids, ys = [], [], [], []
    for stock in tqdm(stocks, desc="features", unit="stock", disable=not progress):
        rows = optiver.rows_of_stock(labels, stock)
        if rows.num_rows == 0:
            continue
        order = np.argsort(rows.column("time_id").to_numpy())
        time_ids = rows.column("time_id").to_numpy()[order].astype(np.int64)
        parts.append(stock_windows(data_dir, stock, time_ids, split, device))
        ids.append(np.full(len(time_ids), stock, np.int64))
        tids.append(time_ids)
        ys.append(rows.column("target").to_numpy()[order])
    if not parts:
        raise optiver.DataError(f"{data_dir}: no stock in {split}.csv has book data")
    stock_id, time_id = np.concatenate(ids), np.concatenate(tids)
    return Dataset(np.concatenate(parts), stock_id, time_id, np.concatenate(ys),
                   _aligned(data_dir, schema.ORACLE_FILE, schema.ORACLE_SCHEMA, "oracle",
                            stock_id, time_id),
                   _aligned(data_dir, schema.NEXT_RETURN_FILE, schema.NEXT_RETURN_SCHEMA,
                            "next_return", stock_id, time_id))


def _aligned(data_dir: Path, name: str, sch: pa.Schema, column: str, stock_id: np.ndarray,
             time_id: np.ndarray) -> np.ndarray | None:
    table = optiver.read_optional(data_dir, name, sch)
    if table is None:
        return None
    key = table.column("stock_id").to_numpy().astype(np.int64) << 32 | table.column(
        "time_id").to_numpy().astype(np.int64)
    order = np.argsort(key)
    want = stock_id << 32 | time_id
    pos = np.searchsorted(key[order], want)
    pos = np.minimum(pos, len(key) - 1)
    if not np.all(key[order][pos] == want):
        raise optiver.DataError(f"{data_dir / name}: does not cover every (stock_id, time_id) "
                                "of the targets")
    return table.column(column).to_numpy()[order][pos]

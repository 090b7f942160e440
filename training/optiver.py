"""Reader for Optiver's Realized Volatility layout (see rtvol.schema).

Reads one stock partition at a time with column projection. Every problem is a
:class:`DataError` that names the file and, where it applies, the column.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rtvol import schema


class DataError(ValueError):
    """Input data that does not match Optiver's layout."""


def _check_type(path: Path, name: str, actual: pa.DataType, expected: pa.DataType) -> None:
    ok = (pa.types.is_integer(actual) if pa.types.is_integer(expected)
          else pa.types.is_floating(actual) or pa.types.is_integer(actual))
    if not ok:
        raise DataError(f"{path}: column '{name}' has type {actual}, expected {expected} "
                        "(or another numeric width)")


def _check_schema(path: Path, found: pa.Schema, expected: pa.Schema, columns: list[str]) -> None:
    for name in columns:
        index = found.get_field_index(name)
        if index < 0:
            raise DataError(f"{path}: missing column '{name}' (has: {', '.join(found.names)})")
        _check_type(path, name, found.field(index).type, expected.field(name).type)


def _stock_dir(data_dir: Path, folder: str, stock_id: int) -> Path:
    path = data_dir / folder / schema.stock_partition(stock_id)
    if not path.is_dir():
        raise DataError(f"{path}: missing partition for stock {stock_id}")
    return path


def _read_partition(data_dir: Path, folder: str, stock_id: int, expected: pa.Schema,
                    columns: list[str] | None) -> pa.Table:
    cols = list(columns or expected.names)
    directory = _stock_dir(data_dir, folder, stock_id)
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise DataError(f"{directory}: no parquet files")
    tables = []
    for f in files:
        try:
            found = pq.read_schema(f)
        except (OSError, pa.ArrowInvalid) as e:
            raise DataError(f"{f}: not a readable parquet file ({e})") from e
        _check_schema(f, found, expected, cols)
        tables.append(pq.read_table(f, columns=cols).cast(pa.schema([expected.field(c) for c in cols]),
                                                          safe=False))
    table = pa.concat_tables(tables)
    # rows are grouped per bucket downstream; enforce the order rather than trust it
    return table.sort_by([("time_id", "ascending"), ("seconds_in_bucket", "ascending")])


def read_book(data_dir: Path, stock_id: int, split: str = "train",
              columns: list[str] | None = None) -> pa.Table:
    return _read_partition(Path(data_dir), schema.book_dir(split), stock_id, schema.BOOK_SCHEMA,
                           columns)


def read_trade(data_dir: Path, stock_id: int, split: str = "train",
               columns: list[str] | None = None) -> pa.Table:
    return _read_partition(Path(data_dir), schema.trade_dir(split), stock_id, schema.TRADE_SCHEMA,
                           columns)


def stock_ids(data_dir: Path, split: str = "train") -> list[int]:
    folder = Path(data_dir) / schema.book_dir(split)
    if not folder.is_dir():
        raise DataError(f"{folder}: missing (expected Optiver's book_{split}.parquet folder)")
    ids = []
    for p in folder.iterdir():
        m = re.fullmatch(r"stock_id=(\d+)", p.name)
        if m and p.is_dir():
            ids.append(int(m.group(1)))
    if not ids:
        raise DataError(f"{folder}: no stock_id=N partitions")
    return sorted(ids)


def _read_csv(path: Path, expected: pa.Schema) -> pa.Table:
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    try:
        table = pacsv.read_csv(path)
    except pa.ArrowInvalid as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from e
    _check_schema(path, table.schema, expected, expected.names)
    table = table.select(expected.names).cast(expected, safe=False)
    for name in expected.names:
        if table.column(name).null_count:
            raise DataError(f"{path}: column '{name}' has empty values")
    return table


def read_targets(data_dir: Path, split: str = "train") -> pa.Table:
    return _read_csv(Path(data_dir) / f"{split}.csv", schema.TARGET_SCHEMA)


def read_optional(data_dir: Path, name: str, expected: pa.Schema) -> pa.Table | None:
    """A synthetic-only extra (oracle.csv, next_return.csv), or None with real data."""
    path = Path(data_dir) / name
    return _read_csv(path, expected) if path.exists() else None


def rows_of_stock(table: pa.Table, stock_id: int) -> pa.Table:
    return table.filter(pc.equal(table.column("stock_id"), stock_id))

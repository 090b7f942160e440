"""Optiver Realized Volatility data layout: files, columns and their types.

Layout under a data directory (unchanged from the competition):
  book_{train,test}.parquet/stock_id=N/*.parquet   BOOK_COLUMNS
  trade_{train,test}.parquet/stock_id=N/*.parquet  TRADE_COLUMNS
  train.csv                                         stock_id, time_id, target
  oracle.csv (synthetic data only)                  stock_id, time_id, oracle
  next_return.csv (synthetic data only)             stock_id, time_id, next_return
The synthetic extras exist because the generator knows the hidden state (oracle) and the
next bucket's net WAP move (labels for the direction and momentum heads); with the real
competition files those heads have no labels and are reported as unavailable.
"""

from __future__ import annotations

import pyarrow as pa

# The competition's own physical types; readers accept any integer/float width.
BOOK_SCHEMA = pa.schema([
    ("time_id", pa.int16()), ("seconds_in_bucket", pa.int16()),
    ("bid_price1", pa.float32()), ("ask_price1", pa.float32()),
    ("bid_price2", pa.float32()), ("ask_price2", pa.float32()),
    ("bid_size1", pa.int32()), ("ask_size1", pa.int32()),
    ("bid_size2", pa.int32()), ("ask_size2", pa.int32()),
])
TRADE_SCHEMA = pa.schema([
    ("time_id", pa.int16()), ("seconds_in_bucket", pa.int16()),
    ("price", pa.float32()), ("size", pa.int32()), ("order_count", pa.int16()),
])
TARGET_SCHEMA = pa.schema([("stock_id", pa.int32()), ("time_id", pa.int32()),
                           ("target", pa.float64())])
ORACLE_SCHEMA = pa.schema([("stock_id", pa.int32()), ("time_id", pa.int32()),
                           ("oracle", pa.float64())])

NEXT_RETURN_SCHEMA = pa.schema([("stock_id", pa.int32()), ("time_id", pa.int32()),
                                ("next_return", pa.float64())])
ORACLE_FILE = "oracle.csv"
NEXT_RETURN_FILE = "next_return.csv"

BOOK_COLUMNS = tuple(BOOK_SCHEMA.names)
TRADE_COLUMNS = tuple(TRADE_SCHEMA.names)


def book_dir(split: str) -> str:
    return f"book_{split}.parquet"


def trade_dir(split: str) -> str:
    return f"trade_{split}.parquet"


def stock_partition(stock_id: int) -> str:
    return f"stock_id={stock_id}"

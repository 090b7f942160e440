"""Raw-tick frames for the feed's WebSocket subscribers: one frame per feed message.

Column names are the Ingest API's (``UpdateColumns`` in features.proto). Book columns are 0
on trade rows and trade columns 0 on book rows, as in an IngestRequest.

binary (default), little-endian: HEADER then ``count`` packed RECORDs (109 bytes each)
  HEADER   magic ``RTVT``, version u16, reserved u16, count u32, published_us i64 (wall
           clock when the feed sent these updates to the feature service)
  RECORD   event_time_us i64, sequence i64, stock_id i32, kind i8 (0 book, 1 trade), then
           float64: bid_price1 ask_price1 bid_price2 ask_price2 bid_size1 ask_size1
           bid_size2 ask_size2 price size order_count
  numpy:   ``np.frombuffer(frame, RECORD, offset=HEADER.size)`` (or :func:`decode_binary`)
json (text frame): ``{"count": n, "published_us": t, "columns": {name: [n values]}}``
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from rtvol.features.online_batch import UpdateBatch
from rtvol.ingest_codec import COLUMN_FIELDS

MAGIC, VERSION = b"RTVT", 1
HEADER = struct.Struct("<4sHHIq")
RECORD = np.dtype([("event_time_us", "<i8"), ("sequence", "<i8"), ("stock_id", "<i4"), ("kind", "i1"),
                   *((name, "<f8") for name in COLUMN_FIELDS.values())])


def columns(b: UpdateBatch) -> dict[str, np.ndarray]:
    """The frame's columns by wire name, each a contiguous array (what orjson serialises)."""
    cols = {"event_time_us": np.round(b.time * 1e6).astype(np.int64),  # as encode_columns sends it
            "sequence": b.seq, "stock_id": b.stock_id, "kind": b.kind}
    return cols | {name: getattr(b, attr) for attr, name in COLUMN_FIELDS.items()}


def encode_binary(b: UpdateBatch, published_us: int) -> bytes:
    rec = np.empty(len(b), RECORD)
    for name, values in columns(b).items():
        rec[name] = values
    return HEADER.pack(MAGIC, VERSION, 0, len(b), published_us) + rec.tobytes()


def encode_json(b: UpdateBatch, published_us: int) -> bytes:
    """UTF-8 JSON (sent as a text frame); orjson writes the numpy columns without a Python loop."""
    cols = {k: np.ascontiguousarray(v) for k, v in columns(b).items()}
    return orjson.dumps({"count": len(b), "published_us": published_us, "columns": cols},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def decode_binary(frame: bytes) -> tuple[int, np.ndarray]:
    """(published_us, records) of a binary frame; ValueError names what is wrong."""
    if len(frame) < HEADER.size:
        raise ValueError(f"tick frame: {len(frame)} bytes, shorter than its header")
    magic, version, _, count, published_us = HEADER.unpack_from(frame)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"tick frame: magic {magic!r} version {version}, expected {MAGIC!r} {VERSION}")
    if len(frame) != HEADER.size + count * RECORD.itemsize:
        raise ValueError(f"tick frame: {len(frame)} bytes for count {count}")
    return published_us, np.frombuffer(frame, RECORD, count, HEADER.size)


def decode_json(frame: str | bytes) -> tuple[int, dict[str, Any]]:
    """(published_us, columns) of a JSON frame."""
    doc = orjson.loads(frame)
    return int(doc["published_us"]), doc["columns"]


def decode(frame: str | bytes) -> tuple[int, np.ndarray]:
    """(published_us, RECORDs) of either kind of frame (a WebSocket text frame arrives as str)."""
    if isinstance(frame, bytes):
        return decode_binary(frame)
    published_us, cols = decode_json(frame)
    rec = np.zeros(len(cols["stock_id"]), RECORD)
    for name, values in cols.items():
        rec[name] = values
    return published_us, rec

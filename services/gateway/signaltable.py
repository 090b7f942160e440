"""The signals of all gateway workers in one shared-memory table (``--workers N``, N > 1).

One fixed slot per stock id (0..stocks-1), written only by the worker whose shard holds the
stock (services/gateway/shards.py) and read by all. Each slot has a version word (seqlock):
the writer makes it odd, writes the record, makes it even; a reader copies the record between
two reads of the word and keeps it only when both are the same even value, so it never sees a
torn signal. The writer sets the word from what it reads (``| 1``, then that + 1), so a writer
killed mid-record (odd word left) does not break its restarted successor.

The ordering this relies on (stores seen in program order, loads not passing loads) is
x86-64's (TSO); numpy issues no fences, so the table refuses other CPUs rather than risk a
torn read there.

Beside the signals, the table holds what each worker's Watch stream tells it of its own
shard (services/gateway/memory.py): per stock, the version of the newest window held and the
lease (monotonic time) until which the stream vouches for it. The owner writes both before it
acknowledges the window to the feature service, so any worker knows, for any stock, which
window a current signal must come from (read-your-writes), while each worker follows only its
own shard's windows.

The parent creates the table (a memfd) before it starts the workers; each worker maps the
same file descriptor, so a restarted worker finds every other shard's signals in it at once.
"""

from __future__ import annotations

import mmap
import os
import platform
from typing import Any

import numpy as np

from rtvol.services.gateway.labels import MODEL_BYTES, VERSION_BYTES
from rtvol.services.gateway.signal import Signal

ERROR_BYTES = 192  # an error message may be cut short; names never are (labels.py)
RECORD = np.dtype([
    ("rv", "<f8"), ("direction", "<f8", (3,)), ("momentum", "<f8"),  # NaN: None (never served NaN)
    ("feature_written_us", "<i8"), ("computed_us", "<i8"), ("window_version", "<i8"),
    ("received_us", "<i8"), ("window_end_step", "<i8"), ("tier", "<i4"), ("stale", "?"),
    ("model", f"S{MODEL_BYTES}"), ("version", f"S{VERSION_BYTES}"), ("error", f"S{ERROR_BYTES}")])
ORDERED_CPUS = frozenset({"x86_64", "amd64", "i386", "i686"})


def supported() -> bool:
    """Whether this CPU orders memory as the seqlock needs (x86-64)."""
    return platform.machine().lower() in ORDERED_CPUS


def create(stocks: int) -> int:
    """A new zeroed table for ``stocks`` slots; returns its file descriptor (inheritable)."""
    if not supported():
        raise SystemExit(f"--workers above 1 shares signals through a seqlock that needs x86-64 memory "
                         f"ordering; this CPU is {platform.machine()}: run --workers 1")
    fd = os.memfd_create("rtvol-gateway-signals", 0)
    os.ftruncate(fd, _size(stocks))
    os.set_inheritable(fd, True)
    return fd


def _held_offset(stocks: int) -> int:
    """Where the held windows' versions and leases start: 8-byte aligned, so a word is
    written and read whole."""
    return -(-stocks * (8 + RECORD.itemsize) // 8) * 8


def _size(stocks: int) -> int:
    return _held_offset(stocks) + stocks * 16


class SignalTable:
    def __init__(self, fd: int, stocks: int) -> None:
        if os.fstat(fd).st_size != _size(stocks):
            raise SystemExit(f"shared signal table: fd {fd} is not a table of {stocks} stocks")
        self.stocks = stocks
        self._map = mmap.mmap(fd, _size(stocks))
        self.words = np.ndarray(stocks, np.uint64, self._map)  # even: settled; 0: never written
        self.records = np.ndarray(stocks, RECORD, self._map, offset=8 * stocks)
        held = _held_offset(stocks)
        self.window_version = np.ndarray(stocks, np.int64, self._map, offset=held)  # 0: none held
        self.valid_until = np.ndarray(stocks, np.float64, self._map, offset=held + 8 * stocks)

    def write(self, signals: list[Signal]) -> None:
        """Store ``signals`` (each in its stock's slot; the caller owns those slots)."""
        if not signals:
            return
        idx = np.fromiter((s.stock_id for s in signals), np.int64, len(signals))
        rows = np.array([_row(s) for s in signals], RECORD)
        begin = self.words[idx] | np.uint64(1)
        self.words[idx] = begin  # odd: being written
        self.records[idx] = rows
        self.words[idx] = begin + np.uint64(1)

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, list[Signal]]:
        """The signals settled in slots ``idx``: (their ids, words), signals; slots being written
        or never written are left out (the writer wakes the readers again when it is done)."""
        before = self.words[idx]
        rows = self.records[idx]  # a copy
        after = self.words[idx]
        ok = (before == after) & (before % 2 == 0) & (before > 0)
        return before[ok], _signals(idx[ok], rows[ok])

    def close(self) -> None:
        del self.words, self.records, self.window_version, self.valid_until
        self._map.close()


def _row(s: Signal) -> tuple[Any, ...]:
    d = s.direction if s.direction is not None else (np.nan, np.nan, np.nan)
    return (s.rv, d, np.nan if s.momentum is None else s.momentum, s.feature_written_us, s.computed_us,
            s.window_version, s.received_us, s.window_end_step, s.tier, s.stale,
            s.model.encode(), s.version.encode(), s.error.encode()[:ERROR_BYTES])


def _signals(ids: np.ndarray, rows: np.ndarray) -> list[Signal]:
    """The signals of records ``rows``, a column at a time (a field of one record read from
    numpy costs ~0.5 µs; a column as a list, a few ns an item)."""
    direction, momentum = rows["direction"].tolist(), rows["momentum"].tolist()
    return [Signal(sid, rv, None if d[0] != d[0] else (d[0], d[1], d[2]), None if m != m else m,
                   model.decode(), version.decode(), tier, written, computed, stale,
                   error.decode(errors="replace"), window_version=wv, received_us=received,
                   window_end_step=end)  # x != x: NaN, None where served
            for sid, rv, d, m, model, version, tier, written, computed, stale, error, wv, received, end
            in zip(ids.tolist(), rows["rv"].tolist(), direction, momentum, rows["model"].tolist(),
                   rows["version"].tolist(), rows["tier"].tolist(), rows["feature_written_us"].tolist(),
                   rows["computed_us"].tolist(), rows["stale"].tolist(), rows["error"].tolist(),
                   rows["window_version"].tolist(), rows["received_us"].tolist(),
                   rows["window_end_step"].tolist(), strict=True)]

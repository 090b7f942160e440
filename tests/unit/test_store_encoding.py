"""The feature store's key and value encoding, pinned byte for byte (the gateway depends on it)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from rtvol import featurestore as fs
from rtvol.features.spec import N_FEATURES, STEPS


def test_key_encoding_is_pinned() -> None:
    assert fs.window_key("0123456789abcdef", 42) == b"rtvol:fw:0123456789abcdef:42"
    assert fs.stream_key("0123456789abcdef") == b"rtvol:fw:0123456789abcdef:changes"
    assert fs.vol_key("0123456789abcdef") == b"rtvol:vol:0123456789abcdef"
    assert b"{" not in fs.window_key("x", 1)  # no hash tag: cluster spreads stocks over slots


def test_window_value_encoding_is_pinned() -> None:
    window = np.arange(STEPS * N_FEATURES, dtype=np.float32).reshape(STEPS, N_FEATURES) / 4
    value = fs.encode_window(window, sequence=7, event_time_us=600_000_000, written_us=123, version=9,
                             received_us=456)
    expected_header = (b"RTVW" + b"\x02\x00" + b"\x32\x00" + b"\x0c\x00" + b"\x00\x00"
                       + (7).to_bytes(8, "little") + (600_000_000).to_bytes(8, "little")
                       + (123).to_bytes(8, "little") + (9).to_bytes(8, "little")
                       + (456).to_bytes(8, "little"))
    assert value[:52] == expected_header
    assert value[52:60] == struct.pack("<ff", 0.0, 0.25)
    assert len(value) == 52 + STEPS * N_FEATURES * 4
    got = fs.decode_windows([value, None])
    np.testing.assert_array_equal(got.windows[0], window)
    assert got.found.tolist() == [True, False]
    assert (got.sequence[0], got.event_time_us[0], got.written_us[0]) == (7, 600_000_000, 123)
    assert (got.version[0], got.received_us[0]) == (9, 456)
    assert not got.windows[1].any() and (got.version[1], got.received_us[1]) == (0, 0)


def test_a_format_1_value_is_still_read_its_version_not_known() -> None:
    """Written by a feature service older than the window version in the store (a gateway is
    upgraded first); beside a format-2 value in the same reply."""
    window = np.full((STEPS, N_FEATURES), 0.5, np.float32)
    old = (b"RTVW\x01\x00\x32\x00\x0c\x00\x00\x00" + (7).to_bytes(8, "little") + (8).to_bytes(8, "little")
           + (123).to_bytes(8, "little") + window.tobytes())
    new = fs.encode_window(window * 2, 1, 2, 3, version=4, received_us=5)
    got = fs.decode_windows([old, None, new])
    assert got.found.tolist() == [True, False, True]
    assert got.windows[0, 0, 0] == 0.5 and got.windows[2, 0, 0] == 1.0
    assert got.sequence.tolist() == [7, 0, 1] and got.written_us.tolist() == [123, 0, 3]
    assert got.version.tolist() == [0, 0, 4] and got.received_us.tolist() == [0, 0, 5]
    with pytest.raises(ValueError, match="unknown encoding"):  # that length, another magic
        fs.decode_windows([b"XXXX" + old[4:]])


def test_a_batch_encodes_as_its_windows_one_by_one() -> None:
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(3, STEPS, N_FEATURES))  # float64: stored as float32 either way
    seq, event_us = np.array([1, 2**40, 3]), np.array([5, 6, 2**50])
    stamps = fs.Stamps(np.array([4, 5, 6]), np.array([7, 8, 2**45]))
    assert fs.encode_values(windows, seq, event_us, 99, stamps) == b"".join(
        fs.encode_window(windows[i], seq[i], event_us[i], 99, stamps.version[i], stamps.received_us[i])
        for i in range(3))
    assert fs.encode_values(windows, seq, event_us, 99) == b"".join(  # no stamps: not known
        fs.encode_window(windows[i], seq[i], event_us[i], 99) for i in range(3))
    with pytest.raises(ValueError, match="window shape"):
        fs.encode_values(windows[:, 1:], seq, event_us, 99)


@pytest.mark.parametrize("at", [0, 4, 6, 8], ids=["magic", "version", "steps", "features"])
def test_decode_rejects_an_unknown_encoding(at: int) -> None:
    good = fs.encode_window(np.zeros((STEPS, N_FEATURES), np.float32), 1, 1, 1)
    value = bytearray(good)
    value[at] ^= 0x40  # another magic, format version or shape
    with pytest.raises(ValueError, match="unknown encoding"):
        fs.decode_windows([good, bytes(value)])


def test_vol_encoding_is_pinned() -> None:
    est = fs.VolEstimate(np.array([3, 5], np.int32), np.array([0.5, 0.25], np.float32), 99)
    value = fs.encode_vol(est)
    assert value == (b"RTVV\x01\x00\x00\x00" + (99).to_bytes(8, "little") + (2).to_bytes(4, "little")
                     + struct.pack("<ii", 3, 5) + struct.pack("<ff", 0.5, 0.25))
    back = fs.decode_vol(value)
    assert back.stock_ids.tolist() == [3, 5] and back.vol.tolist() == [0.5, 0.25]


def test_replicas_vol_fields_merge_and_an_earlier_sharding_is_left_out() -> None:
    def field(ids: list[int], at: int) -> bytes:
        return fs.encode_vol(fs.VolEstimate(np.array(ids, np.int32), np.full(len(ids), 0.1, np.float32), at))

    fields = {b"0/2": field([0, 2], 100), b"1/2": field([1, 3], 90), b"0/1": field([0, 1, 2, 3], 50)}
    merged = fs.merge_vol(fields)
    assert merged is not None and sorted(merged.stock_ids.tolist()) == [0, 1, 2, 3]
    assert merged.computed_us == 90  # as old as its oldest part
    assert fs.merge_vol({}) is None

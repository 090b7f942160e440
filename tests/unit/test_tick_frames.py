"""The feed's raw-tick frames and subscribe URLs: round trips, and bad input named by field."""

from __future__ import annotations

import numpy as np
import pytest

from rtvol.features.online_replay import snapshot_batches
from rtvol.loadtest import tickframes
from rtvol.loadtest.tickserver import BadSubscription, Envelope, Subscription, parse_subscription


def test_binary_and_json_frames_carry_the_same_columns() -> None:
    batch = snapshot_batches(6, 1, seed=3)[0]
    published, rec = tickframes.decode_binary(tickframes.encode_binary(batch, 1234))
    assert published == 1234 and len(rec) == 6
    assert rec["stock_id"].tolist() == batch.stock_id.tolist()
    assert rec["kind"].tolist() == batch.kind.tolist()
    np.testing.assert_array_equal(rec["ask_price2"], batch.ask2)
    np.testing.assert_array_equal(rec["bid_size1"], batch.bid_size1)
    published, cols = tickframes.decode_json(tickframes.encode_json(batch, 99))
    assert published == 99 and set(cols) == set(tickframes.RECORD.names)
    for name in tickframes.RECORD.names:
        assert cols[name] == rec[name].tolist(), name


def test_a_frame_of_another_format_or_length_is_refused() -> None:
    frame = tickframes.encode_binary(snapshot_batches(2, 1)[0], 0)
    with pytest.raises(ValueError, match="count 2"):
        tickframes.decode_binary(frame[:-1])
    with pytest.raises(ValueError, match="magic"):
        tickframes.decode_binary(b"XXXX" + frame[4:])


def test_envelope_selects_a_subscribers_stocks_once_per_format() -> None:
    env = Envelope(snapshot_batches(5, 1)[0])
    sub = Subscription(frozenset({1, 3}), "json")
    assert env.select(sub.stocks).stock_id.tolist() == [1, 3]
    assert env.frame(sub) is env.frame(Subscription(frozenset({3, 1}), "json"))  # encoded once
    assert tickframes.decode_binary(env.frame(Subscription(None, "binary")))[1]["stock_id"].tolist() == [
        0, 1, 2, 3, 4]


def test_subscribe_url_parameters() -> None:
    assert parse_subscription("/ticks", "drop_oldest") == Subscription(None, "binary", "drop_oldest")
    assert parse_subscription("/ticks?stocks=4,2&format=json&overflow=disconnect", "drop_oldest") == (
        Subscription(frozenset({2, 4}), "json", "disconnect"))


@pytest.mark.parametrize(("path", "field"), [
    ("/other", "path"), ("/ticks?stocks=1,x", "stocks"), ("/ticks?format=xml", "format"),
    ("/ticks?overflow=block", "overflow"), ("/ticks?limit=3", "limit"), ("/ticks?format=json&format=binary",
                                                                           "format")])
def test_bad_subscribe_urls_name_the_field(path: str, field: str) -> None:
    with pytest.raises(BadSubscription) as bad:
        parse_subscription(path, "drop_oldest")
    assert bad.value.field == field and str(bad.value).startswith(field + ":")
